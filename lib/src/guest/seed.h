// The cloud-init NoCloud seed that gives each instance its own identity: hostname, a login with
// the client's authorized key and the SSH host key. Distro cloud images and the default model both
// read it.
#pragma once

#include <filesystem>
#include <string>

namespace vmfest::detail {

struct SeedIdentity {
  std::string hostname;
  std::string authorized_key;    // client public key line
  std::string host_private_key;  // OpenSSH format (secret)
  std::string host_public_key;
  // The login vmfest uses: created by cloud-init with the key and passwordless sudo when it is
  // not root (whatever the image's own default user is called); root is allowed to log in.
  std::string ssh_user = "root";
  // Carry vmfest's guest agent (a file on the seed, installed and started by runcmd), so that a
  // stock cloud image can become a warm image; models with the agent built in do not need it.
  bool include_agent = false;
};

// The #cloud-config user-data text.
std::string cloud_config(const SeedIdentity& identity);
// The part of the cloud config that installs and starts the guest agent (in a warm image's key:
// how the agent runs is part of the saved guest).
std::string agent_cloud_config();

// Writes `directory`/seed.iso (ISO 9660, volume label "cidata", user-data + meta-data, and the
// agent when asked for), mode 0600.
std::filesystem::path write_seed_image(const std::filesystem::path& directory,
                                       const SeedIdentity& identity);

}  // namespace vmfest::detail
