// `vmfest ssh NAME [-- CMD...]`: a command through the library's SSH handle, or an interactive
// shell through the system's ssh client with the instance's key and its pinned host key.
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "vmfest/error.h"
#include "vmfest/instance.h"
#include "vmfest/ssh/shell_quote.h"
#include "vmfest_cli.h"

extern char** environ;

namespace vmfest::cli {
namespace {
namespace fs = std::filesystem;

int run_remote_command(Instance& instance, const std::vector<std::string>& words) {
  ssh::CommandResult result = instance.ssh().run(remote_command_line(words));
  std::fwrite(result.stdout_text.data(), 1, result.stdout_text.size(), stdout);
  std::fflush(stdout);
  std::fwrite(result.stderr_text.data(), 1, result.stderr_text.size(), stderr);
  return remote_exit_status(result);
}

// A mode-0700 folder under $TMPDIR, removed with everything in it.
class PrivateDirectory {
 public:
  PrivateDirectory() {
    std::string pattern = (fs::temp_directory_path() / "vmfest-ssh-XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr) {
      throw Error(fmt::format("cannot create a temporary folder for ssh's known_hosts ({}): {}",
                              pattern, std::strerror(errno)));
    }
    path_ = pattern;
  }
  PrivateDirectory(const PrivateDirectory&) = delete;
  PrivateDirectory& operator=(const PrivateDirectory&) = delete;
  ~PrivateDirectory() {
    std::error_code ignored;
    fs::remove_all(path_, ignored);
  }
  [[nodiscard]] const fs::path& path() const noexcept { return path_; }

 private:
  fs::path path_;
};

// Lets the child own Ctrl-C and Ctrl-\ while we wait for it (we still clean up afterwards).
class IgnoreTerminalSignals {
 public:
  IgnoreTerminalSignals()
      : interrupt_(std::signal(SIGINT, SIG_IGN)), quit_(std::signal(SIGQUIT, SIG_IGN)) {}
  IgnoreTerminalSignals(const IgnoreTerminalSignals&) = delete;
  IgnoreTerminalSignals& operator=(const IgnoreTerminalSignals&) = delete;
  ~IgnoreTerminalSignals() {
    std::signal(SIGINT, interrupt_);
    std::signal(SIGQUIT, quit_);
  }

 private:
  void (*interrupt_)(int);
  void (*quit_)(int);
};

int run_and_wait(const std::vector<std::string>& argv) {
  std::vector<char*> pointers;
  for (const auto& word : argv) pointers.push_back(const_cast<char*>(word.c_str()));
  pointers.push_back(nullptr);

  posix_spawnattr_t attributes;
  ::posix_spawnattr_init(&attributes);
  sigset_t defaults;
  sigemptyset(&defaults);
  sigaddset(&defaults, SIGINT);
  sigaddset(&defaults, SIGQUIT);
  ::posix_spawnattr_setsigdefault(&attributes, &defaults);
  ::posix_spawnattr_setflags(&attributes, POSIX_SPAWN_SETSIGDEF);

  IgnoreTerminalSignals ignore;
  pid_t pid = 0;
  const int error =
      ::posix_spawnp(&pid, argv[0].c_str(), nullptr, &attributes, pointers.data(), environ);
  ::posix_spawnattr_destroy(&attributes);
  if (error != 0) {
    throw Error(fmt::format("cannot run the ssh client '{}' for an interactive shell: {}{}",
                            argv[0], std::strerror(error),
                            error == ENOENT ? " (install Debian's openssh-client; `vmfest ssh "
                                              "NAME -- CMD` works without it)"
                                            : ""));
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) throw Error(fmt::format("waiting for ssh: {}", std::strerror(errno)));
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

// The system ssh client handles the pty and the raw terminal; it trusts only this instance's host
// key and offers only this instance's client key, whatever ~/.ssh/config says.
int open_shell(Instance& instance) {
  InstanceInfo info = instance.info();
  if (info.state != InstanceState::Running) {
    throw StateError(fmt::format(
        "cannot open a shell in instance '{}': it is {}{}", info.name, to_string(info.state),
        info.state == InstanceState::Paused ? fmt::format("; `vmfest resume {}` first", info.name)
                                            : fmt::format("; `vmfest start {}` first", info.name)));
  }
  PrivateDirectory scratch;
  const fs::path known_hosts = scratch.path() / "known_hosts";
  {
    std::ifstream host_key(info.host_public_key);
    std::string key;
    if (!std::getline(host_key, key) || key.empty()) {
      throw Error(fmt::format("instance '{}' has no host key in {}; destroy it and create it again",
                              info.name, info.host_public_key.string()));
    }
    std::ofstream(known_hosts) << fmt::format("[{}]:{} {}\n", info.ssh.host, info.ssh.port, key);
  }
  std::vector<std::string> arguments = {"ssh",
                                        "-F",
                                        "/dev/null",
                                        "-i",
                                        info.client_key.string(),
                                        "-o",
                                        "IdentitiesOnly=yes",
                                        "-o",
                                        "StrictHostKeyChecking=yes",
                                        "-o",
                                        "UserKnownHostsFile=" + known_hosts.string(),
                                        "-o",
                                        "GlobalKnownHostsFile=/dev/null",
                                        "-o",
                                        "BatchMode=yes",
                                        "-o",
                                        "LogLevel=ERROR",
                                        "-p",
                                        std::to_string(info.ssh.port)};
  // A guest reachable only through its hypervisor host (a remote hypervisor).
  if (!info.ssh.proxy_command.empty()) {
    arguments.insert(arguments.end(), {"-o", "ProxyCommand=" + info.ssh.proxy_command});
  }
  arguments.push_back(fmt::format("{}@{}", info.ssh.user, info.ssh.host));
  return run_and_wait(arguments);
}

}  // namespace

std::string remote_command_line(const std::vector<std::string>& words) {
  if (words.size() == 1) return words.front();
  std::string line;
  for (const auto& word : words) line += (line.empty() ? "" : " ") + ssh::shell_quote(word);
  return line;
}

int remote_exit_status(const ssh::CommandResult& result) {
  if (!result.signal) return result.exit_status;
  for (int number = 1; number < NSIG; ++number) {
    const char* abbreviation = ::sigabbrev_np(number);
    if (abbreviation != nullptr && *result.signal == abbreviation) return 128 + number;
  }
  return kExitSshFailure;
}

void add_ssh_command(CLI::App& app, Command& command,
                     const std::vector<std::string>& remote_command) {
  auto name = std::make_shared<std::string>();
  CLI::App* sub = app.add_subcommand(
      "ssh",
      "Run a command in a running instance (its stdout, stderr and exit status pass through), "
      "or, without one, open an interactive shell (needs the ssh client)");
  sub->add_option("name", *name, "the instance")->required();
  sub->footer(
      "Usage: vmfest ssh NAME [-- CMD...]\n"
      "After --, one word is a shell command line (-- 'ls /tmp | wc -l'); several are a program\n"
      "and its arguments, passed exactly (-- sh -c 'exit 7'). Standard input is not forwarded to\n"
      "a command; without one, the shell gets the terminal.");
  sub->callback([&command, &remote_command, name] {
    command.failure_status = kExitSshFailure;
    command.usage_status = kExitSshFailure;
    command.run = [&remote_command, name] {
      Instance instance = Instance::open(*name);
      return remote_command.empty() ? open_shell(instance)
                                    : run_remote_command(instance, remote_command);
    };
  });
}

}  // namespace vmfest::cli
