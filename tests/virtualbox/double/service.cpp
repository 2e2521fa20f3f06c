// The vboxwebsrv operations of the fake VirtualBox. Fault texts and result codes follow
// VirtualBox's Main API (VirtualBoxImpl.cpp, MachineImpl.cpp, MediumImpl.cpp, vboxweb.cpp).
#include <algorithm>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "backends/virtualbox/result_codes.h"
#include "fake_virtualbox.h"

namespace vmfest::vbox_double {
namespace fs = std::filesystem;
namespace result = detail::virtualbox::result;
using Kind = Object::Kind;
using Lock = Session::Lock;

namespace {

bool vm_exists(vbox__MachineState state) {
  return state == vbox__MachineState::Running || state == vbox__MachineState::Paused ||
         state == vbox__MachineState::Starting;
}

Object object(Kind kind) {
  Object result;
  result.kind = kind;
  return result;
}

// A view of the same machine (adapter, NAT engine, serial port) through the same session.
Object part_of(const Object& view, Kind kind, unsigned slot) {
  Object part = view;
  part.kind = kind;
  part.slot = slot;
  return part;
}

void require_locked(const Session& session) {
  if (session.lock == Lock::None || session.spawning) {
    fail(result::kUnexpected, fmt::format("The session is not locked (session state: {})",
                                          session.spawning ? "Spawning" : "Unlocked"));
  }
}

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

Service::Service(World& world)
    : vboxBindingService(SOAP_IO_KEEPALIVE | SOAP_C_UTFSTRING), world_(world) {}

int Service::dispatch() {
  if (!reject_.empty()) {
    std::string reason = std::exchange(reject_, {});
    return soap_sender_fault(soap, reason.c_str(), nullptr);
  }
  return vboxBindingService::dispatch();
}

template <class Operation>
int Service::answer(const std::string& caller, Operation operation) {
  Fault failure;
  std::string error_info;
  {
    std::lock_guard lock(world_.mutex_);
    try {
      operation();
      return SOAP_OK;
    } catch (Fault& thrown) {
      failure = std::move(thrown);
    } catch (const std::exception& error) {
      failure = Fault{result::kFail, error.what(), ""};
    }
    if (failure.code != 0) error_info = world_.error_info(caller, failure);
  }
  return fault(failure, error_info);
}

// vboxwebsrv's faults: the text as faultstring, VirtualBox's details in the SOAP 1.1 detail.
int Service::fault(const Fault& fault, const std::string& error_info) {
  soap_sender_fault(soap, fault.text.c_str(), nullptr);
  if (fault.code == 0 && fault.bad_object.empty()) return SOAP_FAULT;  // no VirtualBox details
  soap->fault->detail = soap_new_SOAP_ENV__Detail(soap);
  if (fault.code == 0) {
    auto* detail = soap_new__vbox__InvalidObjectFault(soap);
    detail->badObjectID = fault.bad_object;
    soap->fault->detail->vbox__InvalidObjectFault = detail;
  } else {
    auto* detail = soap_new__vbox__RuntimeFault(soap);
    detail->resultCode = fault.code;
    detail->returnval = error_info;
    soap->fault->detail->vbox__RuntimeFault = detail;
  }
  return SOAP_FAULT;
}

// ---- IWebsessionManager, IManagedObjectRef ----------------------------------------------------

int Service::IWebsessionManager_USCORElogon(
    _vbox__IWebsessionManager_USCORElogon* request,
    _vbox__IWebsessionManager_USCORElogonResponse& response) {
  return answer("", [&] {
    const WorldOptions& options = world_.options();
    if (!options.user.empty() &&
        (request->username != options.user || request->password != options.password)) {
      // vboxwebsrv answers a refused logon with a bare fault.
      throw Fault{0, "Authentication failed", ""};
    }
    Websession& websession = world_.websessions_[world_.next_websession_];
    websession.id = world_.next_websession_++;
    response.returnval = world_.reference(websession, object(Kind::VirtualBox));
  });
}

int Service::IWebsessionManager_USCOREgetSessionObject(
    _vbox__IWebsessionManager_USCOREgetSessionObject* request,
    _vbox__IWebsessionManager_USCOREgetSessionObjectResponse& response) {
  return answer(request->refIVirtualBox, [&] {
    world_.resolve(request->refIVirtualBox, Kind::VirtualBox);
    Object session = object(Kind::Session);
    session.session = std::make_shared<Session>();
    response.returnval =
        world_.reference(world_.websession_of(request->refIVirtualBox), std::move(session));
  });
}

int Service::IWebsessionManager_USCORElogoff(_vbox__IWebsessionManager_USCORElogoff* request,
                                             _vbox__IWebsessionManager_USCORElogoffResponse&) {
  return answer(request->refIVirtualBox, [&] {
    world_.resolve(request->refIVirtualBox, Kind::VirtualBox);
    world_.end(world_.websession_of(request->refIVirtualBox));
  });
}

int Service::IManagedObjectRef_USCORErelease(_vbox__IManagedObjectRef_USCORErelease* request,
                                             _vbox__IManagedObjectRef_USCOREreleaseResponse&) {
  return answer(request->_USCOREthis, [&] {
    Websession& websession = world_.websession_of(request->_USCOREthis);
    auto found = websession.objects.find(request->_USCOREthis);
    if (found == websession.objects.end()) invalid_object(request->_USCOREthis);
    if (found->second.kind == Kind::Session) world_.unlock(found->second.session);
    websession.objects.erase(found);
  });
}

// ---- IVirtualBox ------------------------------------------------------------------------------

int Service::IVirtualBox_USCOREgetAPIVersion(
    _vbox__IVirtualBox_USCOREgetAPIVersion* request,
    _vbox__IVirtualBox_USCOREgetAPIVersionResponse& response) {
  return answer(request->_USCOREthis, [&] {
    world_.resolve(request->_USCOREthis, Kind::VirtualBox);
    response.returnval = world_.options().api;
    std::replace(response.returnval.begin(), response.returnval.end(), '.', '_');
  });
}

int Service::IVirtualBox_USCOREcreateMachine(
    _vbox__IVirtualBox_USCOREcreateMachine* request,
    _vbox__IVirtualBox_USCOREcreateMachineResponse& response) {
  return answer(request->_USCOREthis, [&] {
    world_.resolve(request->_USCOREthis, Kind::VirtualBox);
    if (request->name.empty()) fail(result::kInvalidArgument, "Machine name must not be empty");
    const fs::path settings(request->settingsFile);
    if (!settings.is_absolute()) {
      fail(result::kInvalidArgument,
           fmt::format("Settings file path '{}' is not absolute (the test double composes no "
                       "default path)",
                       request->settingsFile));
    }
    const bool overwrite = request->flags.find("forceOverwrite=1") != std::string::npos;
    if (fs::exists(settings) && !overwrite) {
      fail(result::kFileError,
           fmt::format("Machine settings file '{}' already exists", settings.string()));
    }
    for (const auto& group : request->groups) {
      if (group.empty() || group.front() != '/') {
        fail(result::kInvalidArgument, fmt::format("Invalid machine group '{}'", group));
      }
    }
    if (request->platform != nullptr && *request->platform != vbox__PlatformArchitecture::x86) {
      fail(result::kNotSupported, "The platform architecture is not supported on this host");
    }
    if (request->cipher != nullptr && !request->cipher->empty()) {
      fail(result::kNotSupported, "Encrypted machines need the VirtualBox Extension Pack");
    }
    auto machine = std::make_shared<Machine>();
    machine->uuid = new_uuid();
    machine->name = request->name;
    machine->settings_file = settings;
    machine->os_type = request->osTypeId;
    machine->groups = request->groups;
    world_.machines_.push_back(machine);
    Object view = object(Kind::Machine);
    view.machine = machine;
    response.returnval =
        world_.reference(world_.websession_of(request->_USCOREthis), std::move(view));
  });
}

int Service::IVirtualBox_USCOREregisterMachine(_vbox__IVirtualBox_USCOREregisterMachine* request,
                                               _vbox__IVirtualBox_USCOREregisterMachineResponse&) {
  return answer(request->_USCOREthis, [&] {
    world_.resolve(request->_USCOREthis, Kind::VirtualBox);
    Machine& machine = *world_.resolve(request->machine, Kind::Machine).machine;
    if (machine.registered) {
      fail(result::kInvalidObjectState,
           fmt::format("Cannot register the machine '{}' because it is already registered",
                       machine.name));
    }
    world_.save(machine, machine.settings);
    machine.registered = true;
  });
}

int Service::IVirtualBox_USCOREfindMachine(_vbox__IVirtualBox_USCOREfindMachine* request,
                                           _vbox__IVirtualBox_USCOREfindMachineResponse& response) {
  return answer(request->_USCOREthis, [&] {
    world_.resolve(request->_USCOREthis, Kind::VirtualBox);
    auto machine = world_.find(request->nameOrId);
    if (!machine) {
      fail(result::kObjectNotFound,
           fmt::format("Could not find a registered machine named '{}'", request->nameOrId));
    }
    Object view = object(Kind::Machine);
    view.machine = machine;
    response.returnval =
        world_.reference(world_.websession_of(request->_USCOREthis), std::move(view));
  });
}

int Service::IVirtualBox_USCOREopenMedium(_vbox__IVirtualBox_USCOREopenMedium* request,
                                          _vbox__IVirtualBox_USCOREopenMediumResponse& response) {
  return answer(request->_USCOREthis, [&] {
    world_.resolve(request->_USCOREthis, Kind::VirtualBox);
    const vbox__DeviceType device = request->deviceType;
    if (device != vbox__DeviceType::HardDisk && device != vbox__DeviceType::DVD &&
        device != vbox__DeviceType::Floppy) {
      fail(result::kInvalidArgument, "Device type must be HardDisk, DVD or Floppy");
    }
    const fs::path location = fs::path(request->location).lexically_normal();
    Object medium = object(Kind::Medium);
    for (const auto& open : world_.media_) {
      if (open->location != location) continue;
      if (open->device != device) {
        fail(result::kInvalidArgument,
             fmt::format("Cannot open the medium '{}': it is open as another device type",
                         location.string()));
      }
      if (request->forceNewUuid) {
        fail(result::kObjectInUse,
             fmt::format("Cannot open the medium '{}' with a new UUID: it is already open",
                         location.string()));
      }
      medium.medium = open;
    }
    if (!medium.medium) {
      if (!location.is_absolute() || !fs::exists(location)) {
        fail(result::kFileError,
             fmt::format("Could not find file for the medium '{}' (VERR_FILE_NOT_FOUND)",
                         location.string()));
      }
      if (!has_format(location, device)) {
        fail(result::kFileError, fmt::format("Could not get the storage format of the medium '{}' "
                                             "(VERR_NOT_SUPPORTED)",
                                             location.string()));
      }
      medium.medium = std::make_shared<Medium>();
      medium.medium->uuid = new_uuid();
      medium.medium->location = location;
      medium.medium->device = device;
      medium.medium->type = device == vbox__DeviceType::HardDisk ? vbox__MediumType::Normal
                                                                 : vbox__MediumType::Readonly;
      world_.media_.push_back(medium.medium);
    }
    response.returnval =
        world_.reference(world_.websession_of(request->_USCOREthis), std::move(medium));
  });
}

// ---- IMedium ----------------------------------------------------------------------------------

int Service::IMedium_USCOREgetType(_vbox__IMedium_USCOREgetType* request,
                                   _vbox__IMedium_USCOREgetTypeResponse& response) {
  return answer(request->_USCOREthis, [&] {
    response.returnval = world_.resolve(request->_USCOREthis, Kind::Medium).medium->type;
  });
}

int Service::IMedium_USCOREsetType(_vbox__IMedium_USCOREsetType* request,
                                   _vbox__IMedium_USCOREsetTypeResponse&) {
  return answer(request->_USCOREthis, [&] {
    Medium& medium = *world_.resolve(request->_USCOREthis, Kind::Medium).medium;
    const std::string name = medium.location.string();
    if (medium.parent) {
      fail(result::kInvalidObjectState,
           fmt::format("Cannot change the type of medium '{}' because it is a differencing "
                       "medium",
                       name));
    }
    if (!medium.machines.empty()) {
      fail(result::kObjectInUse,
           fmt::format("Cannot change the type of medium '{}' because it is attached to {} "
                       "virtual machines",
                       name, medium.machines.size()));
    }
    if (medium.children > 0) {
      fail(result::kObjectInUse,
           fmt::format("Cannot change the type of medium '{}' since it has {} child media", name,
                       medium.children));
    }
    const bool removable = medium.device != vbox__DeviceType::HardDisk;
    if (removable != (request->type == vbox__MediumType::Readonly)) {
      fail(result::kInvalidArgument,
           fmt::format("Cannot change the type of medium '{}' to this type", name));
    }
    medium.type = request->type;
  });
}

int Service::IMedium_USCOREsetDescription(_vbox__IMedium_USCOREsetDescription* request,
                                          _vbox__IMedium_USCOREsetDescriptionResponse&) {
  return answer(request->_USCOREthis, [&] {
    world_.resolve(request->_USCOREthis, Kind::Medium).medium->description = request->description;
  });
}

int Service::IMedium_USCOREclose(_vbox__IMedium_USCOREclose* request,
                                 _vbox__IMedium_USCOREcloseResponse&) {
  return answer(request->_USCOREthis, [&] {
    auto medium = world_.resolve(request->_USCOREthis, Kind::Medium).medium;
    if (!medium->machines.empty()) {
      fail(result::kObjectInUse,
           fmt::format("Medium '{}' cannot be closed because it is still attached to {} virtual "
                       "machines",
                       medium->location.string(), medium->machines.size()));
    }
    if (medium->children > 0) {
      fail(result::kObjectInUse,
           fmt::format("Medium '{}' cannot be closed because it has {} child media",
                       medium->location.string(), medium->children));
    }
    medium->closed = true;
    auto& media = world_.media_;
    media.erase(std::remove(media.begin(), media.end(), medium), media.end());
  });
}

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

// ---- ISession, IConsole -----------------------------------------------------------------------

int Service::ISession_USCOREgetMachine(_vbox__ISession_USCOREgetMachine* request,
                                       _vbox__ISession_USCOREgetMachineResponse& response) {
  return answer(request->_USCOREthis, [&] {
    auto session = world_.resolve(request->_USCOREthis, Kind::Session).session;
    require_locked(*session);
    Object view = object(Kind::Machine);
    view.machine = session->machine;
    view.session = session;
    response.returnval =
        world_.reference(world_.websession_of(request->_USCOREthis), std::move(view));
  });
}

int Service::ISession_USCOREgetConsole(_vbox__ISession_USCOREgetConsole* request,
                                       _vbox__ISession_USCOREgetConsoleResponse& response) {
  return answer(request->_USCOREthis, [&] {
    auto session = world_.resolve(request->_USCOREthis, Kind::Session).session;
    require_locked(*session);
    world_.refresh(*session->machine);
    // A write lock on a machine that is off has no console (a null reference).
    if (session->lock == Lock::Write || !vm_exists(session->machine->state)) return;
    Object console = object(Kind::Console);
    console.machine = session->machine;
    response.returnval =
        world_.reference(world_.websession_of(request->_USCOREthis), std::move(console));
  });
}

int Service::ISession_USCOREunlockMachine(_vbox__ISession_USCOREunlockMachine* request,
                                          _vbox__ISession_USCOREunlockMachineResponse&) {
  return answer(request->_USCOREthis, [&] {
    auto session = world_.resolve(request->_USCOREthis, Kind::Session).session;
    require_locked(*session);
    world_.unlock(session);
  });
}

// The machine behind a console, which must be in one of `states`.
Machine& Service::console_machine(const std::string& console,
                                  std::initializer_list<vbox__MachineState> states) {
  Machine& machine = *world_.resolve(console, Kind::Console).machine;
  world_.refresh(machine);
  if (std::find(states.begin(), states.end(), machine.state) == states.end()) {
    fail(result::kInvalidVmState,
         fmt::format("Invalid machine state: {}", state_name(machine.state)));
  }
  return machine;
}

int Service::IConsole_USCOREpause(_vbox__IConsole_USCOREpause* request,
                                  _vbox__IConsole_USCOREpauseResponse&) {
  return answer(request->_USCOREthis, [&] {
    Machine& machine = console_machine(request->_USCOREthis, {vbox__MachineState::Running});
    machine.guest->pause();
    machine.state = vbox__MachineState::Paused;
  });
}

int Service::IConsole_USCOREresume(_vbox__IConsole_USCOREresume* request,
                                   _vbox__IConsole_USCOREresumeResponse&) {
  return answer(request->_USCOREthis, [&] {
    Machine& machine = console_machine(request->_USCOREthis, {vbox__MachineState::Paused});
    machine.guest->resume();
    machine.state = vbox__MachineState::Running;
  });
}

int Service::IConsole_USCOREpowerButton(_vbox__IConsole_USCOREpowerButton* request,
                                        _vbox__IConsole_USCOREpowerButtonResponse&) {
  return answer(request->_USCOREthis, [&] {
    console_machine(request->_USCOREthis, {vbox__MachineState::Running})
        .guest->press_power_button();
  });
}

int Service::IConsole_USCOREpowerDown(_vbox__IConsole_USCOREpowerDown* request,
                                      _vbox__IConsole_USCOREpowerDownResponse& response) {
  return answer(request->_USCOREthis, [&] {
    world_.vm_stopped(console_machine(
        request->_USCOREthis,
        {vbox__MachineState::Running, vbox__MachineState::Paused, vbox__MachineState::Stuck}));
    Object progress = object(Kind::Progress);
    progress.progress = std::make_shared<Progress>();
    progress.progress->complete(0, "");
    response.returnval =
        world_.reference(world_.websession_of(request->_USCOREthis), std::move(progress));
  });
}

// ---- IProgress, IVirtualBoxErrorInfo ----------------------------------------------------------

int Service::IProgress_USCOREwaitForCompletion(_vbox__IProgress_USCOREwaitForCompletion* request,
                                               _vbox__IProgress_USCOREwaitForCompletionResponse&) {
  std::shared_ptr<Progress> progress;
  int status = answer(request->_USCOREthis, [&] {
    progress = world_.resolve(request->_USCOREthis, Kind::Progress).progress;
  });
  if (status != SOAP_OK) return status;
  // Outside the world's lock: the operation waited for needs it to finish.
  std::unique_lock lock(progress->mutex);
  auto completed = [&] { return progress->completed; };
  if (request->timeout < 0) {
    progress->done.wait(lock, completed);
  } else {
    progress->done.wait_for(lock, std::chrono::milliseconds(request->timeout), completed);
  }
  return SOAP_OK;
}

int Service::IProgress_USCOREgetCompleted(_vbox__IProgress_USCOREgetCompleted* request,
                                          _vbox__IProgress_USCOREgetCompletedResponse& response) {
  return answer(request->_USCOREthis, [&] {
    Progress& progress = *world_.resolve(request->_USCOREthis, Kind::Progress).progress;
    std::lock_guard lock(progress.mutex);
    response.returnval = progress.completed;
  });
}

int Service::IProgress_USCOREgetResultCode(_vbox__IProgress_USCOREgetResultCode* request,
                                           _vbox__IProgress_USCOREgetResultCodeResponse& response) {
  return answer(request->_USCOREthis, [&] {
    Progress& progress = *world_.resolve(request->_USCOREthis, Kind::Progress).progress;
    std::lock_guard lock(progress.mutex);
    if (!progress.completed) {
      fail(result::kFail, "Result code is not available, operation is still in progress");
    }
    response.returnval = progress.result;
  });
}

int Service::IProgress_USCOREgetErrorInfo(_vbox__IProgress_USCOREgetErrorInfo* request,
                                          _vbox__IProgress_USCOREgetErrorInfoResponse& response) {
  return answer(request->_USCOREthis, [&] {
    Progress& progress = *world_.resolve(request->_USCOREthis, Kind::Progress).progress;
    std::lock_guard lock(progress.mutex);
    if (!progress.completed || progress.result == 0) return;
    Object info = object(Kind::ErrorInfo);
    info.code = progress.result;
    info.text = progress.error;
    response.returnval =
        world_.reference(world_.websession_of(request->_USCOREthis), std::move(info));
  });
}

int Service::IVirtualBoxErrorInfo_USCOREgetText(
    _vbox__IVirtualBoxErrorInfo_USCOREgetText* request,
    _vbox__IVirtualBoxErrorInfo_USCOREgetTextResponse& response) {
  return answer(request->_USCOREthis, [&] {
    response.returnval = world_.resolve(request->_USCOREthis, Kind::ErrorInfo).text;
  });
}

// ---- INetworkAdapter, INATEngine, ISerialPort -------------------------------------------------

int Service::INetworkAdapter_USCOREsetEnabled(_vbox__INetworkAdapter_USCOREsetEnabled* request,
                                              _vbox__INetworkAdapter_USCOREsetEnabledResponse&) {
  return answer(request->_USCOREthis, [&] {
    const Object& view = world_.resolve(request->_USCOREthis, Kind::NetworkAdapter);
    world_.writable(view).adapters[view.slot].enabled = request->enabled;
  });
}

int Service::INetworkAdapter_USCOREsetAttachmentType(
    _vbox__INetworkAdapter_USCOREsetAttachmentType* request,
    _vbox__INetworkAdapter_USCOREsetAttachmentTypeResponse&) {
  return answer(request->_USCOREthis, [&] {
    const Object& view = world_.resolve(request->_USCOREthis, Kind::NetworkAdapter);
    world_.writable(view).adapters[view.slot].attachment = request->attachmentType;
  });
}

int Service::INetworkAdapter_USCOREsetAdapterType(
    _vbox__INetworkAdapter_USCOREsetAdapterType* request,
    _vbox__INetworkAdapter_USCOREsetAdapterTypeResponse&) {
  return answer(request->_USCOREthis, [&] {
    const Object& view = world_.resolve(request->_USCOREthis, Kind::NetworkAdapter);
    world_.writable(view).adapters[view.slot].type = request->adapterType;
  });
}

int Service::INetworkAdapter_USCOREgetNATEngine(
    _vbox__INetworkAdapter_USCOREgetNATEngine* request,
    _vbox__INetworkAdapter_USCOREgetNATEngineResponse& response) {
  return answer(request->_USCOREthis, [&] {
    const Object& view = world_.resolve(request->_USCOREthis, Kind::NetworkAdapter);
    response.returnval = world_.reference(world_.websession_of(request->_USCOREthis),
                                          part_of(view, Kind::NATEngine, view.slot));
  });
}

int Service::INATEngine_USCOREgetRedirects(_vbox__INATEngine_USCOREgetRedirects* request,
                                           _vbox__INATEngine_USCOREgetRedirectsResponse& response) {
  return answer(request->_USCOREthis, [&] {
    const Object& view = world_.resolve(request->_USCOREthis, Kind::NATEngine);
    for (const auto& rule : world_.readable(view).adapters[view.slot].rules) {
      response.returnval.push_back(fmt::format(
          "{},{},{},{},{},{}", rule.name, rule.protocol == vbox__NATProtocol::TCP ? 1 : 0,
          rule.host_ip, rule.host_port, rule.guest_ip, rule.guest_port));
    }
  });
}

int Service::INATEngine_USCOREaddRedirect(_vbox__INATEngine_USCOREaddRedirect* request,
                                          _vbox__INATEngine_USCOREaddRedirectResponse&) {
  return answer(request->_USCOREthis, [&] {
    const Object& view = world_.resolve(request->_USCOREthis, Kind::NATEngine);
    auto& rules = world_.writable(view).adapters[view.slot].rules;
    if (request->name.empty() || request->name.find(',') != std::string::npos) {
      fail(result::kInvalidArgument, fmt::format("Invalid NAT rule name '{}'", request->name));
    }
    for (const auto& rule : rules) {
      if (rule.name == request->name) {
        fail(result::kInvalidArgument, "A NAT rule of this name already exists");
      }
      if (rule.protocol == request->proto && rule.host_ip == request->hostIP &&
          rule.host_port == request->hostPort) {
        fail(result::kInvalidArgument,
             "A NAT rule for this host port and this host IP already exists");
      }
    }
    rules.push_back(NatRule{request->name, request->proto, request->hostIP, request->hostPort,
                            request->guestIP, request->guestPort});
  });
}

int Service::INATEngine_USCOREremoveRedirect(_vbox__INATEngine_USCOREremoveRedirect* request,
                                             _vbox__INATEngine_USCOREremoveRedirectResponse&) {
  return answer(request->_USCOREthis, [&] {
    const Object& view = world_.resolve(request->_USCOREthis, Kind::NATEngine);
    auto& rules = world_.writable(view).adapters[view.slot].rules;
    auto rule = std::find_if(rules.begin(), rules.end(),
                             [&](const NatRule& r) { return r.name == request->name; });
    if (rule == rules.end()) {
      fail(result::kInvalidArgument, "A NAT rule of this name does not exist");
    }
    rules.erase(rule);
  });
}

int Service::ISerialPort_USCOREsetEnabled(_vbox__ISerialPort_USCOREsetEnabled* request,
                                          _vbox__ISerialPort_USCOREsetEnabledResponse&) {
  return answer(request->_USCOREthis, [&] {
    const Object& view = world_.resolve(request->_USCOREthis, Kind::SerialPort);
    world_.writable(view).serial_ports[view.slot].enabled = request->enabled;
  });
}

int Service::ISerialPort_USCOREsetHostMode(_vbox__ISerialPort_USCOREsetHostMode* request,
                                           _vbox__ISerialPort_USCOREsetHostModeResponse&) {
  return answer(request->_USCOREthis, [&] {
    const Object& view = world_.resolve(request->_USCOREthis, Kind::SerialPort);
    SerialPort& port = world_.writable(view).serial_ports[view.slot];
    if (request->hostMode != vbox__PortMode::Disconnected && port.path.empty()) {
      fail(result::kInvalidArgument,
           fmt::format("Cannot set the host mode of the serial port {} because its path is "
                       "empty or null",
                       view.slot));
    }
    port.mode = request->hostMode;
  });
}

int Service::ISerialPort_USCOREsetPath(_vbox__ISerialPort_USCOREsetPath* request,
                                       _vbox__ISerialPort_USCOREsetPathResponse&) {
  return answer(request->_USCOREthis, [&] {
    const Object& view = world_.resolve(request->_USCOREthis, Kind::SerialPort);
    SerialPort& port = world_.writable(view).serial_ports[view.slot];
    if (request->path.empty() && port.mode != vbox__PortMode::Disconnected) {
      fail(result::kInvalidArgument,
           fmt::format("Path of the serial port {} may not be empty or null in this host mode",
                       view.slot));
    }
    port.path = request->path;
  });
}

}  // namespace vmfest::vbox_double
