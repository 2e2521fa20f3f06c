#include "settings.h"

#include <cstdlib>

#include <fmt/format.h>

#include "vmfest/error.h"

namespace vmfest::detail {

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

}  // namespace vmfest::detail
