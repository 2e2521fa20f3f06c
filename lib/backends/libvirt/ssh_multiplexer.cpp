#include "ssh_multiplexer.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cerrno>

#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <filesystem>
#include <functional>
#include <future>
#include <map>
#include <mutex>
#include <string_view>
#include <thread>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "vmfest/internal/base.h"

namespace vmfest::detail::libvirt {
namespace fs = std::filesystem;

namespace {

struct Master {
  pid_t pid = -1;      // -1: it could not be started, or it ended
  std::string socket;  // its control socket
  fs::path log;        // its standard error
};

struct Masters {
  std::mutex mutex;
  pid_t owner = ::getpid();  // a forked child that exits leaves its parent's masters alone
  fs::path folder;           // private (0700), for the sockets and logs
  std::map<std::string, Master> by_uri;
};

Masters& masters() {
  static auto* const all = new Masters;  // never destroyed: the atexit handler uses it
  return *all;
}

constexpr std::string_view kFolderPrefix = "vmfest-ssh-";  // then the pid of its process

// What a killed process left (its master ended with it, by its parent-death signal).
void remove_folders_of_dead_processes() {
  std::error_code error;
  for (const auto& entry : fs::directory_iterator(fs::temp_directory_path(), error)) {
    const std::string name = entry.path().filename().string();
    if (!name.starts_with(kFolderPrefix)) continue;
    const pid_t pid = std::atoi(name.c_str() + kFolderPrefix.size());
    if (pid > 0 && ::kill(pid, 0) != 0 && errno == ESRCH) fs::remove_all(entry.path(), error);
  }
}

void end_masters() noexcept {
  Masters& all = masters();
  std::lock_guard lock(all.mutex);
  if (::getpid() != all.owner) return;
  for (auto& [uri, master] : all.by_uri) {
    if (master.pid <= 0) continue;
    ::kill(master.pid, SIGTERM);
    ::waitpid(master.pid, nullptr, 0);
  }
  std::error_code ignored;
  fs::remove_all(all.folder, ignored);
}

// Runs `fork_child` on one thread that lives as long as the process: the parent-death signal of
// a child is sent when the thread that forked it ends, not only the process.
pid_t fork_on_lasting_thread(const std::function<pid_t()>& fork_child) {
  struct Request {
    const std::function<pid_t()>& fork_child;
    std::promise<pid_t> pid;
  };
  struct Queue {
    std::mutex mutex;
    std::condition_variable queued;
    std::deque<Request*> requests;
  };
  // Never destroyed: the thread waits on it while the process exits.
  static auto* const queue = new Queue;
  static std::once_flag started;
  std::call_once(started, [] {
    std::thread([] {
      for (;;) {
        std::unique_lock lock(queue->mutex);
        queue->queued.wait(lock, [] { return !queue->requests.empty(); });
        Request* request = queue->requests.front();
        queue->requests.pop_front();
        lock.unlock();
        request->pid.set_value(request->fork_child());
      }
    }).detach();
  });
  Request request{fork_child, {}};
  std::future<pid_t> pid = request.pid.get_future();
  {
    std::lock_guard lock(queue->mutex);
    queue->requests.push_back(&request);
  }
  queue->queued.notify_one();
  return pid.get();
}

// Starts `command` under /bin/sh with standard input /dev/null and standard error to `log`, as a
// child that receives SIGTERM when this process dies. -1 when it cannot be started.
pid_t spawn_master(const std::string& command, const fs::path& log) {
  const std::string line = "exec " + command;
  const char* argv[] = {"/bin/sh", "-c", line.c_str(), nullptr};
  const pid_t parent = ::getpid();
  return fork_on_lasting_thread([&] {
    const pid_t pid = ::fork();
    if (pid != 0) return pid;
    // The child: only async-signal-safe calls until exec.
    if (::prctl(PR_SET_PDEATHSIG, SIGTERM) != 0 || ::getppid() != parent) ::_exit(127);
    const int input = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    const int error = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (input < 0 || error < 0 || ::dup2(input, STDIN_FILENO) < 0 ||
        ::dup2(error, STDOUT_FILENO) < 0 || ::dup2(error, STDERR_FILENO) < 0) {
      ::_exit(127);
    }
    ::execv(argv[0], const_cast<char* const*>(argv));
    ::_exit(127);
  });
}

}  // namespace

std::string ssh_multiplexer(const HostUri& host) {
  if (host.local()) return "";
  Masters& all = masters();
  std::lock_guard lock(all.mutex);
  if (::getpid() != all.owner) return "";  // a forked child's jumps log in on their own
  if (all.folder.empty()) {
    remove_folders_of_dead_processes();
    std::string pattern =
        (fs::temp_directory_path() / fmt::format("{}{}-XXXXXX", kFolderPrefix, ::getpid()))
            .string();
    if (::mkdtemp(pattern.data()) == nullptr) {
      spdlog::warn(
          "vmfest: could not make a folder for SSH master connections in {}: {}; each "
          "SSH connection to a libvirt host's guest logs in to the host on its own",
          fs::temp_directory_path().string(), std::strerror(errno));
      all.owner = -1;
      return "";
    }
    all.folder = pattern;
    std::atexit(end_masters);
  }
  auto [entry, added] = all.by_uri.try_emplace(host.uri);
  Master& master = entry->second;
  if (added) {
    const std::string name = std::to_string(all.by_uri.size());
    master.socket = (all.folder / name).string();
    master.log = all.folder / (name + ".log");
    master.pid = spawn_master(host.master_command(master.socket), master.log);
    spdlog::debug("vmfest: SSH master connection to {} (pid {}) at {}", host.host, master.pid,
                  master.socket);
  } else if (master.pid > 0 && ::waitpid(master.pid, nullptr, WNOHANG) == master.pid) {
    master.pid = -1;
    std::string output;
    try {
      output = read_text(master.log);
    } catch (const std::exception& error) {
      output = error.what();
    }
    spdlog::warn(
        "vmfest: the SSH master connection to libvirt host {} ended ({}); each SSH connection "
        "to its guests logs in to the host on its own",
        host.host, output.empty() ? "it said nothing" : output);
  }
  return master.pid > 0 ? master.socket : "";
}

}  // namespace vmfest::detail::libvirt
