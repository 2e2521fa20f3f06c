#include "vmfest/ssh/session.h"

#include <mutex>
#include <thread>

#include <fmt/format.h>

#include "command.h"
#include "connection.h"
#include "shell.h"
#include "transfer.h"
#include "vmfest/error.h"

namespace vmfest::ssh {
namespace {

using namespace std::chrono_literals;
using detail::Clock;
using detail::Connection;
using std::chrono::milliseconds;

constexpr milliseconds kDefaultIoTimeout = 30s;
// One connection attempt while waiting for a guest to come back: short, so a boot is noticed soon.
constexpr milliseconds kReconnectAttempt = 1500ms;

// The end of a command's output for an error message: the part that usually says why.
std::string quoted_tail(const std::string& text) {
  constexpr std::size_t kMaxChars = 2000;
  if (text.empty()) return "(none)";
  return text.size() <= kMaxChars ? text : "..." + text.substr(text.size() - kMaxChars);
}

// Hands complete lines to a sink as output arrives; the last line may lack its '\n'.
class LineSplitter {
 public:
  explicit LineSplitter(const LineSink& sink) : sink_(sink) {}

  void feed(std::string_view chunk) {
    if (!sink_) return;
    pending_ += chunk;
    std::size_t start = 0;
    for (auto newline = pending_.find('\n'); newline != std::string::npos;
         newline = pending_.find('\n', start)) {
      sink_(std::string_view(pending_).substr(start, newline - start));
      start = newline + 1;
    }
    pending_.erase(0, start);
  }

  void finish() {
    if (sink_ && !pending_.empty()) sink_(pending_);
    pending_.clear();
  }

 private:
  const LineSink& sink_;
  std::string pending_;
};

CommandResult run_on(Connection& connection, std::string_view command, const RunOptions& options) {
  CommandResult result;
  LineSplitter out_lines(options.on_stdout_line);
  LineSplitter err_lines(options.on_stderr_line);
  detail::ExecRequest request;
  request.display = command;
  request.command_line =
      detail::wrap_command(command, options.working_directory, options.environment);
  request.timeout = options.timeout;
  request.input = options.input;
  request.input_source = options.input_source;
  request.stop = options.stop;
  request.on_stdout = [&](std::string_view chunk) {
    if (options.capture_output) result.stdout_text += chunk;
    if (options.on_stdout_bytes) options.on_stdout_bytes(chunk);
    out_lines.feed(chunk);
  };
  request.on_stderr = [&](std::string_view chunk) {
    if (options.capture_output) result.stderr_text += chunk;
    if (options.on_stderr_bytes) options.on_stderr_bytes(chunk);
    err_lines.feed(chunk);
  };
  const detail::ExecOutcome outcome = detail::execute(connection, request);
  out_lines.finish();
  err_lines.finish();
  result.exit_status = outcome.exit_status;
  result.signal = outcome.signal;
  return result;
}

std::string trimmed(std::string text) {
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) text.pop_back();
  return text;
}

}  // namespace

struct Session::Impl {
  Endpoint endpoint;
  Credentials credentials;
  std::atomic<milliseconds> io_timeout{kDefaultIoTimeout};
  mutable std::mutex mutex;  // guards `connection`
  std::shared_ptr<Connection> connection;

  [[nodiscard]] std::string describe() const {
    return fmt::format("{}@{}:{}", endpoint.user, endpoint.host, endpoint.port);
  }

  [[nodiscard]] std::shared_ptr<Connection> current() const {
    std::lock_guard guard(mutex);
    if (!connection) {
      throw SshError(
          fmt::format("not connected to {}: the last reconnect failed; call "
                      "reconnect() once the guest is up",
                      describe()));
    }
    return connection;
  }

  // Ends the current connection: whatever still runs on it fails with `reason`.
  void drop(const std::string& reason) {
    std::shared_ptr<Connection> old;
    {
      std::lock_guard guard(mutex);
      old = std::move(connection);
    }
    if (!old) return;
    auto lock = old->lock();
    old->fail(reason, false);
  }

  void install(std::shared_ptr<Connection> fresh) {
    std::lock_guard guard(mutex);
    connection = std::move(fresh);
  }

  // Connects, retrying until `deadline` (the guest may still be booting). Key and host-key
  // refusals are final: waiting does not change them.
  std::shared_ptr<Connection> connect_until(Clock::time_point deadline) {
    std::string last_error = "no attempt finished";
    while (true) {
      const auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now());
      if (left <= 0ms) break;
      try {
        return Connection::open(endpoint, credentials, std::min(left, kReconnectAttempt),
                                io_timeout.load());
      } catch (const SshAuthError&) {
        throw;
      } catch (const HostKeyMismatchError&) {
        throw;
      } catch (const SshError& error) {
        last_error = error.what();
      }
      std::this_thread::sleep_for(100ms);
    }
    throw SshTimeoutError(
        fmt::format("could not reconnect to {} in time; last error: {}", describe(), last_error));
  }
};

Session::Session(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Session::Session(Session&&) noexcept = default;
Session& Session::operator=(Session&&) noexcept = default;
Session::~Session() = default;

const Endpoint& Session::endpoint() const noexcept { return impl_->endpoint; }

std::string Session::host_key() const { return impl_->current()->host_key(); }

Session Session::connect(const Endpoint& endpoint, const Credentials& credentials,
                         milliseconds timeout) {
  auto impl = std::make_unique<Impl>();
  impl->endpoint = endpoint;
  impl->credentials = credentials;
  impl->connection = Connection::open(endpoint, credentials, timeout, kDefaultIoTimeout);
  return Session(std::move(impl));
}

CommandResult Session::run(std::string_view command, const RunOptions& options) {
  return run_on(*impl_->current(), command, options);
}

CommandResult Session::check(std::string_view command, const RunOptions& options) {
  CommandResult result = run(command, options);
  if (!result.ok()) {
    const std::string how = result.signal
                                ? fmt::format("was killed by signal {}", *result.signal)
                                : fmt::format("exited with status {}", result.exit_status);
    throw CommandFailedError(
        fmt::format("`{}` on {} {}; stdout: {}; stderr: {}", command, impl_->describe(), how,
                    quoted_tail(result.stdout_text), quoted_tail(result.stderr_text)),
        result.exit_status);
  }
  return result;
}

void Session::upload(const std::filesystem::path& local, const std::string& remote,
                     const TransferOptions& options) {
  detail::upload(*impl_->current(), local, remote, options.method);
}

void Session::download(const std::string& remote, const std::filesystem::path& local,
                       const TransferOptions& options) {
  detail::download(*impl_->current(), remote, local, options.method);
}

std::string Session::read_file(const std::string& remote, const TransferOptions& options) {
  return detail::read_remote_file(*impl_->current(), remote, options.method);
}

void Session::write_file(const std::string& remote, std::string_view content, int mode,
                         const TransferOptions& options) {
  detail::write_remote_file(*impl_->current(), remote, content, mode, options.method);
}

LocalForward Session::forward_local(int guest_port, const std::string& guest_host) {
  auto connection = impl_->current();
  const auto [id, port] = connection->add_local_forward(guest_host, guest_port);
  return LocalForward(connection, id, port, guest_port);
}

RemoteForward Session::forward_remote(int guest_port, const std::string& host, int host_port) {
  auto connection = impl_->current();
  const auto [id, bound_port] = connection->add_remote_forward(guest_port, host, host_port);
  return RemoteForward(connection, id, bound_port);
}

void Session::reconnect(milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  impl_->drop(fmt::format("the session to {} reconnected; work on the old connection was cut off",
                          impl_->describe()));
  impl_->install(impl_->connect_until(deadline));
}

void Session::reboot(milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  const std::string boot_id = trimmed(check("cat /proc/sys/kernel/random/boot_id").stdout_text);
  RunOptions quick;
  quick.timeout = 10s;
  try {
    // A login other than root (a distro image's) reboots through sudo.
    check("if [ \"$(id -u)\" = 0 ]; then reboot; else sudo -n reboot; fi", quick);
  } catch (const CommandFailedError& error) {
    if (error.exit_status() >= 0) throw;  // `reboot` itself failed; a signal is the shutdown's
  } catch (const SshError&) {
    // Expected: the guest may take the connection down before `reboot` reports back.
  }
  impl_->drop(fmt::format("{} is rebooting", impl_->describe()));
  while (true) {
    // Until its shutdown stops sshd, the old system accepts connections, then kills them at any
    // step: while authenticating (a retry inside connect_until), or while the boot id is read. Only
    // a boot id read in full, and different, is the new system.
    auto fresh = impl_->connect_until(deadline);
    std::string id;
    try {
      const CommandResult result = run_on(*fresh, "cat /proc/sys/kernel/random/boot_id", {});
      if (result.ok()) id = trimmed(result.stdout_text);
    } catch (const SshError&) {
      // The old system let us in, then went down under the connection.
    }
    if (!id.empty() && id != boot_id) {
      impl_->install(std::move(fresh));
      return;
    }
    fresh.reset();
    if (Clock::now() >= deadline) {
      throw SshTimeoutError(
          fmt::format("{} did not reboot within {} ms", impl_->describe(), timeout.count()));
    }
    std::this_thread::sleep_for(200ms);
  }
}

void Session::set_io_timeout(milliseconds timeout) {
  impl_->io_timeout = timeout;
  impl_->current()->set_io_timeout(timeout);
}

milliseconds Session::io_timeout() const { return impl_->io_timeout.load(); }

// ---- forwards -----------------------------------------------------------------------------------

namespace detail {

ForwardHandle::ForwardHandle(std::weak_ptr<Connection> connection, int id)
    : connection_(std::move(connection)), id_(id) {}

ForwardHandle::ForwardHandle(ForwardHandle&& other) noexcept
    : connection_(std::exchange(other.connection_, {})), id_(other.id_) {}

ForwardHandle& ForwardHandle::operator=(ForwardHandle&& other) noexcept {
  if (this != &other) {
    close();
    connection_ = std::exchange(other.connection_, {});
    id_ = other.id_;
  }
  return *this;
}

ForwardHandle::~ForwardHandle() { close(); }

void ForwardHandle::close() noexcept {
  if (auto connection = connection_.lock()) connection->remove_forward(id_);
  connection_.reset();
}

}  // namespace detail

}  // namespace vmfest::ssh
