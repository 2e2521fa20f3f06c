// The `vmfest` CLI driven as a user would: each step a new process, instances detached from it.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "cli_runner.h"
#include "vmfest/gtest/fixture.h"
#include "vmfest/home.h"
#include "vmfest/model.h"

namespace {
namespace fs = std::filesystem;
using vmfest::testing::CliResult;
using vmfest::testing::kDefaultModel;
using vmfest::testing::listed_instance;
using vmfest::testing::run_cli;

constexpr int kExitFailure = 1;
constexpr int kExitUsage = 2;
constexpr int kExitSshFailure = 255;

// Names unique to this test process: ctest runs the tests of this binary in parallel processes
// that share one VMFEST_HOME.
std::string unique(const std::string& prefix) { return prefix + "-" + std::to_string(::getpid()); }

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// Runs `vmfest ARGS` and expects success.
CliResult cli_ok(const std::vector<std::string>& args, const std::string& input = "") {
  CliResult result = run_cli(args, input);
  EXPECT_EQ(result.exit_code, 0) << "vmfest " << fmt::format("{}", fmt::join(args, " ")) << ": "
                                 << result.describe();
  return result;
}

std::string state_of(const std::string& name) {
  auto entry = listed_instance(name);
  return entry ? entry->at("state").get<std::string>() : "not listed";
}

TEST(Cli, ModelsAreSetUpListedAndRemoved) {
  // The bundle the test environment installed the default model from, installed again under a
  // name of our own.
  const std::string bundle = vmfest::ModelRegistry().get(kDefaultModel).source;
  const std::string model = unique("cli-model");
  EXPECT_TRUE(contains(cli_ok({"setup-model", bundle, "--name", model}).out,
                       "model '" + model + "' is ready"));
  EXPECT_TRUE(contains(cli_ok({"models"}).out, model));

  // A model with an instance stays (--cold: no warm image is built for this throwaway model).
  const std::string user = unique("cli-model-user");
  cli_ok({"create", user, "--model", model, "--cold"});
  CliResult in_use = run_cli({"rm-model", model});
  EXPECT_EQ(in_use.exit_code, kExitFailure) << in_use.describe();
  EXPECT_TRUE(contains(in_use.err, "still has 1 instance")) << in_use.describe();
  EXPECT_TRUE(contains(cli_ok({"models"}).out, model));

  cli_ok({"destroy", user});
  cli_ok({"rm-model", model});
  EXPECT_FALSE(contains(cli_ok({"models"}).out, model));
  EXPECT_FALSE(vmfest::ModelRegistry().find(model));
}

TEST(Cli, FullLifecycleOfADetachedInstance) {
  const std::string name = unique("cli-life");
  EXPECT_EQ(cli_ok({"create", name, "--model", kDefaultModel}).out, name + "\n");
  auto created = listed_instance(name);
  ASSERT_TRUE(created);
  EXPECT_EQ(created->at("state"), "created");
  EXPECT_EQ(created->at("model"), kDefaultModel);
  EXPECT_EQ(created->at("detached"), true);
  EXPECT_TRUE(created->at("owner_pid").is_null());
  EXPECT_TRUE(created->at("ssh").is_null());
  EXPECT_TRUE(contains(cli_ok({"ls"}).out, "detached"));

  cli_ok({"start", name});
  auto running = listed_instance(name);
  ASSERT_TRUE(running);
  EXPECT_EQ(running->at("state"), "running");
  EXPECT_EQ(running->at("ssh").at("host"), "127.0.0.1");
  EXPECT_GT(running->at("ssh").at("port").get<int>(), 0);

  // Output and exit status pass through.
  EXPECT_EQ(cli_ok({"ssh", name, "--", "echo hi"}).out, "hi\n");
  CliResult seven = run_cli({"ssh", name, "--", "sh", "-c", "exit 7"});
  EXPECT_EQ(seven.exit_code, 7) << seven.describe();
  CliResult mixed = run_cli({"ssh", name, "--", "sh", "-c", "echo out; echo err >&2; exit 3"});
  EXPECT_EQ(mixed.exit_code, 3) << mixed.describe();
  EXPECT_EQ(mixed.out, "out\n");
  EXPECT_EQ(mixed.err, "err\n");
  // Several words are passed exactly: spaces, quotes, brackets, dashes.
  EXPECT_EQ(cli_ok({"ssh", name, "--", "printf", "[%s]", "a b", "it's", "[x,y]", "-l"}).out,
            "[a b][it's][[x,y]][-l]");
  // Without a command: a shell through the system ssh client (no terminal here, so it reads
  // its commands from stdin), with the instance's own key and pinned host key.
  CliResult shell = run_cli({"ssh", name}, "hostname; exit 5\n");
  EXPECT_EQ(shell.exit_code, 5) << shell.describe();
  EXPECT_TRUE(contains(shell.out, name + "\n")) << shell.describe();

  // A detached instance has no owner that could die: the reaper leaves it running.
  cli_ok({"reap"});
  EXPECT_EQ(state_of(name), "running");

  cli_ok({"pause", name});
  EXPECT_EQ(state_of(name), "paused");
  CliResult paused_ssh = run_cli({"ssh", name, "--", "true"});
  EXPECT_EQ(paused_ssh.exit_code, kExitSshFailure) << paused_ssh.describe();
  EXPECT_TRUE(contains(paused_ssh.err, "vmfest: error: ")) << paused_ssh.describe();
  EXPECT_TRUE(contains(paused_ssh.err, "paused")) << paused_ssh.describe();
  cli_ok({"resume", name});
  EXPECT_EQ(state_of(name), "running");
  cli_ok({"ssh", name, "--", "echo written-before-power-down > /root/marker && sync"});

  cli_ok({"power-down", name, "--grace", "20"});
  EXPECT_EQ(state_of(name), "stopped");
  CliResult pause_stopped = run_cli({"pause", name});
  EXPECT_EQ(pause_stopped.exit_code, kExitFailure) << pause_stopped.describe();
  EXPECT_TRUE(contains(pause_stopped.err,
                       "vmfest: error: cannot pause instance '" + name + "': it is stopped"))
      << pause_stopped.describe();

  // Started again, the clone boots from its own disk, as it was left.
  cli_ok({"start", name});
  EXPECT_EQ(state_of(name), "running");
  EXPECT_EQ(cli_ok({"ssh", name, "--", "cat /root/marker"}).out, "written-before-power-down\n");

  const fs::path directory = vmfest::Home::from_environment().instances() / name;
  ASSERT_TRUE(fs::exists(directory));
  cli_ok({"destroy", name});
  EXPECT_EQ(state_of(name), "not listed");
  EXPECT_FALSE(fs::exists(directory));

  CliResult gone = run_cli({"start", name});
  EXPECT_EQ(gone.exit_code, kExitFailure) << gone.describe();
  EXPECT_TRUE(contains(gone.err, "vmfest: error: no instance named '" + name + "'"))
      << gone.describe();
}

TEST(Cli, PermanentInstanceKeepsItsDiskAcrossPowerCycles) {
  const std::string name = unique("cli-perm");
  cli_ok({"create", name, "--model", kDefaultModel, "--permanent"});
  auto created = listed_instance(name);
  ASSERT_TRUE(created);
  EXPECT_EQ(created->at("permanent"), true);
  // Its own full copy: the qcow2 header's backing-file offset (bytes 8-15) is zero.
  {
    std::ifstream disk(fs::path(created->at("directory").get<std::string>()) / "disk.qcow2",
                       std::ios::binary);
    char header[16] = {};
    ASSERT_TRUE(disk.read(header, sizeof header));
    EXPECT_EQ(std::string(header, 4), "QFI\xfb");
    EXPECT_EQ(std::string(header + 8, 8), std::string(8, '\0')) << "the disk has a backing file";
  }

  cli_ok({"start", name});
  cli_ok({"ssh", name, "--", "echo kept > /root/permanent-marker && sync"});
  cli_ok({"power-down", name, "--grace", "20"});
  EXPECT_EQ(state_of(name), "stopped");
  cli_ok({"start", name});
  EXPECT_EQ(cli_ok({"ssh", name, "--", "cat /root/permanent-marker"}).out, "kept\n");
  cli_ok({"reap"});
  EXPECT_EQ(state_of(name), "running");
  cli_ok({"destroy", name});
  EXPECT_EQ(state_of(name), "not listed");
}

// Each bad command line fails with a clear message on stderr, an exit status that says whose
// fault it is, and leaves nothing behind.
TEST(Cli, BadInputIsRefusedAndChangesNothing) {
  const fs::path instances = vmfest::Home::from_environment().instances();
  const std::string name = unique("cli-bad");
  struct Case {
    std::vector<std::string> args;
    int exit_code;
    std::string message;
  };
  const std::vector<Case> cases = {
      {{"create", "../x", "--model", kDefaultModel}, kExitUsage, "invalid instance name \"../x\""},
      {{"create", "a/b", "--model", kDefaultModel}, kExitUsage, "invalid instance name"},
      {{"create", ".hidden", "--model", kDefaultModel}, kExitUsage, "invalid instance name"},
      {{"create", std::string(65, 'a'), "--model", kDefaultModel},
       kExitUsage,
       "invalid instance name"},
      {{"create", name, "--model", "no-such-model"},
       kExitFailure,
       "model 'no-such-model' is not registered"},
      {{"create", name, "--model", "../m"}, kExitUsage, "invalid model name"},
      {{"create", name, "--model", kDefaultModel, "--profile", "huge"},
       kExitUsage,
       "unknown hardware profile 'huge'"},
      {{"create", name, "--model", kDefaultModel, "--memory", "10"},
       kExitUsage,
       "invalid hardware profile: 10 MiB"},
      {{"create", name, "--model", kDefaultModel, "--cpus", "2"}, kExitUsage, "--memory"},
      {{"create", name, "--model", kDefaultModel, "--profile", "small", "--memory", "512"},
       kExitUsage,
       "excludes"},
      {{"create", name}, kExitUsage, "--model is required"},
      {{"start", name}, kExitFailure, "no instance named '" + name + "'"},
      {{"pause", name}, kExitFailure, "no instance named '" + name + "'"},
      {{"destroy", name}, kExitFailure, "no instance named '" + name + "'"},
      {{"start", "../x"}, kExitUsage, "invalid instance name"},
      {{"ssh", name, "--", "true"}, kExitSshFailure, "no instance named '" + name + "'"},
      {{"ssh", name, "hostname"}, kExitSshFailure, "put the guest's command after --"},
      {{"ls", "--", "x"}, kExitUsage, "only `vmfest ssh NAME -- CMD...` takes arguments after --"},
      {{"rm-model", "no-such-model"}, kExitFailure, "model 'no-such-model' is not registered"},
      {{"power-down", name, "--grace", "-1"}, kExitUsage, "--grace"},
      {{"frobnicate"}, kExitUsage, "unknown command 'frobnicate'"},
  };
  for (const Case& bad : cases) {
    const std::string command = fmt::format("vmfest {}", fmt::join(bad.args, " "));
    CliResult result = run_cli(bad.args);
    EXPECT_EQ(result.exit_code, bad.exit_code) << command << ": " << result.describe();
    EXPECT_TRUE(result.err.starts_with("vmfest: error: ")) << command << ": " << result.describe();
    EXPECT_TRUE(contains(result.err, bad.message)) << command << ": " << result.describe();
    EXPECT_EQ(result.out, "") << command;
  }
  EXPECT_FALSE(fs::exists(instances / name));
  for (const auto& entry : fs::directory_iterator(instances)) {
    EXPECT_FALSE(contains(entry.path().filename().string(), name)) << entry.path();
  }
  EXPECT_FALSE(vmfest::ModelRegistry().find("no-such-model"));

  // A state that does not allow the operation: refused, and the instance is left as it was.
  cli_ok({"create", name, "--model", kDefaultModel});
  CliResult pause_created = run_cli({"pause", name});
  EXPECT_EQ(pause_created.exit_code, kExitFailure) << pause_created.describe();
  EXPECT_TRUE(contains(pause_created.err, "cannot pause instance '" + name + "': it is created"))
      << pause_created.describe();
  CliResult taken = run_cli({"create", name, "--model", kDefaultModel});
  EXPECT_EQ(taken.exit_code, kExitFailure) << taken.describe();
  EXPECT_TRUE(contains(taken.err, "an instance named '" + name + "' already exists"))
      << taken.describe();
  EXPECT_EQ(state_of(name), "created");
  cli_ok({"destroy", name});
}

TEST(Cli, HelpForEveryCommand) {
  for (const char* command : {"setup-model", "models", "rm-model", "create", "start", "pause",
                              "resume", "power-down", "destroy", "ls", "ssh", "reap"}) {
    CliResult help = run_cli({command, "--help"});
    EXPECT_EQ(help.exit_code, 0) << command << ": " << help.describe();
    EXPECT_TRUE(contains(help.out, std::string("Usage: vmfest ") + command)) << help.describe();
  }
  CliResult top = run_cli({"--help"});
  EXPECT_EQ(top.exit_code, 0);
  EXPECT_TRUE(contains(top.out, "Exit status")) << top.out;
}

}  // namespace
