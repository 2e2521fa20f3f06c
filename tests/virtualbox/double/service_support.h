// What the files of the fake VirtualBox's vboxwebsrv operations (service*.cpp) share: the answer
// of every operation (its result, or VirtualBox's fault for what it threw) and small rules of the
// Main API.
#pragma once

#include <exception>
#include <mutex>
#include <string>
#include <utility>

#include <fmt/format.h>

#include "backends/virtualbox/result_codes.h"
#include "fake_virtualbox.h"

namespace vmfest::vbox_double {

// Whether a machine in `state` has a VM process (running, paused or on its way).
inline bool vm_exists(vbox__MachineState state) {
  return state == vbox__MachineState::Running || state == vbox__MachineState::Paused ||
         state == vbox__MachineState::Starting;
}

// A new object of `kind`, to be referenced in a websession.
inline Object object(Object::Kind kind) {
  Object result;
  result.kind = kind;
  return result;
}

// A view of the same machine (adapter, NAT engine, serial port) through the same session.
inline Object part_of(const Object& view, Object::Kind kind, unsigned slot) {
  Object part = view;
  part.kind = kind;
  part.slot = slot;
  return part;
}

inline void require_locked(const Session& session) {
  if (session.lock == Session::Lock::None || session.spawning) {
    fail(detail::virtualbox::result::kUnexpected,
         fmt::format("The session is not locked (session state: {})",
                     session.spawning ? "Spawning" : "Unlocked"));
  }
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
      failure = Fault{detail::virtualbox::result::kFail, error.what(), ""};
    }
    if (failure.code != 0) error_info = world_.error_info(caller, failure);
  }
  return fault(failure, error_info);
}

}  // namespace vmfest::vbox_double
