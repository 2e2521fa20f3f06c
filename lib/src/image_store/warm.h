// Warm images: a booted guest saved once (memory + device state, and its disk frozen at the same
// instant as a read-only base), so that clones resume it in a fraction of a boot. Stored in the
// registry next to their model: models/<model>/warm/<key>/ (the backend's files and manifest.json),
// keyed by everything that makes the image valid (the backend's fingerprint and the profile).
#pragma once

#include <filesystem>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "vmfest/instance.h"
#include "vmfest/model.h"

namespace vmfest::detail {

// False when VMFEST_WARM=0: every instance boots cold.
bool warm_enabled();

std::filesystem::path warm_image_directory(const Model& model, const Profile& profile,
                                           const std::string& fingerprint);

enum class WarmStatus { Missing, Ready, Unsupported };

// Checks the image against its manifest: its files (the backend's: a base disk, the saved state,
// a memory file clones map) must be the very files that were saved together (a hypervisor would
// happily resume memory over the wrong disk). File identity (size, inode, mtime, ctime) is
// compared first; on any difference the file's sha256 is computed and compared, and a file that
// matches by hash is remembered by its new identity.
// A tampered or incomplete image is Missing (and is rebuilt), and so is a layer whose parent is;
// Unsupported when the model has no guest agent to give clones their own identity.
WarmStatus check_warm_image(const std::filesystem::path& directory);

// Where a build of the image `directory` stages its files (renamed into place when complete),
// and the lock a build holds while it runs.
std::filesystem::path warm_build_folder(const std::filesystem::path& directory);
std::filesystem::path warm_build_lock(const std::filesystem::path& directory);
// Removes the staging folders of earlier builds of `directory`, whose processes died: for a caller
// that holds warm_build_lock(directory).
void remove_stale_warm_builds(const std::filesystem::path& directory);
// The reaper's part: the staging folders of every warm build in `models_folder` whose process
// died (their lock is free).
void remove_interrupted_warm_builds(const std::filesystem::path& models_folder);

// Writes the manifest of a freshly saved image in `directory`: every file the backend saved there,
// and for a provisioned layer what layer_manifest() says of it.
void write_warm_manifest(const std::filesystem::path& directory, const std::string& fingerprint,
                         const nlohmann::json& backend_facts, double save_seconds,
                         const nlohmann::json& layer = nullptr);
// The hash of a saved image's manifest: a layer records its parent's.
std::string warm_manifest_sha256(const std::filesystem::path& directory);
// Records that an instance was cloned from the image now (for `vmfest images` and pruning).
void mark_warm_image_used(const std::filesystem::path& directory);
// Removes the image `directory`, which its backend could not resume, so that the next instance
// builds it afresh. Left alone while another process holds its build lock (it is building it
// anew); false then, or when it cannot be removed (logged).
bool discard_warm_image(const std::filesystem::path& directory);
// Records that this model cannot have warm clones, and why, so no process tries again.
void write_unsupported_manifest(const std::filesystem::path& directory,
                                const std::string& fingerprint, const std::string& reason);

}  // namespace vmfest::detail
