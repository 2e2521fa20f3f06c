#include "qemu_process.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <sstream>
#include <string>
#include <thread>

#include <fmt/format.h>

#include "vmfest/error.h"
#include "vmfest/internal/base.h"

namespace vmfest::detail::qemu {
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

bool is_our_qemu(int pid, const fs::path& directory) {
  if (pid <= 0) return false;
  std::error_code error;
  fs::path cwd = fs::read_symlink(fmt::format("/proc/{}/cwd", pid), error);
  if (error || cwd != directory) return false;
  std::string stat = read_text_if_exists(fmt::format("/proc/{}/stat", pid));
  auto close_paren = stat.rfind(')');
  return close_paren != std::string::npos && close_paren + 2 < stat.size() &&
         stat[close_paren + 2] != 'Z';
}

std::vector<int> qemus_working_in(const fs::path& directory) {
  auto is_qemu = [](const std::string& program) {
    return fs::path(program).filename().string().starts_with("qemu-system");
  };
  std::vector<int> found;
  std::error_code error;
  for (const auto& entry : fs::directory_iterator("/proc", error)) {
    const std::string name = entry.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    const int pid = std::stoi(name);
    if (!is_our_qemu(pid, directory)) continue;
    std::error_code ignored;
    const std::string exe = fs::read_symlink(entry.path() / "exe", ignored).string();
    std::string command = read_text_if_exists(entry.path() / "cmdline");
    std::replace(command.begin(), command.end(), '\0', '\n');
    std::istringstream arguments(command);
    std::string first;
    std::string second;
    std::getline(arguments, first);
    std::getline(arguments, second);
    if (is_qemu(exe) || is_qemu(first) || is_qemu(second)) found.push_back(pid);
  }
  return found;
}

// /proc shows its main thread gone
// while the other threads still hold its sockets and files, so it waits on a pidfd, which turns
// readable only once the process has exited. Opened before the signal: it names this process
// even if the pid is reused.
void kill_and_wait(int pid) {
  const int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  ::kill(pid, SIGKILL);
  if (pidfd >= 0) {
    pollfd exited{pidfd, POLLIN, 0};
    ::poll(&exited, 1, 5000);
    ::close(pidfd);
    return;
  }
  const auto deadline = Clock::now() + milliseconds(5000);
  while (Clock::now() < deadline && fs::exists(fmt::format("/proc/{}", pid))) {
    std::this_thread::sleep_for(milliseconds(20));
  }
}

}  // namespace vmfest::detail::qemu
