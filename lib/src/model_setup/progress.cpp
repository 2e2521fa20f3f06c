#include "progress.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>

#include <fmt/format.h>

namespace vmfest::detail {
using namespace std::chrono_literals;

namespace {

std::string human_duration(double seconds) {
  const auto total = static_cast<long>(seconds + 0.5);
  if (total >= 3600)
    return fmt::format("{}:{:02}:{:02}", total / 3600, total / 60 % 60, total % 60);
  return fmt::format("{}:{:02}", total / 60, total % 60);
}

}  // namespace

std::string human_bytes(std::uint64_t bytes) {
  const double value = static_cast<double>(bytes);
  if (bytes < (1u << 20)) return fmt::format("{:.1f} KiB", value / 1024);
  if (bytes < (1u << 30)) return fmt::format("{:.1f} MiB", value / (1 << 20));
  return fmt::format("{:.2f} GiB", value / (1 << 30));
}

ProgressReporter::ProgressReporter(std::string what, std::function<void(const Progress&)> callback)
    : what_(std::move(what)), callback_(std::move(callback)) {
  const char* ci = std::getenv("CI");
  const char* term = std::getenv("TERM");
  terminal_ = !callback_ && ::isatty(STDERR_FILENO) == 1 &&
              !(ci != nullptr && std::string(ci) == "true") &&
              !(term != nullptr && std::string(term) == "dumb");
}

ProgressReporter::~ProgressReporter() {
  if (terminal_ && shown_)
    std::fputs("\n", stderr);  // an error message must not share the bar's line
}

void ProgressReporter::start(std::uint64_t already_have) {
  progress_.bytes = already_have;
  rate_origin_bytes_ = already_have;
  rate_origin_ = Clock::now();
}

void ProgressReporter::update(std::uint64_t bytes, std::optional<std::uint64_t> total) {
  progress_.bytes = bytes;
  if (total) progress_.total = total;
  const auto now = Clock::now();
  const auto since_start = now - rate_origin_;
  const auto since_emit = now - last_emit_;
  const bool due = callback_   ? since_emit >= 100ms
                   : terminal_ ? since_start >= 500ms && since_emit >= 100ms
                               : since_start >= 1s && since_emit >= 5s;
  if (!due) return;
  last_emit_ = now;
  emit(false);
}

void ProgressReporter::finish() {
  if (callback_ || shown_) emit(true);
  if (terminal_ && shown_) std::fputs("\n", stderr);
  shown_ = false;
}

void ProgressReporter::emit(bool final) {
  if (callback_) {
    callback_(progress_);
    return;
  }
  const double seconds = std::chrono::duration<double>(Clock::now() - rate_origin_).count();
  const double rate =
      seconds > 0 ? static_cast<double>(progress_.bytes - rate_origin_bytes_) / seconds : 0.0;
  const std::string rate_text = human_bytes(static_cast<std::uint64_t>(rate)) + "/s";
  const std::optional<std::uint64_t> total = progress_.total;
  const double fraction =
      total && *total > 0 ? static_cast<double>(progress_.bytes) / static_cast<double>(*total) : 0;
  const std::string eta = total && rate > 0 && *total >= progress_.bytes
                              ? human_duration(static_cast<double>(*total - progress_.bytes) / rate)
                              : "?";
  shown_ = true;
  if (terminal_) {
    constexpr int kWidth = 24;
    const int filled = std::clamp(static_cast<int>(fraction * kWidth), 0, kWidth);
    const std::string amount =
        total ? fmt::format("{}/{}", human_bytes(progress_.bytes), human_bytes(*total))
              : human_bytes(progress_.bytes);
    const std::string bar =
        total ? fmt::format("[{}{}] {:3.0f}% ", std::string(static_cast<std::size_t>(filled), '#'),
                            std::string(static_cast<std::size_t>(kWidth - filled), '-'),
                            100 * fraction)
              : std::string();
    fmt::print(stderr, "\rvmfest: {} {}{}  {}  ETA {}\x1b[K", what_, bar, amount, rate_text,
               final ? "0:00" : eta);
  } else if (final) {
    fmt::print(stderr, "vmfest: {}: done, {} in {:.1f} s ({})\n", what_,
               human_bytes(progress_.bytes), seconds, rate_text);
  } else if (total) {
    fmt::print(stderr, "vmfest: {}: {} of {} ({:.0f}%), {}, ETA {}\n", what_,
               human_bytes(progress_.bytes), human_bytes(*total), 100 * fraction, rate_text, eta);
  } else {
    fmt::print(stderr, "vmfest: {}: {}, {}\n", what_, human_bytes(progress_.bytes), rate_text);
  }
  std::fflush(stderr);
}

}  // namespace vmfest::detail
