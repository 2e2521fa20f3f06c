// VMFEST_HOMEs whose paths used to break vmfest, each with real VMs: one reached through a
// symbolic link (a VM's /proc/PID/cwd names the real path, so destroy and reap did not recognise
// its QEMU and left it running), and one with a comma and spaces in it (QEMU's key=value options
// end a value at a comma). Each home gets the default model, a CLI instance taken through its life,
// and an owned instance whose owner is SIGKILLed and then reaped; no QEMU may be left.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "child_process.h"
#include "cli_runner.h"
#include "vmfest/gtest/fixture.h"
#include "vmfest/home.h"
#include "vmfest/internal/base.h"
#include "vmfest/model.h"

namespace {
namespace fs = std::filesystem;
using vmfest::testing::ChildProcess;
using vmfest::testing::CliResult;
using vmfest::testing::kDefaultModel;
using vmfest::testing::run_cli;

// The live QEMU processes working anywhere under `folder` (an instances folder), also in a folder
// removed meanwhile (/proc shows "PATH (deleted)"): a QEMU that outlived its instance's removal
// is found too. Nothing else: the test kills what this finds.
std::vector<int> qemus_working_under(const fs::path& folder) {
  if (!folder.is_absolute() || folder.filename() != "instances") {
    throw std::invalid_argument("not an instances folder: " + folder.string());
  }
  std::vector<int> pids;
  const std::string prefix = folder.string() + "/";
  for (const auto& entry : fs::directory_iterator("/proc")) {
    const std::string name = entry.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::error_code error;
    const std::string cwd = fs::read_symlink(entry.path() / "cwd", error).string();
    if (error || !cwd.starts_with(prefix)) continue;
    const fs::path exe = fs::read_symlink(entry.path() / "exe", error);
    if (error || !exe.filename().string().starts_with("qemu-system")) continue;
    const std::string stat = vmfest::detail::read_text_if_exists(entry.path() / "stat");
    const auto state = stat.rfind(')');
    if (state != std::string::npos && state + 2 < stat.size() && stat[state + 2] != 'Z') {
      pids.push_back(std::stoi(name));
    }
  }
  return pids;
}

struct OddHome {
  const char* label;  // the test's name
  // Makes the home under `root` and returns the path to give VMFEST_HOME.
  fs::path (*make)(const fs::path& root);
};

class HomePath : public ::testing::TestWithParam<OddHome> {
 protected:
  void SetUp() override {
    // Set up by the test environment in the binary's own home: the bundle to install again.
    bundle_ = vmfest::ModelRegistry().get(kDefaultModel).source;
    original_home_ = vmfest::Home::from_environment().root();
    root_ = original_home_.parent_path() / fmt::format("home-path-{}", ::getpid());
    fs::remove_all(root_);
    fs::create_directories(root_);
    home_ = GetParam().make(root_);
    fs::create_directories(home_);
    ::setenv("VMFEST_HOME", home_.c_str(), 1);  // for this process and the CLI it runs
    instances_ = fs::canonical(home_) / "instances";
  }

  void TearDown() override {
    // A failed test must not leave its VMs running: kill the QEMUs still running in this home.
    if (!instances_.empty()) {
      for (int pid : qemus_working_under(instances_)) ::kill(pid, SIGKILL);
    }
    ::setenv("VMFEST_HOME", original_home_.c_str(), 1);
    fs::remove_all(root_);
  }

  // `vmfest ARGS`, expected to succeed.
  static CliResult cli_ok(const std::vector<std::string>& args, const std::string& input = "") {
    CliResult result = run_cli(args, input);
    EXPECT_EQ(result.exit_code, 0)
        << "vmfest " << fmt::format("{}", fmt::join(args, " ")) << ": " << result.describe();
    return result;
  }

  std::string bundle_;
  fs::path original_home_;
  fs::path root_;
  fs::path home_;
  fs::path instances_;  // the real path, as /proc shows the VMs' working folders
};

TEST_P(HomePath, VmsRunAndNoneIsLeftByDestroyOrReap) {
  cli_ok({"setup-model", bundle_, "--name", kDefaultModel});

  // The CLI's life of an instance (its first start also builds the home's warm image: a cold
  // boot, a saved state and a clone resumed from it, all under this path).
  const std::string name = fmt::format("path-{}", ::getpid());
  cli_ok({"create", name, "--model", kDefaultModel});
  cli_ok({"start", name});
  EXPECT_EQ(qemus_working_under(instances_).size(), 1u) << "its QEMU";
  EXPECT_EQ(cli_ok({"ssh", name, "--", "echo hi"}).out, "hi\n");
  // The system ssh client, with the instance's key file and pinned host key from this home.
  CliResult shell = run_cli({"ssh", name}, "hostname; exit 5\n");
  EXPECT_EQ(shell.exit_code, 5) << shell.describe();
  EXPECT_NE(shell.out.find(name + "\n"), std::string::npos) << shell.describe();
  cli_ok({"destroy", name});
  EXPECT_TRUE(qemus_working_under(instances_).empty()) << "destroy left QEMU running";
  EXPECT_FALSE(fs::exists(instances_ / name));

  // An owned instance whose owner is SIGKILLed: only the reaper can stop its VM.
  const std::string prefix = fmt::format("path-owned-{}", ::getpid());
  const fs::path output = root_ / "owner.log";
  ChildProcess owner({VMFEST_OWN_THREE, prefix, "1"}, output);
  ASSERT_TRUE(owner.wait_for_line("READY", std::chrono::minutes(10))) << owner.output();
  EXPECT_EQ(qemus_working_under(instances_).size(), 1u) << "its QEMU";
  owner.kill();
  CliResult reap = cli_ok({"reap"});
  EXPECT_NE(reap.out.find("reaped instance '" + prefix + "-1'"), std::string::npos)
      << reap.describe();
  EXPECT_TRUE(qemus_working_under(instances_).empty()) << "reap left QEMU running";
  EXPECT_FALSE(fs::exists(instances_ / (prefix + "-1")));
}

INSTANTIATE_TEST_SUITE_P(
    Odd, HomePath,
    ::testing::Values(OddHome{"Symlinked",
                              [](const fs::path& root) {
                                fs::create_directory(root / "real");
                                fs::create_directory_symlink(root / "real", root / "link");
                                return root / "link";
                              }},
                      OddHome{"CommaAndSpaces",
                              [](const fs::path& root) { return root / "my vms, a,b"; }}),
    [](const ::testing::TestParamInfo<OddHome>& odd) { return std::string(odd.param.label); });

}  // namespace
