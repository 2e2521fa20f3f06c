// The fake VirtualBox's IVirtualBox and IMedium operations (see service.cpp).
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

}  // namespace vmfest::vbox_double
