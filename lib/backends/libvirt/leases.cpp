#include "leases.h"

#include <condition_variable>
#include <map>
#include <mutex>
#include <stop_token>
#include <thread>
#include <utility>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "libvirt_api.h"
#include "storage.h"
#include "vmfest/error.h"
#include "vmfest/internal/base.h"

namespace vmfest::detail::libvirt {

namespace {

constexpr std::string_view kLeaseInfix = ".lease";

std::string new_marker(const std::string& domain) {
  return fmt::format("{}{}{}-{}", domain, kLeaseInfix, lease_term().count(), random_token());
}

// The thread that renews this process's leases, started with the first.
class Renewer {
 public:
  static Renewer& instance() {
    static Renewer renewer;
    return renewer;
  }

  void add(const std::string& uri, const std::string& domain, const std::string& marker) {
    const std::lock_guard lock(mutex_);
    leases_[{uri, domain}] = marker;
    if (!thread_.joinable()) thread_ = std::jthread([this](std::stop_token stop) { run(stop); });
  }

  // Stops renewing; the caller deletes the markers (no renewal runs meanwhile).
  template <typename Then>
  void remove(const std::string& uri, const std::string& domain, Then then) {
    const std::lock_guard lock(mutex_);
    leases_.erase({uri, domain});
    then();
  }

 private:
  Renewer() = default;

  void run(const std::stop_token& stop) {
    std::map<std::string, std::pair<Connection, std::optional<StoragePool>>> hosts;
    std::unique_lock lock(mutex_);
    while (true) {
      wake_.wait_for(lock, stop, lease_term() / 3, [] { return false; });
      if (stop.stop_requested()) return;
      for (auto& [key, marker] : leases_) {
        const auto& [uri, domain] = key;
        try {
          auto& [connection, pool] = hosts[uri];
          if (!connection) connection = connect(uri);
          if (!pool) pool.emplace(connection.get(), uri);
          const std::string renewed = new_marker(domain);
          if (!pool->create_marker(renewed)) {
            fail(fmt::format("libvirt: could not create volume '{}'", renewed), uri);
          }
          pool->remove(marker);
          marker = renewed;
        } catch (const std::exception& error) {
          hosts.erase(uri);  // a new connection next time
          spdlog::warn(
              "vmfest: could not renew the lease of libvirt domain '{}' on {} (another runner "
              "reaps it when the lease runs out): {}",
              domain, uri, error.what());
        }
      }
    }
  }

  std::mutex mutex_;
  std::condition_variable_any wake_;
  std::map<std::pair<std::string, std::string>, std::string> leases_;  // (uri, domain) -> marker
  std::jthread thread_;  // last: stopped and joined before the rest goes
};

}  // namespace

std::chrono::seconds lease_term() {
  static const std::chrono::seconds term{
      whole_number_setting("VMFEST_LIBVIRT_LEASE", 3, 86400, "of seconds").value_or(180)};
  return term;
}

Lease::Lease(const StoragePool& pool, std::string uri, std::string domain)
    : pool_(&pool), uri_(std::move(uri)), domain_(std::move(domain)) {
  const std::string marker = new_marker(domain_);
  if (!pool.create_marker(marker)) {
    fail(fmt::format("libvirt: could not create the lease volume '{}'", marker), uri_);
  }
  Renewer::instance().add(uri_, domain_, marker);
}

Lease::~Lease() {
  if (kept_) return;
  Renewer::instance().remove(uri_, domain_, [&] {
    try {
      remove_lease_markers(*pool_, pool_->volume_names(), domain_);
    } catch (const std::exception& error) {
      spdlog::warn("vmfest: the lease of libvirt domain '{}' on {} stays until it runs out: {}",
                   domain_, uri_, error.what());
    }
  });
}

void Lease::keep_until_exit() noexcept { kept_ = true; }

std::optional<LeaseMarker> parse_lease_marker(const std::string& volume) {
  const auto infix = volume.rfind(kLeaseInfix);
  if (infix == std::string::npos) return std::nullopt;
  const auto dash = volume.find('-', infix);
  const std::string term =
      volume.substr(infix + kLeaseInfix.size(),
                    dash == std::string::npos ? 0 : dash - infix - kLeaseInfix.size());
  if (term.empty() || term.size() > 6 ||
      term.find_first_not_of("0123456789") != std::string::npos) {
    return std::nullopt;
  }
  return LeaseMarker{volume.substr(0, infix), std::chrono::seconds(std::stol(term))};
}

void remove_lease_markers(const StoragePool& pool, const std::vector<std::string>& names,
                          const std::string& domain) {
  for (const std::string& name : names) {
    if (const auto marker = parse_lease_marker(name); marker && marker->domain == domain) {
      pool.remove(name);
    }
  }
}

}  // namespace vmfest::detail::libvirt
