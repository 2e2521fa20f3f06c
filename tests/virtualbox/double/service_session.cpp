// The fake VirtualBox's ISession and IConsole operations, and those of a machine's parts: its
// network adapters, their NAT engines and its serial ports (see service.cpp).
#include <algorithm>
#include <string>

#include <fmt/format.h>

#include "backends/virtualbox/result_codes.h"
#include "fake_virtualbox.h"
#include "service_support.h"

namespace vmfest::vbox_double {
namespace result = detail::virtualbox::result;
using Kind = Object::Kind;
using Lock = Session::Lock;

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
