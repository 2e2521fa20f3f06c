// The guest agent's virtio-serial port of a libvirt domain, reached as a stream through libvirt
// (virDomainOpenChannel), so a remote host needs nothing but its libvirt connection. The stream
// stays open for as long as this object lives: a guest whose agent is guarded ("guard on", see
// tools/guest/agent/vmfest-agent.c) powers itself off once it closes, also when the process holding
// it is killed. That is how a restored domain, which libvirt cannot end with its owner's
// connection, dies with its owner all the same.
#pragma once

#include <chrono>
#include <string>

#include "libvirt_api.h"

namespace vmfest::detail::libvirt {

// The name of the agent's port in the guest and of its channel in the domain XML.
inline constexpr const char* kAgentChannel = "org.vmfest.agent";

class AgentChannel {
 public:
  // Opens the channel of `domain` (of instance `instance`, on `uri`); BackendError if libvirt
  // cannot.
  AgentChannel(virConnectPtr connection, virDomainPtr domain, std::string uri,
               std::string instance);
  AgentChannel(const AgentChannel&) = delete;
  AgentChannel& operator=(const AgentChannel&) = delete;
  ~AgentChannel();

  // Sends `request` (one line, plus its payload) and returns the agent's reply line without its
  // newline; BackendError when no reply comes within `timeout`.
  std::string exchange(const std::string& request, std::chrono::milliseconds timeout);

 private:
  [[noreturn]] void fail(const std::string& what) const;

  std::string uri_;
  std::string instance_;
  Stream stream_;
  std::string received_;  // bytes after the last reply line
};

}  // namespace vmfest::detail::libvirt
