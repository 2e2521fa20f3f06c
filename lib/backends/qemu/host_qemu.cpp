#include "host_qemu.h"

#include <cstdlib>
#include <sstream>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "../../src/settings.h"
#include "../../src/subprocess.h"
#include "vmfest/error.h"

namespace vmfest::detail::qemu {
namespace fs = std::filesystem;

const fs::path& qemu_binary() {
  static const fs::path path = [] {
    if (const char* custom = std::getenv("VMFEST_QEMU"); custom != nullptr && *custom != '\0') {
      return fs::path(custom);
    }
    return find_program("qemu-system-x86_64", "qemu-system-x86");
  }();
  return path;
}

const fs::path& qemu_img() {
  static const fs::path path = find_program("qemu-img", "qemu-utils");
  return path;
}

const std::string& qemu_version() {
  static const std::string version = [] {
    std::string output = run_tool_checked(qemu_binary(), {"--version"}, "asking QEMU its version");
    return output.substr(0, output.find('\n'));
  }();
  return version;
}

const std::string& machine_type() {
  static const std::string type = [] {
    std::string output =
        run_tool_checked(qemu_binary(), {"-machine", "help"}, "listing QEMU machine types");
    const std::string marker = "(alias of ";
    std::istringstream lines(output);
    for (std::string line; std::getline(lines, line);) {
      if (!line.starts_with("pc ")) continue;
      auto at = line.find(marker);
      if (at == std::string::npos) break;
      auto start = at + marker.size();
      return line.substr(start, line.find(')', start) - start);
    }
    return std::string("pc");
  }();
  return type;
}

namespace {

// Asks a machine-less QEMU (about 0.1 s) for its migration capabilities.
bool qemu_ignores_shared_memory() {
  const ToolResult result = run_tool(
      qemu_binary(), {"-machine", "none", "-nodefaults", "-display", "none", "-S", "-qmp", "stdio"},
      "{\"execute\":\"qmp_capabilities\"}\n"
      "{\"execute\":\"query-migrate-capabilities\"}\n"
      "{\"execute\":\"quit\"}\n");
  const bool found = result.output.find("\"x-ignore-shared\"") != std::string::npos;
  if (!found) {
    spdlog::info(
        "vmfest: {} has no migration capability x-ignore-shared, so warm images carry the guest's "
        "memory in their state, which each clone loads whole (exit {}: {})",
        qemu_version(), result.exit_code, result.output.substr(0, 300));
  }
  return found;
}

}  // namespace

WarmMemory warm_memory() {
  if (const char* setting = std::getenv("VMFEST_WARM_MEMORY");
      setting != nullptr && *setting != '\0') {
    const std::string value = setting;
    if (value == "mapped") return WarmMemory::Mapped;
    if (value == "streamed") return WarmMemory::Streamed;
    throw InvalidArgument(fmt::format(
        "VMFEST_WARM_MEMORY='{}' is not a warm memory mode: use 'mapped' (the guest's memory in "
        "a file every clone maps) or 'streamed' (in the saved state), or unset it to probe",
        value));
  }
  static const bool mapped = qemu_ignores_shared_memory();
  return mapped ? WarmMemory::Mapped : WarmMemory::Streamed;
}

const char* to_string(WarmMemory memory) {
  return memory == WarmMemory::Mapped ? "mapped" : "streamed";
}

int tcg_tb_size_mib() {
  const auto mib = whole_number_setting("VMFEST_TCG_TB_SIZE", 1, 65536, "of MiB");
  return mib ? static_cast<int>(*mib) : kDefaultTbSizeMib;
}

}  // namespace vmfest::detail::qemu
