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

SessionPtr new_session(const Endpoint& endpoint, milliseconds timeout,
                       const Credentials& credentials) {
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
  // Only the pinned key's type is asked for (instances' own keys are Ed25519; an image that kept
  // its own has another); a first login takes any.
  if (!credentials.accept_any_host_key) {
    const std::string& pinned = credentials.pinned_host_key;
    std::string type = pinned.substr(0, pinned.find(' '));
    if (type.empty()) type = "ssh-ed25519";
    if (type == "ssh-rsa") type = "rsa-sha2-512,rsa-sha2-256,ssh-rsa";  // the signatures it makes
    ssh_options_set(s, SSH_OPTIONS_HOSTKEYS, type.c_str());
  }
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

void authenticate(ssh_session session, const Endpoint& endpoint, const Credentials& credentials) {
  const bool by_password = credentials.client_private_key.empty() && !credentials.password.empty();
  int rc = SSH_AUTH_DENIED;
  if (by_password) {
    rc = ssh_userauth_password(session, nullptr, credentials.password.c_str());
  } else {
    ssh_key raw = nullptr;
    if (ssh_pki_import_privkey_base64(credentials.client_private_key.c_str(), nullptr, nullptr,
                                      nullptr, &raw) != SSH_OK) {
      throw SshError(fmt::format("the client private key for {} could not be parsed",
                                 describe_endpoint(endpoint)));
    }
    KeyPtr key(raw);
    rc = ssh_userauth_publickey(session, nullptr, key.get());
  }
  const char* method = by_password ? "password" : "public-key";
  if (rc == SSH_AUTH_ERROR) {
    // The connection broke before the server answered: not a refusal, so worth another attempt
    // (a guest shutting down kills its sshd under connections it has just accepted).
    throw SshError(fmt::format("the connection to {} broke during {} authentication ({})",
                               describe_endpoint(endpoint), method, ssh_get_error(session)));
  }
  if (rc != SSH_AUTH_SUCCESS) {
    const std::string said = ssh_get_error(session);
    throw SshAuthError(
        fmt::format("{} authentication as {} was refused{}{}", method, describe_endpoint(endpoint),
                    said.empty() ? "" : " (" + said + ")",
                    credentials.accept_any_host_key
                        ? ""
                        : "; check that the guest installed the instance's authorized key"));
  }
}

}  // namespace

SessionPtr log_in(const Endpoint& endpoint, const Credentials& credentials,
                  milliseconds connect_timeout) {
  SessionPtr session = new_session(endpoint, connect_timeout, credentials);
  const auto begin = Clock::now();
  if (ssh_connect(session.get()) != SSH_OK) {
    std::string message = fmt::format("cannot connect to {}: {}", describe_endpoint(endpoint),
                                      ssh_get_error(session.get()));
    // A server that never answered in time is told apart from one that refused or broke off.
    if (Clock::now() - begin >= connect_timeout) throw SshTimeoutError(std::move(message));
    throw SshError(std::move(message));
  }
  if (!credentials.accept_any_host_key) {
    verify_host_key(session.get(), endpoint, credentials.pinned_host_key);
  }
  authenticate(session.get(), endpoint, credentials);
  return session;
}

std::string offered_host_key(ssh_session session) {
  ssh_key raw = nullptr;
  if (ssh_get_server_publickey(session, &raw) != SSH_OK) return {};
  KeyPtr key(raw);
  char* blob = nullptr;
  if (ssh_pki_export_pubkey_base64(key.get(), &blob) != SSH_OK) return {};
  const CString owned(blob);
  return fmt::format("{} {}", ssh_key_type_to_char(ssh_key_type(key.get())), owned.get());
}

}  // namespace vmfest::ssh::detail
