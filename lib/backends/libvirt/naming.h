// How the backend names what an instance has on a host: its domain "vmfest-<home id>-<instance>",
// and volumes named after the domain.
#pragma once

#include <optional>
#include <string>

#include "vmfest/home.h"

namespace vmfest::detail::libvirt {

// What names of a home's domains and volumes start with: its id, so that homes sharing a host never
// touch each other's, also homes of one path on several CI runners.
std::string home_prefix(const Home& home);

inline constexpr const char* kDiskSuffix = ".qcow2";
inline constexpr const char* kSeedSuffix = "-seed.iso";
inline constexpr const char* kStateSuffix = ".state";  // a warm clone's copy of its image's state
// A flattened copy of the disk while save_as_model downloads it: no ".qcow2", which would make it
// the disk of a domain "<domain>.export".
inline constexpr const char* kExportSuffix = ".export";

// A home's warm images (warm.h): "vmfest-warm-<home id>-<random>" with these two suffixes.
inline constexpr const char* kWarmPrefix = "vmfest-warm-";
inline constexpr const char* kWarmStateSuffix = ".state";
inline constexpr const char* kWarmBaseSuffix = "-base.qcow2";

// The domain an instance's volume (disk, seed, state copy, disk export or lease marker) belongs to;
// nullopt for any other volume (a model's, a warm image's, another program's).
std::optional<std::string> domain_of_volume(const std::string& volume);

}  // namespace vmfest::detail::libvirt
