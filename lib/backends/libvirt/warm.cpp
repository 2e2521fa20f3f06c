#include "warm.h"

#include <signal.h>

#include <cerrno>
#include <cstring>
#include <set>

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <nlohmann/json.hpp>

#include "naming.h"
#include "vmfest/error.h"
#include "vmfest/internal/base.h"
#include "vmfest/internal/driver.h"

namespace vmfest::detail::libvirt {
namespace fs = std::filesystem;

namespace {

// libvirt's save image (src/qemu/qemu_saveimage.h, version 2): a 92-byte header, then data_len
// bytes holding the domain XML (NUL-terminated), the migration cookie at cookie_offset within
// them (NUL-terminated) and zeros, then QEMU's migration stream.
constexpr std::string_view kSaveMagic = "LibvirtQemudSave";
constexpr std::size_t kHeaderSize = 92;
constexpr std::size_t kVersionAt = 16;
constexpr std::size_t kDataLengthAt = 20;
constexpr std::size_t kCookieOffsetAt = 32;

std::uint32_t read_u32(const std::string& bytes, std::size_t at) {
  std::uint32_t value = 0;
  std::memcpy(&value, bytes.data() + at, sizeof(value));  // little-endian, as libvirt writes it
  return value;
}

void write_u32(std::string& bytes, std::size_t at, std::uint32_t value) {
  std::memcpy(bytes.data() + at, &value, sizeof(value));
}

// Makes the save image `name` restore as the clone `spec`: its XML rewritten in place.
void make_state_the_clones(const StoragePool& pool, const std::string& name,
                           const WarmVolumes& volumes, const DomainSpec& spec) {
  std::string header = pool.read(name, 0, kHeaderSize);
  if (header.size() != kHeaderSize || header.compare(0, kSaveMagic.size(), kSaveMagic) != 0 ||
      read_u32(header, kVersionAt) != 2) {
    throw BackendError(fmt::format(
        "libvirt: volume '{}' on {} is no libvirt save image of the version vmfest knows", name,
        pool.uri()));
  }
  const std::uint32_t data_length = read_u32(header, kDataLengthAt);
  const std::string data = pool.read(name, kHeaderSize, data_length);
  const std::size_t cookie_at = read_u32(header, kCookieOffsetAt);
  if (data.size() != data_length || cookie_at >= data.size()) {
    throw BackendError(
        fmt::format("libvirt: the save image '{}' on {} is cut short", name, pool.uri()));
  }
  const std::string xml = clone_domain_xml(data.c_str(), volumes.domain, spec);
  const std::string cookie = data.c_str() + cookie_at;
  std::string rewritten = xml + '\0' + cookie + '\0';
  if (rewritten.size() > data_length) {
    throw BackendError(
        fmt::format("libvirt: the XML of clone '{}' does not fit the save image '{}' on {}",
                    spec.name, name, pool.uri()));
  }
  rewritten.resize(data_length, '\0');
  write_u32(header, kCookieOffsetAt, static_cast<std::uint32_t>(xml.size() + 1));
  pool.overwrite_start(name, header + rewritten);
}

}  // namespace

std::string warm_volume_prefix(const std::string& home_id) {
  return fmt::format("{}{}-", kWarmPrefix, home_id);
}

WarmVolumes plan_warm_volumes(const fs::path& image_directory, const std::string& home_id,
                              const std::string& uri, const std::string& domain) {
  const std::string stem = warm_volume_prefix(home_id) + random_token();
  WarmVolumes volumes{uri, stem + kWarmStateSuffix, stem + kWarmBaseSuffix, domain};
  const nlohmann::json record = {{"uri", volumes.uri},
                                 {"state", volumes.state},
                                 {"base", volumes.base},
                                 {"domain", volumes.domain}};
  write_text_atomically(image_directory / kWarmVolumesFile, record.dump(2), 0600);
  return volumes;
}

WarmVolumes read_warm_volumes(const fs::path& image_directory) {
  const fs::path file = image_directory / kWarmVolumesFile;
  try {
    const auto record = nlohmann::json::parse(read_text(file));
    return {record.at("uri"), record.at("state"), record.at("base"), record.at("domain")};
  } catch (const nlohmann::json::exception& error) {
    throw BackendError(
        fmt::format("{} is not a libvirt warm image's record: {}", file.string(), error.what()));
  }
}

std::vector<std::string> unused_warm_volumes(const fs::path& models_folder,
                                             const std::string& home_id,
                                             const std::vector<std::string>& volume_names) {
  std::set<std::string> named;
  std::error_code error;
  for (const auto& model : fs::directory_iterator(models_folder, error)) {
    for (const auto& image : fs::directory_iterator(model.path() / "warm", error)) {
      const std::string folder = image.path().filename().string();
      // A build's staging folder, ".building-<image>-<pid>", counts while its process lives.
      if (folder.starts_with(".building-")) {
        const pid_t pid = std::atoi(folder.substr(folder.rfind('-') + 1).c_str());
        if (pid <= 0 || (::kill(pid, 0) != 0 && errno != EPERM)) continue;
      }
      if (!fs::exists(image.path() / kWarmVolumesFile)) continue;
      try {
        const WarmVolumes volumes = read_warm_volumes(image.path());
        named.insert(volumes.state);
        named.insert(volumes.base);
      } catch (const BackendError& unreadable) {
        spdlog::warn("vmfest: {}", unreadable.what());
      }
    }
  }
  std::vector<std::string> unused;
  const std::string prefix = warm_volume_prefix(home_id);
  for (const std::string& name : volume_names) {
    if (name.starts_with(prefix) && !named.contains(name)) unused.push_back(name);
  }
  return unused;
}

void save_state(virDomainPtr domain, const StoragePool& pool, const WarmVolumes& volumes) {
  // A volume first, for a path inside the pool that libvirt writes the save image to.
  pool.remove(volumes.state);
  pool.create_empty(volumes.state, 0, "raw");
  const std::string path = pool.path_of(volumes.state);
  if (virDomainSaveFlags(domain, path.c_str(), nullptr, VIR_DOMAIN_SAVE_PAUSED) < 0) {
    fail(fmt::format("libvirt: could not save domain '{}' to volume '{}'", volumes.domain,
                     volumes.state),
         pool.uri());
  }
  // The pool learns the state's size, which a copy of it reads. libvirt refuses while another
  // process's upload or copy runs in the pool ("asynchronous jobs running"): that ends.
  constexpr std::chrono::minutes kPoolBusy{2};
  if (!poll_until(kPoolBusy, std::chrono::milliseconds(200),
                  [&] { return virStoragePoolRefresh(pool.handle(), 0) == 0; })) {
    fail(fmt::format("libvirt: could not refresh storage pool '{}' within {} minutes", pool.name(),
                     kPoolBusy.count()),
         pool.uri());
  }
}

void save_domain(virDomainPtr domain, const StoragePool& pool, const WarmVolumes& volumes,
                 const std::string& disk_volume) {
  save_state(domain, pool, volumes);
  pool.remove(volumes.base);
  pool.create_copy(volumes.base, disk_volume);
  pool.remove(disk_volume);  // the domain's clone after the save makes its own
}

Domain restore_saved(virConnectPtr connection, const StoragePool& pool,
                     const WarmVolumes& volumes) {
  const std::string path = pool.path_of(volumes.state);
  if (virDomainRestoreFlags(connection, path.c_str(), nullptr, VIR_DOMAIN_SAVE_RUNNING) < 0) {
    fail(fmt::format("libvirt: could not restore domain '{}' from volume '{}'", volumes.domain,
                     volumes.state),
         pool.uri());
  }
  auto domain = find_domain(connection, volumes.domain, pool.uri());
  if (!domain) {
    throw BackendError(fmt::format("libvirt: domain '{}' is gone from {} right after its restore",
                                   volumes.domain, pool.uri()));
  }
  return std::move(*domain);
}

void remove_warm_volumes(const StoragePool& pool, const WarmVolumes& volumes) noexcept {
  for (const std::string& volume : {volumes.state, volumes.base}) {
    try {
      pool.remove(volume);
    } catch (const std::exception& error) {
      spdlog::warn("vmfest: could not remove volume '{}' on {}: {}", volume, pool.uri(),
                   error.what());
    }
  }
}

namespace {

// The copy is made before the volume that removes it is owned.
std::string copied_state(const StoragePool& pool, const WarmVolumes& volumes,
                         const std::string& name) {
  pool.remove(name);
  pool.create_copy(name, volumes.state, "raw");
  return name;
}

}  // namespace

StateCopy::StateCopy(const StoragePool& pool, const WarmVolumes& volumes, const std::string& name)
    : volume_(pool, copied_state(pool, volumes, name)) {}

Domain restore_clone(virConnectPtr connection, const StoragePool& pool, const WarmVolumes& volumes,
                     const StateCopy& state, const DomainSpec& spec) {
  make_state_the_clones(pool, state.name(), volumes, spec);
  const std::string path = pool.path_of(state.name());
  if (virDomainRestoreFlags(connection, path.c_str(), nullptr, VIR_DOMAIN_SAVE_RUNNING) < 0) {
    return nullptr;
  }
  return find_domain(connection, spec.name, pool.uri()).value_or(nullptr);
}

}  // namespace vmfest::detail::libvirt
