// The `vmfest` CLI driven as a user would: each step a new process, instances detached from it.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
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
using vmfest::testing::contains;
using vmfest::testing::kDefaultModel;
using vmfest::testing::kExitFailure;
using vmfest::testing::kExitSshFailure;
using vmfest::testing::kExitUsage;
using vmfest::testing::listed_instance;
using vmfest::testing::run_cli;
using vmfest::testing::unique;

// The first line of a command's stderr that is no log record of the CLI ("info: vmfest: ...", as
// tools/vmfest_cli.cpp formats them): in a home shared with other tests, a reap of their killed
// instances may log what it removed before the command's own message.
std::string first_line_after_log_records(const std::string& text) {
  std::istringstream stream(text);
  for (std::string line; std::getline(stream, line);) {
    if (!line.starts_with("info: ") && !line.starts_with("warning: ")) return line;
  }
  return "";
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
      {{"ls", "--", "x"},
       kExitUsage,
       "only `vmfest ssh NAME -- CMD...` and `vmfest run MODEL -- CMD...` take arguments after --"},
      {{"run", kDefaultModel, "true"},
       kExitUsage,
       "put the guest's command after --: vmfest run MODEL -- CMD..."},
      {{"rm-model", "no-such-model"}, kExitFailure, "model 'no-such-model' is not registered"},
      {{"power-down", name, "--grace", "-1"}, kExitUsage, "--grace"},
      {{"frobnicate"}, kExitUsage, "unknown command 'frobnicate'"},
  };
  for (const Case& bad : cases) {
    const std::string command = fmt::format("vmfest {}", fmt::join(bad.args, " "));
    CliResult result = run_cli(bad.args);
    EXPECT_EQ(result.exit_code, bad.exit_code) << command << ": " << result.describe();
    const std::string error_line = first_line_after_log_records(result.err);
    EXPECT_TRUE(error_line.starts_with("vmfest: error: ")) << command << ": " << result.describe();
    EXPECT_TRUE(contains(error_line, bad.message)) << command << ": " << result.describe();
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
  for (const char* command :
       {"setup-model", "models",  "rm-model", "create", "start",  "pause",  "resume",
        "power-down",  "destroy", "ls",       "ssh",    "run",    "cp",     "console",
        "port",        "doctor",  "report",   "reap",   "commit", "images", "prune"}) {
    CliResult help = run_cli({command, "--help"});
    EXPECT_EQ(help.exit_code, 0) << command << ": " << help.describe();
    EXPECT_TRUE(contains(help.out, std::string("Usage: vmfest ") + command)) << help.describe();
  }
  CliResult top = run_cli({"--help"});
  EXPECT_EQ(top.exit_code, 0);
  EXPECT_TRUE(contains(top.out, "Exit status")) << top.out;
}

TEST(Cli, VersionIsTheProjects) {
  CliResult version = run_cli({"--version"});
  EXPECT_EQ(version.exit_code, 0) << version.describe();
  EXPECT_EQ(version.out, "vmfest " VMFEST_PROJECT_VERSION "\n") << version.describe();
}

// A VMFEST_HOME of the test's own, holding the default model as "tiny": `reap --force` and broken
// entries must not reach the tests that share the home beside it. It lives in the shared home's
// folder, outside its registry, and is removed when the test passes.
class CliOwnHome : public ::testing::Test {
 protected:
  void SetUp() override {
    shared_ = vmfest::Home::from_environment().root();
    const std::string bundle = vmfest::ModelRegistry().get(kDefaultModel).source;
    home_ = shared_ / "own-homes" /
            unique(::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(home_);
    ::setenv("VMFEST_HOME", home_.c_str(), 1);  // for the CLI, which inherits our environment
    cli_ok({"setup-model", bundle, "--name", "tiny"});
  }
  void TearDown() override {
    ::setenv("VMFEST_HOME", shared_.c_str(), 1);
    if (!HasFailure()) fs::remove_all(home_);
  }

  [[nodiscard]] fs::path instance(const std::string& name) const {
    return home_ / "instances" / name;
  }
  [[nodiscard]] fs::path record_file(const std::string& name) const {
    return instance(name) / "instance.json";
  }
  [[nodiscard]] fs::path model_file(const std::string& name) const {
    return home_ / "models" / name / "model.json";
  }
  // A detached instance of "tiny", never started.
  void create(const std::string& name) const {
    cli_ok({"create", name, "--model", "tiny", "--cold"});
  }
  static void overwrite(const fs::path& file, const std::string& text) {
    fs::remove(file);  // a model's files are read-only
    std::ofstream(file) << text;
  }
  void edit_record(const std::string& name, const std::function<void(nlohmann::json&)>& edit) {
    std::ifstream in(record_file(name));
    nlohmann::json record = nlohmann::json::parse(in);
    edit(record);
    overwrite(record_file(name), record.dump(2));
  }

  fs::path shared_;
  fs::path home_;
};

// What a run that died leaves behind: detached instances of a VirtualBox (the test double) that is
// gone. They are listed as unknown, never fail the listing, and --force removes them.
TEST_F(CliOwnHome, AnInstanceWhoseHypervisorIsGoneIsListedUnknownAndForceRemoved) {
#ifndef VMFEST_CLI_HAS_VIRTUALBOX
  GTEST_SKIP() << "needs the VirtualBox backend (built with VMFEST_WITH_VIRTUALBOX=OFF): its "
                  "vboxwebsrv is the hypervisor that goes away";
#endif
  for (const std::string name : {"gone-a", "gone-b", "here"}) create(name);
  for (const std::string name : {"gone-a", "gone-b"}) {
    edit_record(name, [](nlohmann::json& record) {
      record["backend"] = "virtualbox";
      // Port 1 (tcpmux): nothing listens there.
      record["machine"] = {{"uuid", "6f1f2c57-0d4e-4a56-9a53-2f9d1d0e0c11"},
                           {"port", 0},
                           {"url", "http://127.0.0.1:1/"}};
    });
  }

  CliResult table = cli_ok({"ls"});
  EXPECT_TRUE(contains(table.out, "gone-a")) << table.describe();
  EXPECT_TRUE(contains(table.out, "unknown")) << table.describe();
  EXPECT_TRUE(contains(table.out, "here")) << table.describe();
  EXPECT_TRUE(contains(table.err, "warning: ")) << table.describe();
  EXPECT_TRUE(contains(table.err, "cannot reach vboxwebsrv at http://127.0.0.1:1/"))
      << table.describe();
  auto gone = listed_instance("gone-a");
  ASSERT_TRUE(gone);
  EXPECT_EQ(gone->at("state"), "unknown");
  EXPECT_EQ(gone->at("backend"), "virtualbox");
  EXPECT_TRUE(contains(gone->at("problem").get<std::string>(), "cannot reach vboxwebsrv"));
  EXPECT_EQ(state_of("here"), "created");
  EXPECT_TRUE(listed_instance("here")->at("problem").is_null());

  CliResult refused = run_cli({"destroy", "gone-a"});
  EXPECT_EQ(refused.exit_code, kExitFailure) << refused.describe();
  EXPECT_TRUE(contains(refused.err, "cannot reach vboxwebsrv")) << refused.describe();
  EXPECT_TRUE(contains(refused.err, "`vmfest destroy --force gone-a` removes its files"))
      << refused.describe();
  EXPECT_TRUE(fs::exists(instance("gone-a")));
  EXPECT_EQ(cli_ok({"destroy", "--force", "gone-a"}).out, "instance 'gone-a' is destroyed\n");
  EXPECT_FALSE(fs::exists(instance("gone-a")));

  // A plain reap leaves detached instances alone; --force empties the home.
  cli_ok({"reap"});
  EXPECT_TRUE(fs::exists(instance("gone-b")));
  CliResult reaped = cli_ok({"reap", "--force"});
  EXPECT_TRUE(contains(reaped.out, "reaped instance 'gone-b'")) << reaped.describe();
  EXPECT_TRUE(contains(reaped.out, "reaped instance 'here'")) << reaped.describe();
  EXPECT_TRUE(fs::is_empty(home_ / "instances"));
}

// A model.json or instance record that is valid JSON of the wrong shape: every command that reads
// it says which file and what to do; listings and the reaper skip it and say so; --force removes
// it.
TEST_F(CliOwnHome, WrongShapedJsonIsNamedSkippedAndRemovedByForce) {
  create("broken");
  create("spare");
  overwrite(record_file("broken"), R"({"name": "broken", "backend": "qemu"})");
  cli_ok({"setup-model", vmfest::ModelRegistry().get("tiny").source, "--name", "shape"});
  overwrite(model_file("shape"), R"({"name": "shape", "format": "qcow2"})");

  std::string all_errors;
  auto refused = [&](const std::vector<std::string>& args, const fs::path& file,
                     const std::string& advice) {
    CliResult result = run_cli(args);
    all_errors += result.err;
    EXPECT_EQ(result.exit_code, kExitFailure) << result.describe();
    EXPECT_TRUE(contains(result.err, "vmfest: error: ")) << result.describe();
    EXPECT_TRUE(contains(result.err, file.string() + " is not a valid")) << result.describe();
    EXPECT_TRUE(contains(result.err, advice)) << result.describe();
  };
  refused({"start", "broken"}, record_file("broken"), "`vmfest destroy --force broken`");
  refused({"destroy", "broken"}, record_file("broken"), "`vmfest destroy --force broken`");
  refused({"create", "of-shape", "--model", "shape"}, model_file("shape"),
          "`vmfest rm-model --force shape`");
  refused({"rm-model", "shape"}, model_file("shape"), "`vmfest rm-model --force shape`");
  EXPECT_TRUE(contains(all_errors, "key 'model' not found")) << all_errors;
  EXPECT_TRUE(contains(all_errors, "key 'disk' not found")) << all_errors;

  // Listings and the reaper go on without the broken entry, and report it.
  CliResult models = cli_ok({"models"});
  EXPECT_TRUE(contains(models.out, "tiny")) << models.describe();
  EXPECT_FALSE(contains(models.out, "shape")) << models.describe();
  EXPECT_TRUE(contains(models.err, "warning: ")) << models.describe();
  EXPECT_TRUE(contains(models.err, model_file("shape").string())) << models.describe();
  CliResult table = cli_ok({"ls"});
  EXPECT_TRUE(contains(table.out, "spare")) << table.describe();
  EXPECT_FALSE(contains(table.out, "broken")) << table.describe();
  EXPECT_TRUE(contains(table.err, record_file("broken").string())) << table.describe();
  EXPECT_EQ(state_of("spare"), "created");
  EXPECT_EQ(state_of("broken"), "not listed");
  CliResult reap = cli_ok({"reap"});
  EXPECT_TRUE(contains(reap.err, record_file("broken").string())) << reap.describe();
  EXPECT_TRUE(fs::exists(instance("broken")));
  all_errors += models.err + table.err + reap.err;
  EXPECT_FALSE(contains(all_errors, "json.exception")) << all_errors;

  // --force takes them.
  cli_ok({"destroy", "--force", "broken"});
  EXPECT_FALSE(fs::exists(instance("broken")));
  cli_ok({"rm-model", "--force", "shape"});
  EXPECT_FALSE(fs::exists(model_file("shape").parent_path()));
  EXPECT_EQ(cli_ok({"models"}).err, "");
  create("broken-again");
  overwrite(record_file("broken-again"), "[]");
  CliResult forced = cli_ok({"reap", "--force"});
  EXPECT_TRUE(contains(forced.out, "reaped instance 'broken-again'")) << forced.describe();
  EXPECT_TRUE(fs::is_empty(home_ / "instances"));
}

// A started instance builds its model's warm image: `images` lists it with the instance on it,
// `prune` keeps it while the instance exists and removes it once unused; `commit` makes a model,
// with the running guest as its warm image.
TEST_F(CliOwnHome, ImagesArePrunedOnlyWhenUnusedAndCommitRegistersAModel) {
  cli_ok({"create", "box", "--model", "tiny"});
  cli_ok({"start", "box"});
  const std::string listed = cli_ok({"images"}).out;
  EXPECT_TRUE(contains(listed, "tiny ")) << listed;
  EXPECT_TRUE(contains(listed, "ready")) << listed;
  EXPECT_TRUE(contains(cli_ok({"prune", "--older-than", "0s"}).out, "0 images removed"));

  cli_ok({"ssh", "box", "--", "echo committed > /root/mark"});
  EXPECT_TRUE(contains(cli_ok({"commit", "box", "saved"}).out, "is saved as model 'saved'"));
  EXPECT_TRUE(contains(cli_ok({"models"}).out, "saved"));
  // The running guest's memory is the new model's warm image.
  EXPECT_TRUE(contains(cli_ok({"images"}).out, "saved ")) << cli_ok({"images"}).out;
  EXPECT_EQ(run_cli({"commit", "box", "saved"}).exit_code, kExitFailure);  // the name is taken
  EXPECT_EQ(state_of("box"), "running");

  cli_ok({"destroy", "box"});
  EXPECT_TRUE(contains(cli_ok({"prune", "--older-than", "0s"}).out, "2 images removed"));
  EXPECT_FALSE(contains(cli_ok({"images"}).out, "tiny "));
  CliResult bad_age = run_cli({"prune", "--older-than", "1x"});
  EXPECT_EQ(bad_age.exit_code, kExitUsage) << bad_age.describe();
  EXPECT_TRUE(contains(bad_age.err, "--older-than 1x")) << bad_age.describe();
  cli_ok({"rm-model", "saved"});
}

}  // namespace
