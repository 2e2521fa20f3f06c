#include "guest_agent.h"

#include <fmt/format.h>

// The build puts the compressed agent at VMFEST_GUEST_AGENT_GZ (see lib/CMakeLists.txt); the
// assembler includes it as read-only data, with no copy at run time.
asm(".pushsection .rodata\n"
    ".balign 16\n"
    ".global vmfest_guest_agent_gz_begin\n"
    ".hidden vmfest_guest_agent_gz_begin\n"
    "vmfest_guest_agent_gz_begin:\n"
    ".incbin \"" VMFEST_GUEST_AGENT_GZ
    "\"\n"
    ".global vmfest_guest_agent_gz_end\n"
    ".hidden vmfest_guest_agent_gz_end\n"
    "vmfest_guest_agent_gz_end:\n"
    ".popsection\n");

extern "C" const char vmfest_guest_agent_gz_begin[];
extern "C" const char vmfest_guest_agent_gz_end[];

namespace vmfest::detail {

std::string_view guest_agent_gzip() {
  return {vmfest_guest_agent_gz_begin,
          static_cast<std::size_t>(vmfest_guest_agent_gz_end - vmfest_guest_agent_gz_begin)};
}

std::string agent_systemd_unit() {
  // Enabled, so the agent runs again after a reboot (a provisioning step may reboot the guest,
  // and cloud-init's runcmd runs once per instance).
  return fmt::format(
      "[Unit]\nDescription=vmfest guest agent (identity of warm clones)\n[Service]\nExecStart={}\n"
      "Restart=on-failure\n[Install]\nWantedBy=multi-user.target\n",
      kSeededAgentPath);
}

}  // namespace vmfest::detail
