#include "vmfest/ssh/session.h"

#include <array>
#include <mutex>

#include <fmt/format.h>

#include "libssh_handles.h"
#include "vmfest/error.h"

namespace vmfest::ssh {
namespace {

using Clock = std::chrono::steady_clock;

std::string describe(const Endpoint& endpoint) {
  return fmt::format("{}@{}:{}", endpoint.user, endpoint.host, endpoint.port);
}

std::string tail(const std::string& text, std::size_t max_chars) {
  return text.size() <= max_chars ? text : "..." + text.substr(text.size() - max_chars);
}

void set_timeout(ssh_session session, std::chrono::milliseconds timeout) {
  long seconds = static_cast<long>(timeout.count() / 1000);
  long micros = static_cast<long>((timeout.count() % 1000) * 1000);
  ssh_options_set(session, SSH_OPTIONS_TIMEOUT, &seconds);
  ssh_options_set(session, SSH_OPTIONS_TIMEOUT_USEC, &micros);
}

detail::SessionPtr open_session(const Endpoint& endpoint, std::chrono::milliseconds timeout) {
  detail::SessionPtr session(ssh_new());
  if (!session) throw SshError("libssh could not allocate a session");
  ssh_session s = session.get();
  int port = endpoint.port;
  int no = 0;
  // Only what we pass counts: no ~/.ssh/config, no known_hosts files, no agent.
  ssh_options_set(s, SSH_OPTIONS_PROCESS_CONFIG, &no);
  ssh_options_set(s, SSH_OPTIONS_HOST, endpoint.host.c_str());
  ssh_options_set(s, SSH_OPTIONS_PORT, &port);
  ssh_options_set(s, SSH_OPTIONS_USER, endpoint.user.c_str());
  ssh_options_set(s, SSH_OPTIONS_KNOWNHOSTS, "/dev/null");
  ssh_options_set(s, SSH_OPTIONS_GLOBAL_KNOWNHOSTS, "/dev/null");
  ssh_options_set(s, SSH_OPTIONS_HOSTKEYS, "ssh-ed25519");
  set_timeout(s, timeout);
  return session;
}

void verify_host_key(ssh_session session, const Endpoint& endpoint, const std::string& pinned) {
  detail::KeyPtr expected = detail::import_public_line(pinned);
  if (!expected) {
    throw SshError(fmt::format("the pinned host key for {} is not a valid public key line",
                               describe(endpoint)));
  }
  ssh_key raw = nullptr;
  if (ssh_get_server_publickey(session, &raw) != SSH_OK) {
    throw SshError(fmt::format("{} sent no host key", describe(endpoint)));
  }
  detail::KeyPtr offered(raw);
  if (ssh_key_cmp(expected.get(), offered.get(), SSH_KEY_CMP_PUBLIC) != 0) {
    throw HostKeyMismatchError(fmt::format(
        "host key of {} does not match the key pinned for this instance; refusing to connect "
        "(another VM may be answering on this port, or the guest did not install its seed keys)",
        describe(endpoint)));
  }
}

void authenticate(ssh_session session, const Endpoint& endpoint, const std::string& private_key) {
  ssh_key raw = nullptr;
  if (ssh_pki_import_privkey_base64(private_key.c_str(), nullptr, nullptr, nullptr, &raw) !=
      SSH_OK) {
    throw SshError("the instance's client private key could not be parsed");
  }
  detail::KeyPtr key(raw);
  int rc = ssh_userauth_publickey(session, nullptr, key.get());
  if (rc != SSH_AUTH_SUCCESS) {
    throw SshAuthError(fmt::format(
        "public-key authentication as {} was refused ({}); check that the guest installed the "
        "instance's authorized key from its cloud-init seed",
        describe(endpoint), ssh_get_error(session)));
  }
}

}  // namespace

struct Session::Impl {
  Endpoint endpoint;
  detail::SessionPtr session;
  std::mutex mutex;  // libssh sessions are not thread-safe; one channel operation at a time
};

Session::Session(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Session::Session(Session&&) noexcept = default;
Session& Session::operator=(Session&&) noexcept = default;
Session::~Session() = default;

const Endpoint& Session::endpoint() const noexcept { return impl_->endpoint; }

Session Session::connect(const Endpoint& endpoint, const Credentials& credentials,
                         std::chrono::milliseconds timeout) {
  detail::SessionPtr session = open_session(endpoint, timeout);
  if (ssh_connect(session.get()) != SSH_OK) {
    throw SshError(fmt::format("cannot connect to {}: {}", describe(endpoint),
                               ssh_get_error(session.get())));
  }
  verify_host_key(session.get(), endpoint, credentials.pinned_host_key);
  authenticate(session.get(), endpoint, credentials.client_private_key);
  auto impl = std::make_unique<Impl>();
  impl->endpoint = endpoint;
  impl->session = std::move(session);
  return Session(std::move(impl));
}

CommandResult Session::run(std::string_view command, const RunOptions& options) {
  std::lock_guard lock(impl_->mutex);
  ssh_session s = impl_->session.get();
  detail::ChannelPtr channel(ssh_channel_new(s));
  if (!channel || ssh_channel_open_session(channel.get()) != SSH_OK) {
    throw SshError(fmt::format("cannot open a channel to {}: {}", describe(impl_->endpoint),
                               ssh_get_error(s)));
  }
  std::string command_text(command);
  if (ssh_channel_request_exec(channel.get(), command_text.c_str()) != SSH_OK) {
    throw SshError(fmt::format("cannot run a command on {}: {}", describe(impl_->endpoint),
                               ssh_get_error(s)));
  }

  CommandResult result;
  const Clock::time_point deadline =
      options.timeout ? Clock::now() + *options.timeout : Clock::time_point::max();
  std::array<char, 16384> buffer{};
  constexpr int kPollMillis = 50;
  while (true) {
    bool got_data = false;
    for (int is_stderr : {0, 1}) {
      int n = ssh_channel_read_nonblocking(channel.get(), buffer.data(),
                                           static_cast<uint32_t>(buffer.size()), is_stderr);
      if (n == SSH_ERROR) {
        throw SshError(fmt::format("connection to {} failed while running `{}`: {}",
                                   describe(impl_->endpoint), command, ssh_get_error(s)));
      }
      if (n > 0) {
        (is_stderr ? result.stderr_text : result.stdout_text)
            .append(buffer.data(), static_cast<std::size_t>(n));
        got_data = true;
      }
    }
    if (got_data) continue;
    if (ssh_channel_is_eof(channel.get()) != 0) break;
    if (Clock::now() >= deadline) {
      throw SshTimeoutError(fmt::format("`{}` on {} did not finish within {} ms; it was abandoned",
                                        command, describe(impl_->endpoint),
                                        options.timeout->count()));
    }
    if (ssh_channel_poll_timeout(channel.get(), kPollMillis, 0) == SSH_ERROR) {
      throw SshError(fmt::format("connection to {} failed while running `{}`: {}",
                                 describe(impl_->endpoint), command, ssh_get_error(s)));
    }
  }
  ssh_channel_send_eof(channel.get());
  result.exit_status = ssh_channel_get_exit_status(channel.get());
  return result;
}

CommandResult Session::check(std::string_view command, const RunOptions& options) {
  CommandResult result = run(command, options);
  if (!result.ok()) {
    throw CommandFailedError(
        fmt::format("`{}` on {} exited with status {}; stderr: {}", command,
                    describe(impl_->endpoint), result.exit_status, tail(result.stderr_text, 2000)),
        result.exit_status);
  }
  return result;
}

}  // namespace vmfest::ssh
