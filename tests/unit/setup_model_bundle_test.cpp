// setup_model of model bundles (a tar or a folder holding vmfest-model.json): what is unpacked and
// registered, entries and links that would leave the bundle, permissions; model names, a second
// setup of one URL, and the login a bundle states.
#include <gtest/gtest.h>

#include <filesystem>
#include <string>

#include <fmt/format.h>

#include "../support/error_message.h"
#include "setup_model_fixture.h"
#include "vmfest/error.h"
#include "vmfest/model.h"

namespace {
namespace fs = std::filesystem;
using vmfest::testing::message_of;
using vmfest::testing::SetupModelTest;

// ---- bundles ---------------------------------------------------------------------------------

TEST_F(SetupModelTest, GzippedTarBundleIsUnpackedAndRegistered) {
  for (const char* file : {"bundle.tar.gz", "bundle-folder.tgz"}) {
    SCOPED_TRACE(file);
    // The name comes from the URL or the options (a bundle folder's manifest name is not read
    // before the download).
    const std::string name = file == std::string("bundle.tar.gz") ? "" : "bundle";
    vmfest::Model model = setup(server().url("-", file), name, replacing());
    EXPECT_EQ(model.name, "bundle");
    EXPECT_EQ(model.format, "qcow2");
    EXPECT_EQ(model.sha256, data().sha256("disk.qcow2"));
    EXPECT_EQ(model.boot.kind, vmfest::BootSpec::Kind::Kernel);
    EXPECT_EQ(vmfest::detail::read_text(model.boot.kernel), "kernel");
    EXPECT_EQ(vmfest::detail::read_text(model.boot.initrd), "initrd");
    EXPECT_EQ(model.boot.cmdline, "console=ttyS0");
    EXPECT_EQ(model.ssh_user, "tester");
    EXPECT_EQ(model.ssh_port, 2222);
    EXPECT_EQ(model.ready_marker, "READY");
    EXPECT_EQ(model.boot.kernel.parent_path(), model.directory);
  }
  EXPECT_EQ(vmfest::ModelRegistry(home()).list().size(), 1u);
  expect_no_leftovers();
}

TEST_F(SetupModelTest, TarEntriesOutsideTheBundleAreRefused) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"evil-dotdot.tar", "climbs out"},
      {"evil-absolute.tar", "absolute path"},
      {"evil-symlink.tar", "symbolic link"},
      {"evil-manifest.tar", "relative names inside the bundle"}};
  for (const auto& [file, why] : cases) {
    SCOPED_TRACE(file);
    std::string message = message_of([&] { setup(server().url("-", file), "evil"); });
    EXPECT_NE(message.find(why), std::string::npos) << message;
    EXPECT_THROW(setup(server().url("-", file), "evil"), vmfest::SetupError);
  }
  EXPECT_FALSE(fs::exists(home().models() / "escaped.txt"));
  EXPECT_FALSE(fs::exists(data().absolute_escape()));
  EXPECT_FALSE(fs::exists("/etc/escaped.txt"));
  expect_nothing_left();
}

TEST_F(SetupModelTest, ASparseTarMemberCountsAtItsDeclaredSizeAndLeavesNothing) {
  ASSERT_LT(fs::file_size(data() / "sparse-bomb.tar"), 1U << 20);
  const std::string message =
      message_of([&] { setup(server().url("-", "sparse-bomb.tar"), "sparse"); });
  EXPECT_NE(message.find("unpacks to more than VMFEST_MAX_MODEL_SIZE (64.00 GiB)"),
            std::string::npos)
      << message;
  EXPECT_NE(message.find("'huge.raw' alone declares 1024.00 GiB"), std::string::npos) << message;
  EXPECT_NE(message.find("nothing was registered"), std::string::npos) << message;
  expect_nothing_left();
}

TEST_F(SetupModelTest, FolderBundleManifestCannotNameFilesOutsideIt) {
  const fs::path bundle = root_ / "sneaky";
  fs::create_directories(bundle);
  std::ofstream(bundle / "vmfest-model.json") << R"({"disk":"../../outside.qcow2"})";
  fs::copy_file(data() / "disk.qcow2", root_ / "outside.qcow2");
  std::string message = message_of([&] { setup(bundle.string()); });
  EXPECT_NE(message.find("relative names inside the bundle"), std::string::npos) << message;
  expect_nothing_left();
}

TEST_F(SetupModelTest, FolderBundleLinksThatLeaveTheBundleAreRefused) {
  const fs::path bundle = root_ / "linking";
  fs::create_directories(bundle);
  const fs::path secret = root_ / "host-secret.qcow2";  // a host file the guest must never see
  fs::copy_file(data() / "disk.qcow2", secret);
  fs::permissions(secret, fs::perms::owner_read | fs::perms::owner_write);
  std::ofstream(bundle / "vmfest-model.json") << R"({"disk":"disk.qcow2"})";
  fs::create_symlink(secret, bundle / "disk.qcow2");
  std::string message = message_of([&] { setup(bundle.string(), "linking"); });
  EXPECT_NE(
      message.find("a symbolic link to " + fs::canonical(secret).string() + ", outside the bundle"),
      std::string::npos)
      << message;
  expect_nothing_left();

  // A link that stays inside the bundle is only another name for its file.
  fs::remove(bundle / "disk.qcow2");
  fs::copy_file(data() / "disk.qcow2", bundle / "real.qcow2");
  fs::create_symlink("real.qcow2", bundle / "disk.qcow2");
  EXPECT_EQ(setup(bundle.string(), "linking").format, "qcow2");
}

TEST_F(SetupModelTest, AModelIsNeverMoreReadableThanItsSource) {
  const fs::path bundle = root_ / "private";
  fs::create_directories(bundle);
  std::ofstream(bundle / "vmfest-model.json") << R"({"disk":"disk.qcow2"})";
  fs::copy_file(data() / "disk.qcow2", bundle / "disk.qcow2");
  fs::permissions(bundle / "disk.qcow2", fs::perms::owner_read | fs::perms::owner_write);
  const vmfest::Model model = setup(bundle.string(), "private");
  EXPECT_EQ(fs::status(model.disk).permissions(), fs::perms::owner_read)
      << "a 0600 source became readable by others, or stayed writable";
}

// ---- names, no-ops, replace
// ----------------------------------------------------------------------

TEST_F(SetupModelTest, BadNamesSchemesAndChecksumsAreInvalidArguments) {
  EXPECT_THROW(setup(server().url("-", "disk.qcow2"), "../escape"), vmfest::InvalidArgument);
  std::string no_name =
      message_of([&] { setup(fmt::format("http://127.0.0.1:{}/", server().port())); });
  EXPECT_NE(no_name.find("SetupOptions::name"), std::string::npos) << no_name;
  EXPECT_THROW(setup("ftp://127.0.0.1/disk.qcow2"), vmfest::InvalidArgument);
  EXPECT_THROW(setup("http://[not a url/x.qcow2"), vmfest::InvalidArgument);
  vmfest::SetupOptions options;
  options.sha256 = "abc";
  EXPECT_THROW(setup(server().url("-", "disk.qcow2"), "x", options), vmfest::InvalidArgument);
  EXPECT_TRUE(server().requests().empty());  // refused before any download
  expect_nothing_left();
}

TEST_F(SetupModelTest, SameUrlAgainIsANoOpAndReplaceDownloadsAgain) {
  const std::string url = server().url("ranges", "disk.qcow2.gz");
  vmfest::Model first = setup(url);
  vmfest::Model second = setup(url);
  EXPECT_EQ(first.disk, second.disk);
  EXPECT_EQ(server().requests_for("ranges", "disk.qcow2.gz").size(), 1u);
  vmfest::Model replaced = setup(url, "", replacing());
  EXPECT_EQ(replaced.sha256, first.sha256);
  EXPECT_EQ(server().requests_for("ranges", "disk.qcow2.gz").size(), 2u);
  // Another source under the same name replaces the model.
  vmfest::Model other = setup(server().url("-", "disk.raw.gz"), "disk");
  EXPECT_EQ(other.format, "raw");
  EXPECT_EQ(vmfest::ModelRegistry(home()).list().size(), 1u);
}

TEST_F(SetupModelTest, TheSshUserIsVmfestUnlessStatedAndCanBeChangedWithoutADownload) {
  const std::string url = server().url("-", "disk.qcow2");
  EXPECT_EQ(setup(url).ssh_user, "vmfest");  // the login every instance's seed creates
  vmfest::SetupOptions options;
  options.ssh_user = "debian";
  vmfest::Model changed = setup(url, "", options);
  EXPECT_EQ(changed.ssh_user, "debian");
  EXPECT_EQ(vmfest::ModelRegistry(home()).get("disk").ssh_user, "debian");
  EXPECT_EQ(server().requests_for("-", "disk.qcow2").size(), 1u);  // only the login changed
  for (const char* invalid : {"Root", "a b", "-x", "x:y", "a$(id)", ""}) {
    options.ssh_user = invalid;
    if (options.ssh_user.empty()) continue;  // empty: not stated
    const std::string message = message_of([&] { setup(url, "", options); });
    EXPECT_NE(message.find("is not a valid SSH user"), std::string::npos) << message;
  }
  EXPECT_EQ(vmfest::ModelRegistry(home()).get("disk").ssh_user, "debian");
}

}  // namespace
