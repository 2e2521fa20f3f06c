#include "connection.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>

#include <algorithm>
#include <array>

#include <fmt/format.h>

#include "forwarding.h"
#include "login.h"
#include "vmfest/error.h"

namespace vmfest::ssh::detail {
namespace {

using namespace std::chrono_literals;

// How much output a channel's callbacks buffer before libssh's window holds the guest back.
constexpr std::size_t kChannelBufferLimit = 4u << 20;

// ---- libssh channel callbacks (run inside libssh calls, so under the connection lock) ---------

int on_data(ssh_session, ssh_channel, void* data, uint32_t length, int is_stderr, void* user) {
  auto& state = *static_cast<ChannelState*>(user);
  std::string& buffer = is_stderr != 0 ? state.err : state.out;
  const std::size_t limit = is_stderr != 0 ? state.err_limit : state.out_limit;
  const std::size_t room = limit > buffer.size() ? limit - buffer.size() : 0;
  const std::size_t taken = std::min<std::size_t>(length, room);
  buffer.append(static_cast<const char*>(data), taken);
  if (taken < length) state.backlog = true;
  if (taken > 0) state.connection->note_progress(state.tunnel);
  return static_cast<int>(taken);
}

void on_eof(ssh_session, ssh_channel, void* user) {
  auto& state = *static_cast<ChannelState*>(user);
  state.eof = true;
  state.connection->note_progress(state.tunnel);
}

void on_close(ssh_session, ssh_channel, void* user) {
  auto& state = *static_cast<ChannelState*>(user);
  state.closed = true;
  state.connection->note_progress(state.tunnel);
}

void on_exit_status(ssh_session, ssh_channel, int status, void* user) {
  auto& state = *static_cast<ChannelState*>(user);
  state.exit_status = status;
  state.connection->note_progress(state.tunnel);
}

// The guest's window grew: a waiting writer can go on.
int on_write_wontblock(ssh_session, ssh_channel, uint32_t, void* user) {
  auto& state = *static_cast<ChannelState*>(user);
  state.connection->note_progress(state.tunnel);
  return 0;
}

// libssh 0.10 has no ssh_channel_get_exit_signal(): this is the only way to learn the signal.
void on_exit_signal(ssh_session, ssh_channel, const char* signal, int, const char*, const char*,
                    void* user) {
  auto& state = *static_cast<ChannelState*>(user);
  state.exit_signal = signal != nullptr ? signal : "";
  state.connection->note_progress(state.tunnel);
}

}  // namespace

// ---- Channel ----------------------------------------------------------------------------------

Channel& Channel::operator=(Channel&& other) noexcept {
  if (this != &other) {
    release();
    state_ = std::move(other.state_);
  }
  return *this;
}

Channel::~Channel() { release(); }

void Channel::release() noexcept {
  if (!state_) return;
  state_->abandoned = true;
  state_->connection->wake();
  state_.reset();
}

SftpLink::~SftpLink() {
  if (sftp != nullptr) {
    // sftp_free() frees the channel: detach our callbacks first, they point into the state.
    ssh_remove_channel_callbacks(channel.raw(), &channel->callbacks);
    sftp_free(sftp);
    channel->channel = nullptr;
  }
}

// ---- Connection -------------------------------------------------------------------------------

std::shared_ptr<Connection> Connection::open(const Endpoint& endpoint,
                                             const Credentials& credentials,
                                             milliseconds connect_timeout,
                                             milliseconds io_timeout) {
  SessionPtr session = log_in(endpoint, credentials, connect_timeout);
  std::string host_key = offered_host_key(session.get());
  std::shared_ptr<Connection> connection(new Connection(endpoint, std::move(session)));
  connection->host_key_ = std::move(host_key);
  connection->set_io_timeout(io_timeout);
  return connection;
}

Connection::Connection(Endpoint endpoint, SessionPtr session)
    : endpoint_(std::move(endpoint)), session_(std::move(session)) {
  ssh_session s = session_.get();
  // Our own duplicate of the socket: the I/O thread polls it and may shut it down while libssh
  // (on another thread) might close its descriptor.
  socket_fd_ = UniqueFd(::fcntl(ssh_get_fd(s), F_DUPFD_CLOEXEC, 0));
  wake_fd_ = UniqueFd(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
  watcher_wake_fd_ = UniqueFd(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
  event_ = ssh_event_new();
  if (!socket_fd_ || !wake_fd_ || !watcher_wake_fd_ || event_ == nullptr ||
      ssh_event_add_session(event_, s) != SSH_OK) {
    if (event_ != nullptr) ssh_event_free(event_);
    throw SshError(fmt::format("cannot set up I/O for the connection to {}", describe()));
  }
  ssh_set_counters(s, &received_, nullptr);
  received_seen_ = received_.in_bytes;
  received_notified_ = received_.in_bytes;
  ssh_set_blocking(s, 0);
  io_thread_ = std::thread([this] { serve(); });
}

Connection::~Connection() {
  stopping_ = true;
  wake();
  if (io_thread_.joinable()) io_thread_.join();
  Lock guard(mutex_);
  close_all();
}

void Connection::close_all() noexcept {
  tunnels_.clear();
  local_listeners_.clear();
  remote_listeners_.clear();
  sftp_.reset();
  for (auto& state : channels_) {
    if (state->channel == nullptr) continue;
    ssh_remove_channel_callbacks(state->channel, &state->callbacks);
    ssh_channel_free(state->channel);
    state->channel = nullptr;
  }
  channels_.clear();
  if (probe_ != nullptr) ssh_channel_free(probe_);
  probe_ = nullptr;
  ssh_event_remove_session(event_, session_.get());
  ssh_event_free(event_);
  event_ = nullptr;
  session_.reset();
}

Connection::Lock Connection::lock() { return Lock(mutex_); }

std::string Connection::describe() const { return describe_endpoint(endpoint_); }

void Connection::wake() noexcept {
  const std::uint64_t one = 1;
  // A full counter already means "wake up": nothing to handle.
  [[maybe_unused]] auto written = ::write(wake_fd_.get(), &one, sizeof one);
}

void Connection::wake_waiters() noexcept {
  // Without the lock a waiter may miss the notification between its check and its wait; it then
  // looks again at the end of its slice (a second at most).
  changed_.notify_all();
  const std::uint64_t one = 1;
  [[maybe_unused]] auto written = ::write(watcher_wake_fd_.get(), &one, sizeof one);
}

void Connection::note_progress(bool tunnel) noexcept {
  progress_ = true;
  if (tunnel) tunnel_progress_ = true;
}

bool Connection::flush_progress() {
  // Channel confirmations and request answers change channel states without any callback:
  // every byte received may be news for someone.
  const bool progressed = progress_ || received_.in_bytes != received_notified_;
  received_notified_ = received_.in_bytes;
  if (progressed) {
    changed_.notify_all();
    if (socket_watcher_) {
      const std::uint64_t one = 1;
      [[maybe_unused]] auto written = ::write(watcher_wake_fd_.get(), &one, sizeof one);
    }
  }
  if (tunnel_progress_) wake();
  progress_ = false;
  tunnel_progress_ = false;
  return progressed;
}

bool Connection::wait_until(Lock& lock, Clock::time_point deadline,
                            const std::function<bool()>& done) {
  if (waiters_++ == 0) quiet_since_ = Clock::now();
  struct Leave {
    Connection& connection;
    ~Leave() {
      // If this waiter was watching the socket, another one should take over.
      if (--connection.waiters_ > 0) connection.changed_.notify_all();
    }
  } leave{*this};
  while (true) {
    const bool finished = done();
    // done() may have called into libssh, which may have delivered data to other waiters.
    const bool progressed = flush_progress();
    if (finished) return true;
    throw_if_broken();
    const auto now = Clock::now();
    if (now >= deadline) return false;
    if (progressed) continue;
    // Bounded slices: a far deadline (time_point::max) must not overflow inside the wait.
    const auto slice_end = std::min(deadline, now + std::chrono::seconds(1));
    if (socket_watcher_) {
      changed_.wait_until(lock, slice_end);
    } else {
      watch_socket(lock, slice_end);
    }
  }
}

void Connection::watch_socket(Lock& lock, Clock::time_point until) {
  // One waiter polls the socket itself and pumps: the guest's answer reaches it without a
  // detour through the I/O thread, which matters for round trips (window updates, replies).
  socket_watcher_ = true;
  std::array<pollfd, 2> fds{{{socket_fd_.get(), POLLIN, 0}, {watcher_wake_fd_.get(), POLLIN, 0}}};
  if ((ssh_get_poll_flags(session()) & SSH_WRITE_PENDING) != 0) fds[0].events |= POLLOUT;
  const std::uint64_t received_before = received_.in_bytes;
  lock.unlock();
  const auto left = std::chrono::ceil<milliseconds>(until - Clock::now()).count();
  ::poll(fds.data(), fds.size(), static_cast<int>(std::max<long long>(left, 0)));
  if (fds[1].revents != 0) {
    std::uint64_t count = 0;
    [[maybe_unused]] auto drained = ::read(watcher_wake_fd_.get(), &count, sizeof count);
  }
  lock.lock();
  socket_watcher_ = false;
  pump((fds[0].revents & POLLIN) != 0, received_before);
}

void Connection::throw_if_broken() const {
  if (!broken_) return;
  if (broken_by_timeout_) throw SshTimeoutError(*broken_);
  throw SshError(*broken_);
}

void Connection::fail(std::string reason, bool timed_out) {
  if (broken_) return;
  broken_ = std::move(reason);
  broken_by_timeout_ = timed_out;
  // Whatever libssh is still waiting for will not come: make every later call fail fast.
  ::shutdown(socket_fd_.get(), SHUT_RDWR);
  changed_.notify_all();
  wake();
}

std::shared_ptr<ChannelState> Connection::new_channel_state(std::size_t out_limit,
                                                            std::size_t err_limit) {
  throw_if_broken();
  ssh_channel channel = ssh_channel_new(session());
  if (channel == nullptr) {
    throw SshError(fmt::format("libssh could not allocate a channel to {}: {}", describe(),
                               ssh_get_error(session())));
  }
  return adopt_channel(channel, out_limit, err_limit);
}

std::shared_ptr<ChannelState> Connection::adopt_channel(ssh_channel channel, std::size_t out_limit,
                                                        std::size_t err_limit) {
  auto state = std::make_shared<ChannelState>();
  state->connection = this;
  state->channel = channel;
  state->out_limit = out_limit;
  state->err_limit = err_limit;
  ssh_callbacks_init(&state->callbacks);
  state->callbacks.userdata = state.get();
  state->callbacks.channel_data_function = on_data;
  state->callbacks.channel_eof_function = on_eof;
  state->callbacks.channel_close_function = on_close;
  state->callbacks.channel_exit_status_function = on_exit_status;
  state->callbacks.channel_exit_signal_function = on_exit_signal;
  state->callbacks.channel_write_wontblock_function = on_write_wontblock;
  ssh_set_channel_callbacks(channel, &state->callbacks);
  channels_.push_back(state);
  return state;
}

void Connection::complete(Lock& lock, Clock::time_point deadline, std::string_view what,
                          const std::function<int()>& call, std::string_view refusal_hint) {
  const auto budget = std::chrono::ceil<milliseconds>(deadline - Clock::now());
  int rc = SSH_AGAIN;
  wait_until(lock, deadline, [&] {
    rc = call();
    return rc != SSH_AGAIN;
  });
  if (rc == SSH_AGAIN) {
    throw SshTimeoutError(
        fmt::format("{} did not answer {} within {} ms; is the VM paused or "
                    "overloaded?",
                    describe(), what, budget.count()));
  }
  if (rc != SSH_OK) {
    throw SshError(fmt::format("{} refused {} ({}){}", describe(), what, ssh_get_error(session()),
                               refusal_hint));
  }
}

Channel Connection::open_session_channel(Lock& lock, Clock::time_point deadline,
                                         std::size_t out_limit) {
  Channel channel(new_channel_state(out_limit == 0 ? 0 : kChannelBufferLimit, kChannelBufferLimit));
  channel->opening = true;
  complete(lock, deadline, "a request to open a channel",
           [&] { return ssh_channel_open_session(channel.raw()); });
  channel->opening = false;
  return channel;
}

void Connection::request_exec(Lock& lock, ChannelState& channel, const std::string& command,
                              Clock::time_point deadline) {
  complete(lock, deadline, "a request to run a command",
           [&] { return ssh_channel_request_exec(channel.channel, command.c_str()); });
}

void Connection::request_subsystem(Lock& lock, ChannelState& channel, const std::string& subsystem,
                                   Clock::time_point deadline) {
  complete(lock, deadline, fmt::format("a request for the '{}' subsystem", subsystem),
           [&] { return ssh_channel_request_subsystem(channel.channel, subsystem.c_str()); });
}

void Connection::pull_output(ChannelState& channel) {
  if (!channel.backlog || channel.channel == nullptr) return;
  std::array<char, 65536> chunk{};
  for (int is_stderr : {0, 1}) {
    std::string& buffer = is_stderr != 0 ? channel.err : channel.out;
    const std::size_t limit = is_stderr != 0 ? channel.err_limit : channel.out_limit;
    while (buffer.size() < limit) {
      const auto want = static_cast<uint32_t>(std::min(chunk.size(), limit - buffer.size()));
      int n = ssh_channel_read_nonblocking(channel.channel, chunk.data(), want, is_stderr);
      if (n <= 0) break;
      buffer.append(chunk.data(), static_cast<std::size_t>(n));
    }
  }
  // Reading grew libssh's window, so the guest may send again; the callbacks re-arm this.
  channel.backlog = channel.out.size() >= channel.out_limit && channel.out_limit > 0;
}

void Connection::flush_writes() noexcept {
  if ((ssh_get_poll_flags(session()) & SSH_WRITE_PENDING) != 0) wake();
}

Connection::BlockingScope::BlockingScope(Connection& connection, Clock::time_point deadline)
    : connection_(connection) {
  connection_.throw_if_broken();
  const auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now());
  set_libssh_timeout(connection_.session(), std::max(left, milliseconds(1)));
  ssh_set_blocking(connection_.session(), 1);
  // libssh's own timeout should end the call at `deadline`; this is for when it does not.
  connection_.blocking_deadline_ = (deadline + 500ms).time_since_epoch().count();
  connection_.wake();
}

Connection::BlockingScope::~BlockingScope() {
  connection_.blocking_deadline_ = Clock::time_point::max().time_since_epoch().count();
  if (connection_.session() != nullptr) ssh_set_blocking(connection_.session(), 0);
  // libssh dispatched packets for other channels while it waited: tell their waiters.
  connection_.flush_progress();
  if (connection_.blocking_call_cut_.exchange(false)) {
    connection_.fail(fmt::format("{} did not answer an SFTP request within {} ms; the connection "
                                 "was dropped (is the VM paused or hung?)",
                                 connection_.describe(), connection_.io_timeout().count()),
                     true);
  }
}

}  // namespace vmfest::ssh::detail
