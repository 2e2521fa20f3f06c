#include "host_qemu.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <sstream>

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <nlohmann/json.hpp>

#include "vmfest/error.h"
#include "vmfest/internal/base.h"

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

std::string on_disk_identity(const fs::path& file) {
  std::error_code error;
  const fs::path real = fs::canonical(file, error);
  struct stat info {};
  if (error || ::stat(real.c_str(), &info) != 0) {
    throw BackendError(fmt::format("cannot inspect {}: {}", file.string(),
                                   error ? error.message() : std::strerror(errno)));
  }
  return fmt::format("{}|{} bytes|inode {}|modified {}.{:09}|changed {}.{:09}", real.string(),
                     info.st_size, info.st_ino, info.st_mtim.tv_sec, info.st_mtim.tv_nsec,
                     info.st_ctim.tv_sec, info.st_ctim.tv_nsec);
}

fs::path qemu_facts_directory() { return host_cache_root() / "qemu"; }

std::string kept_sha256(const fs::path& file) {
  const std::string identity = on_disk_identity(file);
  const fs::path kept = host_cache_root() / "sha256" / sha256_text(identity).substr(0, 32);
  // "<identity>\n<sha256>": the identity, not just the name's hash of it, must match.
  const std::string record = read_text_if_exists(kept);
  if (record.size() == identity.size() + 1 + 64 && record.starts_with(identity + "\n")) {
    return record.substr(identity.size() + 1);
  }
  const std::string hash = sha256_file(file);
  try {
    fs::create_directories(kept.parent_path());
    write_text_atomically(kept, identity + "\n" + hash);
  } catch (const std::exception& error) {
    spdlog::warn("vmfest: cannot keep the sha256 of {} in {} ({}); it is hashed again next time",
                 file.string(), kept.string(), error.what());
  }
  return hash;
}

namespace {

struct QemuFacts {
  std::string version;
  std::string machine_type;
  bool ignores_shared = false;
  bool conclusive = true;  // false when a probe could not tell: such facts are not kept
};

std::string probe_machine_type() {
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
  return "pc";
}

// Asks a machine-less QEMU (about 0.1 s) for its migration capabilities.
void probe_migration_capabilities(QemuFacts& facts) {
  const ToolResult result = run_tool(
      qemu_binary(), {"-machine", "none", "-nodefaults", "-display", "none", "-S", "-qmp", "stdio"},
      "{\"execute\":\"qmp_capabilities\"}\n"
      "{\"execute\":\"query-migrate-capabilities\"}\n"
      "{\"execute\":\"quit\"}\n");
  facts.ignores_shared = result.output.find("\"x-ignore-shared\"") != std::string::npos;
  // The list of capabilities names "events" in every QEMU that has migration over QMP.
  facts.conclusive = facts.ignores_shared || result.output.find("\"events\"") != std::string::npos;
  if (!facts.conclusive) {
    spdlog::warn("vmfest: could not ask {} for its migration capabilities (exit {}: {})",
                 qemu_binary().string(), result.exit_code, result.output.substr(0, 300));
  }
}

QemuFacts probe_facts() {
  QemuFacts facts;
  const std::string version =
      run_tool_checked(qemu_binary(), {"--version"}, "asking QEMU its version");
  facts.version = version.substr(0, version.find('\n'));
  facts.machine_type = probe_machine_type();
  probe_migration_capabilities(facts);
  return facts;
}

std::optional<QemuFacts> kept_facts(const fs::path& file, const std::string& identity) {
  const nlohmann::json json = nlohmann::json::parse(read_text_if_exists(file), nullptr, false);
  if (!json.is_object() || json.value("binary", "") != identity) return std::nullopt;
  try {
    return QemuFacts{json.at("version").get<std::string>(),
                     json.at("machine_type").get<std::string>(),
                     json.at("x_ignore_shared").get<bool>()};
  } catch (const nlohmann::json::exception&) {
    return std::nullopt;  // written by another vmfest: asked again, and overwritten
  }
}

// Probed once per binary and host (whichever process comes first), then read from the cache.
const QemuFacts& facts() {
  static const QemuFacts facts = [] {
    const std::string identity = on_disk_identity(qemu_binary());
    const fs::path file = qemu_facts_directory() / (sha256_text(identity).substr(0, 16) + ".json");
    if (std::optional<QemuFacts> kept = kept_facts(file, identity)) return *kept;
    QemuFacts probed = probe_facts();
    if (!probed.conclusive) return probed;
    try {
      fs::create_directories(file.parent_path());
      write_text_atomically(file, nlohmann::json{{"binary", identity},
                                                 {"version", probed.version},
                                                 {"machine_type", probed.machine_type},
                                                 {"x_ignore_shared", probed.ignores_shared}}
                                      .dump(2));
    } catch (const std::exception& error) {
      spdlog::warn("vmfest: cannot keep what QEMU answered in {} ({}); every process asks again",
                   file.string(), error.what());
    }
    return probed;
  }();
  return facts;
}

}  // namespace

const std::string& qemu_version() { return facts().version; }

const std::string& machine_type() { return facts().machine_type; }

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
  static const bool mapped = [] {
    if (!facts().ignores_shared) {
      spdlog::info(
          "vmfest: {} has no migration capability x-ignore-shared, so warm images carry the "
          "guest's memory in their state, which each clone loads whole",
          qemu_version());
    }
    return facts().ignores_shared;
  }();
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
