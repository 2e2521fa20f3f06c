// Running host tools (qemu-img, genisoimage, ...) with Boost.Process v2.
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <filesystem>
#include <string>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/process/v2/process.hpp>

namespace vmfest::detail {

struct ToolResult {
  int exit_code = -1;
  std::string output;  // stdout and stderr together
};

// The path of `program` on PATH, or BackendError saying which package provides it.
std::filesystem::path find_program(const std::string& program, const std::string& package);

// Runs a program to completion and collects its output. `input` (at most a pipe's buffer, 64 KiB)
// is its standard input; empty: /dev/null.
ToolResult run_tool(const std::filesystem::path& program, const std::vector<std::string>& args,
                    const std::string& input = {});

// Like run_tool, but throws BackendError with `what`, the command and its output unless it exits 0.
std::string run_tool_checked(const std::filesystem::path& program,
                             const std::vector<std::string>& args, const std::string& what);

// Pass as the last initializer of every Boost.Process launch. Boost 1.81 closes in the child only
// the descriptors above the highest one it keeps (its close_all compares each kept descriptor
// with itself, not the next), so a child inherited every pipe and socket another thread had open
// at the fork: a QEMU started beside a qemu-img kept that tool's output pipe open, and reading the
// tool's output never ended. This closes every descriptor the launcher does not keep. It runs
// between fork and exec, so it does not allocate.
struct CloseInheritedFds {
  template <typename Launcher, typename Path>
  boost::system::error_code on_exec_setup(Launcher& launcher, const Path& /*executable*/,
                                          const char* const*& /*argv*/) const {
    constexpr std::size_t kMaxKept = 16;
    std::array<int, kMaxKept> kept{};
    std::size_t count = 0;
    for (int fd : launcher.fd_whitelist) {
      if (count == kMaxKept)
        return boost::system::error_code(EMFILE, boost::system::system_category());
      std::size_t at = count++;
      for (; at > 0 && kept[at - 1] > fd; --at) kept[at] = kept[at - 1];  // insertion sort
      kept[at] = fd;
    }
    unsigned int next = 0;
    for (std::size_t index = 0; index < count; ++index) {
      const auto fd = static_cast<unsigned int>(kept[index]);
      if (fd > next) ::close_range(next, fd - 1, 0);
      next = std::max(next, fd + 1);
    }
    ::close_range(next, ~0U, 0);
    return {};
  }
};

// Pass with CloseInheritedFds to hand the child one open descriptor of this process, at the same
// number. It stays close-on-exec here (only this child gets it, not the others forked meanwhile):
// the flag is cleared in the child, between fork and exec.
struct InheritFd {
  int fd;

  template <typename Launcher, typename Path>
  boost::system::error_code on_setup(Launcher& launcher, const Path& /*executable*/,
                                     const char* const*& /*argv*/) const {
    launcher.fd_whitelist.push_back(fd);
    return {};
  }
  template <typename Launcher, typename Path>
  boost::system::error_code on_exec_setup(Launcher& /*launcher*/, const Path& /*executable*/,
                                          const char* const*& /*argv*/) const {
    if (::fcntl(fd, F_SETFD, 0) != 0) {
      return boost::system::error_code(errno, boost::system::system_category());
    }
    return {};
  }
};

// Pass to a launch whose child must take signals as a fresh process does, whatever this process
// blocks: a process started while the CLI blocks SIGINT, SIGTERM and SIGHUP (vmfest run) would
// otherwise ignore a plain `kill` for as long as it runs.
struct UnblockedSignals {
  template <typename Launcher, typename Path>
  boost::system::error_code on_exec_setup(Launcher& /*launcher*/, const Path& /*executable*/,
                                          const char* const*& /*argv*/) const {
    sigset_t none;
    ::sigemptyset(&none);
    if (::sigprocmask(SIG_SETMASK, &none, nullptr) != 0) {
      return boost::system::error_code(errno, boost::system::system_category());
    }
    return {};
  }
};

// Boost.Process's running() reaps an exited child, after which running() and wait() fail with
// ECHILD; these two treat that as "exited" and never throw.
bool is_running(boost::process::v2::process& child) noexcept;
// SIGKILL (if still running) and reap.
void kill_and_reap(boost::process::v2::process& child) noexcept;

// The io_context that owns long-lived child process handles (never run: waits are synchronous).
boost::asio::io_context& process_context();

}  // namespace vmfest::detail
