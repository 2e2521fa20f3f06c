// The libvirt hosts of VMFEST_LIBVIRT_URI and how to reach a guest on each.
#pragma once

#include <string>
#include <vector>

namespace vmfest::detail::libvirt {

// A libvirt connection URI, as far as vmfest needs to read it.
struct HostUri {
  std::string uri;
  std::string transport;    // "ssh", "libssh", "tcp", "tls", "unix" or "" (local)
  std::string user;         // of the SSH account, "" for the SSH default
  std::string host;         // "" for a local URI
  int port = 0;             // 0: the transport's default
  std::string keyfile;      // ?keyfile=
  std::string known_hosts;  // ?known_hosts=
  bool no_verify = false;   // ?no_verify=1
  std::string command;      // ?command=: the ssh program libvirt runs (default ssh)

  // True when the hypervisor is this machine, reached without a network transport: its VMs'
  // forwarded ports are on our own 127.0.0.1.
  [[nodiscard]] bool local() const;
  // The command that carries an SSH connection to 127.0.0.1:`port` on the host (OpenSSH's
  // `ssh -W` over the URI's own SSH account, through the URI's ssh command if it names one),
  // quoted for /bin/sh. With `control_socket`, through the master connection listening there if
  // one does (ssh_multiplexer.h), else with a login of its own.
  [[nodiscard]] std::string jump_command(int port, const std::string& control_socket = "") const;
  // The command of an OpenSSH master connection to the URI's SSH account that listens on
  // `control_socket` and ends with its process.
  [[nodiscard]] std::string master_command(const std::string& control_socket) const;

 private:
  // `ssh <options>` to the URI's account, with its port, user, key and host key checking.
  [[nodiscard]] std::string ssh_command(const std::string& options) const;
};

// Reads one URI; InvalidArgument when it is not of the form driver[+transport]://[user@]host/path,
// or names a remote host without an SSH account (tcp, tls): vmfest would have no way to its guests.
HostUri parse_host_uri(const std::string& uri);

// $VMFEST_LIBVIRT_URI split at commas (default "qemu:///system"), each parsed.
std::vector<HostUri> configured_hosts();

}  // namespace vmfest::detail::libvirt
