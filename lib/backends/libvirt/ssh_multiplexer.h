// One OpenSSH master connection per remote libvirt host and process, which the `ssh -W` jumps to
// that host's guests share: a guest's SSH connection then opens a channel instead of logging in
// to the host anew (a new ssh process's key exchange and authentication, about 0.3 s each).
// The master is a child of this process that dies with it: ended by its pid at exit, and sent
// SIGTERM by the kernel should the process be killed (PR_SET_PDEATHSIG). Until it listens, or if
// it fails, each jump logs in on its own as before.
#pragma once

#include <string>

#include "hosts.h"

namespace vmfest::detail::libvirt {

// Starts the master connection to `host` (once per process; nothing for a local host) and returns
// its control socket for HostUri::jump_command ("" for a local host).
std::string ssh_multiplexer(const HostUri& host);

}  // namespace vmfest::detail::libvirt
