// Chooses KVM or TCG for this host: probed with a bounded test boot of a Linux kernel, never
// assumed, decided once per host and QEMU binary for every VMFEST_HOME.
#pragma once

#include <chrono>
#include <filesystem>
#include <functional>
#include <string>

namespace vmfest::detail::qemu {

struct AcceleratorChoice {
  std::string name;     // "kvm" or "tcg"
  std::string reason;   // why, for the log
  bool forced = false;  // $VMFEST_ACCEL said so: never second-guessed
};

// Where the host-wide decisions live: ${VMFEST_CACHE_DIR:-${XDG_CACHE_HOME:-~/.cache}/vmfest}/
// accelerator (per user, like the default model's cache; not per VMFEST_HOME).
std::filesystem::path accelerator_cache_directory();

// A Linux kernel to probe KVM with, for a model that has none of its own: $VMFEST_PROBE_KERNEL,
// `registered` (a kernel-boot model's, may be empty), the default model's cache, the host's
// /boot/vmlinuz-$(uname -r). Empty when none is readable.
std::filesystem::path find_probe_kernel(const std::filesystem::path& registered);

// $VMFEST_ACCEL ("kvm"/"tcg") wins. Otherwise the decision recorded for this host in `cache_dir`
// (keyed by the QEMU binary, the host kernel and /dev/kvm), or a new probe under a file lock, so
// that parallel processes probe once: boot `probe_kernel` under KVM and wait up to `probe_timeout`
// for it to reach its console. Without a kernel the probe is a boot sector, which a KVM that cannot
// run 64-bit Linux still runs: a weak probe, said so in the reason, and replaced by a kernel probe
// as soon as one is possible.
AcceleratorChoice choose_accelerator(const std::filesystem::path& qemu,
                                     const std::filesystem::path& cache_dir,
                                     const std::filesystem::path& probe_kernel,
                                     std::chrono::milliseconds probe_timeout);

// Records `choice` as this host's decision for `qemu`, trusted like a kernel probe's: the runtime
// fallback records TCG this way when a guest showed no sign of life under KVM (a fooled probe).
void record_decision(const std::filesystem::path& qemu, const std::filesystem::path& cache_dir,
                     const AcceleratorChoice& choice);

// A guest just launched under KVM, as fall_back_to_tcg_if_silent() watches it.
struct KvmLaunch {
  std::string guest;               // "instance 'NAME' (model 'MODEL')", for messages
  bool resumed = false;            // resumed from a warm image rather than cold-booted
  int ssh_port = 0;                // the host port forwarded to the guest's SSH server
  std::filesystem::path console;   // the guest's serial console log
  std::filesystem::path qemu_log;  // QEMU's log; a fallback keeps it as qemu-kvm.log beside it
  std::function<bool()> running;   // QEMU is still running
  std::function<std::string()> qemu_status;  // QMP's run state ("internal-error", ...), or ""
  std::function<void(std::chrono::milliseconds)> ping_agent;  // throws BackendError unanswered
  std::function<void()> kill;                                 // stops QEMU
};

// Belt and braces behind a "kvm" choice: a KVM that fooled the probe costs one bound here, not a
// failed start. False when the guest shows a sign of life within a bound no working KVM needs (a
// cold boot's console gets past the bootloader or its SSH port speaks; a resumed guest's agent
// answers). Otherwise kills it, keeps QEMU's log of the KVM run, records TCG as this host's
// decision (every later VM uses it), says so, and returns true: the caller starts the guest again
// under TCG. Throws BackendError instead when $VMFEST_ACCEL forced KVM.
bool fall_back_to_tcg_if_silent(const AcceleratorChoice& choice, const KvmLaunch& launch);

// True once `console` holds a complete line that is not a bootloader's (SYSLINUX, GRUB, ...): the
// guest's kernel or init got to say something. Bootloaders run under KVMs that hang Linux.
bool console_past_bootloader(const std::string& console);

// The probe itself: boots `kernel` (or a built-in boot sector when empty) with `-accel kvm` and
// returns true when its success text reaches the serial console within `timeout`. On false, `why`
// says what was seen. Working files go to `work`.
bool kvm_runs_guest(const std::filesystem::path& qemu, const std::filesystem::path& work,
                    const std::filesystem::path& kernel, std::chrono::milliseconds timeout,
                    std::string& why);

}  // namespace vmfest::detail::qemu
