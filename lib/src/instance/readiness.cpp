#include "readiness.h"

#include <algorithm>
#include <optional>
#include <thread>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "../base/files.h"
#include "../base/settings.h"
#include "../registry/boot_times.h"
#include "vmfest/error.h"

namespace vmfest::detail {
using std::chrono::milliseconds;
using std::chrono::seconds;

namespace {

constexpr seconds kFirstBootTimeout{300};  // no boot of the model recorded yet
constexpr seconds kMinimumTimeout{120};
constexpr seconds kMaximumTimeout{900};
constexpr int kUsualBootMultiple = 5;
// How long refusals of final credentials may go on: a guest whose SSH server has started refuses
// every login with PAM's nologin until its boot has finished.
constexpr seconds kRefusalGrace{30};

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

seconds ReadinessWaiter::timeout() const { return within_budget(wanted_timeout()); }

seconds ReadinessWaiter::within_budget(seconds wanted) {
  return std::max(seconds(1), std::chrono::duration_cast<seconds>(within_test_budget(wanted)));
}

seconds ReadinessWaiter::wanted_timeout() const {
  if (requested_.count() > 0) return requested_;
  const auto usual = usual_cold_boot(guest_.home, guest_.model, guest_.machine.accelerator());
  if (!usual) return kFirstBootTimeout;
  return std::clamp(seconds(static_cast<long>(*usual * kUsualBootMultiple) + 1), kMinimumTimeout,
                    kMaximumTimeout);
}

void ReadinessWaiter::fail(const std::string& why) const {
  const Model& model = guest_.model;
  const std::string accelerator = guest_.machine.accelerator();
  const auto usual = usual_cold_boot(guest_.home, model, accelerator);
  const std::string history =
      usual ? fmt::format("a cold boot of this model under {} usually takes {:.0f} s", accelerator,
                          *usual)
            : fmt::format("no earlier boot of this model under {} is recorded", accelerator);
  throw NotReadyError(
      fmt::format("instance '{}' (model '{}', accelerator {}) did not become ready: {} ({}{}). "
                  "Console log: {}",
                  guest_.instance, model.name, accelerator, why, history, budget_note_,
                  guest_.machine.console_log().string()) +
          (accelerator == "kvm"
               ? ". If this host's KVM cannot run the guest, VMFEST_ACCEL=tcg avoids it"
               : ""),
      tail_lines(guest_.machine.console_log(), 40));
}

// The guest prints the model's marker once sshd listens: no SSH attempt is wasted before it.
void ReadinessWaiter::wait_for_marker(Clock::time_point deadline, seconds timeout) {
  const std::string& marker = guest_.model.ready_marker;
  int checks = 0;
  while (true) {
    std::string console = read_text_if_exists(guest_.machine.console_log());
    if (console.find(marker) != std::string::npos) return;
    if (Clock::now() >= deadline) {
      fail(fmt::format("the guest did not print its ready marker '{}' within {} s", marker,
                       timeout.count()));
    }
    if (++checks % 25 == 0 && guest_.machine.state() == InstanceState::Stopped) {
      fail("the VM stopped while booting");
    }
    clock_.report_progress("boot", guest_.machine.console_log());
    std::this_thread::sleep_for(milliseconds(10));
  }
}

ssh::Session ReadinessWaiter::wait(bool cold) {
  const seconds wanted = wanted_timeout();  // reads the model's boot times once
  const seconds timeout = within_budget(wanted);
  if (timeout < wanted) {
    budget_note_ = fmt::format(
        "; vmfest cut its wait from {} s to {} s to fail before the test runner's timeout "
        "(VMFEST_TEST_TIMEOUT={})",
        wanted.count(), timeout.count(), test_budget()->timeout.count());
  }
  const auto launched = Clock::now();
  const auto deadline = launched + timeout;
  const bool has_marker = cold && !guest_.model.ready_marker.empty();
  if (has_marker) {
    wait_for_marker(deadline, timeout);
    clock_.phase_done("console");
  }
  AttemptErrors errors;
  std::optional<Clock::time_point> first_refusal;
  while (Clock::now() < deadline) {
    auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now());
    try {
      ssh::Session attempt =
          ssh::Session::connect(guest_.endpoint, guest_.credentials,
                                std::min(left, milliseconds(has_marker ? 10000 : 3000)));
      ssh::RunOptions options;
      options.timeout = std::max(milliseconds(1),
                                 std::chrono::duration_cast<milliseconds>(deadline - Clock::now()));
      attempt.check(cold ? kColdReadyProbe : "true", options);
      clock_.phase_done("ssh");
      if (cold) {
        record_cold_boot(guest_.home, guest_.model, guest_.machine.accelerator(),
                         std::chrono::duration<double>(Clock::now() - launched).count());
      }
      return attempt;
    } catch (const SshAuthError& error) {
      // After the marker the keys are in place: a refusal will not go away by waiting.
      if (has_marker) throw;
      if (guest_.refusal_is_final) {
        if (!first_refusal) first_refusal = Clock::now();
        if (Clock::now() - *first_refusal >= kRefusalGrace) throw;
      }
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
    if (guest_.machine.state() == InstanceState::Stopped) fail("the VM stopped while booting");
    clock_.report_progress(cold ? "boot" : "ssh", guest_.machine.console_log());
    std::this_thread::sleep_for(milliseconds(100));
  }
  fail(fmt::format("no SSH command succeeded within {} s; {}", timeout.count(), errors.describe()));
}

}  // namespace vmfest::detail
