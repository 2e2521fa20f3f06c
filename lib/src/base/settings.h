// Settings read from the environment (VMFEST_*).
#pragma once

#include <optional>
#include <string_view>

namespace vmfest::detail {

// The whole number in environment variable `name`; nullopt when it is unset or empty.
// InvalidArgument, naming the variable, its value and the range, when it is not a whole number
// from `min` to `max`. `unit` completes the message: "of seconds" gives "use a whole number of
// seconds from 1 to 3600".
std::optional<long> whole_number_setting(const char* name, long min, long max,
                                         std::string_view unit = "");

}  // namespace vmfest::detail
