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

// Reads steps from a text file, one a line, e.g. for `vmfest run --step-file`:
//   run CMD...     the rest of the line is a shell command line in the guest
//   upload SRC DST a file or folder of the host (relative: to the step file's folder) to DST
//   reboot
// Blank lines and lines whose first character other than a blank is `#` are skipped. The steps are
// those ProvisionStep::run/upload/reboot make, so they build and reuse the same layers. Throws
// InvalidArgument naming FILE:LINE for a malformed line or an upload source that does not exist,
// and naming the file when it cannot be read.
ProvisionSteps read_step_file(const std::filesystem::path& file);

}  // namespace vmfest
