#include "agent_channel.h"

#include <thread>

#include <fmt/format.h>

#include "vmfest/error.h"

namespace vmfest::detail::libvirt {
using std::chrono::milliseconds;

namespace {
constexpr milliseconds kReceivePoll{2};
}  // namespace

AgentChannel::AgentChannel(virConnectPtr connection, virDomainPtr domain, std::string uri,
                           std::string instance)
    : uri_(std::move(uri)), instance_(std::move(instance)) {
  // Non-blocking: a reply is awaited with a timeout, never a receive that hangs.
  stream_.reset(virStreamNew(connection, VIR_STREAM_NONBLOCK));
  if (!stream_ || virDomainOpenChannel(domain, kAgentChannel, stream_.get(), 0) < 0) {
    fail("could not open the guest agent's channel");
  }
}

AgentChannel::~AgentChannel() {
  if (stream_) virStreamAbort(stream_.get());
}

std::string AgentChannel::exchange(const std::string& request, milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (std::size_t sent = 0; sent < request.size();) {
    const int put = virStreamSend(stream_.get(), request.data() + sent, request.size() - sent);
    if (put == -1) fail("could not write to the guest agent's channel");
    if (put == -2) {
      if (std::chrono::steady_clock::now() > deadline) fail("the guest agent's channel is full");
      std::this_thread::sleep_for(kReceivePoll);
      continue;
    }
    sent += static_cast<std::size_t>(put);
  }
  char buffer[4096];
  for (;;) {
    if (const auto end = received_.find('\n'); end != std::string::npos) {
      std::string line = received_.substr(0, end);
      received_.erase(0, end + 1);
      return line;
    }
    const int got = virStreamRecv(stream_.get(), buffer, sizeof(buffer));
    if (got == -1) fail("could not read the guest agent's channel");
    if (got == 0) fail("the guest agent's channel was closed");
    if (got > 0) {
      received_.append(buffer, static_cast<std::size_t>(got));
      continue;
    }
    if (std::chrono::steady_clock::now() > deadline) {
      throw BackendError(fmt::format(
          "instance '{}': the guest agent did not answer within {} ms on {}; is vmfest-agent "
          "running in the model?",
          instance_, timeout.count(), uri_));
    }
    std::this_thread::sleep_for(kReceivePoll);
  }
}

void AgentChannel::fail(const std::string& what) const {
  throw BackendError(
      fmt::format("instance '{}': {} on {}: {}", instance_, what, uri_, last_error()));
}

}  // namespace vmfest::detail::libvirt
