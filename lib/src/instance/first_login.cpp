// Instance::Impl's first login to an image with a published login (no cloud-init: a Vagrant box,
// an appliance with a documented password): once, with the published credential, whose host key
// cannot be known in advance; it installs the instance's own key in place of the published one,
// a fresh host key and the hostname (and the agent when this boot builds the warm image), and
// from then on only the instance's key and the host key pinned here count.
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "../guest/first_login.h"
#include "instance_impl.h"

namespace vmfest {
namespace fs = std::filesystem;

namespace {

ssh::Credentials published_credentials(const Model& model) {
  ssh::Credentials credentials;
  credentials.accept_any_host_key = true;
  try {
    if (!model.published_login.private_key.empty()) {
      credentials.client_private_key = detail::read_text(model.published_login.private_key);
    } else {
      std::string password = detail::read_text(model.published_login.password_file);
      credentials.password = password.substr(0, password.find('\n'));
    }
  } catch (const std::exception& error) {
    throw ModelError(
        fmt::format("model '{}': its published login cannot be read ({}); set it up again with "
                    "`vmfest setup-model SOURCE --replace`",
                    model.name, error.what()));
  }
  return credentials;
}

std::string last_line(const std::string& text) {
  std::string trimmed = text;
  while (!trimmed.empty() && trimmed.back() == '\n') trimmed.pop_back();
  const auto newline = trimmed.rfind('\n');
  return newline == std::string::npos ? trimmed : trimmed.substr(newline + 1);
}

}  // namespace

void Instance::Impl::first_login() {
  const bool by_key = !model.published_login.private_key.empty();
  const ssh::Credentials published = published_credentials(model);
  detail::WaitedGuest guest{home, model, record.name, *machine, endpoint(), published, true};
  std::optional<ssh::Session> first;
  try {
    first.emplace(detail::ReadinessWaiter(std::move(guest), ready_timeout, clock).wait(true));
  } catch (const SshAuthError& error) {
    throw SshAuthError(fmt::format(
        "instance '{}' (model '{}'): the guest refused the first login with the model's published "
        "{} ({}); the image does not accept that {}: set the right one with `vmfest setup-model "
        "SOURCE --name {} {}`",
        record.name, model.name, by_key ? "key" : "password", error.what(),
        by_key ? "key" : "password (or allows no password logins)", model.name,
        by_key ? "--ssh-key FILE" : "--ssh-password-file FILE"));
  }
  const std::string offered_host_key = first->host_key();

  const fs::path folder = directory();
  detail::FirstLoginIdentity identity;
  identity.authorized_key = detail::read_text(folder / (std::string(detail::kClientKey) + ".pub"));
  while (!identity.authorized_key.empty() && identity.authorized_key.back() == '\n') {
    identity.authorized_key.pop_back();
  }
  identity.host_private_key = detail::read_text(folder / detail::kHostKeyOpenssh);
  identity.host_public_key = credentials.pinned_host_key;
  identity.hostname = record.name;
  const detail::GuestCommand install = detail::first_login_identity_command(identity);
  ssh::RunOptions options;
  options.input = install.input;
  const std::string outcome = last_line(first->check(install.command, options).stdout_text);
  if (outcome != detail::kHostKeyFresh) {
    // The image's own host key stays: the one this first login saw is pinned from now on.
    const std::string why = outcome.starts_with(detail::kHostKeyKept)
                                ? outcome.substr(std::string_view(detail::kHostKeyKept).size())
                                : "it said '" + outcome + "'";
    spdlog::warn(
        "vmfest: instance '{}' keeps the host key of model '{}' ({}): vmfest pins the key its "
        "first login saw",
        record.name, model.name, why);
    credentials.pinned_host_key = offered_host_key;
    detail::write_text_atomically(folder / detail::kHostPublicKey, offered_host_key + "\n");
  }
  if (!record.warm_build.empty() && !model.guest_agent) deliver_agent(*first);
  first.reset();
  record.first_login_done = true;
  save_record();
  clock.phase_done("first login");
}

// The agent over the first login, as a seed would deliver it: the guest can then be saved as a
// warm image. A guest that cannot run it is said so here; the warm build then finds no agent and
// the model's instances boot cold.
void Instance::Impl::deliver_agent(ssh::Session& first) {
  const detail::GuestCommand install = detail::agent_install_command();
  ssh::RunOptions options;
  options.input = install.input;
  const ssh::CommandResult result = first.run(install.command, options);
  if (result.ok()) return;
  std::string why = result.stderr_text;
  while (!why.empty() && why.back() == '\n') why.pop_back();
  spdlog::warn(
      "vmfest: model '{}': vmfest's guest agent could not be installed over the first login of "
      "instance '{}' ({}{}), so its instances boot cold",
      model.name, record.name,
      result.exit_status == detail::kAgentCannotRun
          ? ""
          : fmt::format("exit status {}: ", result.exit_status),
      why.empty() ? "no message" : why);
}

}  // namespace vmfest
