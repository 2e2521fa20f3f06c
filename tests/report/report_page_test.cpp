// `vmfest report` end to end: real instances through the fixtures write the run's records, the CLI
// draws the page, and a real headless browser (Debian's chromium) renders it. Also the CLI's
// answers to bad input.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "child_process.h"
#include "cli_runner.h"
#include "png_pixels.h"
#include "report/phases.h"
#include "report/run_records.h"
#include "vmfest/gtest/fixture.h"

namespace {
namespace fs = std::filesystem;
using vmfest::testing::ChildProcess;
using vmfest::testing::InstanceTest;
using vmfest::testing::run_cli;
using vmfest::testing::VmRequirements;

// ---- the run the page shows: only ever run as ReportPage's child (see CMakeLists.txt) ----------

class ReportedRunOne : public InstanceTest {};

TEST_F(ReportedRunOne, RunsACommand) { EXPECT_EQ(ssh().check("echo one").stdout_text, "one\n"); }

class ReportedRunTwo : public InstanceTest {
 protected:
  [[nodiscard]] VmRequirements requirements() const override { return {.instances = 2}; }
};

TEST_F(ReportedRunTwo, BothAnswer) {
  EXPECT_EQ(ssh(0).check("echo first").stdout_text, "first\n");
  EXPECT_EQ(ssh(1).check("echo second").stdout_text, "second\n");
}

// Provisioned: the first run builds a layer that later runs resume.
class ReportedRunLayer : public InstanceTest {
 protected:
  [[nodiscard]] VmRequirements requirements() const override {
    return {.provision = {vmfest::ProvisionStep::run("echo provisioned > /tmp/report-layer")}};
  }
};

TEST_F(ReportedRunLayer, SeesItsStep) {
  EXPECT_EQ(ssh().check("cat /tmp/report-layer").stdout_text, "provisioned\n");
}

// ---- helpers ----------------------------------------------------------------------------------

std::optional<fs::path> find_on_path(const std::string& program) {
  const char* path = std::getenv("PATH");
  std::string folders = path == nullptr ? "/usr/bin:/bin" : path;
  for (std::size_t begin = 0; begin <= folders.size();) {
    std::size_t end = folders.find(':', begin);
    if (end == std::string::npos) end = folders.size();
    const fs::path candidate = fs::path(folders.substr(begin, end - begin)) / program;
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
    begin = end + 1;
  }
  return std::nullopt;
}

// Waits for `child` at most `timeout`; one that hangs is killed (by its pid) and reported.
int finish(ChildProcess& child, std::chrono::seconds timeout, const std::string& what) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (child.running()) {
    if (std::chrono::steady_clock::now() > deadline) {
      child.kill();
      ADD_FAILURE() << what << " did not end within " << timeout.count()
                    << " s and was killed; its output:\n"
                    << child.output();
      return -1;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return child.wait();
}

std::string read_file(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// A phase's colour as the page draws it (tools/report/phases.h), as 0xRRGGBB.
std::uint32_t colour_value(std::string_view phase) {
  for (const vmfest::report::PhaseStyle& style : vmfest::report::kPhases) {
    if (style.name == phase) {
      return static_cast<std::uint32_t>(
          std::stoul(std::string(style.colour.substr(1)), nullptr, 16));
    }
  }
  return static_cast<std::uint32_t>(
      std::stoul(std::string(vmfest::report::kOtherPhaseColour.substr(1)), nullptr, 16));
}

// Within a little of `colour` in each channel (a browser may round a fill).
bool near(std::uint32_t rgb, std::uint32_t colour) {
  for (int shift : {16, 8, 0}) {
    const int a = static_cast<int>((rgb >> shift) & 0xffU);
    const int b = static_cast<int>((colour >> shift) & 0xffU);
    if (std::abs(a - b) > 6) return false;
  }
  return true;
}

// The markup of each timeline bar in `dom`, keyed by "test|instance".
std::map<std::string, std::string> bars_of(const std::string& dom) {
  std::map<std::string, std::string> bars;
  const std::string open = "<g class=\"bar\"";
  for (std::size_t at = dom.find(open); at != std::string::npos; at = dom.find(open, at + 1)) {
    const std::size_t end = dom.find("</g>", at);
    const std::string bar = dom.substr(at, end - at);
    const auto attribute = [&](const std::string& name) {
      const std::size_t from = bar.find(name + "=\"") + name.size() + 2;
      return bar.substr(from, bar.find('"', from) - from);
    };
    bars[attribute("data-test") + "|" + attribute("data-instance")] = bar;
  }
  return bars;
}

class ReportWork : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* test = ::testing::UnitTest::GetInstance()->current_test_info();
    work_ =
        fs::path(VMFEST_REPORT_WORK) / (std::string(test->test_suite_name()) + "." + test->name());
    fs::remove_all(work_);
    fs::create_directories(work_);
  }
  void TearDown() override {
    if (!HasFailure()) fs::remove_all(work_);
  }
  fs::path work_;
};

// ---- the page in a browser --------------------------------------------------------------------

using ReportPage = ReportWork;

TEST_F(ReportPage, ChromiumDrawsABarPerInstanceWithItsPhases) {
  const std::optional<fs::path> chromium = find_on_path("chromium");
  if (!chromium) {
    const char* ci = std::getenv("CI");
    if (ci != nullptr && std::string(ci) == "true") {
      FAIL() << "chromium is not installed, and CI=true needs this test to run: "
                "tools/install-deps.sh installs it (apt-get install chromium)";
    }
    GTEST_SKIP() << "chromium is not installed (tools/install-deps.sh, or apt-get install "
                    "chromium); skipped outside CI, a failure with CI=true";
  }

  // 1. A real run: this binary's ReportedRun tests, four instances, their own artifacts folder.
  const fs::path artifacts = work_ / "artifacts";
  ChildProcess run({"/usr/bin/env", "-u", "GTEST_SHARD_INDEX", "-u", "GTEST_TOTAL_SHARDS",
                    "VMFEST_ARTIFACTS=" + artifacts.string(), "VMFEST_KEEP=never",
                    fs::read_symlink("/proc/self/exe").string(), "--gtest_filter=ReportedRun*"},
                   work_ / "run.out");
  ASSERT_EQ(finish(run, std::chrono::seconds(420), "the reported run"), 0) << run.output();
  const fs::path records_folder = artifacts / "records";
  const vmfest::report::RunRecords records = vmfest::report::read_run_records(records_folder);
  ASSERT_EQ(records.instances.size(), 4U);
  EXPECT_TRUE(records.warnings.empty()) << records.warnings.front();

  // 2. The page.
  const fs::path page = work_ / "report.html";
  const auto made = run_cli({"report", records_folder.string(), "-o", page.string()});
  ASSERT_EQ(made.exit_code, 0) << made.describe();
  EXPECT_NE(made.out.find("wrote the report of 4 instance(s) to " + page.string()),
            std::string::npos)
      << made.describe();

  // 3. Chromium renders it: a screenshot and the DOM after layout. Its own profile folder, so no
  // other browser's state is touched; as root it runs only without its sandbox.
  const auto chromium_run = [&](const std::vector<std::string>& what, const std::string& output,
                                const fs::path& shown) {
    std::vector<std::string> argv = {chromium->string(),
                                     "--headless",
                                     "--no-sandbox",
                                     "--disable-gpu",
                                     "--hide-scrollbars",
                                     "--no-first-run",
                                     "--user-data-dir=" + (work_ / ("profile-" + output)).string(),
                                     "--window-size=1400,900"};
    argv.insert(argv.end(), what.begin(), what.end());
    argv.push_back("file://" + shown.string());
    ChildProcess browser(argv, work_ / output);
    const int status = finish(browser, std::chrono::seconds(120), "chromium " + what.front());
    EXPECT_EQ(status, 0) << browser.output();
    return browser.output();
  };
  const fs::path screenshot = work_ / "report.png";
  chromium_run({"--screenshot=" + screenshot.string()}, "screenshot.out", page);
  const std::string dom = chromium_run({"--dump-dom"}, "dom.out", page);
  // The same page with its timeline hidden (its room kept): what differs are the bars.
  std::string without_bars = read_file(page);
  const std::string svg = "<svg id=\"timeline\"";
  ASSERT_NE(without_bars.find(svg), std::string::npos);
  without_bars.replace(without_bars.find(svg), svg.size(), svg + " style=\"visibility:hidden\"");
  const fs::path page_without_bars = work_ / "report-without-bars.html";
  std::ofstream(page_without_bars) << without_bars;
  const fs::path blank = work_ / "report-without-bars.png";
  chromium_run({"--screenshot=" + blank.string()}, "blank.out", page_without_bars);

  ASSERT_TRUE(fs::exists(screenshot)) << "chromium wrote no screenshot";
  ASSERT_GT(fs::file_size(screenshot), 0U);
  const vmfest::testing::PngPixels png = vmfest::testing::read_png(screenshot);
  EXPECT_EQ(png.width, 1400U);
  EXPECT_EQ(png.height, 900U);
  const std::set<std::uint32_t> colours(png.rgb.begin(), png.rgb.end());
  EXPECT_GT(colours.size(), 8U) << "the screenshot is (nearly) one colour: a blank render";
  const vmfest::testing::PngPixels reference = vmfest::testing::read_png(blank);
  ASSERT_EQ(reference.rgb.size(), png.rgb.size());
  // The phase with the most time has segments wide enough to see: its colour (phases.h) must be
  // among the bars' pixels.
  const auto totals = vmfest::report::phase_totals(records.instances);
  const auto largest = std::max_element(totals.begin(), totals.end(),
                                        [](const auto& a, const auto& b) { return a.ms < b.ms; });
  const std::uint32_t largest_colour = colour_value(largest->phase);
  std::size_t differing = 0;
  std::size_t largest_pixels = 0;
  for (std::size_t index = 0; index < png.rgb.size(); ++index) {
    if (png.rgb[index] == reference.rgb[index]) continue;
    ++differing;
    if (near(png.rgb[index], largest_colour)) ++largest_pixels;
  }
  EXPECT_GT(differing, 3U * 16U * 40U) << "the timeline's bars are missing from the screenshot";
  EXPECT_GT(largest_pixels, 16U * 30U)
      << "no segment of phase " << largest->phase << " (" << largest->ms << " ms) is drawn";

  // One bar per recorded instance, holding each of its phases in order.
  const auto bars = bars_of(dom);
  EXPECT_EQ(bars.size(), records.instances.size()) << dom;
  for (const vmfest::report::InstanceRun& run_of_instance : records.instances) {
    const auto bar = bars.find(run_of_instance.test + "|" + run_of_instance.instance);
    ASSERT_NE(bar, bars.end()) << "no bar for " << run_of_instance.instance;
    std::size_t at = 0;
    for (const vmfest::report::PhaseSpan& phase : run_of_instance.phases) {
      at = bar->second.find("data-phase=\"" + phase.phase + "\"", at);
      ASSERT_NE(at, std::string::npos)
          << "phase " << phase.phase << " of " << run_of_instance.instance << " is not drawn";
    }
  }
  // What each instance started from, as the library's phases tell it.
  for (const auto& recorded : records.instances) {
    if (recorded.test == "ReportedRunLayer.SeesItsStep") {
      EXPECT_TRUE(recorded.image == "layer" || recorded.image == "layer build") << recorded.image;
    } else {
      EXPECT_TRUE(recorded.image == "warm" || recorded.image == "warm build" ||
                  recorded.image == "cold")
          << recorded.image;
    }
  }
  for (const std::string test : {"ReportedRunOne.RunsACommand", "ReportedRunTwo.BothAnswer",
                                 "ReportedRunLayer.SeesItsStep"}) {
    EXPECT_TRUE(std::any_of(records.instances.begin(), records.instances.end(),
                            [&](const auto& recorded) { return recorded.test == test; }))
        << test << " has no record";
  }
  EXPECT_NE(dom.find("waited for a VM slot"), std::string::npos);
  EXPECT_NE(dom.find("<table class=\"totals\">"), std::string::npos);
}

// ---- bad input --------------------------------------------------------------------------------

using ReportCli = ReportWork;

TEST_F(ReportCli, AFolderWithoutRecordsFailsClearly) {
  std::ofstream(work_ / "notes.txt") << "no records\n";
  const auto result = run_cli({"report", work_.string(), "-o", (work_ / "page.html").string()});
  EXPECT_EQ(result.exit_code, 1) << result.describe();
  EXPECT_NE(result.err.find("no run records in " + work_.string() + " (0 record file(s))"),
            std::string::npos)
      << result.describe();
  EXPECT_FALSE(fs::exists(work_ / "page.html"));
}

TEST_F(ReportCli, ACorruptLineIsSkippedWithItsFileAndLine) {
  const std::string good =
      R"({"version":1,"test":"A.B","instance":"vm-1","model":"m","image":"cold","kept":false,)"
      R"("phases":[{"phase":"slot","begin_ms":1000,"end_ms":3000},)"
      R"({"phase":"test","begin_ms":3000,"end_ms":4000}]})";
  std::ofstream(work_ / "vmfest-1-1.jsonl") << good << "\n" << good.substr(0, 40) << "\n";
  const fs::path page = work_ / "page.html";
  const auto result = run_cli({"report", work_.string(), "-o", page.string()});
  EXPECT_EQ(result.exit_code, 0) << result.describe();
  EXPECT_NE(result.err.find("vmfest: warning: " + (work_ / "vmfest-1-1.jsonl").string() +
                            ":2: not a JSON object (cut short?); skipped"),
            std::string::npos)
      << result.describe();
  const std::string html = read_file(page);
  EXPECT_NE(html.find("67% of this run's instance time waited for a VM slot"), std::string::npos);
  EXPECT_NE(html.find("vmfest-1-1.jsonl:2"), std::string::npos)
      << "the page lists the skipped line";
}

}  // namespace
