// The QEMU backend: qcow2 overlays, qemu-system-x86_64 started with Boost.Process, QMP control,
// SSH through a user-mode network port forward on 127.0.0.1.
#pragma once

#include <memory>

#include "vmfest/internal/driver.h"

namespace vmfest::detail::qemu {

std::unique_ptr<Backend> make_qemu_backend();

// The controller the disk and the seed hang on: virtio for vmfest's own VMs. A caller that runs a
// stand-in for another hypervisor's VM on this backend (a test double) asks for the
// controller that VM was configured with, as one of this backend's options.
enum class StorageBus { Virtio, Ide, Sata, VirtioScsi };
void set_storage_bus(MachineConfig& config, StorageBus bus);
StorageBus storage_bus(const MachineConfig& config);

}  // namespace vmfest::detail::qemu
