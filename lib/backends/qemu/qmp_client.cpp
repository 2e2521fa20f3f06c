#include "qmp_client.h"

#include "unix_socket.h"

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <fmt/format.h>

#include "vmfest/error.h"

namespace vmfest::detail::qemu {
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

QmpClient QmpClient::try_connect(const fs::path& socket,
                                 std::chrono::milliseconds timeout) noexcept {
  try {
    return connect(socket, timeout);
  } catch (const Error&) {
    return QmpClient(-1);
  }
}

QmpClient QmpClient::connect(const fs::path& socket, std::chrono::milliseconds timeout) {
  int fd = connect_unix(socket);
  if (fd < 0) {
    throw BackendError(
        fmt::format("cannot connect to QMP socket {}: {}", socket.string(), std::strerror(errno)));
  }
  QmpClient client(fd);
  auto deadline = Clock::now() + timeout;
  nlohmann::json greeting = client.read_message(deadline);
  if (!greeting.contains("QMP")) {
    throw BackendError(
        fmt::format("unexpected QMP greeting on {}: {}", socket.string(), greeting.dump()));
  }
  client.execute("qmp_capabilities", nlohmann::json::object(), timeout);
  return client;
}

QmpClient::QmpClient(QmpClient&& other) noexcept
    : fd_(other.fd_), buffer_(std::move(other.buffer_)) {
  other.fd_ = -1;
}

QmpClient& QmpClient::operator=(QmpClient&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = other.fd_;
    buffer_ = std::move(other.buffer_);
    other.fd_ = -1;
  }
  return *this;
}

QmpClient::~QmpClient() {
  if (fd_ >= 0) ::close(fd_);
}

nlohmann::json QmpClient::read_message(Clock::time_point deadline) {
  while (true) {
    if (auto newline = buffer_.find('\n'); newline != std::string::npos) {
      std::string line = buffer_.substr(0, newline);
      buffer_.erase(0, newline + 1);
      if (line.find_first_not_of(" \r\t") == std::string::npos) continue;
      auto message = nlohmann::json::parse(line, nullptr, false);
      if (message.is_discarded()) {
        throw BackendError(fmt::format("QEMU sent a QMP message that is not JSON: {}", line));
      }
      return message;
    }
    pollfd poller{fd_, POLLIN, 0};
    int ready = ::poll(&poller, 1, remaining_millis(deadline));
    if (ready < 0 && errno == EINTR) continue;
    if (ready <= 0) throw BackendError("QEMU did not answer on its QMP socket in time");
    char chunk[4096];
    ssize_t n = ::read(fd_, chunk, sizeof(chunk));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) throw BackendError("QEMU closed its QMP socket (the VM process has exited)");
    buffer_.append(chunk, static_cast<std::size_t>(n));
  }
}

nlohmann::json QmpClient::execute(const std::string& command, const nlohmann::json& arguments,
                                  std::chrono::milliseconds timeout) {
  if (fd_ < 0) throw BackendError("QMP client is not connected");
  nlohmann::json request = {{"execute", command}};
  if (!arguments.empty()) request["arguments"] = arguments;
  std::string wire = request.dump() + "\n";
  for (std::size_t sent = 0; sent < wire.size();) {
    ssize_t n = ::send(fd_, wire.data() + sent, wire.size() - sent, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw BackendError("QEMU closed its QMP socket (the VM process has exited)");
    sent += static_cast<std::size_t>(n);
  }
  auto deadline = Clock::now() + timeout;
  while (true) {
    nlohmann::json reply = read_message(deadline);
    if (reply.contains("return")) return reply["return"];
    if (reply.contains("error")) {
      throw BackendError(fmt::format("QMP command '{}' failed: {}", command,
                                     reply["error"].value("desc", reply["error"].dump())));
    }
    // Anything else is an asynchronous event (SHUTDOWN, STOP, ...): not our answer.
  }
}

}  // namespace vmfest::detail::qemu
