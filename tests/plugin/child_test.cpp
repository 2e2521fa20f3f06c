// Not a suite of its own: the harness tests (harness_test.cpp) run this binary as a child process,
// each with a --gtest_filter, to watch from outside what the plugin does when a test fails, when a
// test binary is killed, and when many sharded copies run at once.
#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <iostream>
#include <thread>

#include <fmt/format.h>

#include "vmfest/gtest/fixture.h"

namespace {

class Child : public vmfest::testing::InstanceTest {};

TEST_F(Child, Passes) { ssh().check("true"); }

TEST_F(Child, FailsOnPurpose) {
  ssh().check("echo transcript-marker");
  FAIL() << "deliberate failure: the harness checks what it leaves behind";
}

TEST_F(Child, HangsUntilKilled) {
  std::cout << "[child] instance " << instance().name() << " running" << std::endl;
  std::this_thread::sleep_for(std::chrono::minutes(10));
}

// Appends one line per test to $VMFEST_PLUGIN_LOG: test, instance, SSH port, shard, pid.
class Sharded : public vmfest::testing::InstanceTest {
 protected:
  void log_run() {
    const char* log = std::getenv("VMFEST_PLUGIN_LOG");
    ASSERT_NE(log, nullptr) << "VMFEST_PLUGIN_LOG is not set";
    EXPECT_EQ(ssh().check("hostname").stdout_text, instance().name() + "\n");
    const char* shard = std::getenv("GTEST_SHARD_INDEX");
    const std::string line = fmt::format(
        "{} {} {} {} {}\n", ::testing::UnitTest::GetInstance()->current_test_info()->name(),
        instance().name(), ssh().endpoint().port, shard == nullptr ? "-" : shard, ::getpid());
    // One write(2) with O_APPEND: lines of concurrent processes do not interleave.
    const int fd = ::open(log, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    ASSERT_GE(fd, 0);
    EXPECT_EQ(::write(fd, line.data(), line.size()), static_cast<ssize_t>(line.size()));
    ::close(fd);
  }
};

TEST_F(Sharded, A) { log_run(); }
TEST_F(Sharded, B) { log_run(); }
TEST_F(Sharded, C) { log_run(); }
TEST_F(Sharded, D) { log_run(); }

}  // namespace
