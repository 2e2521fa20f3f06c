#include "backend.h"

#include <fmt/format.h>

#include "vmfest/error.h"

namespace vmfest::detail {

nlohmann::json Machine::save_warm_image(const std::filesystem::path& /*image_directory*/) {
  throw BackendError("this backend cannot save warm images; use cold instances (VMFEST_WARM=0)");
}

std::string Machine::agent_exchange(const std::string& /*request*/,
                                    std::chrono::milliseconds /*timeout*/) {
  throw BackendError("this backend has no channel to a guest agent");
}

std::string Backend::warm_fingerprint(const MachineConfig& /*config*/) { return ""; }

}  // namespace vmfest::detail
