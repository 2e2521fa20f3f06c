#include <gtest/gtest.h>

#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <optional>
#include <string>

#include <boost/asio/io_context.hpp>
#include <boost/process/v2/process.hpp>

#include "vmfest/internal/base.h"

namespace {

// What the child's descriptors point at ("pipe:[INODE]", "/dev/null", ...), one per line.
std::string open_in_child() {
  const auto result = vmfest::detail::run_tool(
      "/bin/sh", {"-c", "for fd in /proc/$$/fd/*; do readlink \"$fd\"; done; true"});
  EXPECT_EQ(result.exit_code, 0) << result.output;
  return result.output;
}

std::string pipe_name(int fd) {
  struct stat info {};
  EXPECT_EQ(::fstat(fd, &info), 0);
  return "pipe:[" + std::to_string(info.st_ino) + "]";
}

// Boost.Process 1.81 leaves the descriptors numbered below its own error pipe open in the child:
// a QEMU launched by one thread kept another thread's tool pipe open, and that thread's read of
// its tool's output never ended.
TEST(Subprocess, AChildInheritsNoDescriptorButItsStdio) {
  int ends[2];
  ASSERT_EQ(::pipe(ends), 0);  // inheritable on purpose (no O_CLOEXEC), and low-numbered
  const std::string leaked = pipe_name(ends[0]);
  const std::string open = open_in_child();
  ::close(ends[0]);
  ::close(ends[1]);
  EXPECT_EQ(open.find(leaked), std::string::npos) << leaked << " reached the child:\n" << open;
}

// The VM cap's mechanism: a child given a locked slot file holds the lock after this process
// lets go of it, until the child exits; a child not given it holds nothing.
TEST(Subprocess, AChildGivenALockedDescriptorHoldsTheLockUntilItExits) {
  namespace fs = std::filesystem;
  using vmfest::detail::FileLock;
  const fs::path file =
      fs::temp_directory_path() / ("vmfest-inherit-" + std::to_string(::getpid()));
  boost::asio::io_context context;
  std::optional<FileLock> lock(std::in_place, file, FileLock::Mode::TryOnce);
  ASSERT_TRUE(lock->held());
  boost::process::v2::process holder(context, "/bin/sleep", {"30"},
                                     vmfest::detail::InheritFd{lock->descriptor()},
                                     vmfest::detail::CloseInheritedFds{});
  boost::process::v2::process bystander(context, "/bin/sleep", {"30"},
                                        vmfest::detail::CloseInheritedFds{});
  lock.reset();
  EXPECT_FALSE(FileLock(file, FileLock::Mode::TryOnce).held()) << "the child let go of the lock";
  vmfest::detail::kill_and_reap(holder);
  EXPECT_TRUE(FileLock(file, FileLock::Mode::TryOnce).held()) << "the bystander holds the lock";
  vmfest::detail::kill_and_reap(bystander);
  fs::remove(file);
}

TEST(Subprocess, RunToolFeedsItsInputAndCollectsTheOutput) {
  const auto result = vmfest::detail::run_tool("/bin/sh", {"-c", "tr a-z A-Z; echo done >&2"},
                                               "first line\nsecond\n");
  EXPECT_EQ(result.exit_code, 0);
  EXPECT_EQ(result.output, "FIRST LINE\nSECOND\ndone\n");
  EXPECT_EQ(vmfest::detail::run_tool("/bin/sh", {"-c", "echo out; echo err >&2"}).output,
            "out\nerr\n");
  // No input: the child reads an empty stdin, not the caller's.
  EXPECT_EQ(vmfest::detail::run_tool("/bin/cat", {}).output, "");
}

}  // namespace
