#include "unix_socket.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include <fmt/format.h>

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

int remaining_millis(std::chrono::steady_clock::time_point deadline) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
      deadline - std::chrono::steady_clock::now());
  return static_cast<int>(std::max<std::chrono::milliseconds::rep>(0, left.count()));
}

}  // namespace vmfest::detail::qemu
