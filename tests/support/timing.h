// Test and bench support: how long something took, and the median of repeated measurements.
#pragma once

#include <algorithm>
#include <chrono>
#include <vector>

namespace vmfest::testing {

using Clock = std::chrono::steady_clock;

inline double seconds_since(Clock::time_point begin) {
  return std::chrono::duration<double>(Clock::now() - begin).count();
}

// The middle value, or the mean of the middle two; `values` must not be empty.
inline double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  const std::size_t n = values.size();
  return n % 2 == 1 ? values[n / 2] : (values[n / 2 - 1] + values[n / 2]) / 2;
}

}  // namespace vmfest::testing
