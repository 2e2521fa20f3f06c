#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>

#include "backends/qemu/accelerator.h"
#include "subprocess.h"
#include "vmfest/error.h"

namespace {
namespace fs = std::filesystem;

TEST(Accelerator, EnvironmentOverrideWins) {
  ::setenv("VMFEST_ACCEL", "tcg", 1);
  auto choice = vmfest::detail::qemu::choose_accelerator("/bin/false", fs::temp_directory_path(),
                                                         {}, std::chrono::seconds(1));
  EXPECT_EQ(choice.name, "tcg");
  ::setenv("VMFEST_ACCEL", "warp", 1);
  EXPECT_THROW(vmfest::detail::qemu::choose_accelerator("/bin/false", fs::temp_directory_path(), {},
                                                        std::chrono::seconds(1)),
               vmfest::InvalidArgument);
  ::unsetenv("VMFEST_ACCEL");
}

TEST(Accelerator, ProbeChoosesAWorkingAcceleratorAndSaysWhy) {
  ::unsetenv("VMFEST_ACCEL");
  auto qemu = vmfest::detail::find_program("qemu-system-x86_64", "qemu-system-x86");
  fs::path cache = fs::temp_directory_path() / ("vmfest-accel-" + std::to_string(::getpid()));
  auto choice = vmfest::detail::qemu::choose_accelerator(qemu, cache, {}, std::chrono::seconds(5));
  EXPECT_TRUE(choice.name == "tcg" || choice.name == "kvm");
  EXPECT_FALSE(choice.reason.empty());
  fs::remove_all(cache);
}

}  // namespace

namespace {

// A stand-in `qemu-system-x86_64` script: the probe's logic (bounded wait, marker detection,
// error reporting) is tested against programs that behave like a hanging, a working and a
// failing KVM.
class FakeQemu : public ::testing::Test {
 protected:
  void SetUp() override {
    work_ = fs::temp_directory_path() / ("vmfest-fake-qemu-" + std::to_string(::getpid()));
    fs::create_directories(work_);
  }
  void TearDown() override { fs::remove_all(work_); }
  fs::path script(const std::string& name, const std::string& body) {
    fs::path path = work_ / name;
    std::ofstream(path) << "#!/bin/bash\n" << body << "\n";
    fs::permissions(path, fs::perms::owner_all);
    return path;
  }
  fs::path work_;
};

TEST_F(FakeQemu, AHangingGuestIsDetectedWithinTheTimeout) {
  fs::path qemu = script("hang", "exec sleep 60");
  std::string why;
  auto begin = std::chrono::steady_clock::now();
  EXPECT_FALSE(
      vmfest::detail::qemu::kvm_runs_guest(qemu, work_, {}, std::chrono::milliseconds(800), why));
  EXPECT_LT(std::chrono::steady_clock::now() - begin, std::chrono::seconds(5));
  EXPECT_NE(why.find("no sign of life within 800 ms"), std::string::npos) << why;
}

TEST_F(FakeQemu, AGuestThatPrintsTheMarkerPasses) {
  // Writes the marker to the file named by "-serial file:PATH", then idles like a halted guest.
  fs::path qemu = script("works", R"(while [ $# -gt 0 ]; do
  if [ "$1" = -serial ]; then printf 'VMFEST-PROBE-OK\n' > "${2#file:}"; fi; shift
done
exec sleep 60)");
  std::string why;
  EXPECT_TRUE(vmfest::detail::qemu::kvm_runs_guest(qemu, work_, {}, std::chrono::seconds(5), why))
      << why;
}

TEST_F(FakeQemu, AQemuThatFailsReportsItsError) {
  fs::path qemu = script("fails", "echo 'Could not access KVM kernel module' >&2; exit 1");
  std::string why;
  EXPECT_FALSE(vmfest::detail::qemu::kvm_runs_guest(qemu, work_, {}, std::chrono::seconds(5), why));
  EXPECT_NE(why.find("Could not access KVM kernel module"), std::string::npos) << why;
}

}  // namespace
