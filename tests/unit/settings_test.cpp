#include "vmfest/internal/base.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <string>

#include <spdlog/spdlog.h>

#include "vmfest/error.h"

namespace {

using vmfest::detail::whole_number_setting;

TEST(Settings, AWholeNumberIsReadWithinItsRangeAndAnythingElseIsRefusedByName) {
  ::unsetenv("VMFEST_TEST_SETTING");
  EXPECT_EQ(whole_number_setting("VMFEST_TEST_SETTING", 1, 10), std::nullopt);
  ::setenv("VMFEST_TEST_SETTING", "", 1);
  EXPECT_EQ(whole_number_setting("VMFEST_TEST_SETTING", 1, 10), std::nullopt);
  ::setenv("VMFEST_TEST_SETTING", "7", 1);
  EXPECT_EQ(whole_number_setting("VMFEST_TEST_SETTING", 1, 10), 7);
  for (const char* wrong : {"0", "11", "-3", "5s", "five", "9999999999999999999999"}) {
    ::setenv("VMFEST_TEST_SETTING", wrong, 1);
    try {
      whole_number_setting("VMFEST_TEST_SETTING", 1, 10, "of seconds");
      ADD_FAILURE() << wrong << " was accepted";
    } catch (const vmfest::InvalidArgument& error) {
      EXPECT_EQ(std::string(error.what()),
                std::string("VMFEST_TEST_SETTING=") + wrong +
                    " is not valid: use a whole number of seconds from 1 to 10");
    }
  }
  ::unsetenv("VMFEST_TEST_SETTING");
}

// vmfest_add_tests hands ctest's TIMEOUT to the test as VMFEST_TEST_TIMEOUT: vmfest's waits end
// a margin before ctest would kill the test, and never below a second.
TEST(Settings, WaitsEndWithinTheTestBudget) {
  using std::chrono::milliseconds;
  using std::chrono::minutes;
  using std::chrono::seconds;
  using vmfest::detail::within_test_budget;
  ::unsetenv("VMFEST_TEST_TIMEOUT");
  EXPECT_EQ(within_test_budget(minutes(10)), minutes(10));
  ::setenv("VMFEST_TEST_TIMEOUT", "100", 1);
  // 100 s less a margin of 15 s, less what this process has run so far.
  const milliseconds left = within_test_budget(minutes(10));
  EXPECT_LE(left, seconds(85));
  EXPECT_GT(left, seconds(60));
  EXPECT_EQ(within_test_budget(seconds(5)), seconds(5));
  ::setenv("VMFEST_TEST_TIMEOUT", "1000", 1);  // a tenth is the margin past 150 s
  EXPECT_LE(within_test_budget(minutes(30)), seconds(900));
  ::setenv("VMFEST_TEST_TIMEOUT", "5", 1);  // spent before it began: a second still
  EXPECT_EQ(within_test_budget(minutes(10)), seconds(1));
  ::setenv("VMFEST_TEST_TIMEOUT", "soon", 1);
  EXPECT_THROW(within_test_budget(minutes(10)), vmfest::InvalidArgument);
  ::unsetenv("VMFEST_TEST_TIMEOUT");
}

// Run by the next test in a child process: prints the log level the program started with.
TEST(LogLevel, ChildReportsItsLevel) {
  if (std::getenv("VMFEST_LOG_CHILD") == nullptr) GTEST_SKIP() << "run by LogLevel.VmfestLog*";
  std::cout << "level " << static_cast<int>(spdlog::get_level()) << std::endl;
}

// VMFEST_LOG sets the level of every program linked with vmfest before its main runs (here a test
// binary); a name that is no level is said and ignored.
TEST(LogLevel, VmfestLogSetsTheLevelOfAProgramBeforeItsMain) {
  auto child = [](const std::string& level) {
    return vmfest::detail::run_tool("/usr/bin/env",
                                    {"VMFEST_LOG_CHILD=1", "VMFEST_LOG=" + level,
                                     std::filesystem::read_symlink("/proc/self/exe").string(),
                                     "--gtest_filter=LogLevel.ChildReportsItsLevel"});
  };
  const auto level_line = [](spdlog::level::level_enum level) {
    return "level " + std::to_string(static_cast<int>(level)) + "\n";
  };
  const auto debug = child("debug");
  EXPECT_NE(debug.output.find(level_line(spdlog::level::debug)), std::string::npos) << debug.output;
  const auto error = child("error");
  EXPECT_NE(error.output.find(level_line(spdlog::level::err)), std::string::npos) << error.output;
  const auto bogus = child("loud");
  EXPECT_NE(bogus.output.find(level_line(spdlog::level::info)), std::string::npos) << bogus.output;
  EXPECT_NE(bogus.output.find("VMFEST_LOG=loud is not a log level"), std::string::npos)
      << bogus.output;
}

}  // namespace
