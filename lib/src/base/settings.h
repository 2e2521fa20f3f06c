// Settings read from the environment (VMFEST_*).
#pragma once

#include <chrono>
#include <filesystem>
#include <optional>
#include <string_view>
#include <vector>

#include <spdlog/common.h>

namespace vmfest::detail {

// ${VMFEST_CACHE_DIR:-${XDG_CACHE_HOME:-~/.cache}/vmfest}: what vmfest learns about this host, per
// user and for every VMFEST_HOME (accelerator decisions, the hypervisor's answers, the default
// model's bundles).
std::filesystem::path host_cache_root();
// The complete bundles of the default model (tools/build-default-model.sh) in host_cache_root().
std::vector<std::filesystem::path> default_model_bundles();

// The whole number in environment variable `name`; nullopt when it is unset or empty.
// InvalidArgument, naming the variable, its value and the range, when it is not a whole number
// from `min` to `max`. `unit` completes the message: "of seconds" gives "use a whole number of
// seconds from 1 to 3600".
std::optional<long> whole_number_setting(const char* name, long min, long max,
                                         std::string_view unit = "");

// $VMFEST_TEST_TIMEOUT: the seconds a test runner (ctest, through vmfest_add_tests) gives this
// process before it kills it without a word. vmfest's own waits end before that, so that a test
// fails with vmfest's error, its console tail and its artifacts instead.
struct TestBudget {
  std::chrono::seconds timeout;
  // What is left for waiting: the time to the kill, less a margin to fail, report and clean up.
  [[nodiscard]] std::chrono::milliseconds left() const;
};
std::optional<TestBudget> test_budget();
// `wait` bounded by what the test budget leaves (at least 1 s), if there is one.
std::chrono::milliseconds within_test_budget(std::chrono::milliseconds wait);

// $VMFEST_LOG (trace, debug, info, warn, error, off): the level of vmfest's log in every program
// linked with it (test binaries, benches), as -v is for the CLI. Applied once before main; the
// default logger's level otherwise. nullopt when unset; an unknown name is warned about, ignored.
std::optional<spdlog::level::level_enum> log_level_setting();

}  // namespace vmfest::detail
