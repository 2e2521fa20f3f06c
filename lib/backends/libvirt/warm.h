// Warm images on a libvirt host. The first instance of a model and profile there saves its domain
// once (virDomainSaveFlags into a volume of the pool) and copies its disk at that instant as the
// image's base volume; the local image folder (the core's, see image_store/warm.h) records which
// volumes on which host are the image. A clone restores a copy of the saved state whose embedded
// domain XML is rewritten as its own (name, volumes, forward port, UUID): libvirt restores a save
// image only as the very domain it saved, and two clones cannot share a name or a UUID. The guest's
// memory is streamed from the state (libvirt 9's save images hold it; no mapping from a file).
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "domain_xml.h"
#include "libvirt_api.h"
#include "storage.h"

namespace vmfest::detail::libvirt {

// What a warm image is on its host: kept in the image folder as kWarmVolumesFile.
struct WarmVolumes {
  std::string uri;     // the VMFEST_LIBVIRT_URI entry of the host that holds the volumes
  std::string state;   // libvirt's save image: its header, the domain XML, QEMU's state
  std::string base;    // the disk at the save, a standalone qcow2 every clone's overlay sits on
  std::string domain;  // the saved domain's name, which the XML in the state carries
};
inline constexpr const char* kWarmVolumesFile = "libvirt-volumes.json";
// Where the names of a home's warm volumes start ("vmfest-warm-<home id>-"): apart from its
// instances' "vmfest-<home id>-", whose folders decide what a reap removes.
std::string warm_volume_prefix(const std::string& home_id);

// Names two new volumes for an image of a domain of the home `home_id` on `uri`, and records them
// in `image_directory` (before they exist: a reap keeps what a live build's folder names).
WarmVolumes plan_warm_volumes(const std::filesystem::path& image_directory,
                              const std::string& home_id, const std::string& uri,
                              const std::string& domain);
WarmVolumes read_warm_volumes(const std::filesystem::path& image_directory);

// Of `volume_names` (a pool's), the warm volumes of the home `home_id` that no image folder under
// `models_folder` names, nor a build whose process lives: what a reap removes.
std::vector<std::string> unused_warm_volumes(const std::filesystem::path& models_folder,
                                             const std::string& home_id,
                                             const std::vector<std::string>& volume_names);

// Saves the running or paused `domain` (it ends) as `volumes.state` in `pool`, to restore paused.
void save_state(virDomainPtr domain, const StoragePool& pool, const WarmVolumes& volumes);
// save_state, then copies the domain's disk volume `disk_volume` as `volumes.base`, both in
// `pool`.
void save_domain(virDomainPtr domain, const StoragePool& pool, const WarmVolumes& volumes,
                 const std::string& disk_volume);

// Restores the domain saved as `volumes.state`, as itself (its name, volumes and forward port),
// running; BackendError with libvirt's reason when it does not run.
Domain restore_saved(virConnectPtr connection, const StoragePool& pool, const WarmVolumes& volumes);

// Removes the volumes of an image that was not made (a reap would, later); warns when it cannot.
void remove_warm_volumes(const StoragePool& pool, const WarmVolumes& volumes) noexcept;

// One clone's copy of the image's state, named `name` in `pool`: libvirt restores a save image
// only as the domain its XML names, so each clone's XML is written into a file of its own. Made on
// construction (the copy runs on the host), removed on destruction (a process killed in between
// leaves it to the reap: its name is the domain's with kStateSuffix).
class StateCopy {
 public:
  StateCopy(const StoragePool& pool, const WarmVolumes& volumes, const std::string& name);
  [[nodiscard]] const std::string& name() const { return volume_.name(); }

 private:
  TemporaryVolume volume_;
};

// Restores the image `volumes` as the running clone `spec` (its disk volume an overlay on
// volumes.base, made already) from `state`, its XML rewritten as the clone's first. Returns null
// with libvirt's error pending when the restore itself failed (`state` can be rewritten again).
Domain restore_clone(virConnectPtr connection, const StoragePool& pool, const WarmVolumes& volumes,
                     const StateCopy& state, const DomainSpec& spec);

}  // namespace vmfest::detail::libvirt
