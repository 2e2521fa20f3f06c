// Test support: a child process (posix_spawn) whose stdout and stderr go to a file, killed and
// reaped when the handle goes out of scope.
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

extern char** environ;

namespace vmfest::testing {

class ChildProcess {
 public:
  // Runs argv[0] (a path) with `argv`, the current environment with `extra_environment`
  // ("NAME=value") added or replacing, output to `output`.
  ChildProcess(const std::vector<std::string>& argv, const std::filesystem::path& output,
               const std::vector<std::string>& extra_environment = {})
      : output_(output) {
    std::vector<std::string> environment = extra_environment;
    auto overridden = [&](const std::string& entry) {
      for (const auto& extra : extra_environment) {
        if (entry.substr(0, entry.find('=') + 1) == extra.substr(0, extra.find('=') + 1))
          return true;
      }
      return false;
    };
    for (char** entry = environ; *entry != nullptr; ++entry) {
      if (!overridden(*entry)) environment.emplace_back(*entry);
    }
    auto pointers = [](std::vector<std::string>& strings) {
      std::vector<char*> result;
      for (auto& text : strings) result.push_back(text.data());
      result.push_back(nullptr);
      return result;
    };
    std::vector<std::string> arguments = argv;
    std::vector<char*> argument_pointers = pointers(arguments);
    std::vector<char*> environment_pointers = pointers(environment);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, output.c_str(),
                                     O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_adddup2(&actions, STDOUT_FILENO, STDERR_FILENO);
    posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
    const int error = ::posix_spawn(&pid_, arguments[0].c_str(), &actions, nullptr,
                                    argument_pointers.data(), environment_pointers.data());
    posix_spawn_file_actions_destroy(&actions);
    if (error != 0) {
      throw std::runtime_error("cannot start " + arguments[0] + ": " + std::strerror(error));
    }
  }
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;
  ~ChildProcess() {
    if (!status_) {
      ::kill(pid_, SIGKILL);
      (void)wait();
    }
  }

  // The exit code (128 + signal when killed by one).
  int wait() {
    if (!status_) {
      int raw = 0;
      while (::waitpid(pid_, &raw, 0) < 0 && errno == EINTR) {
      }
      status_ = WIFEXITED(raw) ? WEXITSTATUS(raw) : 128 + WTERMSIG(raw);
    }
    return *status_;
  }
  void kill() {
    if (!status_) ::kill(pid_, SIGKILL);
    (void)wait();
  }
  // Sends `number` to the child (while it runs) without waiting for it.
  void signal(int number) {
    if (!status_) ::kill(pid_, number);
  }
  [[nodiscard]] pid_t pid() const { return pid_; }
  [[nodiscard]] std::string output() const {
    std::ifstream in(output_, std::ios::binary);
    std::ostringstream text;
    text << in.rdbuf();
    return text.str();
  }
  // Waits until the child printed `line` on a line of its own; false when it exited first or the
  // timeout passed.
  bool wait_for_line(const std::string& line, std::chrono::seconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      if (("\n" + output()).find("\n" + line + "\n") != std::string::npos) return true;
      if (!running()) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return false;
  }
  [[nodiscard]] bool running() {
    if (status_) return false;
    int raw = 0;
    if (::waitpid(pid_, &raw, WNOHANG) == pid_) {
      status_ = WIFEXITED(raw) ? WEXITSTATUS(raw) : 128 + WTERMSIG(raw);
      return false;
    }
    return true;
  }

 private:
  std::filesystem::path output_;
  pid_t pid_ = -1;
  std::optional<int> status_;
};

}  // namespace vmfest::testing
