#include "backend.h"

#include <thread>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "vmfest/error.h"

namespace vmfest::detail {

bool poll_until(std::chrono::milliseconds timeout, std::chrono::milliseconds poll,
                const std::function<bool()>& done) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!done()) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(poll);
  }
  return true;
}

void warn_power_button_ignored(const std::string& instance, std::chrono::milliseconds grace) {
  spdlog::warn(
      "instance {}: guest did not power off within {} ms after the ACPI button; stopping it hard",
      instance, grace.count());
}

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
