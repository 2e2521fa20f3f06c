#include "accelerator.h"

#include <unistd.h>

#include <cstdlib>
#include <map>
#include <mutex>
#include <optional>
#include <thread>

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <nlohmann/json.hpp>

#include "console_log.h"
#include "domain_xml.h"
#include "storage.h"
#include "vmfest/error.h"
#include "vmfest/internal/base.h"
#include "vmfest/internal/driver.h"

namespace vmfest::detail::libvirt {
namespace fs = std::filesystem;

namespace {

// A working KVM prints a kernel's banner within a second; this bounds the wait on one that hangs.
constexpr std::chrono::seconds kTestBootBound{15};
constexpr std::string_view kKernelBanner = "Linux version";

std::string version_text(unsigned long version) {
  return fmt::format("{}.{}.{}", version / 1000000, version / 1000 % 1000, version % 1000);
}

// What a decision holds for: the host, its libvirt and hypervisor, and the emulator asked for.
std::string host_key(virConnectPtr connection, const HostUri& host) {
  unsigned long library = 0;
  unsigned long hypervisor = 0;
  virConnectGetLibVersion(connection, &library);
  virConnectGetVersion(connection, &hypervisor);
  char* name = virConnectGetHostname(connection);
  const std::string hostname = name != nullptr ? name : "?";
  std::free(name);  // NOLINT(cppcoreguidelines-no-malloc): libvirt's allocation
  return fmt::format("{}|{}|libvirt {}|hypervisor {}|emulator {}", host.uri, hostname,
                     version_text(library), version_text(hypervisor), emulator_setting());
}

// "" when libvirt on the host offers KVM for our machine type; otherwise libvirt's reason.
std::string kvm_refusal(virConnectPtr connection) {
  const std::string emulator = emulator_setting();
  char* capabilities = virConnectGetDomainCapabilities(
      connection, emulator.empty() ? nullptr : emulator.c_str(), "x86_64", "pc", "kvm", 0);
  if (capabilities == nullptr) return last_error();
  std::free(capabilities);  // NOLINT(cppcoreguidelines-no-malloc): libvirt's allocation
  return "";
}

HostAccelerator probe(virConnectPtr connection, const StoragePool& pool, const HostUri& host,
                      const fs::path& kernel) {
  if (const std::string refusal = kvm_refusal(connection); !refusal.empty()) {
    return {"qemu", fmt::format("libvirt offers no KVM there ({}); using TCG", refusal)};
  }
  if (kernel.empty()) {
    return {"kvm",
            "libvirt offers KVM there; no Linux kernel to test it with, so it is not proven to run "
            "Linux guests (VMFEST_ACCEL=tcg if they hang)"};
  }
  std::string why;
  if (kernel_shows_life(connection, pool, host, "kvm", kernel, kTestBootBound, why)) {
    return {"kvm", "a Linux kernel printed its banner under KVM through libvirt"};
  }
  return {"qemu", fmt::format("KVM is offered but unusable: a Linux kernel ({}) {} under KVM; "
                              "using TCG (slower). VMFEST_ACCEL=tcg skips this probe",
                              kernel.filename().string(), why)};
}

// The decision in `file` if it is one for `key` (a file that is not, or unreadable: probe again).
std::optional<HostAccelerator> recorded_choice(const fs::path& file, const std::string& key) {
  const nlohmann::json json = nlohmann::json::parse(read_text_if_exists(file), nullptr, false);
  auto text = [&](const char* field) {
    return json.is_object() && json.contains(field) && json[field].is_string()
               ? json[field].get<std::string>()
               : std::string();
  };
  const std::string domain_type = text("domain_type");
  if (text("key") != key || (domain_type != "kvm" && domain_type != "qemu")) return std::nullopt;
  return HostAccelerator{domain_type, text("reason")};
}

}  // namespace

HostAccelerator host_accelerator(virConnectPtr connection, const StoragePool& pool,
                                 const HostUri& host, const fs::path& kernel) {
  if (const char* forced = std::getenv("VMFEST_ACCEL"); forced != nullptr && *forced != '\0') {
    const std::string accel = forced;
    if (accel != "kvm" && accel != "tcg") {
      throw InvalidArgument(fmt::format("VMFEST_ACCEL={} is not valid: use kvm or tcg", accel));
    }
    return {accel == "kvm" ? "kvm" : "qemu", fmt::format("VMFEST_ACCEL={}", accel), true};
  }
  static std::mutex mutex;
  static std::map<std::string, HostAccelerator> decided;  // this process's, by key
  const std::lock_guard process_lock(mutex);
  const std::string key = host_key(connection, host);
  if (const auto known = decided.find(key); known != decided.end()) return known->second;

  const fs::path directory = host_cache_root() / "libvirt-accelerator";
  fs::create_directories(directory);
  const fs::path file = directory / (sha256_text(key).substr(0, 16) + ".json");
  const FileLock lock(fs::path(file).replace_extension(".lock"));
  HostAccelerator choice;
  if (auto recorded = recorded_choice(file, key)) {
    choice = std::move(*recorded);
  } else {
    choice = probe(connection, pool, host, kernel);
    write_text_atomically(
        file,
        nlohmann::json{{"key", key}, {"domain_type", choice.domain_type}, {"reason", choice.reason}}
            .dump(2));
  }
  spdlog::info("vmfest: libvirt host {} runs guests under {}: {}", host.uri,
               choice.domain_type == "kvm" ? "KVM" : "TCG", choice.reason);
  decided[key] = choice;
  return choice;
}

fs::path default_probe_kernel() {
  for (const fs::path& bundle : default_model_bundles()) {
    if (fs::exists(bundle / "vmlinuz")) return bundle / "vmlinuz";
  }
  return {};
}

bool kernel_shows_life(virConnectPtr connection, const StoragePool& pool, const HostUri& host,
                       const std::string& domain_type, const fs::path& kernel,
                       std::chrono::milliseconds timeout, std::string& why) {
  const std::string kernel_volume =
      pool.upload_cached(boot_file_volume_name(kernel, "kernel"), kernel);
  const std::string name = "vmfest-probe-" + random_token();
  const std::string xml = fmt::format(
      "<domain type='{}'><name>{}</name><memory unit='MiB'>256</memory><vcpu>1</vcpu>"
      "<os><type arch='x86_64' machine='pc'>hvm</type><kernel>{}</kernel>"
      "<cmdline>console=ttyS0 panic=-1</cmdline></os>"
      "<on_poweroff>destroy</on_poweroff><on_reboot>destroy</on_reboot>"
      "<on_crash>destroy</on_crash><devices>{}<serial type='pty'><target port='0'/></serial>"
      "<console type='pty'><target type='serial' port='0'/></console>"
      "<memballoon model='none'/></devices></domain>",
      domain_type, name, xml_escape(pool.path_of(kernel_volume)), emulator_xml(emulator_setting()));
  const fs::path console = host_cache_root() / "libvirt-accelerator" / (name + ".console");
  fs::create_directories(console.parent_path());
  // Gone with this process's connection, should it die mid-probe.
  Domain domain(virDomainCreateXML(connection, xml.c_str(),
                                   VIR_DOMAIN_START_PAUSED | VIR_DOMAIN_START_AUTODESTROY));
  if (!domain) {
    why = fmt::format("could not be started ({})", last_error());
    return false;
  }
  std::unique_ptr<ConsoleLog> log;
  try {
    log = std::make_unique<ConsoleLog>(connection, domain.get(), console, host.uri);
  } catch (const Error&) {
    destroy_domain(domain.get(), host.uri);
    throw;
  }
  bool alive = false;
  if (virDomainResume(domain.get()) == 0) {
    alive = poll_until(timeout, std::chrono::milliseconds(100), [&] {
      return read_text_if_exists(console).find(kKernelBanner) != std::string::npos;
    });
    why = alive ? ""
                : fmt::format("printed {} on its console within {} s",
                              read_text_if_exists(console).empty() ? "nothing" : "no banner",
                              std::chrono::duration_cast<std::chrono::seconds>(timeout).count());
  } else {
    why = fmt::format("could not be run ({})", last_error());
  }
  log.reset();  // before the domain ends (console_log.h)
  destroy_domain(domain.get(), host.uri);
  std::error_code ignored;
  fs::remove(console, ignored);
  return alive;
}

}  // namespace vmfest::detail::libvirt
