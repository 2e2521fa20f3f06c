// Chooses KVM or TCG for this host: probed with a bounded test boot, never assumed, cached per
// host.
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
// KVM and wait up to `probe_timeout` for its marker on the serial console. `probe_kernel` is a
// Linux kernel to boot for the probe (a stronger test than the built-in boot sector); may be empty.
AcceleratorChoice choose_accelerator(const std::filesystem::path& qemu,
                                     const std::filesystem::path& cache_dir,
                                     const std::filesystem::path& probe_kernel,
                                     std::chrono::milliseconds probe_timeout);

// The probe itself: boots a tiny payload (`kernel`, or a built-in boot sector when empty) with
// `-accel kvm` and returns true when its success text reaches the serial console within `timeout`.
// On false, `why` says what was seen. Working files go to `work`.
bool kvm_runs_guest(const std::filesystem::path& qemu, const std::filesystem::path& work,
                    const std::filesystem::path& kernel, std::chrono::milliseconds timeout,
                    std::string& why);

}  // namespace vmfest::detail::qemu
