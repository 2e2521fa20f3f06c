// A QMP (QEMU Machine Protocol) client: JSON over the instance's unix socket.
#pragma once

#include <chrono>
#include <filesystem>
#include <string>

#include <nlohmann/json.hpp>

namespace vmfest::detail::qemu {

class QmpClient {
 public:
  // Connects and negotiates capabilities; throws BackendError on failure or after `timeout`.
  static QmpClient connect(const std::filesystem::path& socket, std::chrono::milliseconds timeout);
  // Tries once without throwing; an unconnected client when the socket is not (yet) there.
  static QmpClient try_connect(const std::filesystem::path& socket,
                               std::chrono::milliseconds timeout) noexcept;

  QmpClient(QmpClient&& other) noexcept;
  QmpClient& operator=(QmpClient&& other) noexcept;
  QmpClient(const QmpClient&) = delete;
  QmpClient& operator=(const QmpClient&) = delete;
  ~QmpClient();

  [[nodiscard]] bool connected() const noexcept { return fd_ >= 0; }

  // Runs a command and returns its "return" value; BackendError carries QMP's error description.
  nlohmann::json execute(const std::string& command,
                         const nlohmann::json& arguments = nlohmann::json::object(),
                         std::chrono::milliseconds timeout = std::chrono::seconds(10));

 private:
  explicit QmpClient(int fd) : fd_(fd) {}
  nlohmann::json read_message(std::chrono::steady_clock::time_point deadline);
  int fd_ = -1;
  std::string buffer_;
};

}  // namespace vmfest::detail::qemu
