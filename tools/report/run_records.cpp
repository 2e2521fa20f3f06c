#include "run_records.h"

#include <algorithm>
#include <fstream>
#include <map>
#include <system_error>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "phases.h"
#include "vmfest/error.h"

namespace vmfest::report {
namespace fs = std::filesystem;

namespace {

using nlohmann::json;

bool string_field(const json& record, const char* key, std::string& into, std::string& problem) {
  const auto found = record.find(key);
  if (found == record.end() || !found->is_string()) {
    problem = fmt::format("no text field \"{}\"", key);
    return false;
  }
  into = found->get<std::string>();
  return true;
}

bool time_field(const json& span, const char* key, long long& into, std::string& problem) {
  const auto found = span.find(key);
  if (found == span.end() || !found->is_number_integer()) {
    problem = fmt::format("a phase without a whole number \"{}\"", key);
    return false;
  }
  into = found->get<long long>();
  return true;
}

std::size_t phase_rank(std::string_view phase) {
  const auto known = std::find_if(kPhases.begin(), kPhases.end(),
                                  [phase](const PhaseStyle& style) { return style.name == phase; });
  return static_cast<std::size_t>(known - kPhases.begin());  // unknown: after every known one
}

std::vector<fs::path> record_files(const fs::path& folder) {
  std::error_code error;
  if (!fs::is_directory(folder, error)) {
    throw Error(
        fmt::format("{} is not a folder of run records; pass the folder the "
                    "tests wrote them to ($VMFEST_ARTIFACTS/records, by default "
                    "<build>/vmfest-artifacts/records)",
                    folder.string()));
  }
  std::vector<fs::path> files;
  for (fs::recursive_directory_iterator it(folder, error), end; !error && it != end;
       it.increment(error)) {
    if (it->is_regular_file() && it->path().extension() == ".jsonl") files.push_back(it->path());
  }
  if (error) {
    throw Error(
        fmt::format("cannot list the run records in {}: {}", folder.string(), error.message()));
  }
  std::sort(files.begin(), files.end());
  return files;
}

}  // namespace

std::optional<InstanceRun> parse_record_line(std::string_view line, std::string& problem) {
  const json record = json::parse(line, nullptr, false);
  if (record.is_discarded() || !record.is_object()) {
    problem = "not a JSON object (cut short?)";
    return std::nullopt;
  }
  if (record.value("version", 0) != 1) {
    problem = "not a version 1 run record";
    return std::nullopt;
  }
  InstanceRun run;
  if (!string_field(record, "test", run.test, problem) ||
      !string_field(record, "instance", run.instance, problem) ||
      !string_field(record, "model", run.model, problem) ||
      !string_field(record, "image", run.image, problem)) {
    return std::nullopt;
  }
  run.kept = record.value("kept", false);
  const auto phases = record.find("phases");
  if (phases == record.end() || !phases->is_array() || phases->empty()) {
    problem = "no phases";
    return std::nullopt;
  }
  for (const json& span : *phases) {
    PhaseSpan phase;
    if (!span.is_object() || !string_field(span, "phase", phase.phase, problem) ||
        !time_field(span, "begin_ms", phase.begin_ms, problem) ||
        !time_field(span, "end_ms", phase.end_ms, problem)) {
      if (problem.empty()) problem = "a phase that is not an object";
      return std::nullopt;
    }
    if (phase.end_ms < phase.begin_ms) {
      problem = fmt::format("phase \"{}\" ends before it begins", phase.phase);
      return std::nullopt;
    }
    run.phases.push_back(std::move(phase));
  }
  return run;
}

RunRecords read_run_records(const fs::path& folder) {
  RunRecords records;
  const std::vector<fs::path> files = record_files(folder);
  records.files = files.size();
  for (const fs::path& file : files) {
    std::ifstream in(file);
    if (!in) {
      records.warnings.push_back(fmt::format("{}: cannot be read; skipped", file.string()));
      continue;
    }
    std::string line;
    for (std::size_t number = 1; std::getline(in, line); ++number) {
      if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
      std::string problem;
      std::optional<InstanceRun> run = parse_record_line(line, problem);
      const std::string source = fmt::format("{}:{}", file.string(), number);
      if (!run) {
        records.warnings.push_back(fmt::format("{}: {}; skipped", source, problem));
        continue;
      }
      run->source = source;
      records.instances.push_back(std::move(*run));
    }
  }
  if (records.instances.empty()) {
    throw Error(fmt::format(
        "no run records in {} ({} record file(s){}); tests that use the vmfest "
        "fixtures write them to $VMFEST_ARTIFACTS/records",
        folder.string(), files.size(),
        records.warnings.empty() ? ""
                                 : fmt::format(", {} unreadable line(s), the first at {}",
                                               records.warnings.size(), records.warnings.front())));
  }
  std::stable_sort(
      records.instances.begin(), records.instances.end(),
      [](const InstanceRun& a, const InstanceRun& b) { return a.begin_ms() < b.begin_ms(); });
  return records;
}

long long summed_instance_ms(const std::vector<InstanceRun>& instances) {
  long long sum = 0;
  for (const InstanceRun& run : instances) sum += run.end_ms() - run.begin_ms();
  return sum;
}

std::vector<PhaseTotal> phase_totals(const std::vector<InstanceRun>& instances) {
  std::map<std::pair<std::size_t, std::string>, long long> by_phase;
  for (const InstanceRun& run : instances) {
    for (const PhaseSpan& span : run.phases) {
      by_phase[{phase_rank(span.phase), span.phase}] += span.end_ms - span.begin_ms;
    }
  }
  const long long sum = summed_instance_ms(instances);
  std::vector<PhaseTotal> totals;
  for (const auto& [key, ms] : by_phase) {
    totals.push_back(
        {key.second, ms, sum > 0 ? static_cast<double>(ms) / static_cast<double>(sum) : 0.0});
  }
  return totals;
}

}  // namespace vmfest::report
