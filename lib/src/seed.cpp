#include "seed.h"

#include <sstream>

#include <fmt/format.h>

#include "files.h"
#include "subprocess.h"

namespace vmfest::detail {
namespace fs = std::filesystem;

std::string cloud_config(const SeedIdentity& identity) {
  std::ostringstream text;
  text << "#cloud-config\n";
  text << "hostname: " << identity.hostname << "\n";
  text << "ssh_authorized_keys:\n  - " << identity.authorized_key << "\n";
  // Replace whatever host keys the image has with this instance's own.
  text << "ssh_deletekeys: true\n";
  text << "ssh_keys:\n  ed25519_private: |\n";
  std::istringstream key(identity.host_private_key);
  for (std::string line; std::getline(key, line);) {
    if (!line.empty()) text << "    " << line << "\n";
  }
  text << "  ed25519_public: " << identity.host_public_key << "\n";
  return text.str();
}

fs::path write_seed_image(const fs::path& directory, const SeedIdentity& identity) {
  const fs::path staging = directory / "seed";
  fs::create_directories(staging);
  fs::permissions(staging, fs::perms::owner_all);
  write_text_atomically(staging / "user-data", cloud_config(identity));
  write_text_atomically(staging / "meta-data",
                        fmt::format("instance-id: {0}\nlocal-hostname: {0}\n", identity.hostname));
  const fs::path image = directory / "seed.iso";
  static const fs::path genisoimage = find_program("genisoimage", "genisoimage");
  run_tool_checked(genisoimage,
                   {"-quiet", "-output", image.string(), "-volid", "cidata", "-joliet", "-rock",
                    (staging / "user-data").string(), (staging / "meta-data").string()},
                   "making the cloud-init seed image");
  fs::permissions(image, fs::perms::owner_read | fs::perms::owner_write);
  // The seed image carries the host key; the loose copies are not needed any more.
  fs::remove_all(staging);
  return image;
}

}  // namespace vmfest::detail
