// The clock of one start(): its phases and how long each took, the progress reports a caller
// asked for, and how long the whole start took.
#pragma once

#include <chrono>
#include <filesystem>
#include <string>
#include <vector>

#include "vmfest/instance.h"

namespace vmfest::detail {

using Clock = std::chrono::steady_clock;

class StartClock {
 public:
  // A start of `instance` begins now: the phases of the last one are forgotten.
  void begin(std::string instance);
  // Ends the current phase under `name` and begins the next.
  void phase_done(const char* name);
  // The whole start is done: boot_seconds() is how long it took.
  void finish();
  // Tells the progress callback what the start waits for (at once when that changed, else at most
  // once a second), with the last line of `console_log`.
  void report_progress(const char* phase, const std::filesystem::path& console_log);

  void on_progress(StartProgressCallback callback) { on_progress_ = std::move(callback); }
  [[nodiscard]] const std::vector<StartPhase>& phases() const noexcept { return phases_; }
  [[nodiscard]] double boot_seconds() const noexcept { return boot_seconds_; }

 private:
  std::string instance_;
  std::vector<StartPhase> phases_;
  Clock::time_point begin_;
  Clock::time_point phase_begin_;
  Clock::time_point last_progress_;
  std::string last_phase_;
  StartProgressCallback on_progress_;
  double boot_seconds_ = 0;
};

}  // namespace vmfest::detail
