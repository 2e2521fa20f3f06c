#include <cctype>
#include <cstdlib>
#include <map>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "backend.h"
#include "vmfest/error.h"

namespace vmfest::detail {
namespace {

// Filled by the registrations' static initialisers, so it must exist before any of them runs.
std::map<std::string, BackendFactory>& drivers() {
  static std::map<std::string, BackendFactory> table;
  return table;
}

}  // namespace

BackendRegistration::BackendRegistration(const char* name, BackendFactory factory) {
  drivers().emplace(name, factory);
}

std::vector<std::string> backend_names() {
  std::vector<std::string> names;
  for (const auto& [name, factory] : drivers()) names.push_back(name);
  return names;
}

std::unique_ptr<Backend> make_backend(const std::string& name) {
  if (auto driver = drivers().find(name); driver != drivers().end()) return driver->second();
  std::string option = name;
  for (char& c : option) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  throw InvalidArgument(fmt::format(
      "backend '{}' (VMFEST_BACKEND) is not in this program, which has: {}. It needs a vmfest "
      "built with VMFEST_WITH_{}=ON, and an optional backend is a component a program links: "
      "find_package(vmfest COMPONENTS {}) and vmfest::{}",
      name, fmt::join(backend_names(), ", "), option, name, name));
}

void require_capability(const Backend& backend, const Capability& capability,
                        const std::string& action) {
  if (backend.capabilities().*capability.flag) return;
  std::vector<std::string> able;
  for (const auto& [name, factory] : drivers()) {
    if (factory()->capabilities().*capability.flag) able.push_back(name);
  }
  throw BackendError(fmt::format(
      "{}: backend '{}' cannot {}; {}", action, backend.name(), capability.ability,
      able.empty() ? std::string("none of this program's backends can")
                   : fmt::format("run it with VMFEST_BACKEND={}", fmt::join(able, " or "))));
}

std::string default_backend_name() {
  const char* name = std::getenv("VMFEST_BACKEND");
  return name != nullptr && *name != '\0' ? std::string(name) : std::string(VMFEST_DEFAULT_BACKEND);
}

}  // namespace vmfest::detail
