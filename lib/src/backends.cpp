#include <cstdlib>

#include <fmt/format.h>

#include "../backends/qemu/qemu_backend.h"
#include "../backends/virtualbox/virtualbox_backend.h"
#include "backend.h"
#include "vmfest/error.h"

namespace vmfest::detail {

std::unique_ptr<Backend> make_backend(const std::string& name) {
  if (name == "qemu") return qemu::make_qemu_backend();
  if (name == "virtualbox") return virtualbox::make_virtualbox_backend();
  throw InvalidArgument(
      fmt::format("unknown backend '{}' (VMFEST_BACKEND); known backends: qemu, virtualbox", name));
}

std::string default_backend_name() {
  const char* name = std::getenv("VMFEST_BACKEND");
  return name != nullptr && *name != '\0' ? std::string(name) : std::string("qemu");
}

}  // namespace vmfest::detail
