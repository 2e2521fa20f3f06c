// Real-VM tests of what `vmfest run` needs from the SSH handle: a command's output passed through
// byte for byte while it runs, and a stop request from another thread (Ctrl-C) that kills the
// command with its children at once.
#include <gtest/gtest.h>

#include <chrono>
#include <stop_token>
#include <string>
#include <thread>
#include <vector>

#include "timing.h"
#include "vmfest/error.h"
#include "vmfest/gtest/fixture.h"
#include "vmfest/instance.h"

namespace {
using namespace std::chrono_literals;
using vmfest::ssh::RunOptions;
using vmfest::testing::Clock;
using vmfest::testing::seconds_since;

// One instance for the suite; the session itself, since these tests hand it RunOptions.
class SshStop : public vmfest::testing::SharedInstanceTest<SshStop> {
 protected:
  static vmfest::ssh::Session& ssh() { return instance().ssh(); }
};

TEST_F(SshStop, OutputBytesPassThroughUnsplitWhileTheCommandRuns) {
  std::string out;
  std::string err;
  double first_output = -1;
  RunOptions options;
  options.capture_output = false;
  const auto start = Clock::now();
  options.on_stdout_bytes = [&](std::string_view bytes) {
    if (first_output < 0) first_output = seconds_since(start);
    out += bytes;
  };
  options.on_stderr_bytes = [&](std::string_view bytes) { err += bytes; };
  const auto result =
      ssh().check("printf 'a\\n\\nb'; printf 'warn' >&2; sleep 1.5; printf 'c\\r\\n'", options);
  EXPECT_EQ(out, "a\n\nbc\r\n") << "no line is split, joined or completed";
  EXPECT_EQ(err, "warn");
  EXPECT_LT(first_output, seconds_since(start) - 1.0) << "output must arrive while it runs";
  EXPECT_EQ(result.stdout_text, "") << "capture_output=false";
}

TEST_F(SshStop, AStopRequestKillsTheCommandAndItsChildrenAtOnce) {
  std::stop_source stop;
  RunOptions options;
  options.stop = stop.get_token();
  std::vector<std::string> lines;
  options.on_stdout_line = [&](std::string_view line) { lines.emplace_back(line); };
  std::jthread stopper([&stop] {
    std::this_thread::sleep_for(1500ms);
    stop.request_stop();
  });
  const auto start = Clock::now();
  try {
    // A child that would outlive a plain kill of the shell, and a grandchild under it.
    ssh().run("echo started; sh -c 'sleep 41' & sleep 42", options);
    FAIL() << "a stopped command must throw";
  } catch (const vmfest::SshError& error) {
    EXPECT_NE(std::string(error.what()).find("was stopped by its caller"), std::string::npos)
        << error.what();
  }
  const double took = seconds_since(start);
  EXPECT_GE(took, 1.4);
  EXPECT_LT(took, 4.0) << "the stop must not wait for the command";
  EXPECT_EQ(lines, std::vector<std::string>{"started"});
  EXPECT_EQ(ssh().run("ps | grep -E 'sleep 4[12]' | grep -v grep").stdout_text, "")
      << "the stopped command left processes behind";

  // Stopped before it starts: nothing runs. The connection still serves other commands.
  EXPECT_THROW(ssh().run("echo never > /tmp/stopped-before", options), vmfest::SshError);
  EXPECT_EQ(ssh().run("test -e /tmp/stopped-before").exit_status, 1);
  EXPECT_EQ(ssh().check("echo still here").stdout_text, "still here\n");
}

}  // namespace
