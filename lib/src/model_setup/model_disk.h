// A model's disk image: what qemu-img makes of it, and the checks that it can back clones.
#pragma once

#include <string>

#include "vmfest/model.h"

namespace vmfest::detail {

// The disk's format as qemu-img sees it, after checking that a model can be cloned from it (stands
// alone, one file, not encrypted, whole sectors; a warning for raw bytes that look like no disk).
// SetupError naming `what` otherwise.
std::string probe_disk_format(const std::filesystem::path& disk, const std::string& what);

// Checks the staged disk, converts it to qcow2 when an overlay cannot stand on it as it is,
// names it disk.<format> and fills in the model's disk facts. `sha256` is the disk's, if known.
void finish_disk(Model& model, const std::string& what, std::string sha256);

}  // namespace vmfest::detail
