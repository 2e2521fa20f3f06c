// Vagrant boxes as models: a box of the libvirt provider (box.img, qcow2) or of the
// virtualbox provider (box.ovf and its .vmdk), beside metadata.json, with the login Vagrant would
// use: its Vagrantfile's config.ssh.username / private_key_path / password, else Vagrant's defaults
// (user "vagrant", Vagrant's insecure key where Vagrant keeps it on this host, else the password
// "vagrant" that Vagrant's base boxes have).
#pragma once

#include <filesystem>
#include <optional>
#include <string>

#include "vmfest/model.h"

namespace vmfest::detail {

// True when `folder` holds a Vagrant box (metadata.json at its top) rather than a bundle.
bool is_vagrant_box(const std::filesystem::path& folder);

// Stages the box in `folder` as a model in `staging`: its disk (moved when `move`, else copied)
// and its published login. SetupError naming `what` for a provider vmfest cannot run, a
// metadata.json it cannot read, or a file the box names outside itself.
Model stage_vagrant_box(const std::filesystem::path& folder, const std::filesystem::path& staging,
                        bool move, const std::string& what);

}  // namespace vmfest::detail
