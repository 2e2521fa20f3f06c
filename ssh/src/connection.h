// One SSH connection shared by many threads (private to the ssh component).
//
// libssh is not thread-safe per session, so every libssh call happens under `Connection::lock()`,
// but nobody holds that lock while waiting for the guest: the session is in non-blocking mode,
// an I/O thread polls the socket and lets libssh dispatch what arrives to per-channel callbacks,
// and waiters sleep on a condition variable. The same thread serves port forwards, frees
// channels their owners are done with, probes a silent guest, and cuts the rare blocking libssh
// call (SFTP) that outlives its deadline.
#pragma once

#include <libssh/callbacks.h>
#include <libssh/libssh.h>
#include <libssh/sftp.h>
#include <poll.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <vector>

#include "libssh_handles.h"
#include "vmfest/ssh/session.h"

namespace vmfest::ssh::detail {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

class Connection;

// What the guest sent on one channel. libssh callbacks fill it, under the connection lock.
struct ChannelState {
  Connection* connection = nullptr;
  ssh_channel channel = nullptr;  // freed by the connection once `abandoned`
  ssh_channel_callbacks_struct callbacks{};
  std::string out;  // received on stdout and not yet taken by the owner
  std::string err;
  // Callbacks take at most this much; the rest waits in libssh, whose window then stops the
  // sender (back-pressure). 0 for stdout leaves it all to libssh readers such as SFTP.
  std::size_t out_limit = 0;
  std::size_t err_limit = 0;
  bool tunnel = false;   // carries a port forward: the I/O thread must hear about new data
  bool backlog = false;  // the callbacks left data in libssh (limit reached): pull_output()
  bool opening = false;  // a channel-open request is still unanswered
  bool eof = false;
  bool closed = false;
  std::optional<int> exit_status;
  std::optional<std::string> exit_signal;
  std::atomic<bool> abandoned{false};

  // The remote command is over and all its output arrived.
  [[nodiscard]] bool finished() const noexcept {
    return closed || (eof && (exit_status.has_value() || exit_signal.has_value()));
  }
};

// The owner's reference to a channel: the connection frees the channel once this goes away.
class Channel {
 public:
  Channel() = default;
  explicit Channel(std::shared_ptr<ChannelState> state) : state_(std::move(state)) {}
  Channel(Channel&&) noexcept = default;
  Channel& operator=(Channel&&) noexcept;
  ~Channel();

  ChannelState* operator->() const noexcept { return state_.get(); }
  ChannelState& operator*() const noexcept { return *state_; }
  [[nodiscard]] ssh_channel raw() const noexcept { return state_->channel; }
  explicit operator bool() const noexcept { return state_ != nullptr; }

 private:
  void release() noexcept;
  std::shared_ptr<ChannelState> state_;
};

// The connection's SFTP client, opened on first use (see transfer.cpp).
struct SftpLink {
  SftpLink() = default;
  SftpLink(const SftpLink&) = delete;
  SftpLink& operator=(const SftpLink&) = delete;
  ~SftpLink();
  Channel channel;
  sftp_session sftp = nullptr;  // owns channel.raw() once created
};

// Continues a pending non-blocking channel open: SSH_AGAIN until the guest answers. (libssh only
// waits for the answer once the request is sent, so this fits every channel type.)
inline int continue_open(ssh_channel channel) { return ssh_channel_open_session(channel); }

class Connection {
 public:
  using Lock = std::unique_lock<std::timed_mutex>;

  // Connects, checks the pinned host key, authenticates and starts the I/O thread.
  static std::shared_ptr<Connection> open(const Endpoint& endpoint, const Credentials& credentials,
                                          milliseconds connect_timeout, milliseconds io_timeout);
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;
  ~Connection();

  [[nodiscard]] Lock lock();
  [[nodiscard]] const Endpoint& endpoint() const noexcept { return endpoint_; }
  [[nodiscard]] std::string describe() const;  // user@host:port, for messages
  // The host key the guest offered ("type base64").
  [[nodiscard]] const std::string& host_key() const noexcept { return host_key_; }
  [[nodiscard]] milliseconds io_timeout() const noexcept { return io_timeout_.load(); }
  void set_io_timeout(milliseconds timeout) noexcept { io_timeout_ = timeout; }
  [[nodiscard]] Clock::time_point io_deadline() const { return Clock::now() + io_timeout(); }

  // The libssh session; only with the lock held.
  [[nodiscard]] ssh_session session() const noexcept { return session_.get(); }

  // Releases the lock until `done()` holds (re-checked whenever the guest sends something) or
  // `deadline` passes; returns done(). Throws SshError / SshTimeoutError if the connection
  // breaks meanwhile (lost, or the guest stopped answering).
  bool wait_until(Lock& lock, Clock::time_point deadline, const std::function<bool()>& done);
  // Throws if the connection is broken.
  void throw_if_broken() const;
  // Marks the connection unusable and wakes every waiter (they throw `reason`).
  void fail(std::string reason, bool timed_out);

  // Repeats a non-blocking libssh call (channel open, request) until the guest answers: throws
  // SshTimeoutError at `deadline`, SshError (naming `what`, then `refusal_hint`) if it refuses.
  void complete(Lock& lock, Clock::time_point deadline, std::string_view what,
                const std::function<int()>& call, std::string_view refusal_hint = "");
  // Opens a session channel, waiting at most until `deadline`. out_limit 0 leaves stdout to
  // libssh (for SFTP).
  Channel open_session_channel(Lock& lock, Clock::time_point deadline, std::size_t out_limit);
  // Sends an exec or subsystem request on `channel` and waits for the guest's answer.
  void request_exec(Lock& lock, ChannelState& channel, const std::string& command,
                    Clock::time_point deadline);
  void request_subsystem(Lock& lock, ChannelState& channel, const std::string& subsystem,
                         Clock::time_point deadline);
  // Moves output that waits in libssh (beyond the callbacks' limits) into the state.
  void pull_output(ChannelState& channel);
  // After writing to a channel: has the I/O thread send what libssh could not write yet.
  void flush_writes() noexcept;

  // Runs `call` with libssh in blocking mode (its own waits bounded by `deadline`); if it is
  // still inside past the deadline (libssh 0.10's SFTP reader retries timeouts forever), the
  // I/O thread shuts the socket down, which ends the call and the connection.
  template <class Call>
  auto blocking(Lock& lock, Clock::time_point deadline, Call&& call) {
    BlockingScope scope(*this, deadline);
    (void)lock;
    return call();
  }

  // The SFTP client of this connection, if one was opened (lock held).
  std::unique_ptr<SftpLink>& sftp_link() noexcept { return sftp_; }
  std::optional<std::string>& sftp_unavailable() noexcept { return sftp_unavailable_; }

  // Called by channel callbacks: something arrived, waiters should look.
  void note_progress(bool tunnel) noexcept;
  // Makes the I/O thread look at its work again (new forwards, channels to free...).
  void wake() noexcept;
  // Makes every wait_until() look at its condition again now (from any thread, lock not held):
  // for a condition that changed outside the connection, such as a stop request.
  void wake_waiters() noexcept;

  // Port forwards served by the I/O thread. Each returns {id, port}.
  std::pair<int, int> add_local_forward(const std::string& guest_host, int guest_port);
  std::pair<int, int> add_remote_forward(int guest_port, const std::string& host, int host_port);
  void remove_forward(int id) noexcept;

 private:
  struct Tunnel;
  struct LocalListener;
  struct RemoteListener;
  class BlockingScope {
   public:
    BlockingScope(Connection& connection, Clock::time_point deadline);
    ~BlockingScope();
    BlockingScope(const BlockingScope&) = delete;
    BlockingScope& operator=(const BlockingScope&) = delete;

   private:
    Connection& connection_;
  };

  Connection(Endpoint endpoint, SessionPtr session);
  std::shared_ptr<ChannelState> new_channel_state(std::size_t out_limit, std::size_t err_limit);
  std::pair<int, int> register_remote(int guest_port, const std::string& host, int host_port);
  // Registers a channel libssh made (e.g. one the guest opened) with our callbacks.
  std::shared_ptr<ChannelState> adopt_channel(ssh_channel channel, std::size_t out_limit,
                                              std::size_t err_limit);
  // Wakes waiters (and the I/O thread for tunnels) if callbacks noted progress; returns whether.
  bool flush_progress();

  // I/O thread.
  void serve();
  void serve_once(const std::unordered_map<int, short>& ready, std::uint64_t received_at_poll);
  void build_poll_set(std::vector<pollfd>& fds, int& timeout_ms);
  // Lets libssh read and dispatch what arrived (lock held).
  void pump(bool socket_was_readable, std::uint64_t received_at_poll);
  // A waiter's turn at polling the socket itself, until `until` or news.
  void watch_socket(Lock& lock, Clock::time_point until);
  void check_liveness();
  void cut_overdue_blocking_call() noexcept;
  void settle_abandoned_channels();
  void accept_local(LocalListener& listener);
  void accept_remote();
  void serve_tunnel(Tunnel& tunnel, short revents);
  void close_all() noexcept;

  Endpoint endpoint_;
  std::string host_key_;  // what the guest offered at login
  SessionPtr session_;
  ssh_event event_ = nullptr;
  ssh_counter_struct received_{};        // libssh counts incoming bytes here
  std::uint64_t received_seen_ = 0;      // by the liveness check
  std::uint64_t received_notified_ = 0;  // by flush_progress()
  UniqueFd socket_fd_;
  std::atomic<milliseconds> io_timeout_{std::chrono::seconds(30)};

  mutable std::timed_mutex mutex_;
  std::condition_variable_any changed_;
  UniqueFd wake_fd_;
  UniqueFd watcher_wake_fd_;
  std::atomic<bool> stopping_{false};
  std::atomic<Clock::rep> blocking_deadline_{Clock::time_point::max().time_since_epoch().count()};
  std::atomic<bool> blocking_call_cut_{false};

  // Guarded by mutex_.
  std::optional<std::string> broken_;
  bool broken_by_timeout_ = false;
  bool progress_ = false;
  bool tunnel_progress_ = false;
  int waiters_ = 0;
  bool socket_watcher_ = false;  // a waiter is in watch_socket()
  int readable_but_unread_ = 0;
  Clock::time_point quiet_since_ = Clock::now();
  ssh_channel probe_ = nullptr;
  std::vector<std::shared_ptr<ChannelState>> channels_;
  std::unique_ptr<SftpLink> sftp_;
  std::optional<std::string> sftp_unavailable_;
  std::vector<std::unique_ptr<LocalListener>> local_listeners_;
  std::vector<std::unique_ptr<RemoteListener>> remote_listeners_;
  std::vector<std::unique_ptr<Tunnel>> tunnels_;
  std::vector<int> lingering_guest_ports_;  // remote forwards the guest could not cancel
  int next_forward_id_ = 1;
  std::mutex global_request_mutex_;  // libssh tracks one pending global request per session

  std::thread io_thread_;
};

}  // namespace vmfest::ssh::detail
