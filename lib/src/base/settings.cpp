#include "settings.h"

#include <algorithm>
#include <cstdlib>

#include <fmt/format.h>

#include "vmfest/error.h"

namespace vmfest::detail {

namespace {
// When the test runner started this process, as near as a library can tell: its load.
const std::chrono::steady_clock::time_point process_begin = std::chrono::steady_clock::now();
}  // namespace

std::optional<long> whole_number_setting(const char* name, long min, long max,
                                         std::string_view unit) {
  const char* configured = std::getenv(name);
  if (configured == nullptr || *configured == '\0') return std::nullopt;
  char* end = nullptr;
  const long value = std::strtol(configured, &end, 10);
  if (*end != '\0' || value < min || value > max) {
    throw InvalidArgument(fmt::format("{}={} is not valid: use a whole number{}{} from {} to {}",
                                      name, configured, unit.empty() ? "" : " ", unit, min, max));
  }
  return value;
}

std::chrono::milliseconds TestBudget::left() const {
  using std::chrono::milliseconds;
  // A tenth of the time, at least 15 s: the error, the artifacts and the destroy fit in it.
  const milliseconds margin = std::max<milliseconds>(std::chrono::seconds(15), timeout / 10);
  const auto kill_at = process_begin + timeout;
  return std::chrono::duration_cast<milliseconds>(kill_at - margin -
                                                  std::chrono::steady_clock::now());
}

std::optional<TestBudget> test_budget() {
  const auto seconds = whole_number_setting("VMFEST_TEST_TIMEOUT", 1, 7 * 86400, "of seconds");
  if (!seconds) return std::nullopt;
  return TestBudget{std::chrono::seconds(*seconds)};
}

std::chrono::milliseconds within_test_budget(std::chrono::milliseconds wait) {
  const auto budget = test_budget();
  if (!budget) return wait;
  return std::min(wait, std::max(budget->left(), std::chrono::milliseconds(1000)));
}

}  // namespace vmfest::detail
