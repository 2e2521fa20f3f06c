// Port-forward bookkeeping of a Connection, served by its I/O thread (see forwarding.cpp).
#pragma once

#include <sys/socket.h>

#include <string>

#include "connection.h"
#include "libssh_handles.h"

namespace vmfest::ssh::detail {

// Closing a socket another thread polls leaves it open until that poll returns (Linux keeps a
// reference); shutting it down first takes effect at once.
inline void shut_down(const UniqueFd& socket) noexcept {
  if (socket) ::shutdown(socket.get(), SHUT_RDWR);
}

// A host port on 127.0.0.1 whose connections are tunnelled to guest_host:guest_port.
struct Connection::LocalListener {
  LocalListener() = default;
  LocalListener(const LocalListener&) = delete;
  LocalListener& operator=(const LocalListener&) = delete;
  ~LocalListener() { shut_down(socket); }
  int id = 0;
  UniqueFd socket;
  int port = 0;
  std::string guest_host;
  int guest_port = 0;
};

// A port the guest's sshd listens on for us; its connections are tunnelled to host:host_port.
struct Connection::RemoteListener {
  int id = 0;
  int guest_port = 0;
  std::string host;
  int host_port = 0;
};

// One TCP connection carried by one channel. Bytes from the guest wait in channel->out.
struct Connection::Tunnel {
  Tunnel() = default;
  Tunnel(const Tunnel&) = delete;
  Tunnel& operator=(const Tunnel&) = delete;
  ~Tunnel() { shut_down(socket); }
  int forward_id = 0;
  UniqueFd socket;
  Channel channel;
  bool connecting = false;  // a reverse tunnel's connect() to the host service is in progress
  bool socket_eof = false;  // the host side finished sending; EOF went to the guest
  bool write_shut = false;  // the guest finished sending; the socket's write side is shut
  bool done = false;
};

}  // namespace vmfest::ssh::detail
