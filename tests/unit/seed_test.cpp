#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

#include <unistd.h>

#include "vmfest/error.h"
#include "vmfest/internal/base.h"
#include "vmfest/internal/guest.h"
#include "vmfest/ssh/keys.h"

namespace {
namespace fs = std::filesystem;

TEST(Seed, CloudConfigCarriesTheInstanceIdentity) {
  auto client = vmfest::ssh::KeyPair::generate("client");
  auto host = vmfest::ssh::KeyPair::generate("host");
  std::string text = vmfest::detail::cloud_config(
      {"inst-1", client.public_openssh, host.private_openssh, host.public_openssh});
  EXPECT_EQ(text.rfind("#cloud-config\n", 0), 0u);
  EXPECT_NE(text.find("hostname: inst-1\n"), std::string::npos);
  EXPECT_NE(text.find("ssh_authorized_keys:\n  - " + client.public_openssh + "\n"),
            std::string::npos);
  EXPECT_NE(text.find("  ed25519_private: |\n    -----BEGIN OPENSSH PRIVATE KEY-----\n"),
            std::string::npos);
  EXPECT_NE(text.find("  ed25519_public: " + host.public_openssh + "\n"), std::string::npos);
}

TEST(Seed, ALoginOtherThanRootIsCreatedWithTheKeyAndPasswordlessSudo) {
  auto client = vmfest::ssh::KeyPair::generate("client");
  auto host = vmfest::ssh::KeyPair::generate("host");
  vmfest::detail::SeedIdentity identity{"inst-1", client.public_openssh, host.private_openssh,
                                        host.public_openssh};
  identity.ssh_user = "vmfest";
  const std::string text = vmfest::detail::cloud_config(identity);
  EXPECT_NE(text.find("users:\n  - default\n  - name: vmfest\n"), std::string::npos) << text;
  EXPECT_NE(text.find("    sudo: ALL=(ALL) NOPASSWD:ALL\n"), std::string::npos);
  EXPECT_NE(text.find("    ssh_authorized_keys:\n      - " + client.public_openssh + "\n"),
            std::string::npos);
  EXPECT_NE(text.find("manage_etc_hosts: true\n"), std::string::npos);
  EXPECT_NE(text.find("ssh_genkeytypes: []\n"), std::string::npos);
  EXPECT_EQ(text.find("disable_root"), std::string::npos);
  EXPECT_EQ(text.find("write_files"), std::string::npos) << "no agent unless asked for";

  identity.ssh_user = "root";
  const std::string root = vmfest::detail::cloud_config(identity);
  EXPECT_NE(root.find("disable_root: false\n"), std::string::npos);
  EXPECT_EQ(root.find("users:"), std::string::npos);
}

// The agent reaches a stock image as a file of the seed that runcmd installs and starts: not in
// user-data, which cloud-init parses again in every stage.
TEST(Seed, TheAgentTravelsBesideUserDataWithAUnitThatStartsIt) {
  auto client = vmfest::ssh::KeyPair::generate("client");
  auto host = vmfest::ssh::KeyPair::generate("host");
  vmfest::detail::SeedIdentity identity{"inst-1", client.public_openssh, host.private_openssh,
                                        host.public_openssh};
  identity.include_agent = true;
  const std::string text = vmfest::detail::cloud_config(identity);
  EXPECT_LT(text.size(), 4096u) << "user-data stays small";
  EXPECT_NE(text.find("ExecStart=/usr/local/lib/vmfest/vmfest-agent\n"), std::string::npos);
  EXPECT_NE(text.find("gzip -dc \"$m/vmfest-agent.gz\""), std::string::npos) << text;

  const fs::path directory =
      fs::temp_directory_path() / ("vmfest-seed-agent-" + std::to_string(::getpid()));
  fs::create_directories(directory);
  const fs::path image = vmfest::detail::write_seed_image(directory, identity);
  std::ifstream in(image, std::ios::binary);
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const std::string_view agent = vmfest::detail::guest_agent_gzip();
  EXPECT_EQ(agent.substr(0, 2), "\x1f\x8b") << "gzip";
  EXPECT_NE(bytes.find(agent), std::string::npos) << "the seed holds the agent, byte for byte";
  EXPECT_LT(fs::file_size(image), 1u << 20);
  fs::remove_all(directory);
}

TEST(Seed, KeysAreFreshEveryTime) {
  auto a = vmfest::ssh::KeyPair::generate("a");
  auto b = vmfest::ssh::KeyPair::generate("b");
  EXPECT_NE(a.public_openssh, b.public_openssh);
  EXPECT_EQ(a.public_openssh.rfind("ssh-ed25519 ", 0), 0u);
}

TEST(Seed, ImageIsAnIsoLabelledCidataAndPrivate) {
  fs::path directory =
      fs::temp_directory_path() / ("vmfest-seed-test-" + std::to_string(::getpid()));
  fs::create_directories(directory);
  auto client = vmfest::ssh::KeyPair::generate("client");
  auto host = vmfest::ssh::KeyPair::generate("host");
  fs::path image = vmfest::detail::write_seed_image(
      directory, {"inst-2", client.public_openssh, host.private_openssh, host.public_openssh});
  ASSERT_TRUE(fs::exists(image));
  EXPECT_EQ(fs::status(image).permissions() & fs::perms::others_read, fs::perms::none);
  // ISO 9660 primary volume descriptor at 32 KiB: "CD001" then the volume id at offset 40.
  std::ifstream in(image, std::ios::binary);
  std::string sector(2048, '\0');
  in.seekg(16 * 2048);
  in.read(sector.data(), 2048);
  EXPECT_EQ(sector.substr(1, 5), "CD001");
  EXPECT_EQ(sector.substr(40, 6), "cidata");
  EXPECT_FALSE(fs::exists(directory / "seed")) << "loose copies of the host key must be removed";
  fs::remove_all(directory);
}

// Warm clones hand dropbear its host key ready to load: the same bytes as dropbear's own converter.
TEST(HostKey, DropbearFormatMatchesDropbearconvert) {
  const fs::path directory =
      fs::temp_directory_path() / ("vmfest-dropbear-" + std::to_string(::getpid()));
  fs::create_directories(directory);
  auto key = vmfest::ssh::KeyPair::generate("host");
  key.save(directory / "openssh");
  vmfest::detail::run_tool_checked(
      vmfest::detail::find_program("dropbearconvert", "dropbear-bin"),
      {"openssh", "dropbear", (directory / "openssh").string(), (directory / "dropbear").string()},
      "dropbearconvert");
  std::ifstream in(directory / "dropbear", std::ios::binary);
  const std::string expected((std::istreambuf_iterator<char>(in)),
                             std::istreambuf_iterator<char>());
  EXPECT_EQ(key.private_dropbear(), expected);
  EXPECT_EQ(key.private_dropbear().size(), 4U + 11 + 4 + 64);
  fs::remove_all(directory);
}

TEST(HostKey, AKeyThatIsNotOpensshIsRefused) {
  vmfest::ssh::KeyPair broken{
      "-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n", ""};
  EXPECT_THROW((void)broken.private_dropbear(), vmfest::SshError);
}

}  // namespace
