#include "settings.h"

#include <algorithm>
#include <cstdlib>
#include <string_view>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "vmfest/error.h"

namespace vmfest::detail {

namespace {
// When the test runner started this process, as near as a library can tell: its load.
const std::chrono::steady_clock::time_point process_begin = std::chrono::steady_clock::now();
}  // namespace

std::filesystem::path host_cache_root() {
  if (const char* dir = std::getenv("VMFEST_CACHE_DIR"); dir != nullptr && *dir != '\0') {
    return dir;
  }
  if (const char* xdg = std::getenv("XDG_CACHE_HOME"); xdg != nullptr && *xdg != '\0') {
    return std::filesystem::path(xdg) / "vmfest";
  }
  const char* home = std::getenv("HOME");
  return std::filesystem::path(home != nullptr ? home : "/tmp") / ".cache" / "vmfest";
}

std::vector<std::filesystem::path> default_model_bundles() {
  std::vector<std::filesystem::path> bundles;
  std::error_code error;
  for (const auto& bundle :
       std::filesystem::directory_iterator(host_cache_root() / "default-model", error)) {
    if (std::filesystem::exists(bundle.path() / ".complete")) bundles.push_back(bundle.path());
  }
  return bundles;
}

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

std::optional<spdlog::level::level_enum> log_level_setting() {
  const char* wanted = std::getenv("VMFEST_LOG");
  if (wanted == nullptr || *wanted == '\0') return std::nullopt;
  const spdlog::level::level_enum level = spdlog::level::from_str(wanted);
  if (level == spdlog::level::off && std::string_view(wanted) != "off") {  // from_str's "unknown"
    spdlog::warn("vmfest: VMFEST_LOG={} is not a log level (trace, debug, info, warn, error, off)",
                 wanted);
    return std::nullopt;
  }
  return level;
}

namespace {

// Before main, so a test binary's or bench's first line already obeys it. Any program that
// links vmfest links this file: every start of a VM reads its settings.
const bool log_level_applied = [] {
  if (const auto level = log_level_setting()) spdlog::set_level(*level);
  return true;
}();

}  // namespace

}  // namespace vmfest::detail
