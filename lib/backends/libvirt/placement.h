// Where libvirt instances run: which host a new instance goes to, and room for its domain there.
#pragma once

#include <functional>

#include "hosts.h"
#include "libvirt_api.h"

namespace vmfest::detail::libvirt {

// The one host, or of several the least loaded (the first of equals), waiting while every one is
// at its cap (as long as a start waits for a VM slot); BackendError when none frees up.
HostUri choose_host();

class StoragePool;

// Calls `start`, which starts one domain on `host`, once the host has room for it under its cap
// (VMFEST_LIBVIRT_MAX_VMS, else its CPUs), holding the host's placement lock (a volume of its
// pool, so runners anywhere agree) from the count to the start: runners starting at once never
// exceed the cap. Waits as long as a start waits for a VM slot (VMFEST_SLOT_WAIT), then
// BackendError naming the count.
void start_within_cap(virConnectPtr connection, const StoragePool& pool, const HostUri& host,
                      const std::function<void()>& start);

}  // namespace vmfest::detail::libvirt
