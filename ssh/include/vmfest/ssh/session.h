// The SSH handle a test holds: one authenticated libssh session into a guest, host key pinned.
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

namespace vmfest::ssh {

struct Endpoint {
  std::string host = "127.0.0.1";
  int port = 22;
  std::string user = "root";
};

struct Credentials {
  std::string client_private_key;  // OpenSSH format; never logged
  std::string pinned_host_key;     // "ssh-ed25519 AAAA...": the only host key accepted
};

struct CommandResult {
  std::string stdout_text;
  std::string stderr_text;
  int exit_status = -1;               // -1 when the command was killed by a signal
  std::optional<std::string> signal;  // e.g. "KILL" when the remote command died of a signal

  [[nodiscard]] bool ok() const noexcept { return exit_status == 0; }
};

struct RunOptions {
  std::optional<std::chrono::milliseconds> timeout;  // kills the remote command, then throws
};

class Session {
 public:
  // Connects and authenticates, or throws SshError / SshAuthError / HostKeyMismatchError.
  static Session connect(const Endpoint& endpoint, const Credentials& credentials,
                         std::chrono::milliseconds timeout = std::chrono::seconds(10));

  Session(Session&&) noexcept;
  Session& operator=(Session&&) noexcept;
  ~Session();

  // Runs `command` with /bin/sh in the guest and collects its output and exit status.
  CommandResult run(std::string_view command, const RunOptions& options = {});

  // Like run(), but throws CommandFailedError (command, status, stderr tail) unless it exits 0.
  CommandResult check(std::string_view command, const RunOptions& options = {});

  [[nodiscard]] const Endpoint& endpoint() const noexcept;

 private:
  struct Impl;
  explicit Session(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace vmfest::ssh
