// A running VM holds its host-wide slot for as long as it runs, whoever started it: an instance
// started by `vmfest start` keeps its slot after the command has exited, so under a cap of one VM
// a second instance cannot start until the first is powered down or destroyed.
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <future>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "cli_runner.h"
#include "vmfest/gtest/fixture.h"
#include "vmfest/home.h"

namespace {
namespace fs = std::filesystem;
using vmfest::testing::CliResult;
using vmfest::testing::contains;
using vmfest::testing::kDefaultModel;
using vmfest::testing::listed_instance;
using vmfest::testing::run_cli;

std::string state_of(const std::string& name) {
  auto entry = listed_instance(name);
  return entry ? entry->at("state").get<std::string>() : "not listed";
}

class CliSlots : public ::testing::Test {
 protected:
  void SetUp() override {
    // A slot folder of this test's own: other VM tests on the host must not take its one slot.
    slots_ =
        vmfest::Home::from_environment().root().parent_path() / fmt::format("slots-{}", ::getpid());
    ::setenv("VMFEST_SLOTS_DIR", slots_.c_str(), 1);
    ::setenv("VMFEST_MAX_VMS", "1", 1);
  }
  void TearDown() override {
    for (const std::string& name : {first_, second_}) (void)run_cli({"destroy", name});
    ::unsetenv("VMFEST_SLOTS_DIR");
    ::unsetenv("VMFEST_MAX_VMS");
    ::unsetenv("VMFEST_SLOT_WAIT");
    fs::remove_all(slots_);
  }

  static void cli_ok(const std::vector<std::string>& args) {
    CliResult result = run_cli(args);
    EXPECT_EQ(result.exit_code, 0) << "vmfest " << args.front() << ": " << result.describe();
  }

  fs::path slots_;
  const std::string first_ = fmt::format("slot-a-{}", ::getpid());
  const std::string second_ = fmt::format("slot-b-{}", ::getpid());
};

TEST_F(CliSlots, ACliInstanceHoldsItsSlotUntilPoweredDownOrDestroyed) {
  cli_ok({"create", first_, "--model", kDefaultModel});
  cli_ok({"create", second_, "--model", kDefaultModel});
  cli_ok({"start", first_});

  // `vmfest start` has exited; the running VM still holds the only slot.
  ::setenv("VMFEST_SLOT_WAIT", "3", 1);
  CliResult refused = run_cli({"start", second_});
  EXPECT_EQ(refused.exit_code, 1) << refused.describe();
  EXPECT_TRUE(contains(refused.err, fmt::format("instance '{}' waited 3 s for 1 of the host's 1 "
                                                "VM slots (VMFEST_MAX_VMS); held by: ",
                                                second_)))
      << refused.describe();
  EXPECT_TRUE(contains(refused.err, "instance " + first_)) << refused.describe();
  EXPECT_EQ(state_of(second_), "created");

  // Powered down, the first frees its slot.
  cli_ok({"power-down", first_, "--grace", "20"});
  cli_ok({"start", second_});
  EXPECT_EQ(state_of(second_), "running");

  // A start waits while the slot is taken, and goes on once its holder is destroyed.
  ::setenv("VMFEST_SLOT_WAIT", "300", 1);
  std::future<CliResult> waiting = std::async(std::launch::async, [this] {
    return run_cli({"start", first_});
  });
  EXPECT_EQ(waiting.wait_for(std::chrono::seconds(5)), std::future_status::timeout)
      << "the start did not wait for the slot";
  cli_ok({"destroy", second_});
  CliResult started = waiting.get();
  EXPECT_EQ(started.exit_code, 0) << started.describe();
  EXPECT_TRUE(contains(started.err,
                       fmt::format("instance '{}' waits for 1 free VM slot(s) (cap 1)", first_)))
      << started.describe();
  EXPECT_EQ(state_of(first_), "running");
  cli_ok({"destroy", first_});
}

}  // namespace
