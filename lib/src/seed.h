// The cloud-init NoCloud seed that gives each instance its own identity: hostname, the client's
// authorized key and the SSH host key. Distro cloud images and the default model both read it.
#pragma once

#include <filesystem>
#include <string>

namespace vmfest::detail {

struct SeedIdentity {
  std::string hostname;
  std::string authorized_key;    // client public key line
  std::string host_private_key;  // OpenSSH format (secret)
  std::string host_public_key;
};

// The #cloud-config user-data text.
std::string cloud_config(const SeedIdentity& identity);

// Writes `directory`/seed.iso (ISO 9660, volume label "cidata", user-data + meta-data), mode 0600.
std::filesystem::path write_seed_image(const std::filesystem::path& directory,
                                       const SeedIdentity& identity);

}  // namespace vmfest::detail
