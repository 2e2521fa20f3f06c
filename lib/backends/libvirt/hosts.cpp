#include "hosts.h"

#include <cctype>
#include <cstdlib>
#include <sstream>

#include <fmt/format.h>

#include "vmfest/error.h"
#include "vmfest/ssh/shell_quote.h"

namespace vmfest::detail::libvirt {

using ssh::shell_quote;

namespace {

// %XX escapes of a query value (a key file's path may hold spaces).
std::string percent_decode(const std::string& text) {
  std::string decoded;
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '%' && i + 2 < text.size() && std::isxdigit(text[i + 1]) != 0 &&
        std::isxdigit(text[i + 2]) != 0) {
      decoded += static_cast<char>(std::stoi(text.substr(i + 1, 2), nullptr, 16));
      i += 2;
    } else {
      decoded += text[i];
    }
  }
  return decoded;
}

[[noreturn]] void bad_uri(const std::string& uri, const std::string& why) {
  throw InvalidArgument(
      fmt::format("VMFEST_LIBVIRT_URI: '{}' is not a libvirt URI vmfest can use ({}); examples: "
                  "qemu:///system, qemu+ssh://ci@hv1/system?keyfile=/path/key",
                  uri, why));
}

}  // namespace

bool HostUri::local() const { return host.empty() || transport == "unix"; }

std::string HostUri::ssh_command(const std::string& options) const {
  const std::string ssh = command.empty() ? std::string("ssh") : shell_quote(command);
  std::string line = fmt::format("{} {} -o BatchMode=yes -T", ssh, options);
  if (port != 0) line += fmt::format(" -p {}", port);
  if (!user.empty()) line += " -l " + shell_quote(user);
  if (!keyfile.empty()) line += " -i " + shell_quote(keyfile);
  if (no_verify) {
    line += " -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR";
  } else if (!known_hosts.empty()) {
    line += " -o UserKnownHostsFile=" + shell_quote(known_hosts);
  }
  return line + " " + shell_quote(host);
}

std::string HostUri::jump_command(int guest_port, const std::string& control_socket) const {
  std::string options = fmt::format("-W 127.0.0.1:{}", guest_port);
  if (!control_socket.empty()) options += " -o ControlPath=" + shell_quote(control_socket);
  return ssh_command(options);
}

std::string HostUri::master_command(const std::string& control_socket) const {
  return ssh_command("-M -N -o ControlPersist=no -o ControlPath=" + shell_quote(control_socket));
}

HostUri parse_host_uri(const std::string& uri) {
  HostUri parsed;
  parsed.uri = uri;
  const auto scheme_end = uri.find("://");
  if (scheme_end == std::string::npos || scheme_end == 0) bad_uri(uri, "no scheme://");
  const std::string scheme = uri.substr(0, scheme_end);
  if (const auto plus = scheme.find('+'); plus != std::string::npos) {
    parsed.transport = scheme.substr(plus + 1);
  }
  std::string rest = uri.substr(scheme_end + 3);
  std::string query;
  if (const auto question = rest.find('?'); question != std::string::npos) {
    query = rest.substr(question + 1);
    rest.resize(question);
  }
  const std::string authority = rest.substr(0, rest.find('/'));
  std::string host_port = authority;
  if (const auto at = authority.rfind('@'); at != std::string::npos) {
    parsed.user = authority.substr(0, at);
    host_port = authority.substr(at + 1);
  }
  if (const auto colon = host_port.rfind(':');
      colon != std::string::npos && host_port.find(']') == std::string::npos) {
    try {
      parsed.port = std::stoi(host_port.substr(colon + 1));
    } catch (const std::exception&) {
      bad_uri(uri, "its port is not a number");
    }
    host_port.resize(colon);
  }
  parsed.host = host_port;
  if (!parsed.transport.empty() && parsed.transport != "unix" && parsed.host.empty()) {
    bad_uri(uri, "transport '" + parsed.transport + "' needs a host");
  }
  // Refused here, before any domain runs: without an SSH account no guest could be reached.
  if (!parsed.local() && parsed.transport != "ssh" && parsed.transport != "libssh") {
    bad_uri(uri, fmt::format("vmfest reaches a remote host's guests through SSH to that host, "
                             "and transport '{}' has no SSH account; use qemu+ssh://user@{}/system",
                             parsed.transport.empty() ? "tls" : parsed.transport, parsed.host));
  }
  std::istringstream pairs(query);
  for (std::string pair; std::getline(pairs, pair, '&');) {
    const auto equals = pair.find('=');
    const std::string key = pair.substr(0, equals);
    const std::string value =
        equals == std::string::npos ? "" : percent_decode(pair.substr(equals + 1));
    if (key == "keyfile") parsed.keyfile = value;
    if (key == "known_hosts") parsed.known_hosts = value;
    if (key == "no_verify") parsed.no_verify = value == "1";
    if (key == "command") parsed.command = value;
  }
  return parsed;
}

std::vector<HostUri> configured_hosts() {
  const char* value = std::getenv("VMFEST_LIBVIRT_URI");
  const std::string list = value != nullptr && *value != '\0' ? value : "qemu:///system";
  std::vector<HostUri> hosts;
  std::istringstream items(list);
  for (std::string item; std::getline(items, item, ',');) {
    if (!item.empty()) hosts.push_back(parse_host_uri(item));
  }
  if (hosts.empty()) bad_uri(list, "no URI in it");
  return hosts;
}

}  // namespace vmfest::detail::libvirt
