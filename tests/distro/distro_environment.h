// What the distro test binaries read from the environment tests/distro/CMakeLists.txt gives them.
#pragma once

#include <cstdlib>
#include <stdexcept>
#include <string>

namespace vmfest::testing {

// $name; std::runtime_error when it is unset or empty.
inline std::string from_environment(const char* name) {
  const char* value = std::getenv(name);
  if (value == nullptr || *value == '\0') {
    throw std::runtime_error(std::string(name) +
                             " is not set (tests/distro/CMakeLists.txt sets it)");
  }
  return value;
}

}  // namespace vmfest::testing
