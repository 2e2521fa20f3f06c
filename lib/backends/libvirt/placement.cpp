#include "placement.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "domain_xml.h"
#include "libvirt_api.h"
#include "storage.h"
#include "vmfest/error.h"
#include "vmfest/internal/base.h"
#include "vmfest/internal/driver.h"

namespace vmfest::detail::libvirt {

namespace {

using Clock = std::chrono::steady_clock;

constexpr const char* kPlacementLock = "vmfest-placement.lock";
// Held from a count to a domain's start (a second or two): a lock older than this belonged to a
// runner that died holding it.
constexpr std::chrono::seconds kStaleLock{20};

// The host's placement lock: a volume that only one runner at a time can create.
class PlacementLock {
 public:
  PlacementLock(const StoragePool& pool, const HostUri& host, Clock::time_point deadline)
      : pool_(pool) {
    for (int attempt = 1; !pool.create_marker(kPlacementLock); ++attempt) {
      if (last_error_code() != VIR_ERR_STORAGE_VOL_EXIST) {
        fail(fmt::format("libvirt: could not create the placement lock '{}'", kPlacementLock),
             host.uri);
      }
      if (attempt % 20 == 0) {
        const auto since = pool.modified(kPlacementLock);
        if (since && pool.host_now() - *since > kStaleLock) {
          spdlog::warn(
              "vmfest: the placement lock of {} is {} s old (its runner died); taking it", host.uri,
              std::chrono::duration_cast<std::chrono::seconds>(pool.host_now() - *since).count());
          pool.remove(kPlacementLock);
          continue;
        }
      }
      if (Clock::now() >= deadline) {
        throw BackendError(
            fmt::format("libvirt: the placement lock of {} ('{}' in pool '{}') stayed taken until "
                        "VMFEST_SLOT_WAIT ran out; if no vmfest runs there, delete that volume",
                        host.uri, kPlacementLock, pool.name()));
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }
  PlacementLock(const PlacementLock&) = delete;
  PlacementLock& operator=(const PlacementLock&) = delete;
  ~PlacementLock() {
    try {
      pool_.remove(kPlacementLock);
    } catch (const std::exception& error) {
      spdlog::warn("vmfest: could not release the placement lock (others take it in {} s): {}",
                   kStaleLock.count(), error.what());
    }
  }

 private:
  const StoragePool& pool_;
};

// How full a host is: the running vmfest domains made through its URI, against how many it takes
// (VMFEST_LIBVIRT_MAX_VMS, else its CPUs). Counted by URI, not by host, so two URIs of one
// libvirtd (a test's) are two hosts too.
struct HostLoad {
  int running = 0;
  int cap = 1;
  [[nodiscard]] double ratio() const { return static_cast<double>(running) / cap; }
};

HostLoad load_of(virConnectPtr connection, const HostUri& host) {
  HostLoad load;
  for (const Domain& domain : list_domains(connection, host.uri, VIR_CONNECT_LIST_DOMAINS_ACTIVE)) {
    char* metadata =
        virDomainGetMetadata(domain.get(), VIR_DOMAIN_METADATA_ELEMENT, kMetadataNamespace, 0);
    if (metadata == nullptr) continue;  // not vmfest's
    if (uri_in_metadata(metadata) == host.uri) ++load.running;
    std::free(metadata);  // NOLINT(cppcoreguidelines-no-malloc): libvirt's allocation
  }
  if (const auto configured = whole_number_setting("VMFEST_LIBVIRT_MAX_VMS", 1, 1024)) {
    load.cap = static_cast<int>(*configured);
  } else {
    virNodeInfo info{};
    load.cap = virNodeGetInfo(connection, &info) == 0 ? static_cast<int>(info.cpus) : 1;
    load.cap = std::max(load.cap, 1);
  }
  return load;
}

}  // namespace

// The load is read now, so processes creating at the same moment may pick the same host; the cap
// holds all the same (start_within_cap).
HostUri choose_host() {
  std::vector<HostUri> hosts = configured_hosts();
  if (hosts.size() == 1) return hosts.front();
  const auto deadline = Clock::now() + slot_timeout();
  // One connection per host for the whole wait: a remote URI's connect is an SSH login.
  std::vector<Connection> connections;
  for (const HostUri& host : hosts) connections.push_back(connect(host.uri));
  bool said = false;
  while (true) {
    std::size_t best = 0;
    std::vector<HostLoad> loads;
    for (std::size_t i = 0; i < hosts.size(); ++i) {
      loads.push_back(load_of(connections[i].get(), hosts[i]));
      if (loads[i].ratio() < loads[best].ratio()) best = i;
    }
    if (loads[best].running < loads[best].cap) return hosts[best];
    std::string full;
    for (std::size_t i = 0; i < hosts.size(); ++i) {
      full += fmt::format("{}{} ({} of {})", i == 0 ? "" : ", ", hosts[i].uri, loads[i].running,
                          loads[i].cap);
    }
    if (Clock::now() >= deadline) {
      throw BackendError(fmt::format(
          "every libvirt host is full: {}; none freed up within VMFEST_SLOT_WAIT. Raise "
          "VMFEST_LIBVIRT_MAX_VMS, add a host to VMFEST_LIBVIRT_URI, or run fewer tests at once",
          full));
    }
    if (!said) spdlog::info("vmfest: every libvirt host is full ({}); waiting", full);
    said = true;
    std::this_thread::sleep_for(std::chrono::seconds(1));
  }
}

namespace {

// This process's placements (several instances of one process may be created at once).
struct Placements {
  std::mutex mutex;
  std::map<std::string, HostUri> warm_build_host;        // by model_key: the last warm key's host
  std::map<std::filesystem::path, HostUri> of_instance;  // by instance folder
};

Placements& placements() {
  static Placements placed;
  return placed;
}

std::string model_key(const MachineConfig& config) {
  return fmt::format("{} {} {}", config.model.sha256, config.profile.memory_mib,
                     config.profile.cpus);
}

}  // namespace

HostUri warm_image_host(const MachineConfig& config) {
  Placements& placed = placements();
  {
    const std::lock_guard lock(placed.mutex);
    if (const auto found = placed.of_instance.find(config.directory);
        found != placed.of_instance.end()) {
      return found->second;
    }
  }
  HostUri host = choose_host();
  const std::lock_guard lock(placed.mutex);
  placed.warm_build_host.insert_or_assign(model_key(config), host);
  return host;
}

HostUri place_instance(const MachineConfig& config) {
  if (config.saves_warm_image) {
    Placements& placed = placements();
    const std::lock_guard lock(placed.mutex);
    if (const auto found = placed.warm_build_host.find(model_key(config));
        found != placed.warm_build_host.end()) {
      return found->second;
    }
  }
  return choose_host();
}

void remember_instance(const MachineConfig& config, const HostUri& host) {
  Placements& placed = placements();
  const std::lock_guard lock(placed.mutex);
  placed.of_instance.insert_or_assign(config.directory, host);
}

void forget_instance(const MachineConfig& config) {
  Placements& placed = placements();
  const std::lock_guard lock(placed.mutex);
  placed.of_instance.erase(config.directory);
}

void start_within_cap(virConnectPtr connection, const StoragePool& pool, const HostUri& host,
                      const std::function<void()>& start) {
  const auto deadline = Clock::now() + slot_timeout();
  bool said = false;
  while (true) {
    HostLoad load;
    {
      const PlacementLock lock(pool, host, deadline);
      load = load_of(connection, host);
      if (load.running < load.cap) {
        start();
        return;
      }
    }
    if (Clock::now() >= deadline) {
      throw BackendError(fmt::format(
          "libvirt host {} is full ({} of {} vmfest VMs run) and none stopped within "
          "VMFEST_SLOT_WAIT. Raise VMFEST_LIBVIRT_MAX_VMS, add a host to VMFEST_LIBVIRT_URI, or "
          "run fewer tests at once",
          host.uri, load.running, load.cap));
    }
    if (!said) {
      spdlog::info("vmfest: libvirt host {} is full ({} of {} vmfest VMs run); waiting", host.uri,
                   load.running, load.cap);
    }
    said = true;
    std::this_thread::sleep_for(std::chrono::seconds(1));
  }
}

}  // namespace vmfest::detail::libvirt
