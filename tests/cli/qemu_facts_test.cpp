// What vmfest asks the host's QEMU (its version, machine types, migration capabilities) costs
// about 0.15 s of QEMU runs: asked once per binary and host, then read from the host's cache, so a
// test process does not pay it again; asked anew once the binary changes.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "cli_runner.h"
#include "vmfest/gtest/fixture.h"
#include "vmfest/internal/base.h"

namespace {
namespace fs = std::filesystem;
using vmfest::testing::CliResult;
using vmfest::testing::contains;
using vmfest::testing::run_cli;

class QemuFacts : public ::testing::Test {
 protected:
  void SetUp() override {
    fs::create_directories(folder_);
    real_qemu_ = vmfest::detail::find_program("qemu-system-x86_64", "qemu-system-x86");
    write_stand_in();
    // The CLI runs in this process's environment: this QEMU, a cache of its own, no KVM probe.
    ::setenv("VMFEST_QEMU", stand_in_.c_str(), 1);
    ::setenv("VMFEST_CACHE_DIR", (folder_ / "cache").c_str(), 1);
    ::setenv("VMFEST_ACCEL", "tcg", 1);
  }
  void TearDown() override {
    ::unsetenv("VMFEST_QEMU");
    ::unsetenv("VMFEST_CACHE_DIR");
    ::unsetenv("VMFEST_ACCEL");
    fs::remove_all(folder_);
  }

  // A `qemu-system-x86_64` that notes its arguments, then runs the real one.
  void write_stand_in() {
    {
      std::ofstream script(stand_in_, std::ios::trunc);
      script << "#!/bin/sh\necho \"$*\" >> '" << calls_.string() << "'\nexec '"
             << real_qemu_.string() << "' \"$@\"\n";
    }
    fs::permissions(stand_in_, fs::perms::owner_all);
  }

  // The QEMU runs of one `vmfest create` (a warm clone's plan needs all three facts) and destroy.
  std::string qemu_runs_of_create() {
    fs::remove(calls_);
    CliResult created = run_cli({"create", "-m", vmfest::testing::test_model()});
    EXPECT_EQ(created.exit_code, 0) << created.describe();
    std::string name = created.out.substr(0, created.out.find('\n'));
    CliResult destroyed = run_cli({"destroy", name});
    EXPECT_EQ(destroyed.exit_code, 0) << destroyed.describe();
    return vmfest::detail::read_text_if_exists(calls_);
  }

  const fs::path folder_ =
      fs::temp_directory_path() / ("vmfest-qemu-facts-" + std::to_string(::getpid()));
  const fs::path stand_in_ = folder_ / "qemu-system-x86_64";
  const fs::path calls_ = folder_ / "calls";
  fs::path real_qemu_;
};

TEST_F(QemuFacts, AreAskedOncePerBinaryAndAgainWhenItChanges) {
  const std::string first = qemu_runs_of_create();
  EXPECT_TRUE(contains(first, "--version")) << first;
  EXPECT_TRUE(contains(first, "-machine help")) << first;
  EXPECT_TRUE(contains(first, "-qmp stdio")) << first;

  const std::string second = qemu_runs_of_create();
  EXPECT_EQ(second, "") << "a second process asked QEMU again";

  // Rewritten in place: the same path, a new change time (as a package upgrade would leave it).
  write_stand_in();
  const std::string third = qemu_runs_of_create();
  EXPECT_TRUE(contains(third, "--version")) << third;
  EXPECT_TRUE(contains(third, "-qmp stdio")) << third;
}

}  // namespace
