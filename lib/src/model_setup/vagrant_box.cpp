#include "vagrant_box.h"

#include <cstdlib>
#include <regex>
#include <vector>

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <nlohmann/json.hpp>

#include "../base/files.h"
#include "bundle.h"
#include "model_disk.h"
#include "vmfest/error.h"

namespace vmfest::detail {
namespace fs = std::filesystem;

namespace {

constexpr const char* kMetadata = "metadata.json";
constexpr const char* kVagrantfile = "Vagrantfile";
constexpr const char* kVagrantUser = "vagrant";
// Vagrant's base boxes have this password for their user (Vagrant's "Creating a Base Box").
constexpr const char* kVagrantPassword = "vagrant";

// What a box's Vagrantfile says about the login; each empty when it says nothing.
struct VagrantfileLogin {
  std::string user;
  std::string private_key;  // relative to the box's top
  std::optional<std::string> password;
};

// The string of a Ruby expression naming the key: "key", ["key", ...] (the first), or
// File.expand_path("../key", __FILE__), which is relative to the Vagrantfile itself.
std::string key_path_value(const std::string& expression) {
  static const std::regex quoted(R"re(["']([^"']+)["'])re");
  std::smatch match;
  if (!std::regex_search(expression, match, quoted)) return {};
  std::string path = match[1];
  if (expression.find("__FILE__") != std::string::npos && path.starts_with("../")) {
    path = path.substr(3);  // from the Vagrantfile's path to its folder, the box's top
  }
  return path;
}

VagrantfileLogin read_vagrantfile(const fs::path& file) {
  VagrantfileLogin login;
  if (!fs::is_regular_file(fs::symlink_status(file))) return login;
  static const std::regex setting(
      R"re(^\s*\w+\.ssh\.(username|private_key_path|password)\s*=\s*(.+?)\s*$)re");
  static const std::regex quoted(R"re(^["']([^"']*)["'])re");
  std::istringstream lines(read_text(file));
  for (std::string line; std::getline(lines, line);) {
    std::smatch match;
    if (!std::regex_match(line, match, setting)) continue;
    const std::string name = match[1];
    const std::string value = match[2];
    std::smatch literal;
    if (name == "private_key_path") {
      login.private_key = key_path_value(value);
    } else if (std::regex_search(value, literal, quoted)) {
      if (name == "username") login.user = literal[1];
      if (name == "password") login.password = literal[1];
    }
  }
  return login;
}

// Vagrant's insecure key as Vagrant keeps it on this host, if it is installed.
std::optional<fs::path> vagrants_own_key() {
  fs::path vagrant_home;
  if (const char* set = std::getenv("VAGRANT_HOME"); set != nullptr && *set != '\0') {
    vagrant_home = set;
  } else if (const char* home = std::getenv("HOME"); home != nullptr && *home != '\0') {
    vagrant_home = fs::path(home) / ".vagrant.d";
  } else {
    return std::nullopt;
  }
  for (const char* name : {"insecure_private_keys/vagrant.key.ed25519",
                           "insecure_private_keys/vagrant.key.rsa", "insecure_private_key"}) {
    if (std::error_code error; fs::is_regular_file(vagrant_home / name, error)) {
      return vagrant_home / name;
    }
  }
  return std::nullopt;
}

// The box's disk file for its provider, and its format.
std::pair<fs::path, std::string> box_disk(const fs::path& folder, const nlohmann::json& metadata,
                                          const std::string& what) {
  const std::string provider = metadata.value("provider", "");
  const std::string metadata_what = fmt::format("the {} of {}", kMetadata, what);
  if (provider == "libvirt") {
    return {bundle_file(folder, "box.img", metadata_what), metadata.value("format", "qcow2")};
  }
  if (provider == "virtualbox") {
    // The disk box.ovf references (ovf:href), else the box's only .vmdk.
    static const std::regex href(R"re(ovf:href="([^"]+\.vmdk)")re", std::regex::icase);
    std::smatch match;
    const std::string ovf = read_text_if_exists(folder / "box.ovf");
    if (std::regex_search(ovf, match, href)) {
      return {bundle_file(folder, match[1], fmt::format("the box.ovf of {}", what)), "vmdk"};
    }
    std::vector<fs::path> disks;
    for (const auto& entry : fs::directory_iterator(folder)) {
      if (entry.path().extension() == ".vmdk") disks.push_back(entry.path());
    }
    if (disks.size() != 1) {
      throw SetupError(fmt::format(
          "{} is a Vagrant box of the virtualbox provider with {} .vmdk disks and no box.ovf "
          "naming one: vmfest cannot tell which disk boots",
          what, disks.size()));
    }
    return {bundle_file(folder, disks[0].filename().string(), metadata_what), "vmdk"};
  }
  throw SetupError(fmt::format(
      "{} is a Vagrant box for the provider '{}' ({}): vmfest sets up boxes of the "
      "libvirt provider (box.img) and of the virtualbox provider (box.ovf and its .vmdk); "
      "download the box for one of them",
      what, provider.empty() ? "(none)" : provider, kMetadata));
}

}  // namespace

bool is_vagrant_box(const fs::path& folder) { return fs::exists(folder / kMetadata); }

Model stage_vagrant_box(const fs::path& folder, const fs::path& staging, bool move,
                        const std::string& what) {
  const auto metadata = nlohmann::json::parse(read_text(folder / kMetadata), nullptr, false);
  if (!metadata.is_object()) {
    throw SetupError(
        fmt::format("the {} of {} is not a JSON object: not a Vagrant box", kMetadata, what));
  }
  const auto [disk, format] = box_disk(folder, metadata, what);
  Model model;
  model.directory = staging;
  model.disk = staging / disk.filename();
  model.format = format;
  if (move) {
    fs::rename(disk, model.disk);
  } else {
    fs::copy_file(disk, model.disk, fs::copy_options::overwrite_existing);
  }
  const VagrantfileLogin stated = read_vagrantfile(folder / kVagrantfile);
  const std::string vagrantfile_what = fmt::format("the {} of {}", kVagrantfile, what);
  model.ssh_user = stated.user.empty() ? kVagrantUser : stated.user;
  if (!stated.private_key.empty()) {
    store_published_key(model.published_login, staging,
                        bundle_file(folder, stated.private_key, vagrantfile_what),
                        vagrantfile_what);
  } else if (stated.password) {
    store_published_password(model.published_login, staging, *stated.password, vagrantfile_what);
  } else if (const auto own = vagrants_own_key()) {
    spdlog::info("vmfest: {} logs in first with Vagrant's insecure key from {}", what,
                 own->string());
    store_published_key(model.published_login, staging, *own, "Vagrant's insecure key");
  } else {
    spdlog::info(
        "vmfest: {} logs in first by password, as Vagrant's base boxes allow (Vagrant's insecure "
        "key is not installed on this host; `setup-model --ssh-key FILE` names it)",
        what);
    store_published_password(model.published_login, staging, kVagrantPassword, what);
  }
  finish_disk(model, what, "");
  return model;
}

}  // namespace vmfest::detail
