#include "backend.h"

#include <fmt/format.h>

#include "vmfest/error.h"

namespace vmfest::detail {

nlohmann::json Machine::save_warm_image(const std::filesystem::path& /*image_directory*/) {
  throw BackendError("this backend cannot save warm images; use cold instances (VMFEST_WARM=0)");
}

void Machine::export_disk(const std::filesystem::path& /*destination*/) {
  throw BackendError(
      "this backend cannot export an instance's disk; save_as_model needs the QEMU backend");
}

nlohmann::json Machine::save_warm_image_of(const Model& /*model*/,
                                           const std::filesystem::path& /*image_directory*/) {
  throw BackendError("this backend cannot save a running guest's memory");
}

std::string Machine::agent_exchange(const std::string& /*request*/,
                                    std::chrono::milliseconds /*timeout*/) {
  throw BackendError("this backend has no channel to a guest agent");
}

std::string Backend::warm_fingerprint(const MachineConfig& /*config*/) { return ""; }

std::vector<std::string> Backend::remove_orphans(const Home& /*home*/) { return {}; }

}  // namespace vmfest::detail
