// Instance::Impl on a private segment: the card's address and the segment's /etc/hosts names,
// applied once the guest is ready, the same way whether it booted or resumed a warm image (whose
// card was plugged in after the resume).
#include <arpa/inet.h>

#include <cctype>
#include <iterator>
#include <mutex>
#include <set>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <spdlog/spdlog.h>

#include "instance_impl.h"
#include "vmfest/ssh/shell_quote.h"

namespace vmfest {

namespace detail {
namespace {

// The line end that marks vmfest's lines in /etc/hosts, so a later start replaces them.
constexpr const char* kHostsMark = "# vmfest-segment";
// A hot-plugged card appears in the guest within a second even under TCG on a loaded host; a
// guest whose kernel takes no hot-plugged PCI card never shows it.
constexpr int kCardWaitTenths = 300;

bool ipv4_address(const std::string& text) {
  in_addr parsed{};
  return ::inet_pton(AF_INET, text.c_str(), &parsed) == 1;
}

bool host_name(const std::string& name) {
  if (name.empty() || name.size() > 253 || name.front() == '-' || name.front() == '.') return false;
  for (const char c : name) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '.') return false;
  }
  return true;
}

std::string lowercase(std::string text) {
  for (char& c : text) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return text;
}

// A POSIX shell script (busybox or a distro's) that finds the card by MAC, gives it its address
// and writes the segment's names into /etc/hosts, replacing those of an earlier start.
std::string segment_script(const PrivateNic& nic) {
  std::string hosts_lines;
  for (const SegmentHost& host : nic.hosts) {
    fmt::format_to(std::back_inserter(hosts_lines), " {}",
                   ssh::shell_quote(fmt::format("{} {} {}", host.address,
                                                fmt::join(host.names, " "), kHostsMark)));
  }
  return fmt::format(
      "card=''; tries=0; "
      "while [ -z \"$card\" ]; do "
      "for dev in /sys/class/net/*; do "
      "[ \"$(cat \"$dev/address\" 2>/dev/null)\" = {mac} ] && card=${{dev##*/}}; done; "
      "[ -n \"$card\" ] && break; tries=$((tries+1)); "
      "if [ $tries -ge {tries} ]; then echo 'no network card with MAC '{mac}' appeared in {secs} "
      "s (no virtio-net driver, or a kernel that takes no hot-plugged PCI card)' >&2; exit 1; fi; "
      "sleep 0.1; done; "
      "ip addr flush dev \"$card\" && ip addr add {address}/{prefix} dev \"$card\" && "
      "ip link set \"$card\" up || exit 1; "
      "{{ grep -v ' {mark}$' /etc/hosts; printf '%s\\n'{hosts}; }} > /etc/hosts.vmfest && "
      "cat /etc/hosts.vmfest > /etc/hosts && rm -f /etc/hosts.vmfest",
      fmt::arg("mac", ssh::shell_quote(lowercase(nic.mac))), fmt::arg("tries", kCardWaitTenths),
      fmt::arg("secs", kCardWaitTenths / 10), fmt::arg("address", nic.address),
      fmt::arg("prefix", nic.prefix_length), fmt::arg("mark", kHostsMark),
      fmt::arg("hosts", hosts_lines.empty() ? std::string(" ''") : hosts_lines));
}

}  // namespace

void validate_private_nic(const PrivateNic& nic, const std::string& instance) {
  auto refuse = [&](const std::string& what) {
    throw InvalidArgument(fmt::format("the private card of instance '{}': {}", instance, what));
  };
  if (nic.address.empty()) {
    if (!nic.hosts.empty()) refuse("it lists /etc/hosts names but has no address of its own");
    return;
  }
  if (!ipv4_address(nic.address)) refuse(fmt::format("'{}' is no IPv4 address", nic.address));
  if (nic.prefix_length < 1 || nic.prefix_length > 32) {
    refuse(fmt::format("prefix length {} is not 1-32", nic.prefix_length));
  }
  for (const SegmentHost& host : nic.hosts) {
    if (!ipv4_address(host.address)) {
      refuse(fmt::format("hosts entry '{}' is no IPv4 address", host.address));
    }
    if (host.names.empty()) refuse(fmt::format("hosts entry {} has no name", host.address));
    for (const std::string& name : host.names) {
      if (!host_name(name)) {
        refuse(fmt::format("'{}' (for {}) is no host name: letters, digits, '-' and '.'", name,
                           host.address));
      }
    }
  }
}

bool warm_clones_join_segments(const Backend& backend) {
  if (backend.capabilities().private_nic_after_resume) return true;
  static std::mutex mutex;
  static std::set<std::string> told;
  const std::lock_guard lock(mutex);
  if (told.insert(backend.name()).second) {
    spdlog::info(
        "vmfest: backend '{}' cannot plug a private segment's card into a resumed warm clone: "
        "instances on a private segment boot cold",
        backend.name());
  }
  return false;
}

}  // namespace detail

void Instance::Impl::join_segment() {
  if (!record.private_nic || record.private_nic->address.empty()) return;
  const std::string script = detail::segment_script(*record.private_nic);
  const std::string quoted = ssh::shell_quote(script);
  if (!session) session.emplace(ssh::Session::connect(endpoint(), credentials));
  report_progress("segment");
  const ssh::CommandResult result = session->run(
      fmt::format("if [ \"$(id -u)\" = 0 ]; then sh -c {0}; else sudo -n sh -c {0}; fi", quoted));
  if (!result.ok()) {
    throw BackendError(fmt::format(
        "instance '{}' could not join its private segment as {}/{} (exit status {}): {}{}",
        record.name, record.private_nic->address, record.private_nic->prefix_length,
        result.exit_status, result.stderr_text, result.stdout_text));
  }
  clock.phase_done("segment");
}

}  // namespace vmfest
