#include "command.h"

#include <algorithm>
#include <charconv>
#include <utility>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "shell.h"
#include "vmfest/error.h"

namespace vmfest::ssh::detail {
namespace {

using namespace std::chrono_literals;

constexpr std::size_t kInputChunk = 256u << 10;
// Killing a timed-out command gets this long at most (and never more than the I/O timeout).
constexpr milliseconds kKillBudget = 5s;

// Standard input on its way to the guest, never written beyond the channel window.
class InputFeed {
 public:
  explicit InputFeed(const ExecRequest& request)
      : source_(request.input_source ? &request.input_source : nullptr),
        pending_(source_ != nullptr ? std::string_view() : request.input) {}

  // Lock held: writes what the window allows; sends EOF once everything is out.
  void write(Connection& connection, ChannelState& channel) {
    if (done_) return;
    if (channel.closed || channel.exit_status || channel.exit_signal) {
      done_ = true;  // the command is over: whatever it did not read stays unread
      return;
    }
    while (!pending_.empty()) {
      const uint32_t window = ssh_channel_window_size(channel.channel);
      if (window == 0) break;
      const auto size = static_cast<uint32_t>(std::min<std::size_t>(pending_.size(), window));
      const int written = ssh_channel_write(channel.channel, pending_.data(), size);
      if (written < 0) {
        done_ = true;  // the guest closed its end of stdin, like a broken pipe
        return;
      }
      pending_.remove_prefix(static_cast<std::size_t>(written));
      if (written == 0) break;
    }
    if (pending_.empty() && (source_ == nullptr || source_done_)) {
      ssh_channel_send_eof(channel.channel);
      done_ = true;
    }
    connection.flush_writes();
  }

  [[nodiscard]] bool wants_refill() const noexcept {
    return !done_ && pending_.empty() && source_ != nullptr && !source_done_;
  }

  // Without the lock: pulls the next chunk from the source.
  void refill() {
    buffer_.resize(kInputChunk);
    const std::size_t filled = (*source_)(std::span<char>(buffer_.data(), buffer_.size()));
    buffer_.resize(std::min(filled, buffer_.size()));
    source_done_ = filled == 0;
    pending_ = buffer_;
  }

  [[nodiscard]] bool can_write(ChannelState& channel) const {
    return !done_ && !pending_.empty() && ssh_channel_window_size(channel.channel) > 0;
  }

 private:
  const InputSource* source_;
  std::string_view pending_;
  std::string buffer_;
  bool source_done_ = false;
  bool done_ = false;
};

// Splits the pid line (see wrap_command) off the front of stdout. A first line without the
// prefix is the guest's own output (a forced command in authorized_keys, a login shell's banner
// that ran instead of ours): it is passed on whole.
class PidLine {
 public:
  explicit PidLine(bool expected) : expected_(expected) {}

  std::string strip(std::string chunk) {
    if (!expected_) return chunk;
    line_ += chunk;
    const bool maybe_prefix = kPidPrefix.starts_with(
        std::string_view(line_).substr(0, std::min(line_.size(), kPidPrefix.size())));
    const auto newline = line_.find('\n');
    if (maybe_prefix && newline == std::string::npos) return {};
    expected_ = false;
    long pid = 0;
    const char* digits = line_.data() + kPidPrefix.size();
    if (!maybe_prefix || newline < kPidPrefix.size() ||
        std::from_chars(digits, line_.data() + newline, pid).ec != std::errc()) {
      return std::exchange(line_, {});
    }
    pid_ = pid;
    std::string rest = line_.substr(newline + 1);
    line_.clear();
    return rest;
  }

  // What was held back when the output ended (a short line that only began like the prefix).
  std::string flush() { return std::exchange(line_, {}); }

  [[nodiscard]] std::optional<long> pid() const noexcept { return pid_; }

 private:
  bool expected_;
  std::string line_;
  std::optional<long> pid_;
};

void kill_group(Connection& connection, long pid) {
  ExecRequest kill;
  kill.display = "kill";
  kill.command_line = kill_command(pid);
  kill.wrapped = false;
  kill.timeout = std::min(kKillBudget, connection.io_timeout());
  execute(connection, kill);
}

[[noreturn]] void throw_stopped(const Connection& connection, const ExecRequest& request) {
  throw SshError(
      fmt::format("`{}` on {} was stopped by its caller", request.display, connection.describe()));
}

}  // namespace

ExecOutcome execute(Connection& connection, const ExecRequest& request) {
  const auto deadline =
      request.timeout ? Clock::now() + *request.timeout : Clock::time_point::max();
  const auto setup_deadline = std::min(deadline, connection.io_deadline());
  InputFeed input(request);
  PidLine pid_line(request.wrapped);
  Channel channel;
  bool finished = false;
  if (request.stop.stop_requested()) throw_stopped(connection, request);  // do not even start it
  const std::stop_callback wake_on_stop(request.stop, [&connection] { connection.wake_waiters(); });
  try {
    auto lock = connection.lock();
    channel = connection.open_session_channel(lock, setup_deadline, 1);
    connection.request_exec(lock, *channel, request.command_line, setup_deadline);
    while (true) {
      // Thrown inside, so that the handler below kills the command.
      if (request.stop.stop_requested()) throw_stopped(connection, request);
      connection.pull_output(*channel);
      std::string out = std::exchange(channel->out, {});
      std::string err = std::exchange(channel->err, {});
      input.write(connection, *channel);
      finished =
          channel->finished() && channel->out.empty() && channel->err.empty() && !channel->backlog;
      const bool refill = input.wants_refill();
      if (!out.empty() || !err.empty() || refill) {
        lock.unlock();
        out = pid_line.strip(std::move(out));
        if (!out.empty() && request.on_stdout) request.on_stdout(out);
        if (!err.empty() && request.on_stderr) request.on_stderr(err);
        if (refill) input.refill();
        lock.lock();
        continue;
      }
      if (finished) {
        if (std::string held = pid_line.flush(); !held.empty() && request.on_stdout) {
          lock.unlock();
          request.on_stdout(held);
          lock.lock();
        }
        break;
      }
      const bool news = connection.wait_until(lock, deadline, [&] {
        return !channel->out.empty() || !channel->err.empty() || channel->backlog ||
               channel->finished() || input.can_write(*channel) || request.stop.stop_requested();
      });
      if (!news) break;
    }
    if (finished) {
      if (channel->exit_signal) return {-1, channel->exit_signal};
      if (channel->exit_status) return {*channel->exit_status, std::nullopt};
      throw SshError(
          fmt::format("`{}` on {} ended without an exit status (its channel was "
                      "closed early)",
                      request.display, connection.describe()));
    }
  } catch (...) {
    // The caller gives up on the command (its sink threw, or the connection failed): do not
    // leave it running in the guest.
    if (!finished && pid_line.pid()) {
      try {
        kill_group(connection, *pid_line.pid());
      } catch (const std::exception& error) {
        spdlog::warn("vmfest: could not kill `{}` (pid {}) on {}: {}", request.display,
                     *pid_line.pid(), connection.describe(), error.what());
      }
    }
    throw;
  }

  std::string outcome = "its process id had not arrived yet, so it may still be running";
  if (pid_line.pid()) {
    try {
      kill_group(connection, *pid_line.pid());
      outcome = fmt::format("it was killed with all its child processes (pid {})", *pid_line.pid());
    } catch (const SshError& error) {
      outcome = fmt::format("killing it (pid {}) failed: {}", *pid_line.pid(), error.what());
    }
  }
  throw SshTimeoutError(fmt::format("`{}` on {} did not finish within {} ms; {}", request.display,
                                    connection.describe(), request.timeout->count(), outcome));
}

}  // namespace vmfest::ssh::detail
