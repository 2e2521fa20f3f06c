// An instance's disk as one standalone local image, through a flattened copy on its host: made by
// the domain's own QEMU while it runs (virDomainBlockCopy), as a copy by the pool (qemu-img)
// cannot open a disk whose QEMU holds its write lock, paused or not; by the pool otherwise.
#pragma once

#include <filesystem>
#include <string>

#include "libvirt_api.h"
#include "storage.h"

namespace vmfest::detail::libvirt {

// Writes volume `disk_volume` of `pool`, flattened, to the local `destination`, through the
// temporary volume `copy` (removed on every path; one left by a process killed meanwhile goes with
// the next export or the instance's volumes). `live` is its domain while that runs or is paused
// (its disk target kDiskTarget), else null.
void export_volume(const StoragePool& pool, virDomainPtr live, const std::string& disk_volume,
                   const std::string& copy, const std::filesystem::path& destination);

}  // namespace vmfest::detail::libvirt
