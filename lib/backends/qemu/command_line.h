// QEMU's command line for one VM, and the files it keeps in the instance folder (QEMU runs there,
// so relative names keep socket paths short).
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "vmfest/internal/driver.h"

namespace vmfest::detail::qemu {

inline constexpr const char* kDisk = "disk.qcow2";
// The user-mode network that carries SSH; more ports join it at run time (`vmfest port`).
inline constexpr const char* kUserNetdev = "net0";
inline constexpr const char* kSerialLog = "serial.log";
inline constexpr const char* kQmpSocket = "qmp.sock";
inline constexpr const char* kPidFile = "qemu.pid";
inline constexpr const char* kAgentSocket = "agent.sock";
// The guest's memory: the RAM file of a warm-image build (a shared mapping, so that its memory is
// in the file when the guest is saved), then the image's, which each clone maps copy-on-write.
inline constexpr const char* kMemoryFile = "memory";
// In a warm image whose saved state holds the guest's memory (a running instance saved as a model,
// whose RAM was private), so a layer build on it must map its memory privately as a clone does:
// QEMU refuses to load memory into a shared block that x-ignore-shared skips.
inline constexpr const char* kMemoryInState = "memory-in-state";

// What one launch decides beyond the machine's configuration.
struct LaunchSettings {
  int ssh_port = 0;             // the host port forwarded to the guest's SSH port
  std::string accelerator;      // "kvm" or "tcg"
  bool resuming = false;        // resumes config.warm_image (-incoming defer)
  bool memory_in_file = false;  // the guest's RAM is kMemoryFile (see MachineConfig)
  // With memory_in_file: the VM's own kMemoryFile, mapped shared, so a save leaves the RAM in it
  // (a boot that becomes a warm image, a layer build); otherwise config.warm_image's, mapped
  // privately (a clone: its writes stay its own, the pages it leaves alone are shared).
  bool memory_own_file = false;
  // The private segment's card (config.private_nic) on the command line: a cold boot's. A resumed
  // clone gets it hot-plugged (private_nic_netdev/private_nic_device), a boot that saves a warm
  // image never has it.
  bool private_nic = false;
};

// QMP arguments of netdev_add and device_add that plug `nic` in, as the command line has it.
nlohmann::json private_nic_netdev(const PrivateNic& nic);
nlohmann::json private_nic_device(const PrivateNic& nic);

std::vector<std::string> qemu_arguments(const MachineConfig& config, const LaunchSettings& launch);

}  // namespace vmfest::detail::qemu
