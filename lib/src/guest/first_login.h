// What vmfest runs in a guest over an image's first login (a published key or password, for an
// image without cloud-init): the instance's identity in place of the published credential, and the
// guest agent, as a cloud-init seed would have installed them.
#pragma once

#include <string>

namespace vmfest::detail {

struct FirstLoginIdentity {
  std::string authorized_key;    // the instance's client public key line
  std::string host_private_key;  // OpenSSH format (secret)
  std::string host_public_key;
  std::string hostname;
};

// A command and its standard input. Secrets travel only in the input: a command's text appears in
// errors.
struct GuestCommand {
  std::string command;
  std::string input;
};

// Replaces the login's authorized_keys with the instance's key (so the published key opens the
// guest no more) and, as root or through passwordless sudo, sets the hostname and gives OpenSSH the
// instance's host key (the image's other host keys removed, the server reloaded). Its last line of
// output is kHostKeyFresh, or kHostKeyKept followed by why.
GuestCommand first_login_identity_command(const FirstLoginIdentity& identity);
inline constexpr const char* kHostKeyFresh = "host-key fresh";
inline constexpr const char* kHostKeyKept = "host-key kept: ";

// Installs the guest agent (from its gzip on standard input) where a seed would, with its systemd
// unit, and starts it. Exit status kAgentCannotRun with the reason on stderr when the guest cannot
// run it (no root, not x86-64).
GuestCommand agent_install_command();
inline constexpr int kAgentCannotRun = 3;

// Identifies both scripts for a warm image's key: what they did is in the saved guest.
std::string first_login_scripts_digest();

}  // namespace vmfest::detail
