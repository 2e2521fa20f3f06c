#include "login.h"

#include <algorithm>

#include <fmt/format.h>

#include "vmfest/error.h"

namespace vmfest::ssh::detail {

std::string describe_endpoint(const Endpoint& endpoint) {
  return fmt::format("{}@{}:{}", endpoint.user, endpoint.host, endpoint.port);
}

void set_libssh_timeout(ssh_session session, milliseconds timeout) {
  const auto millis = std::max<milliseconds::rep>(timeout.count(), 1);
  long seconds = static_cast<long>(millis / 1000);
  long micros = static_cast<long>((millis % 1000) * 1000);
  ssh_options_set(session, SSH_OPTIONS_TIMEOUT, &seconds);
  ssh_options_set(session, SSH_OPTIONS_TIMEOUT_USEC, &micros);
}

namespace {

SessionPtr new_session(const Endpoint& endpoint, milliseconds timeout) {
  SessionPtr session(ssh_new());
  if (!session) throw SshError("libssh could not allocate a session");
  ssh_session s = session.get();
  int port = endpoint.port;
  int no = 0;
  // Only what we pass counts: no ~/.ssh/config, no known_hosts files, no agent.
  ssh_options_set(s, SSH_OPTIONS_PROCESS_CONFIG, &no);
  ssh_options_set(s, SSH_OPTIONS_HOST, endpoint.host.c_str());
  ssh_options_set(s, SSH_OPTIONS_PORT, &port);
  ssh_options_set(s, SSH_OPTIONS_USER, endpoint.user.c_str());
  if (!endpoint.proxy_command.empty()) {
    ssh_options_set(s, SSH_OPTIONS_PROXYCOMMAND, endpoint.proxy_command.c_str());
  }
  ssh_options_set(s, SSH_OPTIONS_KNOWNHOSTS, "/dev/null");
  ssh_options_set(s, SSH_OPTIONS_GLOBAL_KNOWNHOSTS, "/dev/null");
  ssh_options_set(s, SSH_OPTIONS_HOSTKEYS, "ssh-ed25519");
  // Commands are request/reply exchanges of small packets: without TCP_NODELAY, Nagle holds the
  // second of two back-to-back writes for the guest's delayed ACK (up to 40 ms a command).
  int yes = 1;
  ssh_options_set(s, SSH_OPTIONS_NODELAY, &yes);
  set_libssh_timeout(s, timeout);
  return session;
}

void verify_host_key(ssh_session session, const Endpoint& endpoint, const std::string& pinned) {
  KeyPtr expected = import_public_line(pinned);
  if (!expected) {
    throw SshError(fmt::format("the pinned host key for {} is not a valid public key line",
                               describe_endpoint(endpoint)));
  }
  ssh_key raw = nullptr;
  if (ssh_get_server_publickey(session, &raw) != SSH_OK) {
    throw SshError(fmt::format("{} sent no host key", describe_endpoint(endpoint)));
  }
  KeyPtr offered(raw);
  if (ssh_key_cmp(expected.get(), offered.get(), SSH_KEY_CMP_PUBLIC) != 0) {
    throw HostKeyMismatchError(fmt::format(
        "host key of {} does not match the key pinned for this instance; refusing to connect "
        "(another VM may be answering on this port, or the guest did not install its seed keys)",
        describe_endpoint(endpoint)));
  }
}

void authenticate(ssh_session session, const Endpoint& endpoint, const std::string& private_key) {
  ssh_key raw = nullptr;
  if (ssh_pki_import_privkey_base64(private_key.c_str(), nullptr, nullptr, nullptr, &raw) !=
      SSH_OK) {
    throw SshError("the instance's client private key could not be parsed");
  }
  KeyPtr key(raw);
  int rc = ssh_userauth_publickey(session, nullptr, key.get());
  if (rc == SSH_AUTH_ERROR) {
    // The connection broke before the server answered: not a refusal, so worth another attempt
    // (a guest shutting down kills its sshd under connections it has just accepted).
    throw SshError(fmt::format("the connection to {} broke during public-key authentication ({})",
                               describe_endpoint(endpoint), ssh_get_error(session)));
  }
  if (rc != SSH_AUTH_SUCCESS) {
    throw SshAuthError(fmt::format(
        "public-key authentication as {} was refused ({}); check that the guest installed the "
        "instance's authorized key from its cloud-init seed",
        describe_endpoint(endpoint), ssh_get_error(session)));
  }
}

}  // namespace

SessionPtr log_in(const Endpoint& endpoint, const Credentials& credentials,
                  milliseconds connect_timeout) {
  SessionPtr session = new_session(endpoint, connect_timeout);
  const auto begin = Clock::now();
  if (ssh_connect(session.get()) != SSH_OK) {
    std::string message = fmt::format("cannot connect to {}: {}", describe_endpoint(endpoint),
                                      ssh_get_error(session.get()));
    // A server that never answered in time is told apart from one that refused or broke off.
    if (Clock::now() - begin >= connect_timeout) throw SshTimeoutError(std::move(message));
    throw SshError(std::move(message));
  }
  verify_host_key(session.get(), endpoint, credentials.pinned_host_key);
  authenticate(session.get(), endpoint, credentials.client_private_key);
  return session;
}

}  // namespace vmfest::ssh::detail
