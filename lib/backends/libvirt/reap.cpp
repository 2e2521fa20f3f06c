#include "reap.h"

#include <filesystem>
#include <map>
#include <set>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "leases.h"
#include "libvirt_api.h"
#include "naming.h"
#include "storage.h"
#include "vmfest/error.h"
#include "vmfest/internal/base.h"
#include "warm.h"

namespace vmfest::detail::libvirt {
namespace fs = std::filesystem;
using Clock = std::chrono::system_clock;

namespace {

// How long an upload nothing uses stays on a host: $VMFEST_LIBVIRT_MODEL_TTL seconds (a week).
std::chrono::seconds model_ttl() {
  return std::chrono::seconds(
      whole_number_setting("VMFEST_LIBVIRT_MODEL_TTL", 1, 10L * 365 * 86400, "of seconds")
          .value_or(7L * 86400));
}

// When each domain's owner last renewed its lease, and the term it took.
struct Renewal {
  Clock::time_point at;
  std::chrono::seconds term{0};
};

std::map<std::string, Renewal> newest_leases(const StoragePool& pool,
                                             const std::vector<std::string>& names) {
  std::map<std::string, Renewal> leases;
  for (const std::string& name : names) {
    const auto marker = parse_lease_marker(name);
    if (!marker) continue;
    const auto at = pool.modified(name);
    if (!at) continue;  // deleted a moment ago: renewed
    Renewal& newest = leases[marker->domain];
    if (*at >= newest.at) newest = {*at, marker->term};
  }
  return leases;
}

}  // namespace

std::vector<std::string> reap_host(const HostUri& host, const Home& home) {
  Connection connection = connect(host.uri);
  const StoragePool pool(connection.get(), host.uri);
  const std::vector<std::string> names = pool.volume_names();
  const std::map<std::string, Renewal> leases = newest_leases(pool, names);
  const Clock::time_point now = pool.host_now();
  const std::string own = home_prefix(home);
  // This home's by its folders; another home's by its owner's lease (none: a detached or permanent
  // instance, which only its home removes).
  auto dead = [&](const std::string& domain) {
    if (domain.starts_with(own)) {
      const std::string instance = domain.substr(own.size());
      return !instance.empty() && !fs::exists(home.instances() / instance);
    }
    const auto lease = leases.find(domain);
    return lease != leases.end() && now - lease->second.at > lease->second.term;
  };

  std::vector<std::string> removed;
  std::set<std::string> still_running;  // their volumes stay: the domain still uses them
  for (const Domain& domain : list_domains(connection.get(), host.uri)) {
    const std::string name = virDomainGetName(domain.get());
    if (!name.starts_with("vmfest-") || !dead(name)) continue;
    try {
      destroy_domain(domain.get(), host.uri);
      removed.push_back(fmt::format("libvirt domain '{}' on {}", name, host.uri));
    } catch (const BackendError& error) {
      spdlog::warn("vmfest: the orphaned domain '{}' still runs, so its volumes stay: {}", name,
                   error.what());
      still_running.insert(name);
    }
  }
  std::vector<std::string> lease_markers;  // deleted last: they say whose the rest is
  for (const std::string& name : names) {
    const auto domain = domain_of_volume(name);
    if (!domain || still_running.contains(*domain) || !dead(*domain)) continue;
    if (parse_lease_marker(name)) {
      lease_markers.push_back(name);
      continue;
    }
    remove_once_allocated(pool, name);
    removed.push_back(fmt::format("libvirt volume '{}' on {}", name, host.uri));
  }
  for (const std::string& name : lease_markers) pool.remove(name);
  // This home's warm volumes that none of its images names (a build that died, an image removed).
  for (const std::string& name : unused_warm_volumes(home.models(), home.id(), names)) {
    remove_once_allocated(pool, name);
    removed.push_back(fmt::format("libvirt volume '{}' on {}", name, host.uri));
  }
  for (std::string& unused : pool.collect_unused(connection.get(), model_ttl())) {
    removed.push_back(std::move(unused));
  }
  return removed;
}

}  // namespace vmfest::detail::libvirt
