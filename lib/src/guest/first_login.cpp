#include "first_login.h"

#include <fmt/format.h>

#include "../base/sha256.h"
#include "guest_agent.h"
#include "vmfest/ssh/shell_quote.h"

namespace vmfest::detail {

namespace {

// Who may write as root: root itself, or the login through passwordless sudo (what Vagrant's base
// boxes give their user). Sets $root to the prefix, or says why not and runs `otherwise`.
std::string find_root(const std::string& otherwise) {
  return fmt::format(
      "if [ \"$(id -u)\" = 0 ]; then root=; elif sudo -n true 2>/dev/null; then root='sudo -n'; "
      "else why='the login is neither root nor allowed passwordless sudo'; {}; fi\n",
      otherwise);
}

// Standard input: the authorized key line, the host public key line, the hostname, then the host
// private key to the end.
constexpr const char* kIdentityScript = R"sh(set -e
umask 077
IFS= read -r authorized
IFS= read -r host_public
IFS= read -r name
host_key=
while IFS= read -r line; do host_key="$host_key$line
"; done
mkdir -p "$HOME/.ssh"
chmod 700 "$HOME/.ssh"
printf '%s\n' "$authorized" >"$HOME/.ssh/authorized_keys.vmfest"
mv -f "$HOME/.ssh/authorized_keys.vmfest" "$HOME/.ssh/authorized_keys"
)sh";

constexpr const char* kRootIdentityScript = R"sh(
$root sh -c 'hostname "$1"; printf "%s\n" "$1" >/etc/hostname
if grep -q "^127\.0\.1\.1[[:space:]]" /etc/hosts; then sed -i "s/^127\.0\.1\.1[[:space:]].*/127.0.1.1 $1/" /etc/hosts
else printf "127.0.1.1 %s\n" "$1" >>/etc/hosts; fi' sh "$name" || echo "vmfest: the hostname was not set" >&2
if [ ! -x /usr/sbin/sshd ] || [ ! -d /etc/ssh ]; then
  echo "host-key kept: the guest's SSH server is not OpenSSH"; exit 0
fi
printf '%s' "$host_key" | $root sh -c 'set -e; umask 077
cat >/etc/ssh/ssh_host_ed25519_key.vmfest
mv -f /etc/ssh/ssh_host_ed25519_key.vmfest /etc/ssh/ssh_host_ed25519_key
printf "%s\n" "$1" >/etc/ssh/ssh_host_ed25519_key.pub; chmod 644 /etc/ssh/ssh_host_ed25519_key.pub
rm -f /etc/ssh/ssh_host_rsa_key /etc/ssh/ssh_host_rsa_key.pub /etc/ssh/ssh_host_ecdsa_key \
  /etc/ssh/ssh_host_ecdsa_key.pub /etc/ssh/ssh_host_dsa_key /etc/ssh/ssh_host_dsa_key.pub
/usr/sbin/sshd -t
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet ssh.service; then
  systemctl reload ssh.service
elif [ -f /run/sshd.pid ]; then kill -HUP "$(cat /run/sshd.pid)"; fi' sh "$host_public"
echo "host-key fresh"
)sh";

}  // namespace

GuestCommand first_login_identity_command(const FirstLoginIdentity& identity) {
  GuestCommand command;
  command.command = std::string(kIdentityScript) +
                    find_root("echo \"host-key kept: $why\"; exit 0") + kRootIdentityScript;
  command.input = fmt::format("{}\n{}\n{}\n{}", identity.authorized_key, identity.host_public_key,
                              identity.hostname, identity.host_private_key);
  if (!command.input.ends_with('\n')) command.input += '\n';
  return command;
}

GuestCommand agent_install_command() {
  const std::string agent(kSeededAgentPath);
  const std::string folder = agent.substr(0, agent.rfind('/'));
  // As root: the binary from standard input, then the unit where systemd runs (enabled, so a
  // reboot keeps it), else the agent in the background.
  const std::string install = fmt::format(
      "set -e; mkdir -p {0}; gzip -dc >{1}.new; chmod 755 {1}.new; mv -f {1}.new {1}; "
      "if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then "
      "printf '%s' \"$1\" >{2}; systemctl daemon-reload; "
      "systemctl enable --now --no-block vmfest-agent.service; "
      "else nohup {1} >/dev/null 2>&1 & fi",
      folder, agent, kAgentUnitPath);
  GuestCommand command;
  command.command =
      "set -e\n" + find_root(fmt::format("echo \"$why\" >&2; exit {}", kAgentCannotRun)) +
      fmt::format(
          "machine=$(uname -m); if [ \"$machine\" != x86_64 ]; then echo \"the guest is $machine, "
          "and vmfest's agent is built for x86_64\" >&2; exit {}; fi\n"
          "$root sh -c {} sh {}\n",
          kAgentCannotRun, ssh::shell_quote(install), ssh::shell_quote(agent_systemd_unit()));
  command.input = std::string(guest_agent_gzip());
  return command;
}

std::string first_login_scripts_digest() {
  static const std::string digest = sha256_text(first_login_identity_command({}).command + "\n" +
                                                agent_install_command().command);
  return digest;
}

}  // namespace vmfest::detail
