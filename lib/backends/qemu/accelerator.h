// Chooses KVM or TCG for this host: probed with a bounded test boot, never assumed, cached per host.
#pragma once

#include <chrono>
#include <filesystem>
#include <string>

namespace vmfest::detail::qemu {

struct AcceleratorChoice {
  std::string name;    // "kvm" or "tcg"
  std::string reason;  // why, for the log
};

// $VMFEST_ACCEL ("kvm"/"tcg") wins. Otherwise a cached probe result for this host (keyed by the
// QEMU binary's version, the host kernel and /dev/kvm), or a new probe: boot a tiny payload under
// KVM and wait up to `probe_timeout` for its marker on the serial console. `probe_kernel` is a Linux
// kernel to boot for the probe (a stronger test than the built-in boot sector); may be empty.
AcceleratorChoice choose_accelerator(const std::filesystem::path& qemu,
                                     const std::filesystem::path& cache_dir,
                                     const std::filesystem::path& probe_kernel,
                                     std::chrono::milliseconds probe_timeout);

}  // namespace vmfest::detail::qemu
