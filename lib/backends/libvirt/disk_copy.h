// A copy of a live domain's disk, made by the domain's own QEMU (virDomainBlockCopy): a copy by the
// pool (qemu-img) cannot open a disk whose QEMU holds its write lock, paused or not.
#pragma once

#include <string>

#include "libvirt_api.h"
#include "storage.h"

namespace vmfest::detail::libvirt {

// Copies the disk `target` of the running or paused `domain` (its volume `disk_volume`, with all of
// its backing chain) into the new standalone qcow2 volume `copy` of `pool`, as it is when the copy
// completes (a paused guest's disk as it was at the pause), and returns then. The domain keeps its
// own disk. The caller removes `copy`, also when this throws.
void copy_domain_disk(virDomainPtr domain, const std::string& target, const StoragePool& pool,
                      const std::string& disk_volume, const std::string& copy);

}  // namespace vmfest::detail::libvirt
