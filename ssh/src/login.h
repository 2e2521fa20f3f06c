// Opening an SSH session to an instance (private to the ssh component): libssh told only what
// vmfest passes (no ~/.ssh/config, no known_hosts, no agent), the pinned host key checked, and
// public-key authentication.
#pragma once

#include <libssh/libssh.h>

#include <chrono>
#include <string>

#include "libssh_handles.h"
#include "vmfest/ssh/session.h"

namespace vmfest::ssh::detail {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// "user@host:port", for messages.
std::string describe_endpoint(const Endpoint& endpoint);

// libssh's timeout for blocking calls on `session` (at least 1 ms).
void set_libssh_timeout(ssh_session session, milliseconds timeout);

// Connects to `endpoint`, checks its host key against the pinned one (or takes any, for a first
// login: Credentials::accept_any_host_key) and logs in with the client key, or the password when
// there is no key. SshTimeoutError when the server did not answer within `connect_timeout`,
// HostKeyMismatchError, SshAuthError for a refusal, SshError for the rest.
SessionPtr log_in(const Endpoint& endpoint, const Credentials& credentials,
                  milliseconds connect_timeout);

// The host key a connected session's server offered, as "type base64".
std::string offered_host_key(ssh_session session);

}  // namespace vmfest::ssh::detail
