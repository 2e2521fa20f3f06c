// The connection's I/O thread: polls the socket, lets libssh dispatch what arrives, serves port
// forwards, frees abandoned channels, probes a silent guest and cuts an overdue blocking call.
#include <poll.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <thread>
#include <unordered_map>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "connection.h"
#include "forwarding.h"
#include "vmfest/error.h"

namespace vmfest::ssh::detail {

using namespace std::chrono_literals;

void Connection::serve() {
  std::vector<pollfd> fds;
  std::unordered_map<int, short> ready;
  std::uint64_t received_before = received_.in_bytes;
  while (true) {
    Lock lock(mutex_, std::defer_lock);
    while (!lock.try_lock_for(50ms)) cut_overdue_blocking_call();
    cut_overdue_blocking_call();
    if (stopping_) return;
    try {
      serve_once(ready, received_before);
    } catch (const std::exception& error) {
      fail(fmt::format("the I/O thread of the connection to {} failed: {}", describe(),
                       error.what()),
           false);
    }
    int timeout_ms = 1000;
    build_poll_set(fds, timeout_ms);
    received_before = received_.in_bytes;
    lock.unlock();

    if (::poll(fds.data(), fds.size(), timeout_ms) < 0 && errno != EINTR) {
      spdlog::warn("vmfest: poll() failed in the SSH I/O thread: {}", std::strerror(errno));
      std::this_thread::sleep_for(10ms);
    }
    ready.clear();
    for (const pollfd& fd : fds) {
      if (fd.revents != 0) ready[fd.fd] = fd.revents;
    }
    if (ready.contains(wake_fd_.get())) {
      std::uint64_t count = 0;
      [[maybe_unused]] auto drained = ::read(wake_fd_.get(), &count, sizeof count);
    }
  }
}

void Connection::serve_once(const std::unordered_map<int, short>& ready,
                            std::uint64_t received_at_poll) {
  const auto socket = ready.find(socket_fd_.get());
  pump(socket != ready.end() && (socket->second & POLLIN) != 0, received_at_poll);
  check_liveness();
  for (auto& listener : local_listeners_) {
    if (ready.contains(listener->socket.get())) accept_local(*listener);
  }
  if (!remote_listeners_.empty() && !broken_) accept_remote();
  for (auto& tunnel : tunnels_) {
    auto found = ready.find(tunnel->socket.get());
    serve_tunnel(*tunnel, found == ready.end() ? short{0} : found->second);
  }
  std::erase_if(tunnels_, [](const auto& tunnel) { return tunnel->done; });
  settle_abandoned_channels();
  flush_progress();
}

void Connection::pump(bool socket_was_readable, std::uint64_t received_at_poll) {
  if (broken_) return;
  // Each round reads one chunk of the socket and dispatches the packets in it.
  for (int round = 0; round < 256; ++round) {
    int rc = ssh_event_dopoll(event_, 0);
    if (rc == SSH_ERROR) break;
    if (rc == SSH_AGAIN) break;
  }
  const int status = ssh_get_status(session());
  if ((status & (SSH_CLOSED | SSH_CLOSED_ERROR)) != 0) {
    fail(fmt::format("the connection to {} was lost ({}); the guest may have rebooted or its sshd "
                     "died: reconnect() or reboot() the session",
                     describe(), ssh_get_error(session())),
         false);
    return;
  }
  // Guard against a socket libssh will not read any more (it would keep poll() spinning).
  if (socket_was_readable && received_.in_bytes == received_at_poll) {
    if (++readable_but_unread_ > 1000) {
      fail(fmt::format("libssh stopped reading the connection to {}", describe()), false);
    }
  } else {
    readable_but_unread_ = 0;
  }
}

void Connection::check_liveness() {
  const auto now = Clock::now();
  if (received_.in_bytes != received_seen_) {
    received_seen_ = received_.in_bytes;
    quiet_since_ = now;
  }
  if (probe_ != nullptr && continue_open(probe_) != SSH_AGAIN) {
    ssh_channel_free(probe_);
    probe_ = nullptr;
  }
  if (waiters_ == 0 || broken_) return;
  const milliseconds timeout = io_timeout();
  const auto quiet = now - quiet_since_;
  if (quiet >= timeout) {
    fail(fmt::format("{} sent nothing for {} ms, not even an answer to a keep-alive probe: is the "
                     "VM paused or hung? The connection was dropped; reconnect() once the guest "
                     "runs again",
                     describe(), timeout.count()),
         true);
    return;
  }
  // A silent guest is asked for a sign of life: any answer to a channel-open request will do.
  const milliseconds probe_after = std::clamp(timeout / 4, milliseconds(200), milliseconds(5000));
  if (quiet >= probe_after && probe_ == nullptr) {
    probe_ = ssh_channel_new(session());
    if (probe_ != nullptr && continue_open(probe_) != SSH_AGAIN) {
      ssh_channel_free(probe_);
      probe_ = nullptr;
    }
  }
}

void Connection::cut_overdue_blocking_call() noexcept {
  const Clock::time_point deadline{Clock::duration(blocking_deadline_.load())};
  if (Clock::now() < deadline) return;
  if (!blocking_call_cut_.exchange(true)) ::shutdown(socket_fd_.get(), SHUT_RDWR);
}

void Connection::settle_abandoned_channels() {
  std::erase_if(channels_, [this](const std::shared_ptr<ChannelState>& state) {
    if (!state->abandoned) return false;
    if (state->channel == nullptr) return true;
    // An unanswered open is seen through, so the guest's channel is closed rather than leaked.
    if (state->opening && !broken_ && continue_open(state->channel) == SSH_AGAIN) {
      return false;
    }
    ssh_remove_channel_callbacks(state->channel, &state->callbacks);
    ssh_channel_free(state->channel);
    state->channel = nullptr;
    return true;
  });
}

void Connection::build_poll_set(std::vector<pollfd>& fds, int& timeout_ms) {
  fds.clear();
  fds.push_back({wake_fd_.get(), POLLIN, 0});
  if (!broken_) {
    short events = POLLIN;
    if ((ssh_get_poll_flags(session()) & SSH_WRITE_PENDING) != 0) events |= POLLOUT;
    fds.push_back({socket_fd_.get(), events, 0});
  }
  for (const auto& listener : local_listeners_) fds.push_back({listener->socket.get(), POLLIN, 0});
  bool tunnel_waits_for_guest = false;
  for (const auto& tunnel : tunnels_) {
    short events = 0;
    if (tunnel->connecting) {
      events = POLLOUT;
    } else if (!tunnel->channel->opening && !tunnel->channel->closed) {
      const bool window = ssh_channel_window_size(tunnel->channel.raw()) > 0;
      if (!tunnel->socket_eof && window) events |= POLLIN;
      if (!tunnel->socket_eof && !window) tunnel_waits_for_guest = true;
      if (!tunnel->channel->out.empty()) events |= POLLOUT;
    } else {
      tunnel_waits_for_guest = true;
    }
    fds.push_back({tunnel->socket.get(), events, 0});
  }
  // Window adjustments and channel confirmations may be read by other threads' libssh calls.
  if (tunnel_waits_for_guest || probe_ != nullptr) timeout_ms = 20;
  if (waiters_ > 0) timeout_ms = std::min(timeout_ms, 100);
  const Clock::time_point deadline{Clock::duration(blocking_deadline_.load())};
  if (deadline != Clock::time_point::max()) {
    const auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now()).count();
    timeout_ms = std::clamp(static_cast<int>(std::min<long long>(left, timeout_ms)), 0, timeout_ms);
  }
}

}  // namespace vmfest::ssh::detail
