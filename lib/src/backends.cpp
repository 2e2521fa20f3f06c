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
  throw InvalidArgument(fmt::format(
      "backend '{}' (VMFEST_BACKEND) is not in this program, which has: {}. Each backend is a "
      "component of vmfest's CMake package: link vmfest::{} (find_package(vmfest COMPONENTS {})), "
      "available when vmfest was built with its VMFEST_WITH_ option on",
      name, fmt::join(backend_names(), ", "), name, name));
}

std::string default_backend_name() {
  const char* name = std::getenv("VMFEST_BACKEND");
  return name != nullptr && *name != '\0' ? std::string(name) : std::string("qemu");
}

}  // namespace vmfest::detail
