// What bundles and Vagrant boxes share: the files they name, checked to lie inside them, and the
// published login they state for an image without cloud-init (stored in the model's folder,
// owner-only).
#pragma once

#include <filesystem>
#include <string>

#include <nlohmann/json.hpp>

#include "vmfest/model.h"

namespace vmfest::detail {

// The file `name` (relative) of the bundle at `root`, resolved; SetupError when it leaves the
// bundle (an absolute name, `..`, a symbolic link to a file outside it) or is no regular file.
// `what` names the manifest for the message.
std::filesystem::path bundle_file(const std::filesystem::path& root, const std::string& name,
                                  const std::string& what);

// Stores a published login in the staged model's folder `staging` (a copy of the key, or the
// password, each in a file only its owner can read) and sets `login` to it. `what` names where
// it comes from for messages. SetupError for a key libssh cannot use or an empty password.
void store_published_key(PublishedLogin& login, const std::filesystem::path& staging,
                         const std::filesystem::path& key_file, const std::string& what);
void store_published_password(PublishedLogin& login, const std::filesystem::path& staging,
                              const std::string& password, const std::string& what);

// The published login a bundle manifest's "ssh" object states ("private_key": a file of the
// bundle, or "password"), stored as above; nothing when it states none. SetupError for both.
void stage_manifest_login(Model& model, const nlohmann::json& ssh,
                          const std::filesystem::path& root, const std::filesystem::path& staging,
                          const std::string& what);

// The first line of a password file (`setup-model --ssh-password-file`); InvalidArgument when it
// cannot be read or the line is empty.
std::string read_password_file(const std::filesystem::path& file);

}  // namespace vmfest::detail
