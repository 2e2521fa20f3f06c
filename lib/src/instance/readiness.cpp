// Instance::Impl's waiting until a started guest answers over SSH: the console marker, the SSH
// attempts with the most telling of their errors kept, cloud-init's end, progress reports, and a
// timeout fitted to what boots of the model have taken before.
#include <algorithm>
#include <thread>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "../registry/boot_times.h"
#include "instance_impl.h"

namespace vmfest {
using detail::Clock;
using std::chrono::milliseconds;
using std::chrono::seconds;

namespace {

constexpr seconds kFirstBootTimeout{300};  // no boot of the model recorded yet
constexpr seconds kMinimumTimeout{120};
constexpr seconds kMaximumTimeout{900};
constexpr int kUsualBootMultiple = 5;

// A booted cloud-init guest is ready once cloud-init is done: tests must not race its last
// modules (users, packages, runcmd). A guest without cloud-init answers at once.
constexpr const char* kColdReadyProbe =
    "if command -v cloud-init >/dev/null 2>&1; then cloud-init status --wait >/dev/null 2>&1; "
    "fi; true";

// The errors of the SSH attempts: the most telling one is what the user needs. A refusal or a
// message from the guest says why; a refused connection says the server is not up yet; a timeout
// says nothing, and is what the last, squeezed attempt usually gets.
class AttemptErrors {
 public:
  void note(int rank, std::string text) {
    if (rank >= best_rank_) {
      best_rank_ = rank;
      best_ = text;
    }
    last_ = std::move(text);
  }

  [[nodiscard]] std::string describe() const {
    if (best_.empty()) return "no SSH attempt finished";
    if (best_ == last_) return "last error: " + last_;
    return fmt::format("most telling error: {}; last error: {}", best_, last_);
  }

 private:
  int best_rank_ = 0;
  std::string best_;
  std::string last_;
};

enum Rank { kTimedOut = 1, kConnection = 2, kGuestSaid = 3 };

}  // namespace

seconds Instance::Impl::effective_ready_timeout() const {
  if (ready_timeout.count() > 0) return ready_timeout;
  const auto usual = detail::usual_cold_boot(home, model, machine->accelerator());
  if (!usual) return kFirstBootTimeout;
  return std::clamp(seconds(static_cast<long>(*usual * kUsualBootMultiple) + 1), kMinimumTimeout,
                    kMaximumTimeout);
}

void Instance::Impl::report_progress(const char* phase) {
  if (!on_progress) return;
  const auto now = Clock::now();
  if (now - last_progress < seconds(1)) return;
  last_progress = now;
  StartProgress progress;
  progress.phase = phase;
  progress.elapsed_seconds = std::chrono::duration<double>(now - start_begin).count();
  progress.console_line = detail::tail_lines(machine->console_log(), 1);
  while (!progress.console_line.empty() &&
         (progress.console_line.back() == '\n' || progress.console_line.back() == '\r')) {
    progress.console_line.pop_back();
  }
  try {
    on_progress(progress);
  } catch (const std::exception& error) {
    spdlog::warn("vmfest: the progress callback of instance '{}' failed: {}", record.name,
                 error.what());
  }
}

void Instance::Impl::fail_not_ready(const std::string& why) const {
  const std::string accelerator = machine->accelerator();
  const auto usual = detail::usual_cold_boot(home, model, accelerator);
  const std::string history =
      usual ? fmt::format("a cold boot of this model under {} usually takes {:.0f} s", accelerator,
                          *usual)
            : fmt::format("no earlier boot of this model under {} is recorded", accelerator);
  throw NotReadyError(
      fmt::format("instance '{}' (model '{}', accelerator {}) did not become ready: {} ({}). "
                  "Console log: {}",
                  record.name, model.name, accelerator, why, history,
                  machine->console_log().string()) +
          (accelerator == "kvm"
               ? ". If this host's KVM cannot run the guest, VMFEST_ACCEL=tcg avoids it"
               : ""),
      console_tail(40));
}

// The guest prints the model's marker once sshd listens: no SSH attempt is wasted before it.
void Instance::Impl::wait_for_marker(Clock::time_point deadline, seconds timeout) {
  int checks = 0;
  while (true) {
    std::string console = detail::read_text_if_exists(machine->console_log());
    if (console.find(model.ready_marker) != std::string::npos) return;
    if (Clock::now() >= deadline) {
      fail_not_ready(fmt::format("the guest did not print its ready marker '{}' within {} s",
                                 model.ready_marker, timeout.count()));
    }
    if (++checks % 25 == 0 && machine->state() == InstanceState::Stopped) {
      fail_not_ready("the VM stopped while booting");
    }
    report_progress("boot");
    std::this_thread::sleep_for(milliseconds(10));
  }
}

void Instance::Impl::wait_until_ready(bool cold) {
  const seconds timeout = effective_ready_timeout();
  const auto launched = Clock::now();
  const auto deadline = launched + timeout;
  const bool has_marker = cold && !model.ready_marker.empty();
  if (has_marker) {
    wait_for_marker(deadline, timeout);
    phase_done("console");
  }
  AttemptErrors errors;
  while (Clock::now() < deadline) {
    auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now());
    try {
      ssh::Session attempt = ssh::Session::connect(
          endpoint(), credentials, std::min(left, milliseconds(has_marker ? 10000 : 3000)));
      ssh::RunOptions options;
      options.timeout = std::max(milliseconds(1),
                                 std::chrono::duration_cast<milliseconds>(deadline - Clock::now()));
      attempt.check(cold ? kColdReadyProbe : "true", options);
      session.emplace(std::move(attempt));
      phase_done("ssh");
      if (cold) {
        detail::record_cold_boot(home, model, machine->accelerator(),
                                 std::chrono::duration<double>(Clock::now() - launched).count());
      }
      return;
    } catch (const SshAuthError& error) {
      // After the marker the keys are in place: a refusal will not go away by waiting.
      if (has_marker) throw;
      errors.note(kGuestSaid, error.what());
    } catch (const HostKeyMismatchError& error) {
      if (has_marker) throw;
      errors.note(kGuestSaid, error.what());
    } catch (const CommandFailedError& error) {
      errors.note(kGuestSaid, error.what());
    } catch (const SshTimeoutError& error) {
      errors.note(kTimedOut, error.what());
    } catch (const SshError& error) {
      errors.note(kConnection, error.what());
    }
    if (machine->state() == InstanceState::Stopped) {
      fail_not_ready("the VM stopped while booting");
    }
    report_progress(cold ? "boot" : "ssh");
    std::this_thread::sleep_for(milliseconds(100));
  }
  fail_not_ready(
      fmt::format("no SSH command succeeded within {} s; {}", timeout.count(), errors.describe()));
}

}  // namespace vmfest
