#include "seed.h"

#include <sstream>
#include <vector>

#include <fmt/format.h>

#include "../base/files.h"
#include "../base/subprocess.h"
#include "guest_agent.h"

namespace vmfest::detail {
namespace fs = std::filesystem;

namespace {

constexpr const char* kAgentFile = "vmfest-agent.gz";  // beside user-data on the seed

// The agent through cloud-init: a unit (write_files), and a runcmd that copies the agent from the
// seed itself and starts it without waiting for it (runcmd runs late in the boot; the agent only
// matters once the guest is saved). The binary is a file of its own on the seed, not part of
// user-data: cloud-init parses user-data as YAML in Python in every stage, which for half a
// megabyte costs seconds of an emulated CPU each time. Without systemd it runs in the background.
void write_agent(std::ostringstream& text) {
  text << "write_files:\n";
  text << "  - path: " << kAgentUnitPath << "\n";
  text << "    content: |\n";
  std::istringstream unit(agent_systemd_unit());
  for (std::string line; std::getline(unit, line);) text << "      " << line << "\n";
  const std::string agent(kSeededAgentPath);
  text << "runcmd:\n";
  text << "  - [sh, -c, 'set -e; seed=$(blkid -L cidata || blkid -L CIDATA); m=$(mktemp -d); "
          "mount -o ro \"$seed\" \"$m\"; mkdir -p "
       << agent.substr(0, agent.rfind('/')) << "; gzip -dc \"$m/" << kAgentFile << "\" > " << agent
       << ".new; umount \"$m\"; rmdir \"$m\"; chmod 755 " << agent << ".new; mv " << agent
       << ".new " << agent
       << "; if command -v systemctl >/dev/null; then systemctl enable --now --no-block "
          "vmfest-agent.service; else nohup "
       << agent << " >/dev/null 2>&1 & fi']\n";
}

}  // namespace

std::string agent_cloud_config() {
  std::ostringstream text;
  write_agent(text);
  return text.str();
}

std::string cloud_config(const SeedIdentity& identity) {
  std::ostringstream text;
  text << "#cloud-config\n";
  text << "hostname: " << identity.hostname << "\n";
  // sudo resolves the hostname: without it in /etc/hosts every sudo warns.
  text << "manage_etc_hosts: true\n";
  // The image's default user (and root in vmfest's default model) gets the key too.
  text << "ssh_authorized_keys:\n  - " << identity.authorized_key << "\n";
  if (identity.ssh_user == "root") {
    text << "disable_root: false\n";
  } else {
    // Our own login, the same on every image; "default" keeps the image's usual user.
    text << "users:\n  - default\n";
    text << "  - name: " << identity.ssh_user << "\n";
    text << "    shell: /bin/sh\n";
    text << "    lock_passwd: true\n";
    text << "    sudo: ALL=(ALL) NOPASSWD:ALL\n";
    text << "    ssh_authorized_keys:\n      - " << identity.authorized_key << "\n";
  }
  text << "ssh_pwauth: false\n";
  // Replace whatever host keys the image has with this instance's own, and make no others: a key
  // pair cloud-init generates costs seconds of an emulated CPU and would be shared by warm clones.
  text << "ssh_deletekeys: true\n";
  text << "ssh_genkeytypes: []\n";
  text << "ssh_keys:\n  ed25519_private: |\n";
  std::istringstream key(identity.host_private_key);
  for (std::string line; std::getline(key, line);) {
    if (!line.empty()) text << "    " << line << "\n";
  }
  text << "  ed25519_public: " << identity.host_public_key << "\n";
  if (identity.include_agent) write_agent(text);
  return text.str();
}

fs::path write_seed_image(const fs::path& directory, const SeedIdentity& identity) {
  const fs::path staging = directory / "seed";
  fs::create_directories(staging);
  fs::permissions(staging, fs::perms::owner_all);
  write_text_atomically(staging / "user-data", cloud_config(identity));
  write_text_atomically(staging / "meta-data",
                        fmt::format("instance-id: {0}\nlocal-hostname: {0}\n", identity.hostname));
  std::vector<std::string> arguments = {"-quiet",
                                        "-output",
                                        (directory / "seed.iso").string(),
                                        "-volid",
                                        "cidata",
                                        "-joliet",
                                        "-rock",
                                        (staging / "user-data").string(),
                                        (staging / "meta-data").string()};
  if (identity.include_agent) {
    write_text_atomically(staging / kAgentFile, std::string(guest_agent_gzip()));
    arguments.push_back((staging / kAgentFile).string());
  }
  const fs::path image = directory / "seed.iso";
  static const fs::path genisoimage = find_program("genisoimage", "genisoimage");
  run_tool_checked(genisoimage, arguments, "making the cloud-init seed image");
  fs::permissions(image, fs::perms::owner_read | fs::perms::owner_write);
  // The seed image carries the host key; the loose copies are not needed any more.
  fs::remove_all(staging);
  return image;
}

}  // namespace vmfest::detail
