// Paths inside QEMU's key=value options (-drive file=..., -netdev ...,path=...).
#pragma once

#include <filesystem>
#include <string>

namespace vmfest::detail::qemu {

// `path` as the value of a key=value option: QEMU splits those at commas and reads a doubled comma
// as one, so a folder named "a,b" would otherwise end the value there and start an unknown option.
// Not for options QEMU takes whole (-kernel, -serial file:...), where ",," would stay ",,".
inline std::string option_value(const std::filesystem::path& path) {
  std::string quoted;
  for (char c : path.string()) {
    quoted += c;
    if (c == ',') quoted += ',';
  }
  return quoted;
}

}  // namespace vmfest::detail::qemu
