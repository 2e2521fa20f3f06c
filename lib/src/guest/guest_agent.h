// vmfest's guest agent (tools/guest/agent/vmfest-agent.c), built static and gzip-compressed into
// the library: a seed carries it to stock cloud images, which then get warm clones.
#pragma once

#include <string>
#include <string_view>

namespace vmfest::detail {

// Where the agent is installed in a guest that gets it through its seed.
inline constexpr std::string_view kSeededAgentPath = "/usr/local/lib/vmfest/vmfest-agent";
// Its systemd unit there.
inline constexpr std::string_view kAgentUnitPath = "/etc/systemd/system/vmfest-agent.service";

// The text of that unit (enabled: the agent runs again after a reboot).
std::string agent_systemd_unit();

// The gzip-compressed static x86-64 agent binary.
std::string_view guest_agent_gzip();

}  // namespace vmfest::detail
