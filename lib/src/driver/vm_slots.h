// A host-wide cap on running VMs, shared by every process of this user: one flock'd slot file per
// running VM. A flock lives as long as an open descriptor of its file: the starting process's,
// and the VM process's where the backend hands it on, so a VM holds its slot while it runs,
// whoever started it (a detached CLI instance too), and the kernel frees it when both are gone
// (a stopped, destroyed or reaped VM, a killed test): nothing to clean up, no leaked capacity.
#pragma once

#include <chrono>
#include <filesystem>
#include <string>
#include <vector>

#include "../base/files.h"

namespace vmfest::detail {

class VmSlot {
 public:
  VmSlot(FileLock lock, int index) : lock_(std::move(lock)), index_(index) {}
  VmSlot(VmSlot&& other) noexcept;
  VmSlot& operator=(VmSlot&&) = delete;
  ~VmSlot();
  [[nodiscard]] int index() const noexcept { return index_; }
  // The slot's locked file: a VM process that inherits it keeps the slot taken for as long as it
  // runs, whether or not the process that started it is still there (see Machine::launch).
  [[nodiscard]] int descriptor() const noexcept { return lock_.descriptor(); }
  // The VM is up and this process no longer works to start it. Until then (and for a slot never
  // settled) a wait of this process for another slot is not a stall: its VM is still booting.
  void settle() noexcept;

 private:
  friend std::vector<VmSlot> acquire_vm_slots(const std::vector<std::string>&,
                                              std::chrono::milliseconds);
  FileLock lock_;
  int index_;
  bool starting_ = false;
};

// $VMFEST_MAX_VMS, else min(cores, memory / 512 MiB), at least 1.
int max_running_vms();

// $VMFEST_SLOTS_DIR, else $XDG_RUNTIME_DIR/vmfest/slots, else /tmp/vmfest-<uid>/slots: shared by
// all processes whatever their VMFEST_HOME, since they share the CPUs. Created 0700; Error when it
// is a link, another user's, or writable by others.
std::filesystem::path slots_directory();

// Waits for a free slot; StateError after `timeout` naming the cap and the holders' pids.
VmSlot acquire_vm_slot(const std::string& instance_name, std::chrono::milliseconds timeout);

// One slot per name, all or none: instances that must run together (a group on a private network)
// never hold part of the cap while waiting for the rest, so two groups cannot deadlock each other.
// A group larger than the cap waits for every slot and runs its other members beyond the cap, with
// a warning: a 3-VM test still runs on a host capped at 2.
// Processes that start their VMs one at a time can still hold and wait: two tests each holding one
// idle VM of a cap of 2 and each waiting for a second. When every slot is held by a process that
// is itself waiting with all its VMs up, for a few seconds, nothing will ever free one: one waiter
// then starts beyond the cap, with a warning, so the run goes on at the speed of the CPUs.
std::vector<VmSlot> acquire_vm_slots(const std::vector<std::string>& instance_names,
                                     std::chrono::milliseconds timeout);

// How long a start waits for room to run a VM: a free slot here, a remote host under its cap
// ($VMFEST_SLOT_WAIT seconds, else 10 minutes), within the test budget (base/settings.h).
std::chrono::milliseconds slot_timeout();

}  // namespace vmfest::detail
