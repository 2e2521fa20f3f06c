// The SSH handle a test holds: one authenticated libssh connection into a guest (host key pinned,
// per-instance client key), shared by commands, file transfers and port forwards, from any thread.
#pragma once

#include <chrono>
#include <cstddef>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <stop_token>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace vmfest::ssh {

namespace detail {
class Connection;
}

struct Endpoint {
  std::string host = "127.0.0.1";
  int port = 22;
  std::string user = "root";
  // A command whose standard input and output reach host:port (e.g. `ssh -W host:port jump`), for
  // a guest that is reachable only through another machine; empty: connect over TCP.
  std::string proxy_command;
};

struct Credentials {
  std::string client_private_key;  // OpenSSH or PEM format; never logged
  std::string pinned_host_key;     // "ssh-ed25519 AAAA...": the only host key accepted
  // Password authentication, when there is no client key (an appliance's published password);
  // never logged.
  std::string password;
  // Any host key of any type is accepted instead of the pinned one. Only for the first login to
  // an image with published credentials, whose host key cannot be known in advance: the caller
  // reads it with Session::host_key() and pins a fresh one from then on.
  bool accept_any_host_key = false;
};

struct CommandResult {
  std::string stdout_text;
  std::string stderr_text;
  int exit_status = -1;               // -1 when the command was killed by a signal
  std::optional<std::string> signal;  // e.g. "KILL" when the remote command died of a signal

  [[nodiscard]] bool ok() const noexcept { return exit_status == 0; }
};

// Feeds a command's standard input as the guest consumes it: fills `buffer` and returns how many
// bytes it wrote; 0 ends the input.
using InputSource = std::function<std::size_t(std::span<char> buffer)>;
// Receives a command's output one line at a time (without its '\n') while the command runs.
using LineSink = std::function<void(std::string_view line)>;
// Receives a command's output as it arrives, byte for byte (a pass-through to a terminal or file).
using OutputSink = std::function<void(std::string_view bytes)>;

struct RunOptions {
  // Kills the remote command (its whole process group) when it runs longer, then throws
  // SshTimeoutError. Without one, only the session's I/O timeout applies: a guest that stops
  // answering (paused, hung) fails the command; a quiet but live command may run forever.
  std::optional<std::chrono::milliseconds> timeout;
  std::string working_directory;                                 // empty: the user's home
  std::vector<std::pair<std::string, std::string>> environment;  // exported for the command
  std::string input;         // standard input, then end of input; ignored with input_source
  InputSource input_source;  // standard input streamed from the host
  LineSink on_stdout_line;   // called on the calling thread, never under an internal lock
  LineSink on_stderr_line;
  OutputSink on_stdout_bytes;  // the same output unsplit, as it arrives (same thread)
  OutputSink on_stderr_bytes;
  // A stop request (from any thread, e.g. on Ctrl-C) kills the remote command (its whole process
  // group) and makes run() throw SshError at once.
  std::stop_token stop;
  bool capture_output = true;  // false: output goes only to the line sinks (long, chatty jobs)
};

enum class TransferMethod {
  automatic,  // SFTP when the guest offers it, otherwise commands (`cat`) over exec channels
  sftp,       // SFTP only; SshError when the guest has no SFTP server
  exec,       // commands only (cat, stat, mkdir, chmod), for guests without an SFTP server
};

struct TransferOptions {
  TransferMethod method = TransferMethod::automatic;
};

namespace detail {
// What LocalForward and RemoteForward share: the forward is removed from its connection (and its
// tunnels closed) when the handle goes away.
class ForwardHandle {
 public:
  ForwardHandle(ForwardHandle&& other) noexcept;
  ForwardHandle& operator=(ForwardHandle&& other) noexcept;
  ~ForwardHandle();

 protected:
  ForwardHandle(std::weak_ptr<Connection> connection, int id);

 private:
  void close() noexcept;
  std::weak_ptr<Connection> connection_;
  int id_ = 0;
};
}  // namespace detail

// A TCP port on the host's 127.0.0.1 that reaches a port inside the guest through the SSH
// connection. Connections are served by the session's I/O thread until this object goes away.
// It ends with the connection it was made on (reconnect() and reboot() end it).
class LocalForward : public detail::ForwardHandle {
 public:
  [[nodiscard]] int port() const noexcept { return port_; }  // the host port, on 127.0.0.1
  [[nodiscard]] int guest_port() const noexcept { return guest_port_; }

 private:
  friend class Session;
  LocalForward(std::weak_ptr<detail::Connection> connection, int id, int port, int guest_port)
      : ForwardHandle(std::move(connection), id), port_(port), guest_port_(guest_port) {}
  int port_;
  int guest_port_;
};

// A port on the guest's loopback interface whose connections come out on the host side at
// host:host_port ("reverse" forwarding, like ssh -R). Same lifetime rules as LocalForward.
class RemoteForward : public detail::ForwardHandle {
 public:
  [[nodiscard]] int guest_port() const noexcept { return guest_port_; }

 private:
  friend class Session;
  RemoteForward(std::weak_ptr<detail::Connection> connection, int id, int guest_port)
      : ForwardHandle(std::move(connection), id), guest_port_(guest_port) {}
  int guest_port_;
};

class Session {
 public:
  // Connects and authenticates, or throws SshError / SshAuthError / HostKeyMismatchError.
  // No ~/.ssh/config, known_hosts file or agent is consulted: only `credentials` count.
  static Session connect(const Endpoint& endpoint, const Credentials& credentials,
                         std::chrono::milliseconds timeout = std::chrono::seconds(10));

  Session(Session&&) noexcept;
  Session& operator=(Session&&) noexcept;
  ~Session();

  // Runs `command` with the user's shell in the guest and collects its output and exit status.
  // Safe to call from many threads at once: the commands run concurrently on one connection.
  CommandResult run(std::string_view command, const RunOptions& options = {});

  // Like run(), but throws CommandFailedError (command, status, stderr tail) unless it exits 0.
  CommandResult check(std::string_view command, const RunOptions& options = {});

  // Copies a file or a directory tree (regular files and directories; anything else is an
  // error) with its permission bits. The destination path names the copy. Sizes are checked.
  void upload(const std::filesystem::path& local, const std::string& remote,
              const TransferOptions& options = {});
  void download(const std::string& remote, const std::filesystem::path& local,
                const TransferOptions& options = {});
  // Small files as strings.
  std::string read_file(const std::string& remote, const TransferOptions& options = {});
  void write_file(const std::string& remote, std::string_view content, int mode = 0644,
                  const TransferOptions& options = {});

  // Port forwarding. `guest_host` is resolved inside the guest; `host` on the host.
  [[nodiscard]] LocalForward forward_local(int guest_port,
                                           const std::string& guest_host = "127.0.0.1");
  // guest_port 0 lets the guest's sshd choose; RemoteForward::guest_port() tells which.
  [[nodiscard]] RemoteForward forward_remote(int guest_port, const std::string& host,
                                             int host_port);

  // Drops the connection and makes a new one (same pinned host key and client key), retrying
  // until `timeout`. Commands still running on the old connection fail with SshError.
  void reconnect(std::chrono::milliseconds timeout = std::chrono::seconds(30));
  // Reboots the guest (through `sudo -n` for a login other than root) and returns once it is
  // back (a new boot id) and connected again; SshTimeoutError after `timeout`.
  void reboot(std::chrono::milliseconds timeout = std::chrono::seconds(120));

  // The bound on every wait for the guest (opening channels, each SFTP request, killing a
  // command) and on how long the guest may stay silent while a command runs (it is probed with
  // keep-alive requests meanwhile). Default 30 s.
  void set_io_timeout(std::chrono::milliseconds timeout);
  [[nodiscard]] std::chrono::milliseconds io_timeout() const;

  [[nodiscard]] const Endpoint& endpoint() const noexcept;
  // The host key the guest offered on the current connection ("ssh-ed25519 AAAA...").
  [[nodiscard]] std::string host_key() const;

 private:
  struct Impl;
  explicit Session(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace vmfest::ssh
