#include "command_line.h"

#include <fmt/format.h>

#include "host_qemu.h"
#include "option_value.h"
#include "qemu_backend.h"

namespace vmfest::detail::qemu {

NLOHMANN_JSON_SERIALIZE_ENUM(StorageBus, {{StorageBus::Virtio, "virtio"},
                                          {StorageBus::Ide, "ide"},
                                          {StorageBus::Sata, "sata"},
                                          {StorageBus::VirtioScsi, "virtio-scsi"}})

namespace {

constexpr const char* kStorageBusOption = "storage_bus";

constexpr const char* kMemoryBackend = "ram0";
constexpr const char* kPrivateNetdev = "net1";
constexpr const char* kPrivateDevice = "vnet1";

// The disk and the NoCloud seed (a CD-ROM where the bus has one) on the configured controller.
void add_storage(const MachineConfig& config, std::vector<std::string>& args) {
  const StorageBus bus = storage_bus(config);
  const std::string disk = fmt::format("file={},if=none,id=disk0,format=qcow2", kDisk);
  const std::string seed =
      fmt::format("file={},if=none,id=seed0,format=raw,readonly=on{}",
                  option_value(config.seed_image), bus == StorageBus::Virtio ? "" : ",media=cdrom");
  args.insert(args.end(), {"-drive", disk, "-drive", seed});
  switch (bus) {
    case StorageBus::Virtio:
      args.insert(args.end(), {"-device", "virtio-blk-pci,drive=disk0,id=vblk0", "-device",
                               "virtio-blk-pci,drive=seed0,id=vblk1"});
      break;
    case StorageBus::Ide:  // the PIIX controller every pc machine has
      args.insert(args.end(), {"-device", "ide-hd,drive=disk0,bus=ide.0,unit=0", "-device",
                               "ide-cd,drive=seed0,bus=ide.1,unit=0"});
      break;
    case StorageBus::Sata:
      args.insert(args.end(),
                  {"-device", "ahci,id=sata0", "-device", "ide-hd,drive=disk0,bus=sata0.0",
                   "-device", "ide-cd,drive=seed0,bus=sata0.1"});
      break;
    case StorageBus::VirtioScsi:
      args.insert(args.end(), {"-device", "virtio-scsi-pci,id=scsi0", "-device",
                               "scsi-hd,drive=disk0,bus=scsi0.0", "-device",
                               "scsi-cd,drive=seed0,bus=scsi0.0"});
      break;
  }
}

}  // namespace

void set_storage_bus(MachineConfig& config, StorageBus bus) {
  config.backend_options[kStorageBusOption] = bus;
}

StorageBus storage_bus(const MachineConfig& config) {
  return config.backend_options.value(kStorageBusOption, StorageBus::Virtio);
}

nlohmann::json private_nic_netdev(const PrivateNic& nic) {
  return {{"type", "dgram"},
          {"id", kPrivateNetdev},
          {"local", {{"type", "unix"}, {"path", nic.port_socket.string()}}},
          {"remote", {{"type", "unix"}, {"path", nic.hub_socket.string()}}}};
}

nlohmann::json private_nic_device(const PrivateNic& nic) {
  return {{"driver", "virtio-net-pci"},
          {"netdev", kPrivateNetdev},
          {"id", kPrivateDevice},
          {"mac", nic.mac}};
}

std::vector<std::string> qemu_arguments(const MachineConfig& config, const LaunchSettings& launch) {
  const Model& model = config.model;
  std::vector<std::string> args = {
      "-name", config.instance_name, "-machine",
      launch.memory_in_file ? fmt::format("{},memory-backend={}", machine_type(), kMemoryBackend)
                            : machine_type(),
      "-accel",
      // QEMU's default translation cache is 1 GiB per VM; see tcg_tb_size_mib().
      launch.accelerator == "tcg" ? fmt::format("tcg,tb-size={}", tcg_tb_size_mib())
                                  : launch.accelerator,
      "-m", std::to_string(config.profile.memory_mib), "-smp", std::to_string(config.profile.cpus),
      "-nodefaults", "-no-user-config", "-display", "none"};
  if (launch.memory_in_file) {
    const bool own_file = launch.memory_own_file;
    args.insert(args.end(),
                {"-object", fmt::format("memory-backend-file,id={},size={}M,mem-path={},share={}",
                                        kMemoryBackend, config.profile.memory_mib,
                                        own_file ? std::string(kMemoryFile)
                                                 : option_value(config.warm_image / kMemoryFile),
                                        own_file ? "on" : "off")});
  }
  if (model.boot.kind == BootSpec::Kind::Kernel) {
    args.insert(args.end(), {"-kernel", model.boot.kernel.string()});
    if (!model.boot.initrd.empty())
      args.insert(args.end(), {"-initrd", model.boot.initrd.string()});
    args.insert(args.end(), {"-append", model.boot.cmdline});
  }
  add_storage(config, args);
  args.insert(args.end(),
              {"-netdev",
               fmt::format("user,id={},hostfwd=tcp:127.0.0.1:{}-:{}", kUserNetdev, launch.ssh_port,
                           model.ssh_port),
               "-device", fmt::format("virtio-net-pci,netdev={},id=vnet0", kUserNetdev), "-device",
               "virtio-rng-pci,id=rng0",
               // A new generation ID in every QEMU, so a clone's kernel (Linux >= 5.18) reseeds its
               // RNG the moment it resumes.
               "-device", "vmgenid,guid=auto,id=vmgenid0",
               // The guest agent's port: warm clones get their identity through it.
               "-device", "virtio-serial-pci,id=vser0", "-chardev",
               fmt::format("socket,id=agent0,path={},server=on,wait=off", kAgentSocket), "-device",
               "virtserialport,bus=vser0.0,chardev=agent0,name=org.vmfest.agent", "-serial",
               fmt::format("file:{}", kSerialLog), "-qmp",
               fmt::format("unix:{},server=on,wait=off", kQmpSocket), "-pidfile", kPidFile});
  if (launch.private_nic && config.private_nic) {
    const PrivateNic& nic = *config.private_nic;
    args.insert(
        args.end(),
        {"-netdev",
         fmt::format("dgram,id={},local.type=unix,local.path={},remote.type=unix,"
                     "remote.path={}",
                     kPrivateNetdev, option_value(nic.port_socket), option_value(nic.hub_socket)),
         "-device",
         fmt::format("virtio-net-pci,netdev={},id={},mac={}", kPrivateNetdev, kPrivateDevice,
                     nic.mac)});
  }
  if (launch.resuming) args.insert(args.end(), {"-incoming", "defer"});
  return args;
}

}  // namespace vmfest::detail::qemu
