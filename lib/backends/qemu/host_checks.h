// What `vmfest doctor` asks of this host for QEMU VMs: QEMU itself, how warm clones get their
// memory, KVM, and whether this user may use /dev/kvm.
#pragma once

#include <filesystem>
#include <vector>

#include "vmfest/internal/driver.h"

namespace vmfest::detail::qemu {

// Reads the facts and the accelerator decision this host keeps (host_qemu.h, accelerator.h), and
// probes what is not kept yet, as a VM start of `home` would.
std::vector<HostCheck> qemu_host_checks(const std::filesystem::path& home);

}  // namespace vmfest::detail::qemu
