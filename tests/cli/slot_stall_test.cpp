// Two suites of two-VM tests in two processes on one host with a cap of 2 VMs (two CI jobs on one
// runner, a developer running two suites): each test starts one VM, then the other. When both hold
// one and wait for a second, nothing would ever free a slot; the suites must still finish, at the
// speed of their VMs, not fail on the slot timeout.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "child_process.h"
#include "cli_runner.h"
#include "timing.h"
#include "vmfest/home.h"

namespace {
namespace fs = std::filesystem;
using vmfest::testing::ChildProcess;
using vmfest::testing::Clock;
using vmfest::testing::contains;
using vmfest::testing::seconds_since;

TEST(SlotStall, TwoSuitesOfTwoVmTestsAtACapOfTwoBothFinish) {
  const fs::path work = vmfest::Home::from_environment().root().parent_path() /
                        fmt::format("slot-stall-{}", ::getpid());
  const fs::path barrier = work / "barrier";
  fs::create_directories(barrier);
  const std::vector<std::string> environment = {
      "VMFEST_MAX_VMS=2", "VMFEST_SLOTS_DIR=" + (work / "slots").string(),
      // Well under ctest's timeout: a stall that is not broken fails with vmfest's own error.
      "VMFEST_SLOT_WAIT=120"};
  constexpr int kRounds = 3;
  const auto began = Clock::now();
  std::vector<std::unique_ptr<ChildProcess>> suites;
  for (const std::string party : {"one", "two"}) {
    suites.push_back(std::make_unique<ChildProcess>(
        std::vector<std::string>{VMFEST_TWO_VM_SUITE, fmt::format("stall-{}-{}", ::getpid(), party),
                                 std::to_string(kRounds), barrier.string(), "2"},
        work / (party + ".log"), environment));
  }
  int went_past_the_cap = 0;
  for (auto& suite : suites) {
    EXPECT_EQ(suite->wait(), 0) << suite->output();
    const std::string output = suite->output();
    EXPECT_TRUE(contains(output, fmt::format("ROUND {} ", kRounds))) << output;
    EXPECT_FALSE(contains(output, "waited")) << output;
    for (std::size_t at = output.find("starts beyond the host's cap of 2 VMs");
         at != std::string::npos; at = output.find("starts beyond the host's cap", at + 1)) {
      ++went_past_the_cap;
    }
  }
  // The first tests stall at their barrier, and one suite breaks the stall.
  EXPECT_GE(went_past_the_cap, 1);
  std::cout << fmt::format(
      "two suites of {} two-VM tests at a cap of 2: {:.1f} s, {} stall(s) broken\n", kRounds,
      seconds_since(began), went_past_the_cap);
  if (!HasFailure()) fs::remove_all(work);
}

}  // namespace
