#include "storage.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <mutex>
#include <random>
#include <set>
#include <thread>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "naming.h"
#include "vmfest/error.h"
#include "vmfest/internal/base.h"
#include "vmfest/internal/driver.h"

namespace vmfest::detail::libvirt {
namespace fs = std::filesystem;

namespace {

constexpr const char* kDoneSuffix = ".done";
// "unused-<volume>", made when a collection found <volume> unused; a prefix, so that the marker
// of a volume is never taken for one of the volumes named like it.
constexpr const char* kUnusedPrefix = "unused-";
constexpr std::chrono::seconds kStalledUpload{60};
constexpr std::chrono::hours kDeadUpload{1};  // an incomplete upload that long untouched is dead

std::string generation_name(const std::string& name, int generation) {
  return fmt::format("{}.g{}", name, generation);
}

// The generation N of a volume "<name>.g<N>", 0 for any other volume.
int generation_of(const std::string& volume, const std::string& name) {
  const std::string prefix = name + ".g";
  if (!volume.starts_with(prefix) || volume.size() == prefix.size()) return 0;
  const std::string digits = volume.substr(prefix.size());
  if (!std::ranges::all_of(digits, [](char c) { return c >= '0' && c <= '9'; })) return 0;
  return digits.size() > 6 ? 0 : std::stoi(digits);
}

int newest_generation(const std::vector<std::string>& names, const std::string& name) {
  int newest = 0;
  for (const std::string& volume : names) newest = std::max(newest, generation_of(volume, name));
  return newest;
}

// The oldest generation of `name` that was completed.
std::optional<std::string> complete_upload(const std::vector<std::string>& names,
                                           const std::string& name) {
  const std::set<std::string> present(names.begin(), names.end());
  std::optional<int> oldest;
  for (const std::string& volume : names) {
    const int generation = generation_of(volume, name);
    if (generation > 0 && present.contains(volume + kDoneSuffix) &&
        (!oldest || generation < *oldest)) {
      oldest = generation;
    }
  }
  if (!oldest) return std::nullopt;
  return generation_name(name, *oldest);
}

// A volume upload_cached made: "model-<hash>-<part>.g<N>".
bool is_upload(const std::string& volume) {
  const auto dot = volume.rfind(".g");
  return volume.starts_with("model-") && dot != std::string::npos &&
         generation_of(volume, volume.substr(0, dot)) > 0;
}

// The seconds of "<tag>seconds.nanoseconds</tag>" in a volume's XML.
std::optional<std::chrono::system_clock::time_point> timestamp_in(const std::string& xml,
                                                                  const std::string& tag) {
  const std::string open = "<" + tag + ">";
  const auto begin = xml.find(open);
  if (begin == std::string::npos) return std::nullopt;
  const auto start = begin + open.size();
  const auto end = xml.find_first_of(".<", start);
  if (end == std::string::npos || end == start) return std::nullopt;
  try {
    return std::chrono::system_clock::time_point(
        std::chrono::seconds(std::stoll(xml.substr(start, end - start))));
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

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
  if (virStoragePoolIsActive(pool_.get()) != 1 && virStoragePoolCreate(pool_.get(), 0) < 0) {
    const std::string why = last_error();
    // Another process may be starting it at this very moment.
    if (!poll_until(std::chrono::seconds(10), std::chrono::milliseconds(100),
                    [&] { return virStoragePoolIsActive(pool_.get()) == 1; })) {
      throw BackendError(
          fmt::format("libvirt: could not start storage pool '{}' on {}: {}", name_, uri_, why));
    }
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

void StoragePool::download(const std::string& name, std::uint64_t offset, std::uint64_t length,
                           const std::function<void(const char*, std::size_t)>& sink) const {
  auto volume = find_volume(pool_.get(), name, uri_);
  if (!volume) throw BackendError(fmt::format("libvirt: no volume '{}' on {}", name, uri_));
  const std::string what = fmt::format("libvirt: could not read volume '{}'", name);
  Stream stream(virStreamNew(connection_, 0));
  if (!stream || virStorageVolDownload(volume->get(), stream.get(), offset, length, 0) < 0) {
    fail(what, uri_);
  }
  std::array<char, 65536> buffer{};
  try {
    for (;;) {
      const int got = virStreamRecv(stream.get(), buffer.data(), buffer.size());
      if (got < 0) fail(what, uri_);
      if (got == 0) break;
      sink(buffer.data(), static_cast<std::size_t>(got));
    }
  } catch (...) {
    virStreamAbort(stream.get());  // after the error's message took libvirt's reason
    throw;
  }
  if (virStreamFinish(stream.get()) < 0) fail(what, uri_);
}

std::string StoragePool::read(const std::string& name, std::uint64_t offset,
                              std::uint64_t length) const {
  std::string data;
  download(name, offset, length,
           [&](const char* bytes, std::size_t size) { data.append(bytes, size); });
  return data;
}

void StoragePool::download(const std::string& name, const fs::path& file) const {
  try {
    std::ofstream out(file, std::ios::binary | std::ios::trunc);
    auto fail_to_write = [&] {
      throw BackendError(fmt::format("cannot write {} (volume '{}' of {}): {}", file.string(), name,
                                     uri_, std::strerror(errno)));
    };
    if (!out) fail_to_write();
    download(name, 0, 0, [&](const char* data, std::size_t size) {
      if (!out.write(data, static_cast<std::streamsize>(size))) fail_to_write();
    });
    if (!out.flush()) fail_to_write();
  } catch (...) {
    std::error_code ignored;
    fs::remove(file, ignored);
    throw;
  }
}

void StoragePool::overwrite_start(const std::string& name, const std::string& data) const {
  auto volume = find_volume(pool_.get(), name, uri_);
  if (!volume) throw BackendError(fmt::format("libvirt: no volume '{}' on {}", name, uri_));
  Stream stream(virStreamNew(connection_, 0));
  bool done = stream && virStorageVolUpload(volume->get(), stream.get(), 0, data.size(), 0) == 0;
  for (std::size_t sent = 0; done && sent < data.size();) {
    const int put = virStreamSend(stream.get(), data.data() + sent, data.size() - sent);
    done = put > 0;
    if (done) sent += static_cast<std::size_t>(put);
  }
  if (!done || virStreamFinish(stream.get()) < 0) {
    const std::string why = last_error();
    if (stream) virStreamAbort(stream.get());
    throw BackendError(
        fmt::format("libvirt: could not write volume '{}' on {}: {}", name, uri_, why));
  }
}

std::uint64_t StoragePool::allocation_of(const std::string& name) const {
  auto volume = find_volume(pool_.get(), name, uri_);
  virStorageVolInfo info{};
  return volume && virStorageVolGetInfo(volume->get(), &info) == 0 ? info.allocation : 0;
}

// Uploads go by generation: volume "<name>.g<N>" is created (creation is atomic on the host, so
// one uploader of any home or runner claims it), filled, then marked complete by
// "<name>.g<N>.done". Waiters watch the newest generation grow; when it stops growing for
// kStalledUpload they claim the next one and leave the stalled one to its uploader, who may still
// complete it: any complete generation serves. collect_unused_models deletes what nobody completes.
std::string StoragePool::upload_cached(const std::string& name, const fs::path& file) const {
  while (true) {
    const std::vector<std::string> names = volume_names();
    if (auto complete = complete_upload(names, name)) {
      remove(kUnusedPrefix + *complete);  // in use again
      return *complete;
    }
    const int newest = newest_generation(names, name);
    if (newest > 0 && waited_for_upload(generation_name(name, newest))) continue;
    const std::string volume = generation_name(name, newest + 1);
    if (try_create_volume(raw_volume_xml(volume, fs::file_size(file)))) {
      spdlog::info("vmfest: uploading {} to libvirt pool '{}' on {} as '{}' (once per content)",
                   file.filename().string(), name_, uri_, volume);
      fill(volume, file);
      if (!create_marker(volume + kDoneSuffix) && !contains(volume + kDoneSuffix)) {
        fail(fmt::format("libvirt: could not mark volume '{}' complete", volume), uri_);
      }
      return volume;
    }
    if (last_error_code() != VIR_ERR_STORAGE_VOL_EXIST) {
      fail(fmt::format("libvirt: could not create volume '{}' in pool '{}'", volume, name_), uri_);
    }
    // Another uploader claimed it a moment ago: watch that one.
  }
}

bool StoragePool::waited_for_upload(const std::string& volume) const {
  const std::string done = volume + kDoneSuffix;
  std::uint64_t allocation = allocation_of(volume);
  auto changed = std::chrono::steady_clock::now();
  while (!contains(done) && contains(volume)) {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    if (const std::uint64_t now = allocation_of(volume); now != allocation) {
      allocation = now;
      changed = std::chrono::steady_clock::now();
    } else if (std::chrono::steady_clock::now() - changed > kStalledUpload) {
      spdlog::warn(
          "vmfest: the upload of '{}' to {} stopped growing for {} s (its uploader died, or is "
          "very slow); uploading another copy beside it",
          volume, uri_, kStalledUpload.count());
      return false;
    }
  }
  return true;
}

std::vector<std::string> StoragePool::collect_unused(virConnectPtr connection,
                                                     std::chrono::seconds keep) const {
  const std::vector<std::string> names = volume_names();
  const std::set<std::string> present(names.begin(), names.end());
  // What refers to a pool file: overlays (their backing store) and domains (disks, kernels).
  std::vector<std::string> referrers;
  for (const std::string& name : names) {
    if (auto xml = volume_xml(name); xml.find("<backingStore>") != std::string::npos) {
      referrers.push_back(xml.substr(xml.find("<backingStore>")));
    }
  }
  for (const Domain& domain : list_domains(connection, uri_)) {
    if (char* xml = virDomainGetXMLDesc(domain.get(), 0); xml != nullptr) {
      referrers.emplace_back(xml);
      std::free(xml);  // NOLINT(cppcoreguidelines-no-malloc): libvirt's allocation
    }
  }
  const auto now = host_now();
  std::vector<std::string> deleted;
  // `volume`, and what goes with it: an upload's markers, a warm image's saved state.
  auto remove_all = [&](const std::string& volume) {
    std::vector<std::string> parts{volume, volume + kDoneSuffix, kUnusedPrefix + volume};
    if (volume.ends_with(kWarmBaseSuffix)) {
      parts.push_back(volume.substr(0, volume.size() - std::strlen(kWarmBaseSuffix)) +
                      kWarmStateSuffix);
    }
    for (const std::string& part : parts) {
      if (present.contains(part)) remove(part);
    }
    deleted.push_back(fmt::format("libvirt volume '{}' on {}", volume, uri_));
  };
  for (const std::string& volume : names) {
    // A mark whose volume went another way (deleted by its home's reap): it marks nothing.
    if (volume.starts_with(kUnusedPrefix) &&
        !present.contains(volume.substr(std::strlen(kUnusedPrefix)))) {
      remove(volume);
      continue;
    }
    const bool warm_image = volume.starts_with(kWarmPrefix) && volume.ends_with(kWarmBaseSuffix);
    if (!is_upload(volume) && !warm_image) continue;
    if (!warm_image && !present.contains(volume + kDoneSuffix)) {
      const auto written = modified(volume);
      if (written && now - *written > kDeadUpload) remove_all(volume);
      continue;
    }
    const std::string path = path_of(volume);
    const bool used = std::ranges::any_of(
        referrers, [&](const std::string& xml) { return xml.find(path) != std::string::npos; });
    const std::string unused = kUnusedPrefix + volume;
    if (used) {
      remove(unused);
    } else if (const auto since = modified(unused); !since) {
      create_marker(unused);
    } else if (now - *since >= keep) {
      remove_all(volume);
    }
  }
  return deleted;
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
  const std::string xml = new_volume_xml(name, capacity_of(source), format);
  Volume copy(virStorageVolCreateXMLFrom(pool_.get(), xml.c_str(), from->get(), 0));
  if (!copy) fail(fmt::format("libvirt: could not copy volume '{}' to '{}'", source, name), uri_);
}

std::string StoragePool::new_volume_xml(const std::string& name, std::uint64_t capacity,
                                        const std::string& format) {
  return fmt::format(
      "<volume><name>{}</name><capacity unit='bytes'>{}</capacity><target><format type='{}'/>"
      "</target></volume>",
      xml_escape(name), capacity, xml_escape(format));
}

void StoragePool::create_empty(const std::string& name, std::uint64_t capacity,
                               const std::string& format) const {
  create_volume(new_volume_xml(name, capacity, format), name);
}

std::uint64_t StoragePool::capacity_of(const std::string& name) const {
  auto volume = find_volume(pool_.get(), name, uri_);
  if (!volume) {
    throw BackendError(
        fmt::format("libvirt: storage pool '{}' on {} has no volume '{}'", name_, uri_, name));
  }
  virStorageVolInfo info{};
  if (virStorageVolGetInfo(volume->get(), &info) < 0) {
    fail(fmt::format("libvirt: could not read the size of volume '{}'", name), uri_);
  }
  return info.capacity;
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

TemporaryVolume::TemporaryVolume(const StoragePool& pool, std::string name)
    : pool_(pool), name_(std::move(name)) {}

TemporaryVolume::~TemporaryVolume() {
  try {
    pool_.remove(name_);
  } catch (const std::exception& error) {
    spdlog::warn("vmfest: could not remove volume '{}': {}", name_, error.what());
  }
}

void remove_once_allocated(const StoragePool& pool, const std::string& name) {
  constexpr std::chrono::milliseconds kAllocationPoll{200};
  constexpr std::chrono::minutes kAllocationWait{1};
  const auto deadline = std::chrono::steady_clock::now() + kAllocationWait;
  for (;;) {
    try {
      pool.remove(name);
      return;
    } catch (const BackendError& error) {
      const bool allocating =
          std::string_view(error.what()).find("still being allocated") != std::string_view::npos;
      if (!allocating || std::chrono::steady_clock::now() > deadline) throw;
    }
    std::this_thread::sleep_for(kAllocationPoll);
  }
}

bool StoragePool::create_marker(const std::string& name) const {
  return try_create_volume(raw_volume_xml(name, 0));
}

std::string StoragePool::volume_xml(const std::string& name) const {
  auto volume = find_volume(pool_.get(), name, uri_);
  if (!volume) return "";
  char* xml = virStorageVolGetXMLDesc(volume->get(), 0);
  if (xml == nullptr) return "";
  std::string text(xml);
  std::free(xml);  // NOLINT(cppcoreguidelines-no-malloc): libvirt's allocation
  return text;
}

std::optional<std::chrono::system_clock::time_point> StoragePool::modified(
    const std::string& name) const {
  return timestamp_in(volume_xml(name), "mtime");
}

std::chrono::system_clock::time_point StoragePool::host_now() const {
  const std::string probe = "vmfest-clock-" + random_token();
  if (!create_marker(probe))
    fail(fmt::format("libvirt: could not create volume '{}'", probe), uri_);
  const auto now = modified(probe);
  remove(probe);
  if (!now) {
    fail(
        fmt::format("libvirt: volume '{}' of pool '{}' shows no time it was written", probe, name_),
        uri_, "vmfest needs a folder ('dir') storage pool");
  }
  return *now;
}

std::string random_token() {
  static std::mutex mutex;
  static std::mt19937_64 random{std::random_device{}()};
  const std::lock_guard lock(mutex);
  return fmt::format("{:016x}", random());
}

std::string model_disk_volume_name(const Model& model) {
  const std::string content = model.sha256.empty() ? model.name : model.sha256.substr(0, 16);
  return fmt::format("model-{}-disk.{}", content, model.format);
}

std::string boot_file_volume_name(const fs::path& file, const std::string& part) {
  return fmt::format("model-{}-{}", sha256_file(file).substr(0, 16), part);
}

}  // namespace vmfest::detail::libvirt
