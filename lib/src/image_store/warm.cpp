#include "warm.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string_view>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "../base/files.h"
#include "../base/json_file.h"
#include "../base/sha256.h"
#include "../guest/first_login.h"
#include "../guest/guest_agent.h"
#include "../guest/seed.h"
#include "vmfest/error.h"

namespace vmfest::detail {
namespace fs = std::filesystem;

namespace {

constexpr const char* kManifest = "manifest.json";
constexpr const char* kLastUsed = "last-used";

constexpr const char* kVerified = "verified.json";

// Cheap identity of a file: changes when it is rewritten, replaced or touched. The ctime, which no
// one can set, tells a same-size rewrite that kept the mtime.
nlohmann::json file_identity(const fs::path& path) {
  struct stat info {};
  if (::stat(path.c_str(), &info) != 0) return nullptr;
  auto nanoseconds = [](const timespec& time) {
    return static_cast<long long>(time.tv_sec) * 1000000000LL + time.tv_nsec;
  };
  return {{"size", info.st_size},
          {"inode", info.st_ino},
          {"mtime_ns", nanoseconds(info.st_mtim)},
          {"ctime_ns", nanoseconds(info.st_ctim)}};
}

nlohmann::json file_entry(const fs::path& path) {
  return {{"sha256", sha256_file(path)}, {"identity", file_identity(path)}};
}

// The identities of an image's files whose hash was checked again since the save (a CI cache
// restore or a `cp -a` gives every file a new inode and ctime), so the next check needs no hash.
// A file of its own: the manifest's hash keys the layers built on the image.
class VerifiedIdentities {
 public:
  explicit VerifiedIdentities(fs::path directory) : file_(std::move(directory) / kVerified) {
    try {
      if (fs::exists(file_)) identities_ = nlohmann::json::parse(read_text(file_));
    } catch (const std::exception& error) {
      spdlog::debug("vmfest: ignoring {}: {}", file_.string(), error.what());
    }
    if (!identities_.is_object()) identities_ = nlohmann::json::object();
  }

  [[nodiscard]] bool known(const std::string& name, const nlohmann::json& identity) const {
    return identities_.value(name, nlohmann::json()) == identity;
  }

  void record(const std::string& name, nlohmann::json identity) {
    identities_[name] = std::move(identity);
    try {
      write_text_atomically(file_, identities_.dump(2), 0600);
    } catch (const std::exception& error) {
      spdlog::debug("vmfest: cannot record verified files in {}: {}", file_.string(), error.what());
    }
  }

 private:
  fs::path file_;
  nlohmann::json identities_;
};

bool file_matches(const fs::path& directory, const std::string& name, const nlohmann::json& entry,
                  VerifiedIdentities& verified) {
  const fs::path path = directory / name;
  nlohmann::json identity = file_identity(path);
  if (identity.is_null()) return false;
  if (identity == entry.value("identity", nlohmann::json()) || verified.known(name, identity)) {
    return true;
  }
  if (sha256_file(path) != entry.value("sha256", "")) return false;
  verified.record(name, std::move(identity));
  return true;
}

}  // namespace

bool warm_enabled() {
  const char* setting = std::getenv("VMFEST_WARM");
  return setting == nullptr || std::string(setting) != "0";
}

fs::path warm_image_directory(const Model& model, const Profile& profile,
                              const std::string& fingerprint) {
  // The login and a seeded agent live in the saved guest: a change of either is another image.
  static const std::string seeded_agent =
      sha256_text(std::string(guest_agent_gzip()) + agent_cloud_config());
  // A published login's first login installs the identity and the agent by scripts of their own.
  const std::string first_login =
      model.published_login.empty() ? "" : "first login " + first_login_scripts_digest() + "\n";
  const std::string key = sha256_text(fmt::format(
      "{}profile {} MiB {} CPUs\nssh user {}\nagent {}\n{}", fingerprint, profile.memory_mib,
      profile.cpus, model.ssh_user, model.guest_agent ? "built in" : seeded_agent, first_login));
  return model.directory / "warm" / key.substr(0, 16);
}

fs::path warm_build_folder(const fs::path& directory) {
  return directory.parent_path() /
         fmt::format(".building-{}-{}", directory.filename().string(), ::getpid());
}

fs::path warm_build_lock(const fs::path& directory) {
  return directory.parent_path() / (directory.filename().string() + ".lock");
}

void remove_stale_warm_builds(const fs::path& directory) {
  const std::string prefix = fmt::format(".building-{}-", directory.filename().string());
  std::error_code error;
  for (const auto& entry : fs::directory_iterator(directory.parent_path(), error)) {
    if (!entry.path().filename().string().starts_with(prefix)) continue;
    spdlog::info("vmfest: removing {}, left by an interrupted warm-image build",
                 entry.path().string());
    fs::remove_all(entry.path());
  }
}

void remove_interrupted_warm_builds(const fs::path& models_folder) {
  std::error_code error;
  for (const auto& model : fs::directory_iterator(models_folder, error)) {
    const fs::path warm = model.path() / "warm";
    if (!fs::is_directory(warm)) continue;
    for (const auto& entry : fs::directory_iterator(warm)) {
      const std::string name = entry.path().filename().string();
      if (!name.starts_with(".building-")) continue;
      const std::string rest = name.substr(std::string_view(".building-").size());
      const fs::path image = warm / rest.substr(0, rest.rfind('-'));
      // A build holds its image's lock while it runs: a lock we get has no living owner.
      FileLock lock(warm_build_lock(image), FileLock::Mode::TryOnce);
      if (lock.held()) remove_stale_warm_builds(image);
    }
  }
}

namespace {

// A layer is only as good as the image below it: its disk is an overlay on its parent's, and its
// memory ran on top of it. A parent rebuilt since (another manifest) invalidates it.
WarmStatus check_layer_parent(const fs::path& directory, const nlohmann::json& layer) {
  const fs::path parent = layer.value("parent", "");
  if (!parent.empty() && check_warm_image(parent) == WarmStatus::Ready &&
      warm_manifest_sha256(parent) == layer.value("parent_manifest_sha256", "")) {
    return WarmStatus::Ready;
  }
  spdlog::warn(
      "vmfest: layer {} was built on {}, which is gone or was rebuilt since; it will be rebuilt",
      directory.string(), parent.string());
  return WarmStatus::Missing;
}

}  // namespace

std::string warm_manifest_sha256(const fs::path& directory) {
  return sha256_file(directory / kManifest);
}

void mark_warm_image_used(const fs::path& directory) {
  // Its own file: the manifest's hash is part of the key of the layers built on this image.
  const fs::path marker = directory / kLastUsed;
  const int fd = ::open(marker.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) {
    spdlog::debug("vmfest: cannot record the use of warm image {}: {}", directory.string(),
                  std::strerror(errno));
    return;
  }
  ::futimens(fd, nullptr);
  ::close(fd);
}

WarmStatus check_warm_image(const fs::path& directory) {
  const fs::path manifest_path = directory / kManifest;
  if (!fs::exists(manifest_path)) return WarmStatus::Missing;
  try {
    return read_json_file(
        manifest_path,
        [&](const nlohmann::json& manifest) {
          if (manifest.value("status", "") == "unsupported") return WarmStatus::Unsupported;
          const nlohmann::json files = manifest.value("files", nlohmann::json::object());
          VerifiedIdentities verified(directory);
          for (const auto& [name, entry] : files.items()) {
            if (!file_matches(directory, name, entry, verified)) {
              spdlog::warn(
                  "vmfest: warm image {} does not match its manifest ({} changed since it was "
                  "saved); it will be rebuilt",
                  directory.string(), name);
              return WarmStatus::Missing;
            }
          }
          if (files.empty()) return WarmStatus::Missing;
          if (manifest.contains("layer")) return check_layer_parent(directory, manifest["layer"]);
          return WarmStatus::Ready;
        },
        [&](std::string_view why) {
          return Error(
              fmt::format("warm image {}: {} is not a valid manifest ({}); it will be rebuilt",
                          directory.string(), manifest_path.string(), why));
        });
  } catch (const Error& error) {
    spdlog::warn("vmfest: {}", error.what());
    return WarmStatus::Missing;
  }
}

void write_warm_manifest(const fs::path& directory, const std::string& fingerprint,
                         const nlohmann::json& backend_facts, double save_seconds,
                         const nlohmann::json& layer) {
  // Every file the backend saved: all of them are the image, and none may change.
  nlohmann::json files = nlohmann::json::object();
  std::error_code error;
  for (fs::directory_iterator entry(directory, error), end; !error && entry != end;
       entry.increment(error)) {
    if (entry->is_regular_file()) {
      files[entry->path().filename().string()] = file_entry(entry->path());
    }
  }
  if (error) {
    throw Error(fmt::format("cannot list the warm image being saved in {}: {}", directory.string(),
                            error.message()));
  }
  nlohmann::json manifest = {{"status", "ready"},
                             {"fingerprint", fingerprint},
                             {"backend", backend_facts},
                             {"save_seconds", save_seconds},
                             {"files", files}};
  if (!layer.is_null()) manifest["layer"] = layer;
  // A layer's steps may carry secrets (a password in a `run` step): its owner's alone.
  write_text_atomically(directory / kManifest, manifest.dump(2), 0600);
}

bool discard_warm_image(const fs::path& directory) {
  const FileLock lock(warm_build_lock(directory), FileLock::Mode::TryOnce);
  if (!lock.held()) return false;
  std::error_code error;
  fs::remove_all(directory, error);
  if (error) {
    spdlog::warn(
        "vmfest: cannot remove warm image {}: {}; remove it by hand, and the next "
        "instance rebuilds it",
        directory.string(), error.message());
    return false;
  }
  return true;
}

void write_unsupported_manifest(const fs::path& directory, const std::string& fingerprint,
                                const std::string& reason) {
  fs::create_directories(directory);
  write_text_atomically(
      directory / kManifest,
      nlohmann::json{{"status", "unsupported"}, {"fingerprint", fingerprint}, {"reason", reason}}
          .dump(2),
      0600);
}

}  // namespace vmfest::detail
