// Models: registered VM images that instances are cloned from.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "vmfest/home.h"

namespace vmfest {

// The login the seed creates on images that do not state another.
inline constexpr std::string_view kDefaultSshUser = "vmfest";

// How a model boots: from its own disk (BIOS + the image's bootloader, like distro cloud images),
// or from a kernel and initrd shipped with the model.
struct BootSpec {
  enum class Kind { Disk, Kernel };
  Kind kind = Kind::Disk;
  std::filesystem::path kernel;  // absolute, Kernel only
  std::filesystem::path initrd;  // absolute, Kernel only (may be empty)
  std::string cmdline;           // Kernel only
};

// The login an image publishes for its first use, for images without cloud-init: a Vagrant box's
// insecure key, an appliance's documented password. vmfest logs in with it once per instance,
// installs the instance's own key (replacing it in the user's authorized_keys) and, where it can, a
// fresh host key and the hostname, and from then on uses only the instance's key.
struct PublishedLogin {
  std::filesystem::path private_key;    // absolute, in the model's folder (owner-only); or empty
  std::filesystem::path password_file;  // absolute, in the model's folder (owner-only); or empty

  [[nodiscard]] bool empty() const noexcept { return private_key.empty() && password_file.empty(); }
};

struct Model {
  std::string name;
  std::filesystem::path directory;  // the model's folder in the registry
  std::filesystem::path disk;       // absolute path of the (read-only) disk image
  std::string format;               // qcow2, raw, vdi or vmdk
  std::uint64_t size_bytes = 0;     // of the disk file
  std::string sha256;               // of the disk file
  std::string source;               // URL or path it was set up from
  BootSpec boot;
  // The login vmfest uses. Its key comes from the instance's cloud-init seed, which creates this
  // user (passwordless sudo) on any cloud-init image unless it is root.
  std::string ssh_user = std::string(kDefaultSshUser);
  int ssh_port = 22;
  // Set for an image without cloud-init: what the first login uses (see PublishedLogin).
  PublishedLogin published_login;
  std::string ready_marker;  // a console line the guest prints when SSH is up; empty: none
  // The image runs vmfest's guest agent by itself (vmfest's default model); otherwise the seed of
  // an instance that builds a warm image carries it.
  bool guest_agent = false;
};

// The name the test fixtures register vmfest's default model under (tools/build-default-model.sh
// builds it).
inline constexpr const char* kDefaultModelName = "vmfest-tiny";

class ModelRegistry {
 public:
  explicit ModelRegistry(Home home = Home::from_environment());

  // The registered model, or ModelError listing what is registered and how to add it.
  [[nodiscard]] Model get(const std::string& name) const;
  // ModelError naming the file when the model's model.json cannot be read.
  [[nodiscard]] std::optional<Model> find(const std::string& name) const;
  // The registered models; one whose model.json cannot be read is left out with a warning.
  [[nodiscard]] std::vector<Model> list() const;

  // Removes a model; refused with ModelError while instances of it exist, or when its model.json
  // cannot be read (force_remove() takes it then).
  void remove(const std::string& name);
  // Removes a model's folder whatever its model.json says; still refused while instances of it
  // exist.
  void force_remove(const std::string& name);

  [[nodiscard]] const Home& home() const noexcept { return home_; }

 private:
  Home home_;
};

struct Progress {
  std::uint64_t bytes = 0;             // read from the source so far (back to 0 if it restarts)
  std::optional<std::uint64_t> total;  // when the source says
};

struct SetupOptions {
  std::string name;  // registered name; empty: derived from the source's file name
  // Expected sha256 (64 hex digits) of the file as served, i.e. of the compressed bytes for a .gz,
  // the way publishers list them in SHA256SUMS; empty: not checked.
  std::string sha256;
  bool replace = false;  // re-install even when a model of that name exists
  // The SSH login of the model; empty: what a bundle states, else "vmfest" (created by the seed).
  // Setting it for an installed model (same source) only changes the login.
  std::string ssh_user;
  // The image's published login (PublishedLogin), instead of what a bundle or box states: a private
  // key file (OpenSSH or PEM), or a file whose first line is the password. At most one of them.
  // Like ssh_user, setting them for an installed model (same source) only changes the login.
  std::filesystem::path ssh_key;
  std::filesystem::path ssh_password_file;
  std::function<void(const Progress&)> on_progress;  // empty: a bar on a terminal, lines in CI
  // A download that delivers less than 1 KiB/s for this long is abandoned (its bytes are kept).
  std::chrono::seconds stall_timeout{60};
};

// Installs a model from a URL (http, https, file) or a local path: a disk image (qcow2, raw, vdi,
// vmdk; optionally gzip-compressed, single- or multi-member), a bundle (a folder, or a tar,
// optionally gzip-compressed, holding vmfest-model.json and the files it names) or a Vagrant box (a
// tar, optionally gzipped, of the libvirt provider or the virtualbox provider, with Vagrant's login
// unless its Vagrantfile states another). Compression and tar are recognised by their content, not
// by the file name. qcow2, raw, vdi and vmdk disks are kept as they are (an instance's
// copy-on-write overlay can stand on any of them); other formats qemu-img reads (vpc, vhdx, qed,
// ...) are converted to qcow2. An interrupted http(s) download is kept under Home::cache() and the
// next call resumes it where the server supports ranges. Safe against concurrent callers for the
// same name: one installs, the others wait and use the result; a failed setup registers nothing.
// The same source again is a no-op unless `replace`. Returns the registered model.
Model setup_model(const std::string& source, const SetupOptions& options = {},
                  const Home& home = Home::from_environment());

}  // namespace vmfest
