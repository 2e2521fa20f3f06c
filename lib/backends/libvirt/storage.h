// The backend's storage on a libvirt host: one storage pool (a folder on that host, reached only
// through libvirt's API, so a remote host needs no shared file system), the models uploaded into
// it once, and each instance's volumes.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "libvirt_api.h"
#include "vmfest/model.h"

namespace vmfest::detail::libvirt {

class StoragePool {
 public:
  // The pool $VMFEST_LIBVIRT_POOL (default "vmfest") of the host behind `connection`; defined as a
  // folder pool at $VMFEST_LIBVIRT_POOL_PATH (default /var/lib/vmfest-pool) and started when it
  // does not exist or is inactive.
  StoragePool(virConnectPtr connection, std::string uri);

  // The path of volume `name` on the host, for the domain XML (never opened here).
  [[nodiscard]] std::string path_of(const std::string& name) const;
  [[nodiscard]] bool contains(const std::string& name) const;
  // Uploads a local file as a new volume `name` (virStorageVolUpload): what a remote host needs
  // instead of a path to a file it cannot see.
  void upload(const std::string& name, const std::filesystem::path& file) const;
  // Streams `length` bytes (0: up to its end) of volume `name` from `offset` to `sink`, chunk by
  // chunk (virStorageVolDownload): what a remote host gives instead of a file to read.
  void download(const std::string& name, std::uint64_t offset, std::uint64_t length,
                const std::function<void(const char* data, std::size_t size)>& sink) const;
  // Those bytes as a string (a header).
  [[nodiscard]] std::string read(const std::string& name, std::uint64_t offset,
                                 std::uint64_t length) const;
  // The whole volume `name` as the local file `file` (replaced; removed again when that fails).
  void download(const std::string& name, const std::filesystem::path& file) const;
  // Writes `data` over the start of volume `name` (the rest stays).
  void overwrite_start(const std::string& name, const std::string& data) const;
  // Uploads a local file once per host: `name` should carry the content's hash. Returns the
  // volume that holds it. Concurrent callers (any home, any runner) wait for the one uploader
  // while its volume grows; beside one that stopped growing (killed, or just very slow) another
  // volume is uploaded, and the stalled one is never deleted under its uploader: any complete one
  // serves. Each use clears the mark a collection of unused models leaves (collect_unused_models).
  std::string upload_cached(const std::string& name, const std::filesystem::path& file) const;
  // Deletes the uploads of upload_cached and the warm images (of any home) that no volume is
  // backed by and no domain of the host uses for `keep` (marked unused at one collection, deleted
  // at a later one), and uploads that stopped growing an hour ago. Returns what it deleted.
  std::vector<std::string> collect_unused(virConnectPtr connection,
                                          std::chrono::seconds keep) const;
  // A qcow2 volume `name` backed by volume `backing` (in `backing_format`): kilobytes.
  void create_overlay(const std::string& name, const std::string& backing,
                      const std::string& backing_format) const;
  // A standalone copy of volume `source` in `format`: a permanent VM's disk (qcow2), a warm clone's
  // saved state (raw).
  void create_copy(const std::string& name, const std::string& source,
                   const std::string& format = "qcow2") const;
  // An empty volume `name` of `capacity` bytes for a guest, in `format`: what something else
  // (libvirt saving a domain, a domain's QEMU copying its disk) fills.
  void create_empty(const std::string& name, std::uint64_t capacity,
                    const std::string& format) const;
  // Its size for a guest (a qcow2's virtual size).
  [[nodiscard]] std::uint64_t capacity_of(const std::string& name) const;
  // The names of the pool's volumes.
  [[nodiscard]] std::vector<std::string> volume_names() const;
  // Deletes volume `name` if it exists.
  void remove(const std::string& name) const;
  // Creates an empty volume `name` (a marker); false when it exists.
  bool create_marker(const std::string& name) const;
  // When volume `name` was last written, by the host's clock; nullopt when it does not exist.
  [[nodiscard]] std::optional<std::chrono::system_clock::time_point> modified(
      const std::string& name) const;
  // The host's clock now (that of a marker made for the purpose): what modified() compares with,
  // whatever this machine's clock says.
  [[nodiscard]] std::chrono::system_clock::time_point host_now() const;

  [[nodiscard]] const std::string& name() const noexcept { return name_; }
  [[nodiscard]] virStoragePoolPtr handle() const noexcept { return pool_.get(); }
  [[nodiscard]] const std::string& uri() const noexcept { return uri_; }

 private:
  void create_volume(const std::string& xml, const std::string& name) const;
  // False when libvirt refuses (last_error_code() says why, e.g. VIR_ERR_STORAGE_VOL_EXIST).
  [[nodiscard]] bool try_create_volume(const std::string& xml) const;
  static std::string raw_volume_xml(const std::string& name, std::uintmax_t size);
  // Streams `file` into the existing volume `name`; deletes the volume when that fails.
  void fill(const std::string& name, const std::filesystem::path& file) const;
  [[nodiscard]] std::uint64_t allocation_of(const std::string& name) const;
  // A new volume's XML: `name`, `capacity` bytes for a guest, `format`.
  static std::string new_volume_xml(const std::string& name, std::uint64_t capacity,
                                    const std::string& format);
  // Waits while another process uploads `volume`: true when it completed (or went), false when it
  // stopped growing.
  [[nodiscard]] bool waited_for_upload(const std::string& volume) const;
  // The volume's XML (libvirt refreshes its size and times); "" when it is gone.
  [[nodiscard]] std::string volume_xml(const std::string& name) const;

  virConnectPtr connection_;
  std::string uri_;
  std::string name_;
  Pool pool_;
};

// Volume names by content, so every home and runner on a host shares one upload: a model's disk by
// the disk's sha256, its kernel and initrd each by their own (models may share a disk and not a
// kernel).
std::string model_disk_volume_name(const Model& model);
std::string boot_file_volume_name(const std::filesystem::path& file, const std::string& part);

// A volume that exists for a while: deleted when this goes, whatever happened meanwhile (a
// warning when it cannot be).
class TemporaryVolume {
 public:
  TemporaryVolume(const StoragePool& pool, std::string name);
  TemporaryVolume(const TemporaryVolume&) = delete;
  TemporaryVolume& operator=(const TemporaryVolume&) = delete;
  ~TemporaryVolume();
  [[nodiscard]] const std::string& name() const noexcept { return name_; }

 private:
  const StoragePool& pool_;
  std::string name_;
};

// Deletes volume `name`, waiting (up to a minute) while libvirt still fills it: a copy or upload
// that a killed owner started goes on in libvirtd, and refuses its deletion until it is done.
void remove_once_allocated(const StoragePool& pool, const std::string& name);

// 16 random hex digits: names no other process picks.
std::string random_token();

}  // namespace vmfest::detail::libvirt
