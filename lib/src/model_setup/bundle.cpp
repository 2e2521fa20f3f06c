#include "bundle.h"

#include <algorithm>

#include <fmt/format.h>

#include "../base/files.h"
#include "../registry/registry_store.h"
#include "vmfest/error.h"
#include "vmfest/ssh/keys.h"

namespace vmfest::detail {
namespace fs = std::filesystem;

namespace {

constexpr const char* kPublishedKeyFile = "published-key";
constexpr const char* kPublishedPasswordFile = "published-password";

// A login replaced by another: the files of the old one go (a superseded key must not linger).
void replace_login(PublishedLogin& login, PublishedLogin fresh) {
  for (const fs::path& old : {login.private_key, login.password_file}) {
    if (!old.empty() && old != fresh.private_key && old != fresh.password_file) fs::remove(old);
  }
  login = std::move(fresh);
}

}  // namespace

fs::path bundle_file(const fs::path& root, const std::string& name, const std::string& what) {
  const fs::path relative(name);
  const bool escapes =
      relative.is_absolute() || std::any_of(relative.begin(), relative.end(),
                                            [](const fs::path& part) { return part == ".."; });
  if (name.empty() || escapes || relative.lexically_normal() == kModelFile) {
    throw SetupError(
        fmt::format("{} names the file '{}': bundle files must have relative names "
                    "inside the bundle (and not {})",
                    what, name, kModelFile));
  }
  const fs::path path = root / relative.lexically_normal();
  // A link may point anywhere on the host: the file it leads to must lie in the bundle too, or a
  // bundle could hand the guest (or vmfest's login) any file the caller can read.
  std::error_code error;
  const fs::path resolved = fs::canonical(path, error);
  const fs::path bundle = fs::canonical(root);
  const auto inside = std::mismatch(bundle.begin(), bundle.end(), resolved.begin(), resolved.end());
  if (!error && inside.first != bundle.end()) {
    throw SetupError(fmt::format(
        "{} names '{}', a symbolic link to {}, outside the bundle: a bundle must hold its files "
        "itself (copy the file into the bundle)",
        what, name, resolved.string()));
  }
  if (error || !fs::is_regular_file(resolved)) {
    throw SetupError(fmt::format("{} names '{}', which is not a file in the bundle", what, name));
  }
  return resolved;
}

void store_published_key(PublishedLogin& login, const fs::path& staging, const fs::path& key_file,
                         const std::string& what) {
  std::string key;
  try {
    key = read_text(key_file);
  } catch (const std::exception& error) {
    throw SetupError(fmt::format("cannot read the private key {} of {}: {}", key_file.string(),
                                 what, error.what()));
  }
  if (!ssh::is_usable_private_key(key)) {
    throw SetupError(fmt::format(
        "{} of {} is not an unencrypted private key vmfest can log in with (OpenSSH or PEM "
        "format, no passphrase)",
        key_file.string(), what));
  }
  PublishedLogin fresh;
  fresh.private_key = staging / kPublishedKeyFile;
  write_text_atomically(fresh.private_key, key, 0600);
  replace_login(login, std::move(fresh));
}

void store_published_password(PublishedLogin& login, const fs::path& staging,
                              const std::string& password, const std::string& what) {
  if (password.empty() || password.find('\n') != std::string::npos) {
    throw SetupError(fmt::format("the password {} states is empty or more than one line", what));
  }
  PublishedLogin fresh;
  fresh.password_file = staging / kPublishedPasswordFile;
  write_text_atomically(fresh.password_file, password + "\n", 0600);
  replace_login(login, std::move(fresh));
}

void stage_manifest_login(Model& model, const nlohmann::json& ssh, const fs::path& root,
                          const fs::path& staging, const std::string& what) {
  const bool has_key = ssh.contains("private_key");
  const bool has_password = ssh.contains("password");
  if (has_key && has_password) {
    throw SetupError(fmt::format(
        "{} states both a \"private_key\" and a \"password\" for its login: state one", what));
  }
  if (has_key) {
    store_published_key(model.published_login, staging,
                        bundle_file(root, ssh.at("private_key").get<std::string>(), what), what);
  } else if (has_password) {
    store_published_password(model.published_login, staging, ssh.at("password").get<std::string>(),
                             what);
  }
}

std::string read_password_file(const fs::path& file) {
  std::string text;
  try {
    text = read_text(file);
  } catch (const std::exception& error) {
    throw InvalidArgument(
        fmt::format("cannot read the SSH password file {}: {}", file.string(), error.what()));
  }
  std::string line = text.substr(0, text.find('\n'));
  if (!line.empty() && line.back() == '\r') line.pop_back();
  if (line.empty()) {
    throw InvalidArgument(fmt::format(
        "the SSH password file {} is empty: its first line is the password", file.string()));
  }
  return line;
}

}  // namespace vmfest::detail
