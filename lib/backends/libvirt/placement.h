// Where libvirt instances run: which host a new instance goes to, and room for its domain there.
#pragma once

#include <functional>

#include "hosts.h"
#include "libvirt_api.h"
#include "vmfest/internal/driver.h"

namespace vmfest::detail::libvirt {

// The one host, or of several the least loaded (the first of equals), waiting while every one is
// at its cap (as long as a start waits for a VM slot); BackendError when none frees up.
HostUri choose_host();

// Warm images are per host, so warm clones spread over the hosts as cold instances do. The host
// whose warm image of `config`'s model an instance would resume: where this process placed the
// instance `config` names (a builder checking the image it made), else the least loaded, which
// the model's next warm-image builder in this process then boots on (place_instance).
HostUri warm_image_host(const MachineConfig& config);

// Where a new instance's domain goes that resumes no warm image: a warm-image builder to the host
// its image is keyed to, any other to the least loaded.
HostUri place_instance(const MachineConfig& config);
// The instance runs on `host`, for warm_image_host, until forget_instance.
void remember_instance(const MachineConfig& config, const HostUri& host);
void forget_instance(const MachineConfig& config);

class StoragePool;

// Calls `start`, which starts one domain on `host`, once the host has room for it under its cap
// (VMFEST_LIBVIRT_MAX_VMS, else its CPUs), holding the host's placement lock (a volume of its
// pool, so runners anywhere agree) from the count to the start: runners starting at once never
// exceed the cap. Waits as long as a start waits for a VM slot (VMFEST_SLOT_WAIT), then
// BackendError naming the count.
void start_within_cap(virConnectPtr connection, const StoragePool& pool, const HostUri& host,
                      const std::function<void()>& start);

}  // namespace vmfest::detail::libvirt
