// The plugin seen from outside: runs the child test binary (child_test.cpp) as separate processes
// and checks what a failing test leaves behind, that a killed binary's instances are reaped by the
// next run, and that many sharded copies at once neither collide nor exceed the host's VM cap.
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include "child_process.h"
#include "vmfest/gtest/fixture.h"
#include "vmfest/model.h"

namespace {
namespace fs = std::filesystem;
using namespace std::chrono_literals;
using vmfest::testing::ChildProcess;

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

// A private VMFEST_HOME (and room for logs) per test, so counts of instances and QEMU processes
// see only this test's children. Removed when the test passes; left for a look when it fails.
class Harness : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* test = ::testing::UnitTest::GetInstance()->current_test_info();
    root_ = fs::path(VMFEST_PLUGIN_WORK) / test->name();
    fs::remove_all(root_);
    fs::create_directories(root_);
    default_model_ = vmfest::ModelRegistry().get(vmfest::testing::kDefaultModel).source;
  }
  void TearDown() override {
    // Whatever a child kept or leaked must not outlive the test.
    for (const std::string& name : instance_names()) {
      try {
        vmfest::Instance::open(name, vmfest::Home(home())).destroy();
      } catch (const std::exception& error) {
        ADD_FAILURE() << "could not destroy instance " << name << ": " << error.what();
      }
    }
    if (!HasFailure()) fs::remove_all(root_);
  }

  [[nodiscard]] fs::path home() const { return root_ / "home"; }
  [[nodiscard]] fs::path instances() const { return home() / "instances"; }

  // The child binary with `filter`, this test's home, the default model's bundle (no rebuild) and
  // `environment` on top; stdout and stderr go to `output_name` in the test's folder.
  std::unique_ptr<ChildProcess> run_child(const std::string& filter, const std::string& output_name,
                                          const std::vector<std::string>& environment = {},
                                          const std::vector<std::string>& arguments = {}) {
    // env(1) replaces inherited values (ChildProcess's extra variables would only be appended),
    // and drops sharding variables meant for this binary, not for its children.
    std::vector<std::string> argv = {"/usr/bin/env",
                                     "-u",
                                     "GTEST_SHARD_INDEX",
                                     "-u",
                                     "GTEST_TOTAL_SHARDS",
                                     "VMFEST_HOME=" + home().string(),
                                     "VMFEST_DEFAULT_MODEL=" + default_model_,
                                     "VMFEST_KEEP=never"};
    argv.insert(argv.end(), environment.begin(), environment.end());
    argv.push_back(VMFEST_PLUGIN_CHILD);
    argv.push_back("--gtest_filter=" + filter);
    argv.insert(argv.end(), arguments.begin(), arguments.end());
    return std::make_unique<ChildProcess>(argv, root_ / output_name);
  }

  [[nodiscard]] std::vector<std::string> instance_names() const {
    std::vector<std::string> names;
    if (!fs::exists(instances())) return names;
    for (const auto& entry : fs::directory_iterator(instances())) {
      names.push_back(entry.path().filename().string());
    }
    return names;
  }

  // Instances of this test with a running QEMU at one instant. Counted by folder, not by process:
  // QEMU forks a short-lived copy of itself to exec a warm clone's `migrate-incoming` command. A
  // sweep of /proc is not atomic: a VM that exits mid-sweep and a later one that takes its slot
  // would both be seen, so only those still running once the sweep ends count (all of them were
  // alive at that moment).
  [[nodiscard]] int running_vms() const {
    const std::string prefix = instances().string() + "/";
    auto instance_of = [&](const fs::path& process) -> std::string {
      std::error_code error;
      const fs::path cwd = fs::read_symlink(process / "cwd", error);
      if (error || !cwd.string().starts_with(prefix)) return {};
      return read_file(process / "comm").starts_with("qemu-system") ? cwd.string() : "";
    };
    std::vector<fs::path> seen;
    for (const auto& entry : fs::directory_iterator("/proc")) {
      if (!instance_of(entry.path()).empty()) seen.push_back(entry.path());
    }
    std::set<std::string> running;
    for (const auto& process : seen) {
      if (auto instance = instance_of(process); !instance.empty()) running.insert(instance);
    }
    return static_cast<int>(running.size());
  }

  fs::path root_;
  std::string default_model_;
};

// The value of property `name` in the JUnit XML of test `test`, "" when absent.
std::string junit_property(const std::string& xml, const std::string& test,
                           const std::string& name) {
  const auto begin = xml.find(fmt::format("<testcase name=\"{}\"", test));
  if (begin == std::string::npos) return "";
  const auto end = xml.find("</testcase>", begin);
  const std::string testcase = xml.substr(begin, end - begin);
  const std::string key = fmt::format("<property name=\"{}\" value=\"", name);
  const auto at = testcase.find(key);
  if (at == std::string::npos) return "";
  const auto value = at + key.size();
  return testcase.substr(value, testcase.find('"', value) - value);
}

TEST_F(Harness, FailingTestLeavesArtifactsAndKeepsItsInstance) {
  const fs::path artifacts = root_ / "artifacts";
  const fs::path xml_file = root_ / "junit.xml";
  auto child = run_child("Child.Passes:Child.FailsOnPurpose", "child.out",
                         {"VMFEST_KEEP=on-failure", "VMFEST_ARTIFACTS=" + artifacts.string()},
                         {"--gtest_output=xml:" + xml_file.string()});
  EXPECT_EQ(child->wait(), 1);
  const std::string output = child->output();
  const std::string xml = read_file(xml_file);

  // The JUnit XML names each test's instance, model, boot time and accelerator.
  const std::string failed = junit_property(xml, "FailsOnPurpose", "vmfest_instance");
  const std::string passed = junit_property(xml, "Passes", "vmfest_instance");
  ASSERT_FALSE(failed.empty()) << xml;
  ASSERT_FALSE(passed.empty()) << xml;
  EXPECT_NE(failed, passed);
  EXPECT_EQ(junit_property(xml, "FailsOnPurpose", "vmfest_model"), "vmfest-tiny");
  EXPECT_GT(std::stod(junit_property(xml, "FailsOnPurpose", "vmfest_boot_seconds")), 0.0);
  EXPECT_FALSE(junit_property(xml, "FailsOnPurpose", "vmfest_accelerator").empty());
  const fs::path folder = artifacts / "Child.FailsOnPurpose";
  EXPECT_EQ(junit_property(xml, "FailsOnPurpose", "vmfest_artifacts"), folder.string());

  // Only the failing test left artifacts, and the output says where.
  EXPECT_NE(
      output.find(fmt::format("[vmfest] artifacts of Child.FailsOnPurpose in {}", folder.string())),
      std::string::npos)
      << output;
  // Beside them: the run's timeline records (`vmfest report`), a line per instance in one file.
  std::vector<fs::path> saved;
  for (const auto& entry : fs::directory_iterator(artifacts)) saved.push_back(entry.path());
  std::sort(saved.begin(), saved.end());
  ASSERT_EQ(saved, (std::vector<fs::path>{folder, artifacts / "records"}));
  std::vector<fs::path> record_files;
  for (const auto& entry : fs::directory_iterator(artifacts / "records")) {
    record_files.push_back(entry.path());
  }
  ASSERT_EQ(record_files.size(), 1U);
  const std::string records = read_file(record_files.front());
  EXPECT_EQ(std::count(records.begin(), records.end(), '\n'), 2) << records;
  EXPECT_NE(records.find("\"instance\":\"" + failed + "\",\"kept\":true"), std::string::npos)
      << records;
  EXPECT_NE(records.find("\"instance\":\"" + passed + "\",\"kept\":false"), std::string::npos)
      << records;
  const fs::path files = folder / failed;
  // A warm clone resumes a booted guest, so its console may be quiet: only its presence counts.
  EXPECT_TRUE(fs::exists(files / "console.log"));
  EXPECT_TRUE(fs::exists(files / "qemu.log"));
  const std::string transcript = read_file(files / "ssh-transcript.txt");
  EXPECT_NE(transcript.find("$ echo transcript-marker\nexit 0\n--- stdout\ntranscript-marker\n"),
            std::string::npos)
      << transcript;

  // VMFEST_KEEP=on-failure kept the failing test's instance, running and reachable, and only it.
  EXPECT_NE(output.find(fmt::format("kept instance '{}'", failed)), std::string::npos) << output;
  EXPECT_NE(output.find(fmt::format("vmfest ssh {}", failed)), std::string::npos) << output;
  ASSERT_EQ(instance_names(), std::vector<std::string>{failed});
  vmfest::Instance kept = vmfest::Instance::open(failed, vmfest::Home(home()));
  EXPECT_EQ(kept.state(), vmfest::InstanceState::Running);
  EXPECT_EQ(kept.ssh().check("hostname").stdout_text, failed + "\n");
  kept.destroy();
  EXPECT_TRUE(instance_names().empty());
}

TEST_F(Harness, KilledBinaryLeavesNothingAfterTheNextRun) {
  auto hanging = run_child("Child.HangsUntilKilled", "killed.out");
  std::string name;
  const auto deadline = std::chrono::steady_clock::now() + 180s;
  while (name.empty() && std::chrono::steady_clock::now() < deadline && hanging->running()) {
    const std::string output = hanging->output();
    const std::string marker = "[child] instance ";
    if (auto at = output.find(marker); at != std::string::npos) {
      const auto begin = at + marker.size();
      name = output.substr(begin, output.find(' ', begin) - begin);
    }
    std::this_thread::sleep_for(50ms);
  }
  ASSERT_FALSE(name.empty()) << "the child never reported its running instance:\n"
                             << hanging->output();
  const fs::path directory = instances() / name;
  const int qemu_pid = std::stoi(read_file(directory / "qemu.pid"));
  hanging->kill();
  EXPECT_TRUE(fs::exists(directory)) << "expected the killed binary to leave its instance behind";

  auto next = run_child("Child.Passes", "next.out");
  EXPECT_EQ(next->wait(), 0) << next->output();
  EXPECT_NE(next->output().find(fmt::format("reaped leaked instance '{}'", name)),
            std::string::npos)
      << next->output();
  EXPECT_FALSE(fs::exists(directory));
  std::error_code gone;
  const fs::path qemu_cwd = fs::read_symlink(fmt::format("/proc/{}/cwd", qemu_pid), gone);
  EXPECT_TRUE(gone || qemu_cwd != directory)
      << "the killed binary's QEMU (pid " << qemu_pid << ") still runs";
  EXPECT_TRUE(instance_names().empty());
  EXPECT_EQ(running_vms(), 0);
}

TEST_F(Harness, ThreeRunsOfFourShardsAtOnceNeitherCollideNorExceedTheCap) {
  constexpr int kRuns = 3;
  constexpr int kShards = 4;
  constexpr int kCap = 2;
  const fs::path log = root_ / "runs.log";
  std::atomic<bool> done = false;
  std::atomic<int> most_vms = 0;
  std::jthread sampler([&] {
    while (!done) {
      most_vms = std::max(most_vms.load(), running_vms());
      std::this_thread::sleep_for(20ms);
    }
  });

  std::vector<std::unique_ptr<ChildProcess>> children;
  for (int run = 0; run < kRuns; ++run) {
    for (int shard = 0; shard < kShards; ++shard) {
      children.push_back(run_child(
          "Sharded.*", fmt::format("run{}-shard{}.out", run, shard),
          {"VMFEST_MAX_VMS=" + std::to_string(kCap),
           // A cap of its own: only these children compete for it, so its bound is exact.
           "VMFEST_SLOTS_DIR=" + (root_ / "slots").string(), "VMFEST_PLUGIN_LOG=" + log.string(),
           "GTEST_SHARD_INDEX=" + std::to_string(shard),
           "GTEST_TOTAL_SHARDS=" + std::to_string(kShards)}));
    }
  }
  for (auto& child : children) EXPECT_EQ(child->wait(), 0) << child->output();
  done = true;
  sampler.join();

  std::set<std::string> names;
  std::map<std::string, int> runs_per_test;
  std::map<std::string, int> runs_per_shard;
  std::istringstream lines(read_file(log));
  std::string test, name, port, shard, pid;
  while (lines >> test >> name >> port >> shard >> pid) {
    names.insert(name);
    ++runs_per_test[test];
    ++runs_per_shard[shard];
  }
  EXPECT_EQ(names.size(), static_cast<std::size_t>(kRuns * kShards)) << read_file(log);
  EXPECT_EQ(runs_per_test, (std::map<std::string, int>{{"A", 3}, {"B", 3}, {"C", 3}, {"D", 3}}));
  EXPECT_EQ(runs_per_shard, (std::map<std::string, int>{{"0", 3}, {"1", 3}, {"2", 3}, {"3", 3}}));
  EXPECT_LE(most_vms, kCap) << "more VMs ran at once than VMFEST_MAX_VMS allows";
  EXPECT_EQ(most_vms, kCap) << "12 processes asking for VMs never filled the cap";
  EXPECT_TRUE(instance_names().empty());
  EXPECT_EQ(running_vms(), 0);
}

// A guest that never comes up (its model waits for a console marker no boot prints) fails its test
// with vmfest's own error, the console's tail and the test's artifacts, before the test runner's
// timeout (vmfest_add_tests hands it over as VMFEST_TEST_TIMEOUT) would kill it without a word.
TEST_F(Harness, AGuestThatNeverComesUpFailsBeforeTheTestTimeoutWithItsConsoleTail) {
  const fs::path bundle = root_ / "never-ready";
  fs::copy(default_model_, bundle, fs::copy_options::recursive);
  const fs::path manifest = bundle / "vmfest-model.json";
  std::string description = read_file(manifest);
  const auto marker = description.find("\"ready_marker\":\"");
  ASSERT_NE(marker, std::string::npos) << description;
  description.insert(marker + std::string_view("\"ready_marker\":\"").size(), "NEVER-PRINTED-");
  fs::remove(manifest);
  std::ofstream(manifest) << description;
  const fs::path artifacts = root_ / "artifacts";
  constexpr auto kTestTimeout = 30s;  // vmfest gives up 15 s before: the boot has printed by then

  const auto begin = std::chrono::steady_clock::now();
  auto child = run_child("Child.Passes", "child.out",
                         {"VMFEST_DEFAULT_MODEL=" + bundle.string(),
                          fmt::format("VMFEST_TEST_TIMEOUT={}", kTestTimeout.count()),
                          "VMFEST_ARTIFACTS=" + artifacts.string()});
  EXPECT_EQ(child->wait(), 1);
  EXPECT_LT(std::chrono::steady_clock::now() - begin, kTestTimeout);
  const std::string output = child->output();
  EXPECT_NE(output.find("did not become ready: the guest did not print its ready marker "
                        "'NEVER-PRINTED-"),
            std::string::npos)
      << output;
  EXPECT_NE(
      output.find(fmt::format("to fail before the test runner's timeout (VMFEST_TEST_TIMEOUT={})",
                              kTestTimeout.count())),
      std::string::npos)
      << output;
  EXPECT_NE(output.find("last lines of the console log"), std::string::npos) << output;
  EXPECT_TRUE(fs::exists(artifacts / "Child.Passes")) << output;
  EXPECT_TRUE(instance_names().empty()) << "the failed test's instance was left";
}

}  // namespace
