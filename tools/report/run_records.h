// The records of a test run (one JSON line per instance, written by the GoogleTest plugin under
// $VMFEST_ARTIFACTS/records), read back for `vmfest report`, and the time each phase took.
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace vmfest::report {

struct PhaseSpan {
  std::string phase;       // "slot", "launch", "console", "test", ... (fixtures/src/run_timeline.h)
  long long begin_ms = 0;  // wall clock, epoch milliseconds
  long long end_ms = 0;
};

struct InstanceRun {
  std::string test;
  std::string instance;
  std::string model;
  std::string image;  // "cold", "warm", "layer", "warm build", "layer build", "none"
  bool kept = false;
  std::vector<PhaseSpan> phases;  // back to back, in order
  std::string source;             // "file:line", for messages

  [[nodiscard]] long long begin_ms() const { return phases.front().begin_ms; }
  [[nodiscard]] long long end_ms() const { return phases.back().end_ms; }
};

struct RunRecords {
  std::vector<InstanceRun> instances;  // ordered by when they began
  std::vector<std::string> warnings;   // "file:line: why the line was skipped"
  std::size_t files = 0;
};

// One record line; nullopt with `problem` set when it is not a valid record.
std::optional<InstanceRun> parse_record_line(std::string_view line, std::string& problem);

// Every record file (*.jsonl) under `folder`, recursively. Error (vmfest/error.h) when the folder
// does not exist or holds no valid record; a line that is no record is skipped with a warning.
RunRecords read_run_records(const std::filesystem::path& folder);

struct PhaseTotal {
  std::string phase;
  long long ms = 0;
  double share = 0;  // of the summed instance time, 0..1
};

// Each phase's time summed over the instances, with its share of the summed instance time; in the
// order of kPhases (phases.h), then phases it does not know by name.
std::vector<PhaseTotal> phase_totals(const std::vector<InstanceRun>& instances);
// The time of every instance, create to destroy, summed.
long long summed_instance_ms(const std::vector<InstanceRun>& instances);

}  // namespace vmfest::report
