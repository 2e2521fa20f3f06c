// `vmfest cp SRC DST`: a folder tree and single files both ways between the host and a running
// instance, permission bits kept; and the bad input it refuses.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "cli_runner.h"
#include "vmfest/gtest/environment.h"

namespace {
namespace fs = std::filesystem;
using vmfest::testing::CliResult;
using vmfest::testing::contains;
using vmfest::testing::kDefaultModel;
using vmfest::testing::kExitFailure;
using vmfest::testing::kExitUsage;
using vmfest::testing::run_cli;
using vmfest::testing::unique;

std::string read_text(const fs::path& file) {
  std::ifstream in(file);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

fs::perms permission_bits(const fs::path& path) {
  return fs::status(path).permissions() & fs::perms::mask;
}

// A started CLI instance, destroyed when the test ends however it ends.
class RunningInstance {
 public:
  explicit RunningInstance(std::string name) : name_(std::move(name)) {
    const CliResult created = run_cli({"create", name_, "--model", kDefaultModel});
    EXPECT_EQ(created.exit_code, 0) << created.describe();
    const CliResult started = run_cli({"start", name_});
    EXPECT_EQ(started.exit_code, 0) << started.describe();
  }
  RunningInstance(const RunningInstance&) = delete;
  RunningInstance& operator=(const RunningInstance&) = delete;
  ~RunningInstance() {
    const CliResult destroyed = run_cli({"destroy", name_});
    EXPECT_EQ(destroyed.exit_code, 0) << destroyed.describe();
  }
  [[nodiscard]] const std::string& name() const noexcept { return name_; }

  // `vmfest ssh NAME -- CMD`, expected to succeed; its stdout.
  std::string ssh(const std::string& command) const {
    const CliResult result = run_cli({"ssh", name_, "--", command});
    EXPECT_EQ(result.exit_code, 0) << command << ": " << result.describe();
    return result.out;
  }

 private:
  std::string name_;
};

class Cp : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() / unique("vmfest-cp-test");
    fs::remove_all(root_);
    fs::create_directories(root_ / "tree" / "sub" / "deep");
    fs::create_directories(root_ / "tree" / "empty");
    std::ofstream(root_ / "tree" / "a.txt") << "alpha\n";
    std::ofstream(root_ / "tree" / "sub" / "tool.sh") << "#!/bin/sh\necho tool ran\n";
    fs::permissions(root_ / "tree" / "sub" / "tool.sh", static_cast<fs::perms>(0755));
    std::ofstream(root_ / "tree" / "sub" / "deep" / "secret.txt") << "delta\n";
    fs::permissions(root_ / "tree" / "sub" / "deep" / "secret.txt", static_cast<fs::perms>(0600));
  }
  void TearDown() override { fs::remove_all(root_); }

  fs::path root_;
};

TEST_F(Cp, FolderTreesAndFilesGoBothWaysWithTheirModes) {
  RunningInstance vm(unique("cp"));
  const std::string& name = vm.name();

  // Into an existing guest folder: the copy takes the source's name.
  CliResult up = run_cli({"cp", (root_ / "tree").string(), name + ":/root"});
  EXPECT_EQ(up.exit_code, 0) << up.describe();
  EXPECT_EQ(up.out, "copied " + (root_ / "tree").string() + " to " + name + ":/root/tree\n");
  EXPECT_EQ(vm.ssh("cd /root/tree && find . | sort"),
            ".\n./a.txt\n./empty\n./sub\n./sub/deep\n./sub/deep/secret.txt\n./sub/tool.sh\n");
  EXPECT_EQ(vm.ssh("stat -c '%a' /root/tree/sub/tool.sh /root/tree/sub/deep/secret.txt"),
            "755\n600\n");
  EXPECT_EQ(vm.ssh("/root/tree/sub/tool.sh"), "tool ran\n");

  // A single file under a new name.
  up = run_cli({"cp", (root_ / "tree" / "a.txt").string(), name + ":/tmp/renamed.txt"});
  EXPECT_EQ(up.exit_code, 0) << up.describe();
  EXPECT_EQ(vm.ssh("cat /tmp/renamed.txt"), "alpha\n");

  // Back to the host: into an existing folder, and a file under a new name (the guest path
  // normalised on the way).
  fs::create_directories(root_ / "back");
  CliResult down = run_cli({"cp", name + ":/root/tree", (root_ / "back").string()});
  EXPECT_EQ(down.exit_code, 0) << down.describe();
  const fs::path back = root_ / "back" / "tree";
  EXPECT_EQ(read_text(back / "a.txt"), "alpha\n");
  EXPECT_EQ(read_text(back / "sub" / "tool.sh"), "#!/bin/sh\necho tool ran\n");
  EXPECT_EQ(read_text(back / "sub" / "deep" / "secret.txt"), "delta\n");
  EXPECT_TRUE(fs::is_directory(back / "empty"));
  EXPECT_EQ(permission_bits(back / "sub" / "tool.sh"), static_cast<fs::perms>(0755));
  EXPECT_EQ(permission_bits(back / "sub" / "deep" / "secret.txt"), static_cast<fs::perms>(0600));

  down = run_cli({"cp", name + ":/tmp/./x/../renamed.txt", (root_ / "one.txt").string()});
  EXPECT_EQ(down.exit_code, 0) << down.describe();
  EXPECT_EQ(read_text(root_ / "one.txt"), "alpha\n");

  // What the guest does not have is vmfest's error, naming it.
  const CliResult missing = run_cli({"cp", name + ":/no/such/file", (root_ / "x").string()});
  EXPECT_EQ(missing.exit_code, kExitFailure) << missing.describe();
  EXPECT_TRUE(contains(missing.err, "cannot copy " + name + ":/no/such/file"))
      << missing.describe();
}

TEST_F(Cp, BadInputIsRefusedClearly) {
  auto refused = [](const std::vector<std::string>& args, int status, const std::string& says) {
    const CliResult result = run_cli(args);
    EXPECT_EQ(result.exit_code, status) << result.describe();
    EXPECT_TRUE(contains(result.err, says)) << says << "\n" << result.describe();
  };
  const std::string file = (root_ / "tree" / "a.txt").string();
  refused({"cp", "vm1:/a", "vm2:/b"}, kExitUsage, "both sides name an instance");
  refused({"cp", file, (root_ / "copy").string()}, kExitUsage, "neither side names an instance");
  refused({"cp", file, "vm1:tmp/a.txt"}, kExitUsage,
          "the guest path in 'vm1:tmp/a.txt' is not absolute");
  refused({"cp", "vm1:/tmp/../../etc/shadow", file}, kExitUsage,
          "the guest path in 'vm1:/tmp/../../etc/shadow' leaves the guest's root folder");
  refused({"cp", "bad*name:/tmp", file}, kExitUsage, "invalid instance name \"bad*name\"");
  refused({"cp", (root_ / "nothing").string(), "vm1:/tmp"}, kExitFailure,
          "cannot copy " + (root_ / "nothing").string() + ": no such file or folder on the host");
  refused({"cp", file, unique("no-such-vm") + ":/tmp"}, kExitFailure,
          "no instance named '" + unique("no-such-vm") + "'");
  refused({"cp", file}, kExitUsage, "destination is required");
}

}  // namespace
