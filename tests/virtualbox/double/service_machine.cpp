// The fake VirtualBox's IMachine operations (see service.cpp).
#include <algorithm>
#include <filesystem>
#include <string>

#include <fmt/format.h>

#include "backends/virtualbox/result_codes.h"
#include "fake_virtualbox.h"
#include "service_support.h"

namespace vmfest::vbox_double {
namespace fs = std::filesystem;
namespace result = detail::virtualbox::result;
using Kind = Object::Kind;
using Lock = Session::Lock;

namespace {

// The QEMU controller that stands in for the VM's: the buses the double can emulate.
detail::qemu::StorageBus guest_bus(const Settings& settings, const std::string& controller) {
  for (const auto& [name, bus] : settings.controllers) {
    if (name != controller) continue;
    switch (bus) {
      case vbox__StorageBus::IDE:
        return detail::qemu::StorageBus::Ide;
      case vbox__StorageBus::SATA:
        return detail::qemu::StorageBus::Sata;
      case vbox__StorageBus::VirtioSCSI:
        return detail::qemu::StorageBus::VirtioScsi;
      default:
        fail(result::kNotSupported,
             fmt::format("test double: the disk's controller '{}' has a bus the double cannot "
                         "emulate (IDE, SATA and VirtioSCSI only)",
                         controller));
    }
  }
  fail(result::kObjectNotFound, fmt::format("No storage controller named '{}'", controller));
}

}  // namespace

// ---- IMachine ---------------------------------------------------------------------------------

int Service::IMachine_USCOREgetId(_vbox__IMachine_USCOREgetId* request,
                                  _vbox__IMachine_USCOREgetIdResponse& response) {
  return answer(request->_USCOREthis, [&] {
    response.returnval = world_.resolve(request->_USCOREthis, Kind::Machine).machine->uuid;
  });
}

int Service::IMachine_USCOREgetState(_vbox__IMachine_USCOREgetState* request,
                                     _vbox__IMachine_USCOREgetStateResponse& response) {
  return answer(request->_USCOREthis, [&] {
    Machine& machine = *world_.resolve(request->_USCOREthis, Kind::Machine).machine;
    world_.refresh(machine);
    response.returnval = machine.state;
  });
}

int Service::IMachine_USCOREsetMemorySize(_vbox__IMachine_USCOREsetMemorySize* request,
                                          _vbox__IMachine_USCOREsetMemorySizeResponse&) {
  return answer(request->_USCOREthis, [&] {
    Settings& settings = world_.writable(world_.resolve(request->_USCOREthis, Kind::Machine));
    if (request->memorySize < 4 || request->memorySize > 2097152) {
      fail(result::kInvalidArgument,
           fmt::format("Invalid RAM size: {} MB (must be in range [4, 2097152] MB)",
                       request->memorySize));
    }
    settings.memory_mib = request->memorySize;
  });
}

int Service::IMachine_USCOREsetCPUCount(_vbox__IMachine_USCOREsetCPUCount* request,
                                        _vbox__IMachine_USCOREsetCPUCountResponse&) {
  return answer(request->_USCOREthis, [&] {
    Settings& settings = world_.writable(world_.resolve(request->_USCOREthis, Kind::Machine));
    if (request->CPUCount < 1 || request->CPUCount > 64) {
      fail(result::kInvalidArgument,
           fmt::format("Invalid virtual CPU count: {} (must be in range [1, 64])",
                       request->CPUCount));
    }
    settings.cpus = request->CPUCount;
  });
}

int Service::IMachine_USCOREsaveSettings(_vbox__IMachine_USCOREsaveSettings* request,
                                         _vbox__IMachine_USCOREsaveSettingsResponse&) {
  return answer(request->_USCOREthis, [&] {
    const Object& view = world_.resolve(request->_USCOREthis, Kind::Machine);
    Settings& settings = world_.writable(view);
    Machine& machine = *view.machine;
    if (&settings != &machine.settings) machine.settings = settings;  // commit the edits
    world_.save(machine, machine.settings);
  });
}

int Service::IMachine_USCOREaddStorageController(
    _vbox__IMachine_USCOREaddStorageController* request,
    _vbox__IMachine_USCOREaddStorageControllerResponse& response) {
  return answer(request->_USCOREthis, [&] {
    const Object& view = world_.resolve(request->_USCOREthis, Kind::Machine);
    Settings& settings = world_.writable(view);
    auto& controllers = settings.controllers;
    if (std::any_of(controllers.begin(), controllers.end(),
                    [&](const auto& controller) { return controller.first == request->name; })) {
      fail(result::kObjectInUse,
           fmt::format("Storage controller named '{}' already exists", request->name));
    }
    if (request->connectionType == vbox__StorageBus::Null) {
      fail(result::kInvalidArgument, "Invalid connection type");
    }
    controllers.emplace_back(request->name, request->connectionType);
    response.returnval = world_.reference(
        world_.websession_of(request->_USCOREthis),
        part_of(view, Kind::StorageController, static_cast<unsigned>(controllers.size() - 1)));
  });
}

int Service::IMachine_USCOREattachDevice(_vbox__IMachine_USCOREattachDevice* request,
                                         _vbox__IMachine_USCOREattachDeviceResponse&) {
  return answer(request->_USCOREthis, [&] {
    const Object& view = world_.resolve(request->_USCOREthis, Kind::Machine);
    Machine& machine = *view.machine;
    if (!machine.registered) {
      fail(result::kInvalidObjectState,
           fmt::format("Cannot attach storage devices to the unregistered machine '{}'",
                       machine.name));
    }
    Settings& settings = world_.writable(view);
    auto controller = std::find_if(settings.controllers.begin(), settings.controllers.end(),
                                   [&](const auto& c) { return c.first == request->name; });
    if (controller == settings.controllers.end()) {
      fail(result::kObjectNotFound,
           fmt::format("Could not find a storage controller named '{}'", request->name));
    }
    const bool ide = controller->second == vbox__StorageBus::IDE;
    const int last_port = ide ? 1 : controller->second == vbox__StorageBus::SATA ? 29 : 15;
    const int last_device = ide ? 1 : 0;
    if (request->controllerPort < 0 || request->controllerPort > last_port || request->device < 0 ||
        request->device > last_device) {
      fail(result::kInvalidArgument,
           fmt::format("Invalid port {} or device {} of controller '{}' (ports 0-{}, devices "
                       "0-{})",
                       request->controllerPort, request->device, request->name, last_port,
                       last_device));
    }
    for (const auto& attached : settings.attachments) {
      if (attached.controller == request->name && attached.port == request->controllerPort &&
          attached.device == request->device) {
        fail(result::kObjectInUse,
             fmt::format("Medium '{}' is already attached to port {}, device {} of controller "
                         "'{}' of this virtual machine",
                         attached.medium ? attached.medium->location.string() : "(empty drive)",
                         attached.port, attached.device, attached.controller));
      }
    }
    const vbox__DeviceType type = request->type;
    if (type != vbox__DeviceType::HardDisk && type != vbox__DeviceType::DVD &&
        type != vbox__DeviceType::Floppy) {
      fail(result::kInvalidArgument, "Invalid device type");
    }
    Attachment attachment{request->name, request->controllerPort, request->device, type, nullptr};
    if (!request->medium.empty()) {
      attachment.medium = world_.resolve(request->medium, Kind::Medium).medium;
    } else if (type == vbox__DeviceType::HardDisk) {
      fail(result::kInvalidArgument, "No medium given for a hard disk attachment");
    }
    if (attachment.medium) {
      Medium& medium = *attachment.medium;
      if (medium.device != type) {
        fail(result::kInvalidArgument,
             fmt::format("The medium '{}' is not of the device type of this attachment",
                         medium.location.string()));
      }
      const bool shared = medium.type == vbox__MediumType::MultiAttach ||
                          medium.type == vbox__MediumType::Immutable;
      if (type == vbox__DeviceType::HardDisk && !shared &&
          (!medium.machines.empty() || medium.children > 0)) {
        fail(result::kObjectInUse,
             fmt::format("Medium '{}' is already attached to a virtual machine or has child "
                         "media",
                         medium.location.string()));
      }
      if (type == vbox__DeviceType::HardDisk && shared) {
        // VirtualBox attaches a new differencing image of the shared medium instead. The
        // double's image is a folder holding a QEMU qcow2 overlay of the medium.
        auto diff = std::make_shared<Medium>();
        diff->uuid = new_uuid();
        diff->location =
            machine.settings_file.parent_path() / "Snapshots" / ("{" + diff->uuid + "}");
        diff->parent = attachment.medium;
        Guest::create_disk(diff->location, medium.location);
        ++medium.children;
        world_.media_.push_back(diff);
        attachment.medium = diff;
      } else if (type == vbox__DeviceType::HardDisk) {
        // Guest writes land in an overlay beside a normal image (a test-double concession).
        const fs::path overlay = medium.location.string() + ".qemu";
        if (!fs::exists(overlay)) Guest::create_disk(overlay, medium.location);
      }
      attachment.medium->machines.push_back(machine.uuid);
    }
    settings.attachments.push_back(attachment);
  });
}

int Service::IMachine_USCOREgetNetworkAdapter(
    _vbox__IMachine_USCOREgetNetworkAdapter* request,
    _vbox__IMachine_USCOREgetNetworkAdapterResponse& response) {
  return answer(request->_USCOREthis, [&] {
    const Object& view = world_.resolve(request->_USCOREthis, Kind::Machine);
    if (request->slot > 7) {
      fail(result::kInvalidArgument,
           fmt::format("Invalid slot number: {} (must be in range [0, 7])", request->slot));
    }
    response.returnval = world_.reference(world_.websession_of(request->_USCOREthis),
                                          part_of(view, Kind::NetworkAdapter, request->slot));
  });
}

int Service::IMachine_USCOREgetSerialPort(_vbox__IMachine_USCOREgetSerialPort* request,
                                          _vbox__IMachine_USCOREgetSerialPortResponse& response) {
  return answer(request->_USCOREthis, [&] {
    const Object& view = world_.resolve(request->_USCOREthis, Kind::Machine);
    if (request->slot > 3) {
      fail(result::kInvalidArgument,
           fmt::format("Invalid slot number: {} (must be in range [0, 3])", request->slot));
    }
    response.returnval = world_.reference(world_.websession_of(request->_USCOREthis),
                                          part_of(view, Kind::SerialPort, request->slot));
  });
}

int Service::IMachine_USCORElockMachine(_vbox__IMachine_USCORElockMachine* request,
                                        _vbox__IMachine_USCORElockMachineResponse&) {
  return answer(request->_USCOREthis, [&] {
    auto machine = world_.resolve(request->_USCOREthis, Kind::Machine).machine;
    auto session = world_.resolve(request->session, Kind::Session).session;
    if (session->lock != Lock::None || session->spawning) {
      fail(result::kInvalidObjectState, "The given session is busy");
    }
    if (!machine->registered) {
      fail(result::kUnexpected, fmt::format("The machine '{}' is not registered", machine->name));
    }
    world_.refresh(*machine);
    const bool running = vm_exists(machine->state);
    const vbox__LockType type = request->lockType;
    // A shared lock on a machine nobody holds is a write lock (VirtualBox's rule).
    if (type == vbox__LockType::Write || type == vbox__LockType::VM ||
        (type == vbox__LockType::Shared && !running && !world_.locked(*machine))) {
      if (running || world_.locked(*machine)) {
        fail(result::kInvalidObjectState,
             fmt::format("The machine '{}' is already locked by a session (or being locked or "
                         "unlocked)",
                         machine->name));
      }
      session->lock = Lock::Write;
      session->edits = machine->settings;
      machine->writer = session;
    } else if (type == vbox__LockType::Shared) {
      if (!running) {
        fail(result::kInvalidObjectState,
             fmt::format("The machine '{}' is already locked for a session", machine->name));
      }
      session->lock = Lock::Shared;
      machine->sharers.push_back(session);
    } else {
      fail(result::kInvalidArgument, "Invalid lock type");
    }
    session->machine = machine;
  });
}

int Service::IMachine_USCORElaunchVMProcess(
    _vbox__IMachine_USCORElaunchVMProcess* request,
    _vbox__IMachine_USCORElaunchVMProcessResponse& response) {
  return answer(request->_USCOREthis, [&] {
    auto machine = world_.resolve(request->_USCOREthis, Kind::Machine).machine;
    auto session = world_.resolve(request->session, Kind::Session).session;
    if (session->lock != Lock::None || session->spawning) {
      fail(result::kInvalidObjectState, "The given session is busy");
    }
    if (!machine->registered) {
      fail(result::kUnexpected, fmt::format("The machine '{}' is not registered", machine->name));
    }
    static const std::vector<std::string> frontends = {"", "gui", "headless", "sdl", "separate"};
    if (std::find(frontends.begin(), frontends.end(), request->name) == frontends.end()) {
      fail(result::kInvalidArgument, fmt::format("Invalid frontend name: '{}'", request->name));
    }
    world_.refresh(*machine);
    if (world_.locked(*machine)) {
      fail(result::kInvalidObjectState,
           fmt::format("The machine '{}' is already locked by a session (or being locked or "
                       "unlocked)",
                       machine->name));
    }
    if (machine->state != vbox__MachineState::PoweredOff &&
        machine->state != vbox__MachineState::Aborted) {
      fail(result::kInvalidVmState, fmt::format("The machine '{}' is not powered off (state is {})",
                                                machine->name, state_name(machine->state)));
    }
    // What the QEMU guest is made of: the first hard disk and DVD, the NAT rule, the UART file.
    const Settings& settings = machine->settings;
    GuestSpec spec;
    spec.name = machine->name;
    spec.memory_mib = settings.memory_mib;
    spec.cpus = settings.cpus;
    for (const auto& attachment : settings.attachments) {
      if (!attachment.medium) continue;
      const Medium& medium = *attachment.medium;
      if (attachment.type == vbox__DeviceType::HardDisk && spec.storage.empty()) {
        const Medium& base = medium.parent ? *medium.parent : medium;
        spec.storage =
            medium.parent ? medium.location : fs::path(medium.location.string() + ".qemu");
        spec.base = base.location;
        spec.bus = guest_bus(settings, attachment.controller);
      } else if (attachment.type == vbox__DeviceType::DVD && spec.dvd.empty()) {
        spec.dvd = medium.location;
      }
    }
    for (const auto& adapter : settings.adapters) {
      if (!adapter.enabled || adapter.attachment != vbox__NetworkAttachmentType::NAT) continue;
      for (const auto& rule : adapter.rules) {
        if (rule.protocol == vbox__NATProtocol::TCP && spec.host_port == 0) {
          spec.host_port = rule.host_port;
          spec.guest_port = rule.guest_port;
        }
      }
    }
    const SerialPort& uart = settings.serial_ports[0];
    if (uart.enabled && uart.mode == vbox__PortMode::RawFile) spec.serial_file = uart.path;

    session->lock = Lock::Launch;
    session->spawning = true;
    session->machine = machine;
    machine->sharers.push_back(session);
    machine->state = vbox__MachineState::Starting;
    Object progress = object(Kind::Progress);
    progress.progress = std::make_shared<Progress>();
    world_.run_worker([&world = world_, machine, session, spec, done = progress.progress] {
      std::unique_ptr<Guest> guest;
      std::string error;
      try {
        if (spec.storage.empty()) throw std::runtime_error("the machine has no hard disk");
        if (spec.dvd.empty()) {
          throw std::runtime_error(
              "the test double runs machines with a DVD (the NoCloud seed) "
              "only");
        }
        guest = std::make_unique<Guest>(spec);
        guest->start();
      } catch (const std::exception& failure) {
        error = failure.what();
        guest.reset();
      }
      std::lock_guard lock(world.mutex_);
      session->spawning = false;
      if (error.empty()) {
        machine->guest = std::move(guest);
        machine->state = vbox__MachineState::Running;
      } else {
        world.vm_stopped(*machine);
      }
      done->complete(error.empty() ? 0 : result::kVmError, error);
    });
    response.returnval =
        world_.reference(world_.websession_of(request->_USCOREthis), std::move(progress));
  });
}

int Service::IMachine_USCOREunregister(_vbox__IMachine_USCOREunregister* request,
                                       _vbox__IMachine_USCOREunregisterResponse& response) {
  return answer(request->_USCOREthis, [&] {
    Machine& machine = *world_.resolve(request->_USCOREthis, Kind::Machine).machine;
    if (!machine.registered) {
      fail(result::kInvalidObjectState,
           fmt::format("The machine '{}' is not registered", machine.name));
    }
    world_.refresh(machine);
    if (world_.locked(machine) || vm_exists(machine.state)) {
      fail(result::kInvalidObjectState,
           fmt::format("Cannot unregister the machine '{}' while it is locked", machine.name));
    }
    const vbox__CleanupMode mode = request->cleanupMode;
    if (mode == vbox__CleanupMode::UnregisterOnly && !machine.settings.attachments.empty()) {
      fail(result::kInvalidObjectState,
           fmt::format("Cannot unregister the machine '{}' because it has {} storage "
                       "attachments",
                       machine.name, machine.settings.attachments.size()));
    }
    Websession& websession = world_.websession_of(request->_USCOREthis);
    for (const auto& attachment : machine.settings.attachments) {
      if (!attachment.medium) continue;
      const bool hard_disk = attachment.type == vbox__DeviceType::HardDisk;
      const bool returned = (hard_disk && mode != vbox__CleanupMode::DetachAllReturnNone) ||
                            mode == vbox__CleanupMode::Full ||
                            mode == vbox__CleanupMode::DetachAllReturnHardDisksAndVMRemovable;
      if (!returned) continue;
      Object medium = object(Kind::Medium);
      medium.medium = attachment.medium;
      response.returnval.push_back(world_.reference(websession, std::move(medium)));
    }
    world_.detach_all(machine, machine.settings);
    machine.registered = false;
  });
}

int Service::IMachine_USCOREdeleteConfig(_vbox__IMachine_USCOREdeleteConfig* request,
                                         _vbox__IMachine_USCOREdeleteConfigResponse& response) {
  return answer(request->_USCOREthis, [&] {
    auto machine = world_.resolve(request->_USCOREthis, Kind::Machine).machine;
    if (machine->registered) {
      fail(result::kInvalidVmState, "Cannot delete settings of a registered machine");
    }
    std::vector<std::shared_ptr<Medium>> media;
    for (const auto& ref : request->media) {
      auto medium = world_.resolve(ref, Kind::Medium).medium;
      if (!medium->machines.empty() || medium->children > 0) {
        fail(result::kObjectInUse,
             fmt::format("Medium '{}' is attached to a virtual machine or has child media",
                         medium->location.string()));
      }
      media.push_back(medium);
    }
    for (const auto& medium : media) world_.delete_storage(*medium);
    const fs::path folder = machine->settings_file.parent_path();
    std::error_code ignored;
    fs::remove(machine->settings_file, ignored);
    fs::remove(machine->settings_file.string() + "-prev", ignored);
    fs::remove_all(folder / "Logs", ignored);
    fs::remove(folder / "Snapshots", ignored);  // only when empty, like VirtualBox
    fs::remove(folder, ignored);
    auto& machines = world_.machines_;
    machines.erase(std::remove(machines.begin(), machines.end(), machine), machines.end());
    Object progress = object(Kind::Progress);
    progress.progress = std::make_shared<Progress>();
    progress.progress->complete(0, "");
    response.returnval =
        world_.reference(world_.websession_of(request->_USCOREthis), std::move(progress));
  });
}

}  // namespace vmfest::vbox_double
