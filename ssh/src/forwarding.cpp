// Port forwarding: host-side listeners and guest-side (remote) listeners whose connections are
// tunnelled through channels, all served by the connection's I/O thread.
#include "forwarding.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "vmfest/error.h"

namespace vmfest::ssh::detail {
namespace {

// Bytes from the guest a tunnel buffers before the channel window holds the guest back.
constexpr std::size_t kTunnelBufferLimit = 1u << 20;
// libssh resolves the address of a remote listen request inside the guest's sshd.
constexpr const char* kGuestListenAddress = "localhost";

// A host-side TCP socket to host:port, connecting in the background.
UniqueFd start_connect(const std::string& host, int port, bool& in_progress) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  addrinfo* found = nullptr;
  const std::string service = std::to_string(port);
  if (::getaddrinfo(host.c_str(), service.c_str(), &hints, &found) != 0 || found == nullptr) {
    return UniqueFd();
  }
  std::unique_ptr<addrinfo, decltype(&::freeaddrinfo)> owner(found, ::freeaddrinfo);
  UniqueFd socket(::socket(found->ai_family, found->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
                           found->ai_protocol));
  if (!socket) return socket;
  if (::connect(socket.get(), found->ai_addr, found->ai_addrlen) == 0) {
    in_progress = false;
    return socket;
  }
  if (errno != EINPROGRESS) return UniqueFd();
  in_progress = true;
  return socket;
}

}  // namespace

std::pair<int, int> Connection::add_local_forward(const std::string& guest_host, int guest_port) {
  auto listener = std::make_unique<LocalListener>();
  listener->socket = UniqueFd(::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = 0;  // the kernel picks a free port: tests run in parallel
  socklen_t length = sizeof address;
  if (!listener->socket ||
      ::bind(listener->socket.get(), reinterpret_cast<sockaddr*>(&address), sizeof address) != 0 ||
      ::listen(listener->socket.get(), SOMAXCONN) != 0 ||
      ::getsockname(listener->socket.get(), reinterpret_cast<sockaddr*>(&address), &length) != 0) {
    throw SshError(fmt::format("cannot listen on 127.0.0.1 for a forward to port {} of {}: {}",
                               guest_port, describe(), std::strerror(errno)));
  }
  listener->port = ntohs(address.sin_port);
  listener->guest_host = guest_host;
  listener->guest_port = guest_port;

  Lock guard = lock();
  throw_if_broken();
  listener->id = next_forward_id_++;
  const std::pair<int, int> result{listener->id, listener->port};
  local_listeners_.push_back(std::move(listener));
  wake();
  return result;
}

std::pair<int, int> Connection::add_remote_forward(int guest_port, const std::string& host,
                                                   int host_port) {
  // libssh keeps the state of one global request per session: one request at a time.
  std::lock_guard one_request(global_request_mutex_);
  Lock guard = lock();
  throw_if_broken();
  auto lingering =
      std::find(lingering_guest_ports_.begin(), lingering_guest_ports_.end(), guest_port);
  if (guest_port != 0 && lingering != lingering_guest_ports_.end()) {
    // The guest still listens there for us (see remove_forward): take the port over again.
    lingering_guest_ports_.erase(lingering);
    return register_remote(guest_port, host, host_port);
  }
  int bound_port = 0;
  complete(
      guard, io_deadline(), fmt::format("a request to listen on its port {} for us", guest_port),
      [&] {
        return ssh_channel_listen_forward(session(), kGuestListenAddress, guest_port, &bound_port);
      },
      "; the port may be taken, or the guest's sshd forbids remote forwarding (dropbear -k)");
  return register_remote(guest_port != 0 ? guest_port : bound_port, host, host_port);
}

std::pair<int, int> Connection::register_remote(int guest_port, const std::string& host,
                                                int host_port) {
  auto listener = std::make_unique<RemoteListener>();
  listener->id = next_forward_id_++;
  listener->guest_port = guest_port;
  listener->host = host;
  listener->host_port = host_port;
  const std::pair<int, int> result{listener->id, listener->guest_port};
  remote_listeners_.push_back(std::move(listener));
  wake();
  return result;
}

void Connection::remove_forward(int id) noexcept {
  try {
    std::lock_guard one_request(global_request_mutex_);
    Lock guard = lock();
    std::erase_if(tunnels_, [id](const auto& tunnel) { return tunnel->forward_id == id; });
    std::erase_if(local_listeners_, [id](const auto& listener) { return listener->id == id; });
    wake();
    auto remote = std::find_if(remote_listeners_.begin(), remote_listeners_.end(),
                               [id](const auto& listener) { return listener->id == id; });
    if (remote == remote_listeners_.end()) return;
    const int guest_port = (*remote)->guest_port;
    remote_listeners_.erase(remote);
    if (broken_) return;
    try {
      complete(guard, io_deadline(),
               fmt::format("a request to stop listening on its port {}", guest_port), [&] {
                 return ssh_channel_cancel_forward(session(), kGuestListenAddress, guest_port);
               });
    } catch (const SshError& error) {
      if (broken_) return;  // the connection, and the guest's port with it, is gone anyway
      // dropbear before 2024.84 cannot match cancel requests: its port stays open until the
      // connection ends. Connections to it are refused (no listener), and a later forward of
      // the same port takes it over.
      lingering_guest_ports_.push_back(guest_port);
      spdlog::debug("vmfest: {}", error.what());
    }
  } catch (const std::exception& error) {
    spdlog::warn("vmfest: could not remove a port forward of {}: {}", describe(), error.what());
  }
}

void Connection::accept_local(LocalListener& listener) {
  while (true) {
    sockaddr_in peer{};
    socklen_t length = sizeof peer;
    UniqueFd socket(::accept4(listener.socket.get(), reinterpret_cast<sockaddr*>(&peer), &length,
                              SOCK_NONBLOCK | SOCK_CLOEXEC));
    if (!socket) return;    // EAGAIN: all accepted
    if (broken_) continue;  // closing it tells the client at once
    auto tunnel = std::make_unique<Tunnel>();
    tunnel->forward_id = listener.id;
    tunnel->socket = std::move(socket);
    auto state = new_channel_state(kTunnelBufferLimit, kTunnelBufferLimit);
    state->tunnel = true;
    state->opening = true;
    tunnel->channel = Channel(state);
    const int rc = ssh_channel_open_forward(state->channel, listener.guest_host.c_str(),
                                            listener.guest_port, "127.0.0.1", ntohs(peer.sin_port));
    if (rc == SSH_ERROR) {
      spdlog::warn("vmfest: {} refused a tunnel to {}:{}: {}", describe(), listener.guest_host,
                   listener.guest_port, ssh_get_error(session()));
      continue;
    }
    if (rc == SSH_OK) state->opening = false;
    tunnels_.push_back(std::move(tunnel));
  }
}

void Connection::accept_remote() {
  while (true) {
    int port = 0;
    int originator_port = 0;
    char* originator = nullptr;
    ssh_channel raw =
        ssh_channel_open_forward_port(session(), 0, &port, &originator, &originator_port);
    CString originator_owner(originator);
    if (raw == nullptr) return;
    auto listener =
        std::find_if(remote_listeners_.begin(), remote_listeners_.end(),
                     [port](const auto& candidate) { return candidate->guest_port == port; });
    auto state = adopt_channel(raw, kTunnelBufferLimit, kTunnelBufferLimit);
    state->tunnel = true;
    auto tunnel = std::make_unique<Tunnel>();
    tunnel->channel = Channel(state);
    if (listener == remote_listeners_.end()) continue;  // a forward being removed: drop it
    tunnel->forward_id = (*listener)->id;
    tunnel->socket = start_connect((*listener)->host, (*listener)->host_port, tunnel->connecting);
    if (!tunnel->socket) {
      spdlog::warn("vmfest: cannot connect to {}:{} for a connection from the guest: {}",
                   (*listener)->host, (*listener)->host_port, std::strerror(errno));
      continue;  // the guest's client sees the channel close
    }
    tunnels_.push_back(std::move(tunnel));
  }
}

void Connection::serve_tunnel(Tunnel& tunnel, short revents) {
  ChannelState& channel = *tunnel.channel;
  if (broken_ || channel.channel == nullptr) {
    tunnel.done = true;
    return;
  }
  if (channel.opening) {
    const int rc = continue_open(channel.channel);
    if (rc == SSH_AGAIN) return;
    channel.opening = false;
    if (rc != SSH_OK) {
      spdlog::warn("vmfest: {} refused a tunnel: {}", describe(), ssh_get_error(session()));
      tunnel.done = true;
      return;
    }
  }
  const int fd = tunnel.socket.get();
  if (tunnel.connecting) {
    if ((revents & (POLLOUT | POLLERR | POLLHUP)) == 0) return;
    int error = 0;
    socklen_t length = sizeof error;
    ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &length);
    if (error != 0) {
      spdlog::warn("vmfest: a connection from the guest could not reach its host service: {}",
                   std::strerror(error));
      tunnel.done = true;
      return;
    }
    tunnel.connecting = false;
  }

  // Host to guest, never more than the channel window, so libssh never has to wait for it.
  const uint32_t window = channel.closed ? 0 : ssh_channel_window_size(channel.channel);
  if (!tunnel.socket_eof && window > 0 && (revents & (POLLIN | POLLHUP | POLLERR)) != 0) {
    std::array<char, 65536> chunk{};
    const ssize_t n = ::recv(fd, chunk.data(), std::min<std::size_t>(chunk.size(), window), 0);
    if (n > 0) {
      if (ssh_channel_write(channel.channel, chunk.data(), static_cast<uint32_t>(n)) != n) {
        tunnel.done = true;
        return;
      }
    } else if (n == 0) {
      ssh_channel_send_eof(channel.channel);
      tunnel.socket_eof = true;
    } else if (errno != EAGAIN && errno != EINTR) {
      tunnel.done = true;
      return;
    }
  }

  // Guest to host.
  pull_output(channel);
  if (!channel.out.empty()) {
    const ssize_t n = ::send(fd, channel.out.data(), channel.out.size(), MSG_NOSIGNAL);
    if (n > 0) {
      channel.out.erase(0, static_cast<std::size_t>(n));
    } else if (n < 0 && errno != EAGAIN && errno != EINTR) {
      tunnel.done = true;
      return;
    }
  }
  if (channel.out.empty() && !channel.backlog && (channel.eof || channel.closed)) {
    if (!tunnel.write_shut) ::shutdown(fd, SHUT_WR);
    tunnel.write_shut = true;
    if (channel.closed || tunnel.socket_eof) tunnel.done = true;
  }
}

}  // namespace vmfest::ssh::detail
