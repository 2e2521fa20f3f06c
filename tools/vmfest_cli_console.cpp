// `vmfest console NAME [-f]`: an instance's serial console log, and `vmfest port NAME GUEST_PORT`:
// a host port on 127.0.0.1 forwarded to the guest. Both go through the library's instance handle,
// which asks the instance's backend.
#include <signal.h>
#include <time.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <thread>

#include <fmt/format.h>

#include "vmfest/error.h"
#include "vmfest/instance.h"
#include "vmfest/internal/driver.h"
#include "vmfest_cli.h"

namespace vmfest::cli {
namespace {
namespace fs = std::filesystem;
using std::chrono::milliseconds;

constexpr milliseconds kFollowPoll{200};
constexpr milliseconds kLivenessPoll{1000};

bool running_or_paused(InstanceState state) {
  return state == InstanceState::Running || state == InstanceState::Paused;
}

// False once the instance is destroyed (its folder gone) or its VM no longer runs.
bool still_there(const Instance& instance) {
  if (!fs::exists(instance.directory())) return false;
  try {
    return running_or_paused(instance.state());
  } catch (const Error&) {
    if (!fs::exists(instance.directory())) return false;  // destroyed while we asked
    throw;
  }
}

// Copies what `log` holds beyond where it was read to stdout; true when there was some.
bool copy_new_text(std::ifstream& log) {
  char buffer[8192];
  bool copied = false;
  while (log.read(buffer, sizeof buffer) || log.gcount() > 0) {
    std::fwrite(buffer, 1, static_cast<std::size_t>(log.gcount()), stdout);
    copied = true;
  }
  log.clear();  // at the end for now: later reads see what the guest writes
  std::fflush(stdout);
  return copied;
}

int print_console(const std::string& name, bool follow) {
  const Instance instance = Instance::open(name);
  const fs::path path = instance.console_log();
  std::ifstream log(path, std::ios::binary);
  if (!log && !follow) {
    throw StateError(fmt::format(
        "instance '{}' has no console log yet ({}): it has not been started; `vmfest start {}`",
        name, path.string(), name));
  }
  copy_new_text(log);
  if (!follow) return 0;
  auto last_check = std::chrono::steady_clock::now();
  while (true) {
    if (!log.is_open()) log.open(path, std::ios::binary);  // not started yet when we began
    if (log.is_open() && copy_new_text(log)) continue;
    if (std::chrono::steady_clock::now() - last_check >= kLivenessPoll) {
      if (!still_there(instance)) {
        if (log.is_open()) copy_new_text(log);  // its last words
        return 0;
      }
      last_check = std::chrono::steady_clock::now();
    }
    std::this_thread::sleep_for(kFollowPoll);
  }
}

void add_console_command(CLI::App& app, Command& command) {
  auto name = std::make_shared<std::string>();
  auto follow = std::make_shared<bool>(false);
  CLI::App* sub = app.add_subcommand(
      "console",
      "Print an instance's serial console log (the kernel's and init's messages; a warm clone's "
      "starts where it resumed, `vmfest create --cold` logs a whole boot)");
  sub->add_option("name", *name, "the instance")->required();
  sub->add_flag("-f,--follow", *follow,
                "keep printing what the guest writes until the instance stops or is destroyed "
                "(or Ctrl-C)");
  sub->callback([&command, name, follow] {
    command.run = [name, follow] { return print_console(*name, *follow); };
  });
}

// Blocks the signals that end a forward, so they wait for sigtimedwait() instead of killing us
// between making the forward and removing it.
class BlockedStopSignals {
 public:
  BlockedStopSignals() {
    sigemptyset(&signals_);
    for (int signal : {SIGINT, SIGTERM, SIGHUP}) sigaddset(&signals_, signal);
    ::pthread_sigmask(SIG_BLOCK, &signals_, &previous_);
  }
  BlockedStopSignals(const BlockedStopSignals&) = delete;
  BlockedStopSignals& operator=(const BlockedStopSignals&) = delete;
  ~BlockedStopSignals() { ::pthread_sigmask(SIG_SETMASK, &previous_, nullptr); }

  // True when one arrived within `timeout`.
  bool wait(milliseconds timeout) const {
    const timespec limit{static_cast<time_t>(timeout.count() / 1000),
                         static_cast<long>(timeout.count() % 1000) * 1000000L};
    return ::sigtimedwait(&signals_, nullptr, &limit) > 0;
  }

 private:
  sigset_t signals_{};
  sigset_t previous_{};
};

// How each backend of this program forwards a port, or that it cannot.
std::string port_forward_methods() {
  std::string text = "How each backend forwards the port:";
  for (const std::string& backend : detail::backend_names()) {
    const detail::Capabilities capabilities = detail::make_backend(backend)->capabilities();
    text += fmt::format(
        "\n  {}: {}", backend,
        capabilities.port_forwards ? capabilities.how_port_forwards : "cannot (an error says so)");
  }
  return text;
}

struct PortArguments {
  std::string name;
  int guest_port = 0;
  int host_port = 0;
  bool detach = false;
};

int forward_port(const PortArguments& args) {
  Instance instance = Instance::open(args.name);
  const BlockedStopSignals stop_signals;
  const int port = instance.forward_port(args.guest_port, args.host_port);
  fmt::print("{}\n", port);
  std::fflush(stdout);
  if (args.detach) {
    fmt::print(stderr, "127.0.0.1:{} forwards to port {} of instance '{}' until it stops\n", port,
               args.guest_port, args.name);
    return 0;
  }
  fmt::print(stderr, "127.0.0.1:{} forwards to port {} of instance '{}'; Ctrl-C ends it\n", port,
             args.guest_port, args.name);
  while (!stop_signals.wait(kLivenessPoll)) {
    if (!still_there(instance)) {
      throw StateError(fmt::format("instance '{}' stopped, and with it the forward of 127.0.0.1:{}",
                                   args.name, port));
    }
  }
  instance.remove_port_forward(port);
  return 0;
}

void add_port_command(CLI::App& app, Command& command) {
  auto args = std::make_shared<PortArguments>();
  CLI::App* sub = app.add_subcommand(
      "port",
      "Forward a TCP port on 127.0.0.1 to a port of a running instance, and print the host "
      "port; the forward lasts until Ctrl-C (or SIGTERM), or with --detach until the instance "
      "stops");
  sub->add_option("name", args->name, "the instance")->required();
  sub->add_option("guest_port", args->guest_port, "the guest's TCP port")
      ->required()
      ->check(CLI::Range(1, 65535));
  sub->add_option("--host-port", args->host_port, "the port on 127.0.0.1 (default: a free one)")
      ->check(CLI::Range(1, 65535));
  sub->add_flag("--detach", args->detach,
                "return at once and leave the forward to the instance, until it stops");
  sub->footer(port_forward_methods());
  sub->callback([&command, args] { command.run = [args] { return forward_port(*args); }; });
}

}  // namespace

void add_console_commands(CLI::App& app, Command& command) {
  add_console_command(app, command);
  add_port_command(app, command);
}

}  // namespace vmfest::cli
