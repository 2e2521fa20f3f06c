#include "storage.h"

#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <thread>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "vmfest/error.h"
#include "vmfest/internal/base.h"

namespace vmfest::detail::libvirt {
namespace fs = std::filesystem;

namespace {

constexpr const char* kDoneSuffix = ".done";
constexpr std::chrono::seconds kStalledUpload{60};

std::string environment_or(const char* variable, const char* fallback) {
  const char* value = std::getenv(variable);
  return value != nullptr && *value != '\0' ? value : fallback;
}

std::string pool_xml(const std::string& name, const std::string& path) {
  return fmt::format("<pool type='dir'><name>{}</name><target><path>{}</path></target></pool>",
                     xml_escape(name), xml_escape(path));
}

// Feeds virStreamSendAll from a local file descriptor.
int read_chunk(virStreamPtr /*stream*/, char* data, size_t bytes, void* opaque) {
  const int fd = *static_cast<int*>(opaque);
  return static_cast<int>(::read(fd, data, bytes));
}

}  // namespace

StoragePool::StoragePool(virConnectPtr connection, std::string uri)
    : connection_(connection),
      uri_(std::move(uri)),
      name_(environment_or("VMFEST_LIBVIRT_POOL", "vmfest")) {
  pool_.reset(virStoragePoolLookupByName(connection_, name_.c_str()));
  if (!pool_) {
    if (last_error_code() != VIR_ERR_NO_STORAGE_POOL) {
      fail(fmt::format("libvirt: could not look up storage pool '{}'", name_), uri_);
    }
    const std::string path = environment_or("VMFEST_LIBVIRT_POOL_PATH", "/var/lib/vmfest-pool");
    pool_.reset(virStoragePoolDefineXML(connection_, pool_xml(name_, path).c_str(), 0));
    // Another process may have defined it a moment ago.
    if (!pool_) pool_.reset(virStoragePoolLookupByName(connection_, name_.c_str()));
    if (!pool_) {
      fail(fmt::format("libvirt: could not define storage pool '{}' at {}", name_, path), uri_,
           "define a pool of that name yourself (virsh pool-define-as) or set VMFEST_LIBVIRT_POOL");
    }
    spdlog::info("vmfest: defined libvirt storage pool '{}' at {} on {}", name_, path, uri_);
    virStoragePoolBuild(pool_.get(), 0);  // creates the folder; fails harmlessly if it exists
    virStoragePoolSetAutostart(pool_.get(), 1);
  }
  if (virStoragePoolIsActive(pool_.get()) != 1 && virStoragePoolCreate(pool_.get(), 0) < 0 &&
      virStoragePoolIsActive(pool_.get()) != 1) {
    fail(fmt::format("libvirt: could not start storage pool '{}'", name_), uri_);
  }
}

std::string StoragePool::path_of(const std::string& name) const {
  auto volume = find_volume(pool_.get(), name, uri_);
  if (!volume) {
    throw BackendError(
        fmt::format("libvirt: storage pool '{}' on {} has no volume '{}' (deleted "
                    "by hand?); `vmfest destroy` and a new instance recreate it",
                    name_, uri_, name));
  }
  char* path = virStorageVolGetPath(volume->get());
  if (path == nullptr) fail(fmt::format("libvirt: no path for volume '{}'", name), uri_);
  std::string result(path);
  std::free(path);  // NOLINT(cppcoreguidelines-no-malloc): libvirt's allocation
  return result;
}

bool StoragePool::contains(const std::string& name) const {
  return find_volume(pool_.get(), name, uri_).has_value();
}

void StoragePool::create_volume(const std::string& xml, const std::string& name) const {
  if (!try_create_volume(xml)) {
    fail(fmt::format("libvirt: could not create volume '{}' in pool '{}'", name, name_), uri_);
  }
}

bool StoragePool::try_create_volume(const std::string& xml) const {
  return Volume(virStorageVolCreateXML(pool_.get(), xml.c_str(), 0)) != nullptr;
}

std::string StoragePool::raw_volume_xml(const std::string& name, std::uintmax_t size) {
  return fmt::format(
      "<volume><name>{}</name><capacity unit='bytes'>{}</capacity><allocation>0</allocation>"
      "<target><format type='raw'/></target></volume>",
      xml_escape(name), size);
}

void StoragePool::upload(const std::string& name, const fs::path& file) const {
  create_volume(raw_volume_xml(name, fs::file_size(file)), name);
  fill(name, file);
}

void StoragePool::fill(const std::string& name, const fs::path& file) const {
  const int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    remove(name);
    throw BackendError(fmt::format("cannot read {} to upload it to {}", file.string(), uri_));
  }
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  auto volume = find_volume(pool_.get(), name, uri_);
  Stream stream(virStreamNew(connection_, 0));
  int fd_copy = fd;
  if (!volume || !stream ||
      virStorageVolUpload(volume->get(), stream.get(), 0, fs::file_size(file), 0) < 0 ||
      virStreamSendAll(stream.get(), read_chunk, &fd_copy) < 0 ||
      virStreamFinish(stream.get()) < 0) {
    const std::string why = last_error();
    if (stream) virStreamAbort(stream.get());
    remove(name);
    throw BackendError(fmt::format("libvirt: could not upload {} as volume '{}' to {}: {}",
                                   file.string(), name, uri_, why));
  }
}

std::uint64_t StoragePool::allocation_of(const std::string& name) const {
  auto volume = find_volume(pool_.get(), name, uri_);
  virStorageVolInfo info{};
  return volume && virStorageVolGetInfo(volume->get(), &info) == 0 ? info.allocation : 0;
}

// Creating the volume is the lock, on the host itself, so uploaders of every home and runner agree:
// who creates it uploads and then adds the marker; the others wait for the marker while the
// volume grows. One that stops growing for kStalledUpload belonged to an uploader that died.
void StoragePool::upload_cached(const std::string& name, const fs::path& file) const {
  const std::string done = name + kDoneSuffix;
  while (!contains(done)) {
    if (try_create_volume(raw_volume_xml(name, fs::file_size(file)))) {
      spdlog::info("vmfest: uploading {} to libvirt pool '{}' on {} (once per content)",
                   file.filename().string(), name_, uri_);
      fill(name, file);
      if (!try_create_volume(raw_volume_xml(done, 0)) && !contains(done)) {
        fail(fmt::format("libvirt: could not mark volume '{}' complete", name), uri_);
      }
      return;
    }
    if (last_error_code() != VIR_ERR_STORAGE_VOL_EXIST) {
      fail(fmt::format("libvirt: could not create volume '{}' in pool '{}'", name, name_), uri_);
    }
    std::uint64_t allocation = allocation_of(name);
    auto changed = std::chrono::steady_clock::now();
    while (!contains(done) && contains(name)) {
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
      if (const std::uint64_t now = allocation_of(name); now != allocation) {
        allocation = now;
        changed = std::chrono::steady_clock::now();
      } else if (std::chrono::steady_clock::now() - changed > kStalledUpload) {
        spdlog::warn(
            "vmfest: volume '{}' on {} stopped growing without being completed (its "
            "uploader died?); uploading it again",
            name, uri_);
        remove(name);
      }
    }
  }
}

void StoragePool::create_overlay(const std::string& name, const std::string& backing,
                                 const std::string& backing_format) const {
  // No capacity: the overlay takes its backing volume's.
  create_volume(
      fmt::format("<volume><name>{}</name><target><format type='qcow2'/></target>"
                  "<backingStore><path>{}</path><format type='{}'/></backingStore>"
                  "</volume>",
                  xml_escape(name), xml_escape(path_of(backing)), xml_escape(backing_format)),
      name);
}

void StoragePool::create_copy(const std::string& name, const std::string& source,
                              const std::string& format) const {
  auto from = find_volume(pool_.get(), source, uri_);
  if (!from) fail(fmt::format("libvirt: no volume '{}' to copy", source), uri_);
  virStorageVolInfo info{};
  if (virStorageVolGetInfo(from->get(), &info) < 0) {
    fail(fmt::format("libvirt: could not read the size of volume '{}'", source), uri_);
  }
  const std::string xml = fmt::format(
      "<volume><name>{}</name><capacity unit='bytes'>{}</capacity><target><format type='{}'/>"
      "</target></volume>",
      xml_escape(name), info.capacity, format);
  Volume copy(virStorageVolCreateXMLFrom(pool_.get(), xml.c_str(), from->get(), 0));
  if (!copy) fail(fmt::format("libvirt: could not copy volume '{}' to '{}'", source, name), uri_);
}

std::vector<std::string> StoragePool::volume_names() const {
  virStoragePoolRefresh(pool_.get(), 0);  // volumes made outside libvirt's view (none of ours)
  virStorageVolPtr* volumes = nullptr;
  const int count = virStoragePoolListAllVolumes(pool_.get(), &volumes, 0);
  if (count < 0) fail(fmt::format("libvirt: could not list the volumes of pool '{}'", name_), uri_);
  std::vector<std::string> names;
  for (const Volume& volume : adopt_all<Volume>(volumes, count)) {
    names.emplace_back(virStorageVolGetName(volume.get()));
  }
  return names;
}

void StoragePool::remove(const std::string& name) const {
  auto volume = find_volume(pool_.get(), name, uri_);
  if (volume && virStorageVolDelete(volume->get(), 0) < 0 &&
      last_error_code() != VIR_ERR_NO_STORAGE_VOL) {
    fail(fmt::format("libvirt: could not delete volume '{}' of pool '{}'", name, name_), uri_);
  }
}

std::string model_disk_volume_name(const Model& model) {
  const std::string content = model.sha256.empty() ? model.name : model.sha256.substr(0, 16);
  return fmt::format("model-{}-disk.{}", content, model.format);
}

std::string boot_file_volume_name(const fs::path& file, const std::string& part) {
  return fmt::format("model-{}-{}", sha256_file(file).substr(0, 16), part);
}

}  // namespace vmfest::detail::libvirt
