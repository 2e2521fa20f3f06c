// `vmfest run MODEL [--step-file F] [--keep] -- CMD...`: a command in a fresh instance that is
// destroyed afterwards, like `docker run --rm`. The instance is owned by this process (not
// detached): its handle destroys it on every way out, a signal included, and if this process is
// killed outright the reaper (the next create, or `vmfest reap`) removes it.
#include <pthread.h>
#include <signal.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <stop_token>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include "vmfest/error.h"
#include "vmfest/instance.h"
#include "vmfest/provision.h"
#include "vmfest_cli.h"
#include "vmfest_cli_progress.h"

namespace vmfest::cli {
namespace {

// While it lives, SIGINT, SIGTERM and SIGHUP request a stop instead of killing the process, so the
// instance's handle can still destroy the instance; a second one ends the process at once, leaving
// the instance to the reaper. The signals are blocked in every thread (made after this, the
// library's included) and taken by one that waits for them. The library starts its VMs with no
// signal blocked, so a kept VM still stops at a plain `kill`.
class StopOnSignals {
 public:
  StopOnSignals() {
    sigemptyset(&signals_);
    for (int number : {SIGINT, SIGTERM, SIGHUP}) sigaddset(&signals_, number);
    ::pthread_sigmask(SIG_BLOCK, &signals_, &previous_mask_);
    waiter_ = std::thread([this] { wait_for_signals(); });
  }
  StopOnSignals(const StopOnSignals&) = delete;
  StopOnSignals& operator=(const StopOnSignals&) = delete;
  ~StopOnSignals() {
    finished_ = true;
    ::pthread_kill(waiter_.native_handle(), SIGTERM);
    waiter_.join();
    // A signal that came after the end of the waiter acts now, as it would have without us.
    ::pthread_sigmask(SIG_SETMASK, &previous_mask_, nullptr);
  }

  [[nodiscard]] std::stop_token token() const { return stop_.get_token(); }
  // The signal that requested the stop; 0 when none came.
  [[nodiscard]] int signal() const noexcept { return signal_.load(); }

 private:
  void wait_for_signals() {
    for (;;) {
      int number = 0;
      if (::sigwait(&signals_, &number) != 0 || finished_) return;
      if (signal_ != 0) {
        fmt::print(stderr, "vmfest: {} again: exiting now; `vmfest reap` removes the instance\n",
                   ::sigdescr_np(number));
        std::_Exit(128 + number);
      }
      signal_ = number;
      fmt::print(stderr,
                 "vmfest: {}: stopping; the instance is destroyed once what it is doing returns "
                 "(a second signal leaves it to `vmfest reap`)\n",
                 ::sigdescr_np(number));
      stop_.request_stop();
    }
  }

  sigset_t signals_{};
  sigset_t previous_mask_{};
  std::stop_source stop_;
  std::atomic<int> signal_{0};
  std::atomic<bool> finished_{false};
  std::thread waiter_;
};

struct RunArguments {
  std::string model;
  std::string name;
  std::string profile = "micro";
  std::string step_file;
  bool keep = false;
};

void write_out(std::FILE* stream, std::string_view bytes) {
  std::fwrite(bytes.data(), 1, bytes.size(), stream);
  std::fflush(stream);
}

int run_in_fresh_instance(const RunArguments& args, const std::vector<std::string>& words) {
  if (words.empty()) {
    throw InvalidArgument("no command to run: vmfest run MODEL [OPTIONS] -- CMD...");
  }
  InstanceRequest request;
  request.model = args.model;
  request.name = args.name;
  request.profile = Profile::named(args.profile);
  if (!args.step_file.empty()) request.provision = read_step_file(args.step_file);

  StopOnSignals signals;  // outlives the instance, so a signal during its destruction waits
  auto interrupted = [&](Instance& instance) {
    instance.destroy();
    fmt::print(stderr, "vmfest: instance '{}' is destroyed after SIG{}\n", instance.name(),
               ::sigabbrev_np(signals.signal()));
    return 128 + signals.signal();
  };
  Instance instance = Instance::create(request);
  {
    TerminalProgress progress(instance);
    instance.start();
  }
  if (signals.signal() != 0) return interrupted(instance);

  ssh::RunOptions options;
  options.capture_output = false;
  options.on_stdout_bytes = [](std::string_view bytes) { write_out(stdout, bytes); };
  options.on_stderr_bytes = [](std::string_view bytes) { write_out(stderr, bytes); };
  options.stop = signals.token();
  ssh::CommandResult result;
  try {
    result = instance.ssh().run(remote_command_line(words), options);
  } catch (const SshError&) {
    if (signals.signal() != 0) return interrupted(instance);
    throw;
  }
  const int status = remote_exit_status(result);
  if (status != 0 && args.keep) {
    instance.keep();
    fmt::print(stderr,
               "vmfest: the command exited with status {}; instance '{}' is kept: reach it with "
               "`vmfest ssh {}`, remove it with `vmfest destroy {}`\n",
               status, instance.name(), instance.name(), instance.name());
  }
  return status;
}

}  // namespace

void add_run_command(CLI::App& app, Command& command,
                     const std::vector<std::string>& remote_command) {
  auto args = std::make_shared<RunArguments>();
  CLI::App* sub = app.add_subcommand(
      "run",
      "Run a command in a fresh instance of a model (warm when possible), its output passed "
      "through, then destroy the instance and exit with the command's status");
  sub->add_option("model", args->model, "the model to clone (`vmfest models`)")->required();
  sub->add_option("--name", args->name,
                  "the instance's name, 1-64 characters of [A-Za-z0-9._-] (default: "
                  "MODEL-<random>)");
  sub->add_option("-p,--profile", args->profile,
                  "micro (256 MiB, 1 CPU), small (512 MiB, 1), medium (1024 MiB, 2) or large "
                  "(2048 MiB, 2)")
      ->capture_default_str();
  sub->add_option("--step-file", args->step_file,
                  "provisioning steps, one a line: `run CMD...`, `upload SRC DST` (SRC relative "
                  "to the file's folder), `reboot`; saved as a layer that later runs resume");
  sub->add_flag("--keep", args->keep,
                "keep the instance when the command fails (non-zero status) and say how to reach "
                "it");
  sub->footer(
      "Usage: vmfest run MODEL [OPTIONS] -- CMD...\n"
      "CMD as for `vmfest ssh`: one word is a shell command line, several a program and its\n"
      "arguments. Standard input is not forwarded. Exit status: CMD's; 255 when vmfest fails, 2\n"
      "for a usage error (a malformed step file too), 128+N after signal N (the instance is\n"
      "destroyed first).");
  sub->callback([&command, &remote_command, args] {
    command.failure_status = kExitSshFailure;
    command.run = [&remote_command, args] { return run_in_fresh_instance(*args, remote_command); };
  });
}

}  // namespace vmfest::cli
