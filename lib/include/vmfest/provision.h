// Provisioning steps: what a request asks to be done to a fresh guest before a test gets it
// (install a package, upload a configuration, reboot). Like a Dockerfile: the first instance of a
// (model, profile, steps) runs them and saves the result as a warm image layer; every later
// instance resumes that layer, each with its own identity and its own copy-on-write disk.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

namespace vmfest {

struct ProvisionStep {
  enum class Kind { Run, Upload, Reboot };

  Kind kind = Kind::Run;
  std::string command;          // Run: a shell command in the guest; a non-zero exit fails it
  std::filesystem::path local;  // Upload: a file or folder on the host (its content is the key)
  std::string remote;           // Upload: the path of the copy in the guest

  static ProvisionStep run(std::string command);
  // Regular files and folders only, with their permission bits (see ssh::Session::upload).
  static ProvisionStep upload(std::filesystem::path local, std::string remote);
  // Reboots the guest and waits until it answers again.
  static ProvisionStep reboot();

  // "run: apt-get install -y nginx", "upload: ./site -> /var/www", "reboot".
  [[nodiscard]] std::string describe() const;
};

using ProvisionSteps = std::vector<ProvisionStep>;

}  // namespace vmfest
