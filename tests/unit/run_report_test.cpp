// `vmfest report`'s reading of run records, its totals and its page, and the fixtures' writing of
// the records it reads (the two sides of one format).
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <regex>
#include <string>

#include "report/html_report.h"
#include "report/run_records.h"
#include "run_timeline.h"
#include "vmfest/error.h"

namespace {
namespace fs = std::filesystem;
using vmfest::report::InstanceRun;
using vmfest::report::parse_record_line;
using vmfest::report::read_run_records;

// A record as the fixtures write it: phases back to back from `begin`.
std::string record(const std::string& test, const std::string& instance,
                   const std::vector<std::pair<std::string, long long>>& phases,
                   long long begin = 1'700'000'000'000, const std::string& image = "warm") {
  std::string spans;
  long long at = begin;
  for (const auto& [name, ms] : phases) {
    if (!spans.empty()) spans += ",";
    spans += "{\"phase\":\"" + name + "\",\"begin_ms\":" + std::to_string(at) +
             ",\"end_ms\":" + std::to_string(at + ms) + "}";
    at += ms;
  }
  return "{\"version\":1,\"test\":\"" + test + "\",\"instance\":\"" + instance +
         "\",\"model\":\"vmfest-tiny\",\"image\":\"" + image + "\",\"kept\":false,\"pid\":7," +
         "\"phases\":[" + spans + "]}";
}

std::size_t count_of(const std::string& text, const std::string& what) {
  std::size_t count = 0;
  for (std::size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) {
    ++count;
  }
  return count;
}

class RunRecords : public ::testing::Test {
 protected:
  void SetUp() override {
    folder_ = fs::temp_directory_path() / ("vmfest-report-test-" + std::to_string(::getpid()));
    fs::remove_all(folder_);
    fs::create_directories(folder_ / "records");
  }
  void TearDown() override { fs::remove_all(folder_); }
  void write(const std::string& name, const std::string& text) {
    std::ofstream(folder_ / "records" / name) << text;
  }
  fs::path folder_;
};

TEST(RunRecordLine, ReadsEveryField) {
  std::string problem;
  const auto run = parse_record_line(
      record("Suite.Test", "vm-1", {{"slot", 1500}, {"launch", 500}, {"test", 2000}}), problem);
  ASSERT_TRUE(run) << problem;
  EXPECT_EQ(run->test, "Suite.Test");
  EXPECT_EQ(run->instance, "vm-1");
  EXPECT_EQ(run->model, "vmfest-tiny");
  EXPECT_EQ(run->image, "warm");
  ASSERT_EQ(run->phases.size(), 3U);
  EXPECT_EQ(run->phases[1].phase, "launch");
  EXPECT_EQ(run->phases[1].end_ms - run->phases[1].begin_ms, 500);
  EXPECT_EQ(run->end_ms() - run->begin_ms(), 4000);
}

TEST(RunRecordLine, RefusesACutShortOrInconsistentLine) {
  const std::string whole = record("Suite.Test", "vm-1", {{"slot", 10}, {"test", 20}});
  std::string problem;
  EXPECT_FALSE(parse_record_line(whole.substr(0, whole.size() / 2), problem));
  EXPECT_EQ(problem, "not a JSON object (cut short?)");
  EXPECT_FALSE(parse_record_line(R"({"version":1,"instance":"x","model":"m","image":"cold",)"
                                 R"("phases":[{"phase":"slot","begin_ms":1,"end_ms":2}]})",
                                 problem));
  EXPECT_EQ(problem, "no text field \"test\"");
  EXPECT_FALSE(parse_record_line(R"({"version":1,"test":"t","instance":"x","model":"m",)"
                                 R"("image":"cold","phases":[{"phase":"slot","begin_ms":5,)"
                                 R"("end_ms":2}]})",
                                 problem));
  EXPECT_EQ(problem, "phase \"slot\" ends before it begins");
  EXPECT_FALSE(parse_record_line(R"({"version":2})", problem));
  EXPECT_EQ(problem, "not a version 1 run record");
}

TEST_F(RunRecords, SkipsACorruptLineNamingFileAndLineAndReadsTheRest) {
  const std::string cut = record("B.Cut", "vm-9", {{"slot", 10}});
  write("vmfest-1-1.jsonl", record("A.Later", "vm-2", {{"slot", 100}}, 1'700'000'005'000) + "\n" +
                                cut.substr(0, 30) + "\n" +
                                record("A.First", "vm-1", {{"slot", 100}}) + "\n");
  fs::create_directories(folder_ / "records" / "shard-2");
  std::ofstream(folder_ / "records" / "shard-2" / "vmfest-2-1.jsonl")
      << record("C.Other", "vm-3", {{"test", 100}}, 1'700'000'002'000) << "\n";
  write("notes.txt", "not a record file\n");

  const auto records = read_run_records(folder_ / "records");
  EXPECT_EQ(records.files, 2U);
  ASSERT_EQ(records.instances.size(), 3U);
  EXPECT_EQ(records.instances[0].test, "A.First");  // by when they began
  EXPECT_EQ(records.instances[1].test, "C.Other");
  EXPECT_EQ(records.instances[2].test, "A.Later");
  ASSERT_EQ(records.warnings.size(), 1U);
  EXPECT_EQ(records.warnings[0], (folder_ / "records" / "vmfest-1-1.jsonl").string() +
                                     ":2: not a JSON object (cut short?); skipped");
}

TEST_F(RunRecords, AFolderWithoutRecordsIsAClearError) {
  write("notes.txt", "no records here\n");
  try {
    (void)read_run_records(folder_ / "records");
    FAIL() << "read_run_records found records in a folder without any";
  } catch (const vmfest::Error& error) {
    EXPECT_EQ(std::string(error.what()),
              "no run records in " + (folder_ / "records").string() +
                  " (0 record file(s)); tests that use the vmfest fixtures write them to "
                  "$VMFEST_ARTIFACTS/records");
  }
  EXPECT_THROW((void)read_run_records(folder_ / "missing"), vmfest::Error);
  write("vmfest-1-1.jsonl", "{\"version\":1,\n");
  EXPECT_THROW((void)read_run_records(folder_ / "records"), vmfest::Error);
}

TEST(RunTotals, SumEachPhaseWithItsShareOfTheInstanceTime) {
  std::string problem;
  std::vector<InstanceRun> runs;
  runs.push_back(*parse_record_line(
      record("A.A", "vm-1", {{"slot", 3000}, {"launch", 1000}, {"test", 6000}}), problem));
  runs.push_back(
      *parse_record_line(record("B.B", "vm-2", {{"mystery", 500}, {"slot", 1000}}), problem));
  EXPECT_EQ(vmfest::report::summed_instance_ms(runs), 11500);
  const auto totals = vmfest::report::phase_totals(runs);
  ASSERT_EQ(totals.size(), 4U);
  // Known phases in their order of a start, then unknown ones.
  EXPECT_EQ(totals[0].phase, "slot");
  EXPECT_EQ(totals[0].ms, 4000);
  EXPECT_NEAR(totals[0].share, 4000.0 / 11500.0, 1e-9);
  EXPECT_EQ(totals[1].phase, "launch");
  EXPECT_EQ(totals[2].phase, "test");
  EXPECT_EQ(totals[2].ms, 6000);
  EXPECT_EQ(totals[3].phase, "mystery");
  EXPECT_EQ(totals[3].ms, 500);
}

TEST_F(RunRecords, ThePageHasABarPerInstanceItsPhasesAndTheSlotShare) {
  write("vmfest-1-1.jsonl",
        record("Web.<Serves>", "vm-1", {{"slot", 3000}, {"launch", 1000}, {"test", 6000}}) + "\n" +
            record("Db.Cold", "vm-2", {{"slot", 1000}, {"console", 4000}, {"destroy", 500}},
                   1'700'000'000'000, "cold") +
            "\n");
  const auto records = read_run_records(folder_ / "records");
  const std::string page = vmfest::report::html_report(records, "run <1>");
  EXPECT_EQ(count_of(page, "<g class=\"bar\""), 2U);
  EXPECT_EQ(count_of(page, "<rect class=\"segment\""), 6U);
  EXPECT_NE(page.find("data-test=\"Web.&lt;Serves&gt;\""), std::string::npos);
  EXPECT_EQ(page.find("Web.<Serves>"), std::string::npos);  // escaped everywhere
  EXPECT_NE(page.find("data-phase=\"console\""), std::string::npos);
  EXPECT_EQ(count_of(page, "data-marker=\"cold boot\""), 1U);
  // 4000 ms of 15500: 26%.
  EXPECT_NE(page.find("26% of this run's instance time waited for a VM slot"), std::string::npos);
  // Self-contained: nothing fetched from anywhere.
  EXPECT_FALSE(std::regex_search(page, std::regex("<script|<link|@import|url\\(|src=")));
}

TEST(RunTimeline, TheFixturesRecordReadsBackBackToBack) {
  using vmfest::testing::detail::InstanceTimes;
  using vmfest::testing::detail::WallClock;
  const WallClock::time_point zero{std::chrono::milliseconds(1'700'000'000'000)};
  const auto at = [&](long long ms) { return zero + std::chrono::milliseconds(ms); };
  InstanceTimes times;
  times.test = "Suite.Test";
  times.instance = "vm-1";
  times.model = "vmfest-tiny";
  times.set_size = 2;
  times.create_began = at(0);
  times.create_ended = at(100);
  times.start_asked = at(150);  // the set's other instance was created meanwhile
  times.start_phases = {{"slot", 2.0, at(2100)},
                        {"launch", 0.5, at(2600)},
                        {"identity", 0.1, at(2700)},
                        {"ssh", 0.3, at(3000)}};
  times.resumed_warm = true;
  times.start_done = at(3500);  // the set's other instance took longer
  times.first_command_ended = at(3800);
  times.test_ended = at(5000);
  times.destroyed = at(5400);

  std::string problem;
  const auto run = parse_record_line(vmfest::testing::detail::record_line(times), problem);
  ASSERT_TRUE(run) << problem;
  EXPECT_EQ(run->image, "warm");
  const std::vector<std::pair<std::string, long long>> expected = {
      {"create", 100}, {"group", 50},  {"slot", 1950},         {"launch", 500}, {"identity", 100},
      {"ssh", 300},    {"group", 500}, {"first command", 300}, {"test", 1200},  {"destroy", 400}};
  ASSERT_EQ(run->phases.size(), expected.size());
  long long previous_end = run->begin_ms();
  for (std::size_t index = 0; index < expected.size(); ++index) {
    EXPECT_EQ(run->phases[index].phase, expected[index].first);
    EXPECT_EQ(run->phases[index].begin_ms, previous_end) << run->phases[index].phase;
    EXPECT_EQ(run->phases[index].end_ms - run->phases[index].begin_ms, expected[index].second)
        << run->phases[index].phase;
    previous_end = run->phases[index].end_ms;
  }
}

TEST(RunTimeline, AnInstanceAloneHasNoGroupWait) {
  using vmfest::testing::detail::InstanceTimes;
  using vmfest::testing::detail::WallClock;
  const WallClock::time_point zero{std::chrono::milliseconds(1'700'000'000'000)};
  const auto at = [&](long long ms) { return zero + std::chrono::milliseconds(ms); };
  InstanceTimes times;
  times.create_began = at(0);
  times.create_ended = at(100);
  times.start_asked = at(103);  // the fixture's own steps between create and start
  times.start_phases = {{"slot", 0.0, at(110)}, {"console", 5.0, at(5110)}, {"ssh", 1.0, at(6110)}};
  times.start_done = at(6112);
  times.test_ended = at(7000);  // no command through the fixture's SSH handle

  std::string problem;
  const auto run = parse_record_line(vmfest::testing::detail::record_line(times), problem);
  ASSERT_TRUE(run) << problem;
  EXPECT_EQ(run->image, "cold");
  EXPECT_TRUE(run->kept);  // never destroyed
  const std::vector<std::pair<std::string, long long>> expected = {
      {"create", 103}, {"slot", 7}, {"console", 5000}, {"ssh", 1002}, {"test", 888}};
  ASSERT_EQ(run->phases.size(), expected.size());
  for (std::size_t index = 0; index < expected.size(); ++index) {
    EXPECT_EQ(run->phases[index].phase, expected[index].first);
    EXPECT_EQ(run->phases[index].end_ms - run->phases[index].begin_ms, expected[index].second)
        << run->phases[index].phase;
  }
}

TEST(RunTimeline, NamesTheImageAnInstanceUsedOrBuilt) {
  using vmfest::testing::detail::image_kind;
  const std::vector<vmfest::StartPhase> cold = {{"slot", 0, {}}, {"console", 1, {}}};
  const std::vector<vmfest::StartPhase> warm_build = {{"console", 1, {}}, {"warm image", 1, {}}};
  const std::vector<vmfest::StartPhase> layer_build = {{"provision", 1, {}}, {"layer", 1, {}}};
  const std::vector<vmfest::StartPhase> resumed = {{"launch", 1, {}}, {"identity", 1, {}}};
  EXPECT_EQ(image_kind(cold, false, false), "cold");
  EXPECT_EQ(image_kind(warm_build, false, false), "warm build");
  EXPECT_EQ(image_kind(layer_build, true, true), "layer build");
  EXPECT_EQ(image_kind(resumed, true, false), "warm");
  EXPECT_EQ(image_kind(resumed, true, true), "layer");
}

}  // namespace
