#include "start_clock.h"

#include <spdlog/spdlog.h>

#include "../base/files.h"

namespace vmfest::detail {

namespace {
double seconds_between(Clock::time_point from, Clock::time_point to) {
  return std::chrono::duration<double>(to - from).count();
}
}  // namespace

void StartClock::begin(std::string instance) {
  const auto now = Clock::now();
  instance_ = std::move(instance);
  phases_.clear();
  begin_ = now;
  phase_begin_ = now;
  last_progress_ = now;
  last_phase_.clear();
}

void StartClock::phase_done(const char* name) {
  const auto now = Clock::now();
  phases_.push_back({name, seconds_between(phase_begin_, now), std::chrono::system_clock::now()});
  phase_begin_ = now;
  spdlog::debug("instance {}: start phase '{}' took {:.3f} s", instance_, name,
                phases_.back().seconds);
}

void StartClock::finish() { boot_seconds_ = seconds_between(begin_, Clock::now()); }

void StartClock::report_progress(const char* phase, const std::filesystem::path& console_log) {
  if (!on_progress_) return;
  const auto now = Clock::now();
  // A new phase is news; the same one again, once a second at most.
  if (phase == last_phase_ && now - last_progress_ < std::chrono::seconds(1)) return;
  last_progress_ = now;
  last_phase_ = phase;
  StartProgress progress;
  progress.phase = phase;
  progress.elapsed_seconds = seconds_between(begin_, now);
  progress.console_line = tail_lines(console_log, 1);
  while (!progress.console_line.empty() &&
         (progress.console_line.back() == '\n' || progress.console_line.back() == '\r')) {
    progress.console_line.pop_back();
  }
  try {
    on_progress_(progress);
  } catch (const std::exception& error) {
    spdlog::warn("vmfest: the progress callback of instance '{}' failed: {}", instance_,
                 error.what());
  }
}

}  // namespace vmfest::detail
