#include "disk_copy.h"

#include <chrono>
#include <thread>

#include <fmt/format.h>

#include "domain_xml.h"
#include "vmfest/error.h"

namespace vmfest::detail::libvirt {

namespace {

constexpr std::chrono::milliseconds kJobPoll{50};
constexpr std::chrono::seconds kStalled{60};  // a copy that long without progress is stuck

// Waits until the mirror of `target` holds all of the disk (libvirt reports cur == end only once
// QEMU says the job is ready).
void wait_until_mirrored(virDomainPtr domain, const std::string& target, const StoragePool& pool,
                         const std::string& copy) {
  unsigned long long progress = 0;
  auto progressed_at = std::chrono::steady_clock::now();
  for (;;) {
    virDomainBlockJobInfo info{};
    const int found = virDomainGetBlockJobInfo(domain, target.c_str(), &info, 0);
    if (found < 0) {
      fail(fmt::format("libvirt: could not follow the copy of disk {} into volume '{}'", target,
                       copy),
           pool.uri());
    }
    if (found == 0) {
      throw BackendError(fmt::format(
          "libvirt: the copy of disk {} of domain '{}' into volume '{}' on {} ended before it was "
          "complete; the host's libvirtd log says why",
          target, virDomainGetName(domain), copy, pool.uri()));
    }
    if (info.end > 0 && info.cur == info.end) return;
    const auto now = std::chrono::steady_clock::now();
    if (info.cur != progress) {
      progress = info.cur;
      progressed_at = now;
    } else if (now - progressed_at > kStalled) {
      throw BackendError(fmt::format(
          "libvirt: the copy of disk {} of domain '{}' into volume '{}' on {} made no progress "
          "for {} s (at {} of {} bytes)",
          target, virDomainGetName(domain), copy, pool.uri(), kStalled.count(), info.cur,
          info.end));
    }
    std::this_thread::sleep_for(kJobPoll);
  }
}

// Copies the disk `target` of the running or paused `domain` (its volume `disk_volume`, with all of
// its backing chain) into the new standalone qcow2 volume `copy` of `pool`, as it is when the copy
// completes (a paused guest's disk as it was at the pause), and returns then. The domain keeps its
// own disk.
void copy_domain_disk(virDomainPtr domain, const std::string& target, const StoragePool& pool,
                      const std::string& disk_volume, const std::string& copy) {
  pool.create_empty(copy, pool.capacity_of(disk_volume), "qcow2");
  const std::string destination =
      fmt::format("<disk type='file'><source file='{}'/><driver type='qcow2'/></disk>",
                  xml_escape(pool.path_of(copy)));
  if (virDomainBlockCopy(domain, target.c_str(), destination.c_str(), nullptr, 0,
                         VIR_DOMAIN_BLOCK_COPY_REUSE_EXT) < 0) {
    fail(fmt::format("libvirt: could not start copying disk {} of domain '{}' into volume '{}'",
                     target, virDomainGetName(domain), copy),
         pool.uri());
  }
  try {
    wait_until_mirrored(domain, target, pool, copy);
  } catch (...) {
    virDomainBlockJobAbort(domain, target.c_str(), 0);  // the domain goes on with its own disk
    throw;
  }
  // Ends the mirror without switching the domain to it: the copy stays as it is now, complete.
  if (virDomainBlockJobAbort(domain, target.c_str(), 0) < 0) {
    fail(fmt::format("libvirt: could not end the copy of disk {} of domain '{}' into volume '{}'",
                     target, virDomainGetName(domain), copy),
         pool.uri());
  }
}

}  // namespace

void export_volume(const StoragePool& pool, virDomainPtr live, const std::string& disk_volume,
                   const std::string& copy, const std::filesystem::path& destination) {
  remove_once_allocated(pool, copy);  // an earlier export's, whose process died
  const TemporaryVolume remove_copy(pool, copy);
  if (live != nullptr) {
    copy_domain_disk(live, kDiskTarget, pool, disk_volume, copy);
  } else {
    pool.create_copy(copy, disk_volume);
  }
  pool.download(copy, destination);
}

}  // namespace vmfest::detail::libvirt
