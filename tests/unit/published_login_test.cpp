// Published logins of images without cloud-init: stated by a bundle, by SetupOptions, or by a
// Vagrant box (libvirt or virtualbox provider, Vagrantfile or Vagrant's defaults); kept owner-only;
// refused when they leave the bundle or name a provider vmfest cannot run.
#include <gtest/gtest.h>

#include <unistd.h>

#include <filesystem>
#include <fstream>

#include <fmt/format.h>

#include "../support/error_message.h"
#include "vmfest/error.h"
#include "vmfest/internal/base.h"
#include "vmfest/model.h"
#include "vmfest/ssh/keys.h"
#include "vmfest/ssh/shell_quote.h"

namespace {
namespace fs = std::filesystem;

void sh(const std::string& command) {
  vmfest::detail::run_tool_checked("/bin/sh", {"-ec", command}, "preparing test data");
}

using vmfest::testing::message_of;

void write(const fs::path& file, const std::string& text) {
  fs::create_directories(file.parent_path());
  std::ofstream(file) << text;
}

class PublishedLoginTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() /
            fmt::format("vmfest-published-{}-{}", ::getpid(),
                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(root_);
    fs::create_directories(root_);
    const std::string qemu_img = vmfest::detail::find_program("qemu-img", "qemu-utils").string();
    sh(fmt::format("cd {}; {} create -q -f qcow2 disk.qcow2 8M", quote(root_), qemu_img));
    key_ = vmfest::ssh::KeyPair::generate("published@test");
    // Vagrant's defaults look for Vagrant's own key on this host: none here unless a test puts it.
    ::setenv("VAGRANT_HOME", (root_ / "vagrant.d").c_str(), 1);
  }
  void TearDown() override {
    ::unsetenv("VAGRANT_HOME");
    fs::remove_all(root_);
  }

  static std::string quote(const fs::path& path) { return vmfest::ssh::shell_quote(path.string()); }
  [[nodiscard]] vmfest::Home home() const { return vmfest::Home(root_ / "home"); }
  vmfest::Model setup(const fs::path& source, vmfest::SetupOptions options = {}) {
    return vmfest::setup_model(source.string(), options, home());
  }
  void expect_nothing_registered() const {
    EXPECT_TRUE(vmfest::ModelRegistry(home()).list().empty());
  }
  static fs::perms mode(const fs::path& file) { return fs::status(file).permissions(); }
  static bool owner_only(const fs::path& file) {
    return (mode(file) & (fs::perms::group_all | fs::perms::others_all)) == fs::perms::none;
  }

  // A Vagrant box of the libvirt provider as a gzipped tar: box.img, metadata.json, and what
  // `extra` writes into its folder first.
  fs::path libvirt_box(const std::string& name, const std::string& metadata,
                       const std::function<void(const fs::path&)>& extra = {}) {
    const fs::path folder = root_ / (name + ".folder");
    fs::create_directories(folder);
    fs::copy_file(root_ / "disk.qcow2", folder / "box.img");
    write(folder / "metadata.json", metadata);
    if (extra) extra(folder);
    const fs::path box = root_ / (name + ".box");
    sh(fmt::format("tar -czf {} -C {} .", quote(box), quote(folder)));
    return box;
  }

  fs::path root_;
  vmfest::ssh::KeyPair key_;
};

TEST_F(PublishedLoginTest, ABundlesKeyIsCopiedOwnerOnlyAndNamedInTheModel) {
  const fs::path bundle = root_ / "appliance";
  fs::copy_file(root_ / "disk.qcow2", (fs::create_directories(bundle), bundle / "disk.qcow2"));
  write(bundle / "keys" / "id", key_.private_openssh);
  write(bundle / "vmfest-model.json",
        R"({"disk": "disk.qcow2", "ssh": {"user": "admin", "private_key": "keys/id"}})");
  const vmfest::Model model = setup(bundle);
  EXPECT_EQ(model.ssh_user, "admin");
  ASSERT_FALSE(model.published_login.private_key.empty());
  EXPECT_TRUE(model.published_login.password_file.empty());
  EXPECT_EQ(vmfest::detail::read_text(model.published_login.private_key), key_.private_openssh);
  EXPECT_TRUE(owner_only(model.published_login.private_key));
  EXPECT_EQ(model.published_login.private_key.parent_path(), model.directory);
  // What the registry reads back.
  EXPECT_EQ(vmfest::ModelRegistry(home()).get("appliance").published_login.private_key,
            model.published_login.private_key);
}

TEST_F(PublishedLoginTest, ABundlesKeyThatLinksOutOfTheBundleIsRefused) {
  const fs::path bundle = root_ / "linking";
  fs::copy_file(root_ / "disk.qcow2", (fs::create_directories(bundle), bundle / "disk.qcow2"));
  const fs::path secret = root_ / "host-key";  // a key of the host's, never to be taken
  write(secret, key_.private_openssh);
  fs::create_symlink(secret, bundle / "id");
  write(bundle / "vmfest-model.json",
        R"({"disk": "disk.qcow2", "ssh": {"user": "admin", "private_key": "id"}})");
  const std::string message = message_of([&] { setup(bundle); });
  EXPECT_NE(
      message.find("a symbolic link to " + fs::canonical(secret).string() + ", outside the bundle"),
      std::string::npos)
      << message;
  write(bundle / "vmfest-model.json",
        R"({"disk": "disk.qcow2", "ssh": {"user": "admin", "private_key": "../host-key"}})");
  const std::string climbing = message_of([&] { setup(bundle); });
  EXPECT_NE(climbing.find("relative names inside the bundle"), std::string::npos) << climbing;
  expect_nothing_registered();
}

TEST_F(PublishedLoginTest, ABundlesPasswordIsKeptOwnerOnlyAndOutOfModelJson) {
  const fs::path bundle = root_ / "router";
  fs::copy_file(root_ / "disk.qcow2", (fs::create_directories(bundle), bundle / "disk.qcow2"));
  write(bundle / "vmfest-model.json",
        R"({"disk": "disk.qcow2", "ssh": {"user": "admin", "password": "s3cret-Pw"}})");
  const vmfest::Model model = setup(bundle);
  ASSERT_FALSE(model.published_login.password_file.empty());
  EXPECT_EQ(vmfest::detail::read_text(model.published_login.password_file), "s3cret-Pw\n");
  EXPECT_TRUE(owner_only(model.published_login.password_file));
  EXPECT_EQ(vmfest::detail::read_text(model.directory / "model.json").find("s3cret"),
            std::string::npos);
}

TEST_F(PublishedLoginTest, OptionsStateTheLoginAndChangeItWithoutASecondSetup) {
  write(root_ / "id", key_.private_openssh);
  write(root_ / "password.txt", "vagrant\nignored second line\n");
  vmfest::SetupOptions options;
  options.name = "box";
  options.ssh_user = "vagrant";
  options.ssh_key = root_ / "id";
  const vmfest::Model keyed = setup(root_ / "disk.qcow2", options);
  ASSERT_TRUE(fs::exists(keyed.published_login.private_key));
  // The same source with a password instead: only the login changes, the key goes.
  options.ssh_key.clear();
  options.ssh_password_file = root_ / "password.txt";
  const vmfest::Model by_password = setup(root_ / "disk.qcow2", options);
  EXPECT_EQ(by_password.sha256, keyed.sha256);
  EXPECT_TRUE(by_password.published_login.private_key.empty());
  EXPECT_FALSE(fs::exists(keyed.published_login.private_key)) << "a superseded key lingers";
  EXPECT_EQ(vmfest::detail::read_text(by_password.published_login.password_file), "vagrant\n");

  options.ssh_key = root_ / "id";
  EXPECT_THROW(setup(root_ / "disk.qcow2", options), vmfest::InvalidArgument);  // both
  options.ssh_password_file.clear();
  options.ssh_key = root_ / "password.txt";
  const std::string not_a_key = message_of([&] { setup(root_ / "disk.qcow2", options); });
  EXPECT_NE(not_a_key.find("is not an unencrypted private key"), std::string::npos) << not_a_key;
}

TEST_F(PublishedLoginTest, ALibvirtBoxTakesTheLoginItsVagrantfileStates) {
  const fs::path box =
      libvirt_box("debian12", R"({"provider": "libvirt", "format": "qcow2", "virtual_size": 1})",
                  [&](const fs::path& folder) {
                    write(folder / "insecure_key", key_.private_openssh);
                    write(folder / "Vagrantfile", R"(Vagrant.configure("2") do |config|
  config.ssh.username = "admin"
  config.ssh.private_key_path = File.expand_path("../insecure_key", __FILE__)
end
)");
                  });
  const vmfest::Model model = setup(box);
  EXPECT_EQ(model.name, "debian12");
  EXPECT_EQ(model.format, "qcow2");
  EXPECT_EQ(model.ssh_user, "admin");
  ASSERT_FALSE(model.published_login.private_key.empty());
  EXPECT_EQ(vmfest::detail::read_text(model.published_login.private_key), key_.private_openssh);
  EXPECT_TRUE(owner_only(model.published_login.private_key));
}

TEST_F(PublishedLoginTest, ABoxWithoutAVagrantfileGetsVagrantsDefaults) {
  const fs::path box = libvirt_box("plain", R"({"provider": "libvirt"})");
  // No Vagrant on this host: Vagrant's base boxes' password.
  const vmfest::Model by_password = setup(box);
  EXPECT_EQ(by_password.ssh_user, "vagrant");
  ASSERT_FALSE(by_password.published_login.password_file.empty());
  EXPECT_EQ(vmfest::detail::read_text(by_password.published_login.password_file), "vagrant\n");
  // With Vagrant's insecure key where Vagrant keeps it, that key.
  write(root_ / "vagrant.d" / "insecure_private_key", key_.private_openssh);
  vmfest::SetupOptions replace;
  replace.replace = true;
  const vmfest::Model by_key = setup(box, replace);
  ASSERT_FALSE(by_key.published_login.private_key.empty());
  EXPECT_EQ(vmfest::detail::read_text(by_key.published_login.private_key), key_.private_openssh);
}

TEST_F(PublishedLoginTest, AVirtualBoxBoxIsItsOvfsVmdk) {
  const fs::path folder = root_ / "vbox.folder";
  fs::create_directories(folder);
  const std::string qemu_img = vmfest::detail::find_program("qemu-img", "qemu-utils").string();
  sh(fmt::format("{} convert -O vmdk -o subformat=streamOptimized {} {}", qemu_img,
                 quote(root_ / "disk.qcow2"), quote(folder / "box-disk001.vmdk")));
  write(folder / "metadata.json", R"({"provider": "virtualbox"})");
  write(
      folder / "box.ovf",
      R"(<Envelope><References><File ovf:href="box-disk001.vmdk" ovf:id="file1"/></References></Envelope>)");
  sh(fmt::format("tar -cf {} -C {} .", quote(root_ / "vbox.box"), quote(folder)));
  const vmfest::Model model = setup(root_ / "vbox.box");
  EXPECT_EQ(model.ssh_user, "vagrant");
  EXPECT_FALSE(model.published_login.empty());
  EXPECT_TRUE(fs::exists(model.disk));
}

TEST_F(PublishedLoginTest, ABoxForAnUnknownProviderIsRefusedNamingIt) {
  const fs::path box = libvirt_box("hyperv", R"({"provider": "hyperv"})");
  const std::string message = message_of([&] { setup(box); });
  EXPECT_NE(message.find("a Vagrant box for the provider 'hyperv'"), std::string::npos) << message;
  EXPECT_NE(message.find("libvirt provider"), std::string::npos) << message;
  expect_nothing_registered();
}

TEST_F(PublishedLoginTest, AVagrantfileKeyOutsideTheBoxIsRefused) {
  write(root_ / "host-key", key_.private_openssh);
  for (const std::string path : {"../../host-key", "/etc/passwd"}) {
    const fs::path box =
        libvirt_box("leaky", R"({"provider": "libvirt"})", [&](const fs::path& folder) {
          write(folder / "Vagrantfile",
                fmt::format("Vagrant.configure(\"2\") do |config|\n  config.ssh.private_key_path "
                            "= \"{}\"\nend\n",
                            path));
        });
    const std::string message = message_of([&] { setup(box); });
    EXPECT_NE(message.find("relative names inside the bundle"), std::string::npos)
        << path << ": " << message;
    fs::remove_all(root_ / "leaky.folder");
  }
  expect_nothing_registered();
}

}  // namespace
