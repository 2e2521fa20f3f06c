#include "naming.h"

#include <fmt/format.h>

#include "leases.h"

namespace vmfest::detail::libvirt {

std::string home_prefix(const Home& home) { return fmt::format("vmfest-{}-", home.id()); }

std::optional<std::string> domain_of_volume(const std::string& volume) {
  if (!volume.starts_with("vmfest-") || volume.starts_with(kWarmPrefix)) return std::nullopt;
  if (const auto lease = parse_lease_marker(volume)) return lease->domain;
  for (const std::string_view suffix : {kDiskSuffix, kSeedSuffix, kStateSuffix, kExportSuffix}) {
    if (volume.ends_with(suffix) && volume.size() > suffix.size()) {
      return volume.substr(0, volume.size() - suffix.size());
    }
  }
  return std::nullopt;
}

}  // namespace vmfest::detail::libvirt
