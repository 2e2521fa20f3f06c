// `vmfest reap` after a test process died without cleaning up: a helper owning three running
// instances is SIGKILLed; the reap leaves no QEMU process, no instance folder, no listening port,
// and leaves alone the detached instances the CLI made. Then the same kill at random moments of
// the helper's life (creating, launching, booting, building a warm image, running).
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <random>
#include <string>

#include <fmt/format.h>

#include "child_process.h"
#include "cli_runner.h"
#include "vmfest/gtest/fixture.h"
#include "vmfest/home.h"
#include "vmfest/instance.h"
#include "vmfest/internal/driver.h"

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

// Every live process whose working directory lies under `folder` (a QEMU of one of its instances).
std::vector<std::string> processes_under(const fs::path& folder) {
  std::vector<std::string> found;
  for (const auto& entry : fs::directory_iterator("/proc")) {
    const std::string pid = entry.path().filename().string();
    if (pid.find_first_not_of("0123456789") != std::string::npos) continue;
    std::error_code error;
    const fs::path cwd = fs::read_symlink(entry.path() / "cwd", error);
    if (error) continue;
    auto [end, unused] = std::mismatch(folder.begin(), folder.end(), cwd.begin(), cwd.end());
    if (end == folder.end() && !processes_working_in(cwd).empty())
      found.push_back(pid + " in " + cwd.string());
  }
  return found;
}

// What a killed process may have left in the home's folders: staging, warm builds, instances.
std::vector<std::string> leftovers(const vmfest::Home& home, const std::string& prefix) {
  std::vector<std::string> found;
  if (fs::exists(home.instances())) {
    for (const auto& entry : fs::directory_iterator(home.instances())) {
      if (entry.path().filename().string().starts_with(prefix)) found.push_back(entry.path());
    }
  }
  if (!fs::exists(home.models())) return found;
  for (const auto& entry : fs::recursive_directory_iterator(home.models())) {
    const std::string name = entry.path().filename().string();
    if (name.starts_with(".staging-") || name.starts_with(".building-") ||
        name.starts_with(".replaced-")) {
      found.push_back(entry.path());
    }
  }
  return found;
}

TEST(Reaper, AfterAKillAtAnyMomentReapLeavesNothing) {
  const vmfest::Home home = vmfest::Home::from_environment();
  const int rounds = std::getenv("VMFEST_KILL_ROUNDS") != nullptr
                         ? std::atoi(std::getenv("VMFEST_KILL_ROUNDS"))
                         : 10;
  std::mt19937 random(static_cast<unsigned>(::getpid()));
  for (int round = 0; round < rounds; ++round) {
    const std::string prefix = fmt::format("kill-{}-{}", ::getpid(), round);
    // Up to 8 s: from the first create through the boots (and a warm build, in a fresh home).
    const auto kill_after = std::chrono::milliseconds(random() % 8000);
    SCOPED_TRACE(fmt::format("round {}: SIGKILL after {} ms", round, kill_after.count()));
    const fs::path output = fs::temp_directory_path() / (prefix + "-owner.log");
    {
      ChildProcess owner({VMFEST_OWN_THREE, prefix}, output);
      std::this_thread::sleep_for(kill_after);
      owner.kill();
    }
    auto reap = run_cli({"reap"});
    ASSERT_EQ(reap.exit_code, 0) << reap.describe();
    EXPECT_EQ(processes_under(home.instances()), std::vector<std::string>{}) << reap.describe();
    EXPECT_EQ(leftovers(home, prefix), std::vector<std::string>{}) << reap.describe();
    // The slots of this round's instances went with the processes that held them (other VMs on
    // the host may hold theirs).
    for (int slot = 0;; ++slot) {
      const fs::path file = vmfest::detail::slots_directory() / fmt::format("slot-{}.lock", slot);
      if (!fs::exists(file)) break;
      const std::string holder = vmfest::detail::read_text_if_exists(file);
      vmfest::detail::FileLock lock(file, vmfest::detail::FileLock::Mode::TryOnce);
      EXPECT_TRUE(lock.held() || holder.find(prefix) == std::string::npos)
          << "slot " << slot << " is still held: " << holder;
    }
    fs::remove(output);
  }
}

}  // namespace
