// Leases on a libvirt host: how a runner tells another runner's live instance from a dead one's,
// though it cannot see that runner's files or processes. The owner of an instance keeps a marker
// volume "<domain>.lease<term>-<token>" in the host's pool and replaces it every third of the term;
// an instance whose newest marker is older than its term (by the host's clock) has a dead owner.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <vector>

namespace vmfest::detail::libvirt {

class StoragePool;

// The term of the leases this process takes: $VMFEST_LIBVIRT_LEASE seconds (default 180).
std::chrono::seconds lease_term();

// A lease on the instance whose domain is `domain` on the host of `uri`, renewed by a thread of
// this process from construction (which makes the first marker) until destruction (which deletes
// the markers, after the instance's volumes are gone, through `pool`: it must outlive the lease).
class Lease {
 public:
  Lease(const StoragePool& pool, std::string uri, std::string domain);
  Lease(const Lease&) = delete;
  Lease& operator=(const Lease&) = delete;
  ~Lease();

  // Renewed until this process exits, and never deleted: for an instance whose domain lives as
  // long as this process, after its handle lets go.
  void keep_until_exit() noexcept;

 private:
  const StoragePool* pool_;
  std::string uri_;
  std::string domain_;
  bool kept_ = false;
};

// What a pool's lease markers say of one domain's owner.
struct LeaseMarker {
  std::string domain;
  std::chrono::seconds term{0};
};
// The domain and term of lease marker `volume`; nullopt when it is no lease marker.
std::optional<LeaseMarker> parse_lease_marker(const std::string& volume);

// Deletes every lease marker of `domain` in `pool` (names: the pool's volume names).
void remove_lease_markers(const StoragePool& pool, const std::vector<std::string>& names,
                          const std::string& domain);

}  // namespace vmfest::detail::libvirt
