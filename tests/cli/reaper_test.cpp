// `vmfest reap` after a test process died without cleaning up: a helper owning three running
// instances is SIGKILLed; the reap leaves no QEMU process, no instance folder, no listening port,
// and leaves alone the detached instances the CLI made.
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <map>
#include <string>

#include <fmt/format.h>

#include "child_process.h"
#include "cli_runner.h"
#include "vmfest/gtest/fixture.h"
#include "vmfest/instance.h"

namespace {
namespace fs = std::filesystem;
using vmfest::testing::ChildProcess;
using vmfest::testing::port_is_listening;
using vmfest::testing::processes_working_in;
using vmfest::testing::run_cli;

TEST(Reaper, TakesTheRunningInstancesOfAKilledOwnerAndSparesDetachedOnes) {
  const std::string prefix = "reap-" + std::to_string(::getpid());
  const std::string keeper = prefix + "-detached";
  ASSERT_EQ(run_cli({"create", keeper, "--model", vmfest::testing::kDefaultModel}).exit_code, 0);

  const fs::path output = fs::temp_directory_path() / (prefix + "-owner.log");
  ChildProcess owner({VMFEST_OWN_THREE, prefix}, output);
  ASSERT_TRUE(owner.wait_for_line("READY", std::chrono::minutes(10))) << owner.output();

  // What the owner's instances look like while it lives: running, each QEMU listening.
  std::map<std::string, vmfest::InstanceInfo> owned;
  for (const auto& info : vmfest::describe_instances()) {
    if (info.name.starts_with(prefix + "-") && info.name != keeper) owned[info.name] = info;
  }
  ASSERT_EQ(owned.size(), 3u) << owner.output();
  for (const auto& [name, info] : owned) {
    EXPECT_EQ(info.state, vmfest::InstanceState::Running) << name;
    EXPECT_FALSE(info.detached) << name;
    EXPECT_EQ(fs::read_symlink(fmt::format("/proc/{}/exe", info.owner_pid)), VMFEST_OWN_THREE)
        << name << " is owned by pid " << info.owner_pid << ", not by the helper";
    EXPECT_EQ(processes_working_in(info.directory).size(), 1u) << name << ": its QEMU";
    EXPECT_TRUE(port_is_listening(info.ssh.port)) << name << " port " << info.ssh.port;
  }

  owner.kill();
  // Nothing cleaned up after a SIGKILL: the VMs run on without an owner.
  for (const auto& [name, info] : owned) {
    EXPECT_EQ(processes_working_in(info.directory).size(), 1u) << name;
  }

  auto reap = run_cli({"reap"});
  ASSERT_EQ(reap.exit_code, 0) << reap.describe();
  for (const auto& [name, info] : owned) {
    EXPECT_NE(reap.out.find("reaped instance '" + name + "'"), std::string::npos) << reap.out;
    EXPECT_TRUE(processes_working_in(info.directory).empty()) << name << ": QEMU still runs";
    EXPECT_FALSE(fs::exists(info.directory)) << info.directory;
    EXPECT_FALSE(port_is_listening(info.ssh.port)) << name << " port " << info.ssh.port;
  }
  EXPECT_EQ(reap.out.find(keeper), std::string::npos) << reap.out;

  // The detached instance is still there, and a second reap finds nothing of ours.
  auto listed = vmfest::testing::listed_instance(keeper);
  ASSERT_TRUE(listed);
  EXPECT_EQ(listed->at("state"), "created");
  EXPECT_EQ(run_cli({"reap"}).out.find(prefix), std::string::npos);
  EXPECT_EQ(run_cli({"destroy", keeper}).exit_code, 0);
  fs::remove(output);
}

}  // namespace
