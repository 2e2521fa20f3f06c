// Test support: the message of the vmfest::Error an action throws, for tests that check what a
// user is told.
#pragma once

#include <functional>
#include <string>

#include "vmfest/error.h"

namespace vmfest::testing {

// The action's vmfest::Error message, or "(no error)" when it throws none.
inline std::string message_of(const std::function<void()>& action) {
  try {
    action();
  } catch (const vmfest::Error& error) {
    return error.what();
  }
  return "(no error)";
}

}  // namespace vmfest::testing
