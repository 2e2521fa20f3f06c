#include "guest_port_watch.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>

namespace vmfest::detail::qemu {
using Clock = std::chrono::steady_clock;

bool GuestPortWatch::guest_spoke() {
  // A guest whose port is closed resets each connection: at most one new one a second.
  if (fd_ < 0) {
    if (Clock::now() < next_connect_) return false;
    next_connect_ = Clock::now() + std::chrono::milliseconds(1000);
    if (!connect()) return false;
  }
  char byte = 0;
  const ssize_t n = ::recv(fd_, &byte, 1, MSG_PEEK);
  if (n > 0) return true;
  // Closed (QEMU gave up on the guest's side): try again on the next call.
  if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != ENOTCONN)) disconnect();
  return false;
}

bool GuestPortWatch::connect() {
  fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd_ < 0) return false;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<std::uint16_t>(port_));
  if (::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 &&
      errno != EINPROGRESS) {
    disconnect();
    return false;
  }
  return true;
}

void GuestPortWatch::disconnect() noexcept {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

}  // namespace vmfest::detail::qemu
