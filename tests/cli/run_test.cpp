// `vmfest run MODEL -- CMD`: a command in a fresh instance, its output and status passed through,
// the instance gone afterwards, also after a SIGTERM; step files build a layer once and reuse it.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "child_process.h"
#include "cli_runner.h"
#include "vmfest/gtest/environment.h"
#include "vmfest/home.h"
#include "vmfest/images.h"

namespace {
namespace fs = std::filesystem;
using vmfest::testing::CliResult;
using vmfest::testing::contains;
using vmfest::testing::kDefaultModel;
using vmfest::testing::kExitSshFailure;
using vmfest::testing::kExitUsage;
using vmfest::testing::listed_instance;
using vmfest::testing::run_cli;
using vmfest::testing::unique;

// Nothing of instance `name` is left: not listed, no folder, no VM process working in it.
void expect_gone(const std::string& name) {
  EXPECT_FALSE(listed_instance(name)) << name << " is still listed";
  const fs::path folder = vmfest::Home::from_environment().instances() / name;
  EXPECT_FALSE(fs::exists(folder)) << folder;
  EXPECT_TRUE(vmfest::testing::processes_working_in(folder).empty()) << folder;
}

// The signals process `pid` blocks (bit N-1 for signal N), as /proc shows them.
std::uint64_t blocked_signals(int pid) {
  std::ifstream status(fmt::format("/proc/{}/status", pid));
  for (std::string line; std::getline(status, line);) {
    if (line.starts_with("SigBlk:")) return std::stoull(line.substr(7), nullptr, 16);
  }
  ADD_FAILURE() << "no SigBlk line for process " << pid;
  return 0;
}

// A folder of this test's own, removed with what it holds.
class ScratchFolder {
 public:
  explicit ScratchFolder(const std::string& name)
      : path_(fs::temp_directory_path() / unique("vmfest-" + name)) {
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ScratchFolder(const ScratchFolder&) = delete;
  ScratchFolder& operator=(const ScratchFolder&) = delete;
  ~ScratchFolder() { fs::remove_all(path_); }
  [[nodiscard]] const fs::path& path() const noexcept { return path_; }

 private:
  fs::path path_;
};

// The layers of the image store built by exactly these steps (as ProvisionStep::describe() says).
std::vector<vmfest::WarmImageInfo> layers_with_steps(const std::vector<std::string>& steps) {
  std::vector<vmfest::WarmImageInfo> found;
  for (auto& image : vmfest::list_warm_images()) {
    if (image.steps == steps) found.push_back(image);
  }
  return found;
}

TEST(Run, PassesOutputAndStatusThroughAndLeavesNothing) {
  const std::string name = unique("run-status");
  const CliResult result = run_cli(
      {"run", "--name", name, kDefaultModel, "--", "sh", "-c", "echo hi; echo oops >&2; exit 3"});
  EXPECT_EQ(result.exit_code, 3) << result.describe();
  EXPECT_EQ(result.out, "hi\n") << result.describe();
  EXPECT_TRUE(contains(result.err, "oops\n")) << result.describe();
  expect_gone(name);

  // One word is a shell command line, as for `vmfest ssh`.
  const CliResult line = run_cli({"run", kDefaultModel, "--", "echo a | tr a b"});
  EXPECT_EQ(line.exit_code, 0) << line.describe();
  EXPECT_EQ(line.out, "b\n") << line.describe();
}

// The layer the steps build is found by its steps in the image store: built by the first run (which
// logs its steps), resumed by the second (which runs none), one layer for both.
TEST(Run, StepFileBuildsALayerOnceAndALaterRunReusesIt) {
  ScratchFolder scratch("run-steps");
  // Content of this test run only, so the first run cannot find a layer of an earlier one.
  const std::string token = fmt::format("{}-{}", ::getpid(), std::random_device{}());
  fs::create_directories(scratch.path() / "site");
  std::ofstream(scratch.path() / "site" / "index.html") << "page " << token << "\n";
  std::ofstream(scratch.path() / "steps.txt") << "# a web root and a note\n"
                                              << "run mkdir -p /srv\n"
                                              << "\n"
                                              << "upload site /srv/www\n"
                                              << "run echo note " << token << " > /srv/note\n";
  const std::vector<std::string> steps = {
      "run: mkdir -p /srv",
      fmt::format("upload: {} -> /srv/www", (scratch.path() / "site").string()),
      fmt::format("run: echo note {} > /srv/note", token)};
  const std::vector<std::string> run = {
      "run",         "--step-file", (scratch.path() / "steps.txt").string(),
      kDefaultModel, "--",          "cat /srv/www/index.html /srv/note"};
  const std::string expected = fmt::format("page {0}\nnote {0}\n", token);

  const CliResult first = run_cli(run);
  EXPECT_EQ(first.exit_code, 0) << first.describe();
  EXPECT_EQ(first.out, expected) << first.describe();
  EXPECT_TRUE(contains(first.err, "provisioning step 2 of 3 (upload:")) << first.describe();
  const auto built = layers_with_steps(steps);
  ASSERT_EQ(built.size(), 1U);
  EXPECT_EQ(built.front().status, "ready");

  const CliResult second = run_cli(run);
  EXPECT_EQ(second.exit_code, 0) << second.describe();
  EXPECT_EQ(second.out, expected) << second.describe();
  EXPECT_FALSE(contains(second.err, "provisioning step")) << second.describe();
  const auto reused = layers_with_steps(steps);
  ASSERT_EQ(reused.size(), 1U);
  EXPECT_EQ(reused.front().directory, built.front().directory);
  EXPECT_GE(reused.front().last_used, built.front().last_used);
  // Nothing else resumes this test's layer: it goes with the test.
  fs::remove_all(built.front().directory);
}

TEST(Run, KeepLeavesAFailedInstanceReachable) {
  const std::string name = unique("run-keep");
  const CliResult failed =
      run_cli({"run", "--keep", "--name", name, kDefaultModel, "--", "sh", "-c", "exit 5"});
  EXPECT_EQ(failed.exit_code, 5) << failed.describe();
  EXPECT_TRUE(contains(failed.err, "`vmfest ssh " + name + "`")) << failed.describe();
  EXPECT_TRUE(contains(failed.err, "`vmfest destroy " + name + "`")) << failed.describe();
  const CliResult reached = run_cli({"ssh", name, "--", "hostname"});
  EXPECT_EQ(reached.exit_code, 0) << reached.describe();
  EXPECT_EQ(reached.out, name + "\n") << reached.describe();
  // The kept VM blocks none of the signals vmfest run blocks while it runs: `kill` stops it.
  const fs::path folder = vmfest::Home::from_environment().instances() / name;
  const std::vector<int> vm = vmfest::testing::processes_working_in(folder);
  EXPECT_FALSE(vm.empty()) << "no VM process works in " << folder;
  for (const int pid : vm) {
    for (const int number : {SIGINT, SIGTERM, SIGHUP}) {
      EXPECT_FALSE(blocked_signals(pid) >> (number - 1) & 1U)
          << "the VM's process " << pid << " blocks " << ::sigdescr_np(number);
    }
  }
  const CliResult destroyed = run_cli({"destroy", name});
  EXPECT_EQ(destroyed.exit_code, 0) << destroyed.describe();
  expect_gone(name);

  // A command that succeeds keeps nothing.
  const std::string passed = unique("run-keep-ok");
  const CliResult ok = run_cli({"run", "--keep", "--name", passed, kDefaultModel, "--", "true"});
  EXPECT_EQ(ok.exit_code, 0) << ok.describe();
  expect_gone(passed);
}

TEST(Run, SigtermWhileTheCommandRunsDestroysTheInstance) {
  const std::string name = unique("run-sigterm");
  ScratchFolder scratch("run-sigterm");
  vmfest::testing::ChildProcess run(
      {VMFEST_CLI, "run", "--name", name, kDefaultModel, "--", "echo started; sleep 300"},
      scratch.path() / "output.txt");
  ASSERT_TRUE(run.wait_for_line("started", std::chrono::seconds(240))) << run.output();
  run.signal(SIGTERM);
  EXPECT_EQ(run.wait(), 128 + SIGTERM) << run.output();
  EXPECT_TRUE(contains(run.output(), "instance '" + name + "' is destroyed after SIGTERM"))
      << run.output();
  expect_gone(name);
}

// A signal during the start (here: while a provisioning step runs) takes effect once the start
// returns: the command never runs and the instance is destroyed.
TEST(Run, SigtermDuringTheStartDestroysTheInstance) {
  const std::string name = unique("run-sigterm-start");
  ScratchFolder scratch("run-sigterm-start");
  const std::string step = fmt::format("sleep 3; echo {}", std::random_device{}());
  std::ofstream(scratch.path() / "steps.txt") << "run " << step << "\n";
  vmfest::testing::ChildProcess run(
      {VMFEST_CLI, "run", "--name", name, "--step-file", (scratch.path() / "steps.txt").string(),
       kDefaultModel, "--", "echo the command ran"},
      scratch.path() / "output.txt");
  const bool provisioning = run.wait_for_line(
      fmt::format("info: vmfest: provisioning step 1 of 1 (run: {}) of instance '{}'", step, name),
      std::chrono::seconds(240));
  run.signal(SIGTERM);
  EXPECT_TRUE(provisioning) << run.output();
  EXPECT_EQ(run.wait(), 128 + SIGTERM) << run.output();
  EXPECT_TRUE(contains(run.output(), "instance '" + name + "' is destroyed after SIGTERM"))
      << run.output();
  EXPECT_FALSE(contains(run.output(), "the command ran")) << run.output();
  expect_gone(name);
  for (const auto& layer : layers_with_steps({"run: " + step})) fs::remove_all(layer.directory);
}

TEST(Run, BadInputIsRefusedWithVmfestsOwnStatus) {
  const CliResult unknown = run_cli({"run", "no-such-model", "--", "true"});
  EXPECT_EQ(unknown.exit_code, kExitSshFailure) << unknown.describe();
  EXPECT_TRUE(contains(unknown.err, "vmfest: error: model 'no-such-model' is not registered"))
      << unknown.describe();

  const CliResult no_command = run_cli({"run", kDefaultModel});
  EXPECT_EQ(no_command.exit_code, kExitUsage) << no_command.describe();
  EXPECT_TRUE(contains(no_command.err, "vmfest run MODEL [OPTIONS] -- CMD..."))
      << no_command.describe();

  ScratchFolder scratch("run-bad-steps");
  const fs::path steps = scratch.path() / "steps.txt";
  std::ofstream(steps) << "run true\n# fine so far\ninstall nginx\n";
  const CliResult malformed =
      run_cli({"run", "--step-file", steps.string(), kDefaultModel, "--", "true"});
  EXPECT_EQ(malformed.exit_code, kExitUsage) << malformed.describe();
  EXPECT_TRUE(contains(malformed.err, steps.string() + ":3: unknown step 'install'"))
      << malformed.describe();
  EXPECT_TRUE(contains(malformed.err, "`run CMD...`, `upload SRC DST` or `reboot`"))
      << malformed.describe();

  std::ofstream(steps) << "upload missing.conf /etc/app.conf\n";
  const CliResult missing =
      run_cli({"run", "--step-file", steps.string(), kDefaultModel, "--", "true"});
  EXPECT_EQ(missing.exit_code, kExitUsage) << missing.describe();
  EXPECT_TRUE(contains(missing.err, ":1: the upload source 'missing.conf' (" +
                                        (scratch.path() / "missing.conf").string() +
                                        ") does not exist"))
      << missing.describe();
}

}  // namespace
