// The on-disk record of an instance (private): instances/<name>/instance.json.
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "vmfest/error.h"
#include "vmfest/instance.h"

namespace vmfest::detail {

constexpr const char* kRecordFile = "instance.json";
// Held (flock) by the owning process for as long as it lives: a lock that can be taken means the
// owner is gone and the instance has leaked.
constexpr const char* kOwnerLock = "owner.lock";
constexpr const char* kClientKey = "id_ed25519";
constexpr const char* kHostPublicKey = "host_ed25519.pub";
// The host private key in dropbear's format (a secret, mode 0600): a warm clone hands it to the
// guest agent after resuming.
constexpr const char* kHostKeyDropbear = "host_ed25519.dropbear";
// The same key in OpenSSH's format (secret, 0600), for a warm clone whose guest runs OpenSSH.
constexpr const char* kHostKeyOpenssh = "host_ed25519";

struct InstanceRecord {
  std::string name;
  std::string model;
  // The driver that made it; empty in a record older than the field: the build's default backend.
  std::string backend;
  Profile profile;
  bool permanent = false;
  bool detached = false;
  bool started = false;
  int owner_pid = 0;       // informational; ownership is decided by the owner lock
  std::string warm_image;  // the warm image this instance was cloned from; empty: cold clone
  // The warm image this instance's first start builds from its own boot (none existed when it was
  // created); empty: none to build.
  std::string warm_build;
  // The provisioned layer (see layers.h) this instance's first start builds by running its
  // request's steps; empty: none to build.
  std::string layer_build;
  // Its disk has had the model's first login (PublishedLogin): the instance's own key replaced the
  // published credential there, which opens it no more. Only for models with a published login.
  bool first_login_done = false;
  // The card on a private segment the request asked for (every launch has it; see PrivateNic).
  std::optional<PrivateNic> private_nic;
  nlohmann::json machine = nlohmann::json::object();  // the backend's saved state
};

// The error for the record in `directory` that cannot be used because of `why`: names the file and
// the way out.
InstanceRecordError invalid_record(const std::filesystem::path& directory, std::string_view why);
// The record in `directory`; nullopt when there is none (yet). InstanceRecordError naming the file
// when it cannot be read.
std::optional<InstanceRecord> read_instance_record(const std::filesystem::path& directory);
void write_instance_record(const std::filesystem::path& directory, const InstanceRecord& record);

}  // namespace vmfest::detail
