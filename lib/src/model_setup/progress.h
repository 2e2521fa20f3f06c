// How far the fetch of a model's source has got: the caller's callback, a bar on a terminal, or
// a line now and then for logs.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>

#include "vmfest/model.h"

namespace vmfest::detail {

// "512.0 KiB", "3.5 MiB", "1.25 GiB".
std::string human_bytes(std::uint64_t bytes);

// Progress of one source: the caller's callback if given, else a bar on a terminal (stderr is a
// TTY and CI is not "true"), else a plain line every few seconds for logs.
class ProgressReporter {
 public:
  ProgressReporter(std::string what, std::function<void(const Progress&)> callback);
  ProgressReporter(const ProgressReporter&) = delete;
  ProgressReporter& operator=(const ProgressReporter&) = delete;
  ~ProgressReporter();

  // Bytes from here on count towards the rate (those before were kept from an earlier call).
  void start(std::uint64_t already_have);
  void update(std::uint64_t bytes, std::optional<std::uint64_t> total);
  // The source has been read completely.
  void finish();

 private:
  using Clock = std::chrono::steady_clock;
  void emit(bool final);

  std::string what_;
  std::function<void(const Progress&)> callback_;
  bool terminal_ = false;
  Progress progress_;
  std::uint64_t rate_origin_bytes_ = 0;
  Clock::time_point rate_origin_ = Clock::now();
  Clock::time_point last_emit_;
  bool shown_ = false;  // something was printed (so a closing line/newline is due)
};

}  // namespace vmfest::detail
