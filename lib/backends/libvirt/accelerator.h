// KVM or TCG for a libvirt host: probed, never assumed, once per host. libvirt offers KVM wherever
// /dev/kvm exists, also on hosts whose KVM hangs Linux guests; a host gets KVM only when libvirt
// offers it and a Linux kernel shows life under it within a bound through that host's libvirt.
#pragma once

#include <chrono>
#include <filesystem>
#include <string>

#include "hosts.h"
#include "libvirt_api.h"

namespace vmfest::detail::libvirt {

class StoragePool;

struct HostAccelerator {
  std::string domain_type;  // "kvm" or "qemu" (TCG)
  std::string reason;       // why, for the log and `vmfest doctor`
  bool forced = false;      // $VMFEST_ACCEL said so
};

// $VMFEST_ACCEL ("kvm"/"tcg") wins. Otherwise the decision recorded for this host, its libvirt and
// hypervisor versions and the emulator ($VMFEST_LIBVIRT_EMULATOR) in host_cache_root()/
// libvirt-accelerator, or a new probe, under a file lock so that parallel processes probe once:
// the host's domain capabilities, then a test boot of `kernel` (empty: capabilities alone, said so
// in the reason) under KVM.
HostAccelerator host_accelerator(virConnectPtr connection, const StoragePool& pool,
                                 const HostUri& host, const std::filesystem::path& kernel);

// A Linux kernel to test a host's KVM with when the model has none of its own: the default model's,
// if this machine has it built; empty otherwise.
std::filesystem::path default_probe_kernel();

// The test boot: starts a domain of `domain_type` that boots `kernel` (uploaded to `pool`) with its
// console on the serial port, and returns true when the kernel's banner reaches the console within
// `timeout`; otherwise false and `why` says what was seen. The domain is gone when it returns.
bool kernel_shows_life(virConnectPtr connection, const StoragePool& pool, const HostUri& host,
                       const std::string& domain_type, const std::filesystem::path& kernel,
                       std::chrono::milliseconds timeout, std::string& why);

}  // namespace vmfest::detail::libvirt
