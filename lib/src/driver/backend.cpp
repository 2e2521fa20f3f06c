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

// The defaults of what a capability adds: the core asks Backend::capabilities() before it calls
// one, so reaching a default means a backend claims a capability it does not implement.
namespace {
BackendError not_implemented(const char* what) {
  return BackendError(fmt::format("this backend claims to {} but does not implement it", what));
}
}  // namespace

nlohmann::json Machine::save_warm_image(const std::filesystem::path& /*image_directory*/) {
  throw not_implemented(kWarmImages.ability);
}

void Machine::export_disk(const std::filesystem::path& /*destination*/) {
  throw not_implemented(kExportDisk.ability);
}

nlohmann::json Machine::save_warm_image_of(const Model& /*model*/,
                                           const std::filesystem::path& /*image_directory*/) {
  throw not_implemented(kExportDisk.ability);
}

std::string Machine::agent_exchange(const std::string& /*request*/,
                                    std::chrono::milliseconds /*timeout*/) {
  throw not_implemented(kWarmImages.ability);
}

std::string Backend::warm_fingerprint(const MachineConfig& /*config*/) {
  throw not_implemented(kWarmImages.ability);
}
std::vector<std::string> Backend::remove_orphans(const Home& /*home*/) { return {}; }
std::vector<HostCheck> Backend::host_checks(const Home& /*home*/) { return {}; }

void Machine::add_port_forward(int /*host_port*/, int /*guest_port*/) {
  throw not_implemented(kPortForwards.ability);
}

void Machine::remove_port_forward(int /*host_port*/) {
  throw not_implemented(kPortForwards.ability);
}

HostCheck run_host_check(const std::string& name, const std::string& fix,
                         const std::function<HostCheck()>& check) {
  try {
    return check();
  } catch (const Error& error) {
    return {name, HostCheck::Verdict::Fail, error.what(), fix};
  }
}

const char* to_string(HostCheck::Verdict verdict) {
  switch (verdict) {
    case HostCheck::Verdict::Ok:
      return "ok";
    case HostCheck::Verdict::Warn:
      return "warn";
    case HostCheck::Verdict::Fail:
      return "fail";
  }
  return "fail";
}

}  // namespace vmfest::detail
