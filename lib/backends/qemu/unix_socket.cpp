#include "unix_socket.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>

#include <fmt/format.h>

#include "vmfest/error.h"

namespace vmfest::detail::qemu {

int connect_unix(const std::filesystem::path& socket_path) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  int directory_fd = -1;
  std::string address = socket_path.string();
  sockaddr_un addr{};
  if (address.size() >= sizeof(addr.sun_path)) {
    directory_fd = ::open(socket_path.parent_path().c_str(), O_PATH | O_CLOEXEC);
    address = fmt::format("/proc/self/fd/{}/{}", directory_fd, socket_path.filename().string());
  }
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, address.c_str(), sizeof(addr.sun_path) - 1);
  int rc = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  int saved = errno;
  if (directory_fd >= 0) ::close(directory_fd);
  if (rc != 0) {
    ::close(fd);
    errno = saved;
    return -1;
  }
  return fd;
}

std::string exchange_line(const std::filesystem::path& socket_path, const std::string& request,
                          std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  const int fd = connect_unix(socket_path);
  if (fd < 0) {
    throw BackendError(
        fmt::format("cannot reach {}: {}", socket_path.string(), std::strerror(errno)));
  }
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  for (std::size_t sent = 0; sent < request.size();) {
    const ssize_t n = ::send(fd, request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw BackendError(fmt::format("{} closed while sending", socket_path.string()));
    sent += static_cast<std::size_t>(n);
  }
  std::string reply;
  while (reply.find('\n') == std::string::npos) {
    pollfd poller{fd, POLLIN, 0};
    const int ready = ::poll(&poller, 1, remaining_millis(deadline));
    if (ready < 0 && errno == EINTR) continue;
    if (ready <= 0) {
      throw BackendError(
          fmt::format("no reply on {} within {} ms", socket_path.string(), timeout.count()));
    }
    std::array<char, 256> chunk{};
    const ssize_t n = ::read(fd, chunk.data(), chunk.size());
    if (n <= 0) {
      throw BackendError(fmt::format("{} closed before the reply", socket_path.string()));
    }
    reply.append(chunk.data(), static_cast<std::size_t>(n));
  }
  return reply.substr(0, reply.find('\n'));
}

int remaining_millis(std::chrono::steady_clock::time_point deadline) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
      deadline - std::chrono::steady_clock::now());
  return static_cast<int>(std::max<std::chrono::milliseconds::rep>(0, left.count()));
}

}  // namespace vmfest::detail::qemu
