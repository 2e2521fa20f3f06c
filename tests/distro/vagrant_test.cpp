// A Vagrant box without cloud-init (tools/build-debian-image.sh --shape vagrant: user vagrant with
// a published key and the password "vagrant"), set up over HTTP as a user would: each instance logs
// in once with the published login, then only with its own key; warm clones come from the agent
// that first login delivered. tests/distro/CMakeLists.txt names the box in the environment; the
// conformance suite (tests/vm) runs on it too.
#include <gtest/gtest.h>

#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "http_server.h"
#include "vmfest/error.h"
#include "vmfest/instance.h"
#include "vmfest/internal/base.h"
#include "vmfest/model.h"
#include "vmfest/ssh/session.h"

#include "distro_environment.h"

namespace {
namespace fs = std::filesystem;
using vmfest::Instance;

using vmfest::testing::from_environment;

std::string trimmed(std::string text) {
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) text.pop_back();
  return text;
}

// Sets models up from the box on a real HTTP server on 127.0.0.1 (one server per call).
vmfest::Model setup_from_http(vmfest::SetupOptions options) {
  const fs::path box = from_environment("VMFEST_VAGRANT_BOX");
  const fs::path scratch = fs::temp_directory_path() /
                           ("vmfest-vagrant-http-" + std::to_string(::getpid()) + options.name);
  fs::create_directories(scratch);
  vmfest::testing::HttpServer server(fs::canonical(box).parent_path(), scratch);
  vmfest::Model model = vmfest::setup_model(server.url("-", box.filename().string()), options);
  fs::remove_all(scratch);
  return model;
}

// The box as published: its Vagrantfile names the user and the key it carries.
const vmfest::Model& box_model() {
  static const vmfest::Model model = [] {
    vmfest::SetupOptions options;
    options.name = "debian-12-vagrant";
    return setup_from_http(options);
  }();
  return model;
}

// The same image as an appliance that documents only a password.
vmfest::Model password_model(const std::string& name, const std::string& password) {
  const fs::path file = fs::temp_directory_path() / (name + "-" + std::to_string(::getpid()));
  std::ofstream(file) << password << "\n";
  vmfest::SetupOptions options;
  options.name = name;
  options.ssh_password_file = file;
  vmfest::Model model = setup_from_http(options);
  fs::remove(file);
  return model;
}

// A login with the model's published key, taking any host key: refused once the first login has
// replaced that key.
void expect_published_key_refused(const vmfest::Model& model, Instance& instance) {
  vmfest::ssh::Credentials published;
  published.client_private_key = vmfest::detail::read_text(model.published_login.private_key);
  published.accept_any_host_key = true;
  EXPECT_THROW(vmfest::ssh::Session::connect(instance.info().ssh, published), vmfest::SshAuthError)
      << "the published key still opens instance " << instance.name();
}

// The guest holds the instance's own identity: its hostname, its key alone, its host key alone.
void expect_own_identity(Instance& instance) {
  auto& ssh = instance.ssh();
  EXPECT_EQ(trimmed(ssh.check("hostname").stdout_text), instance.name());
  EXPECT_EQ(trimmed(ssh.check("cat ~/.ssh/authorized_keys").stdout_text),
            trimmed(vmfest::detail::read_text(instance.directory() / "id_ed25519.pub")));
  EXPECT_EQ(trimmed(ssh.check("cat /etc/ssh/ssh_host_*_key.pub").stdout_text),
            trimmed(vmfest::detail::read_text(instance.directory() / "host_ed25519.pub")));
  EXPECT_EQ(trimmed(ssh.check("sudo -n id -u").stdout_text), "0");
}

Instance create(const std::string& model, bool warm) {
  vmfest::InstanceRequest request;
  request.model = model;
  request.warm = warm;
  return Instance::create(request);
}

bool had_first_login(const Instance& instance) {
  for (const auto& phase : instance.start_phases()) {
    if (phase.name == "first login") return true;
  }
  return false;
}

TEST(VagrantBox, TwoClonesHaveTheirOwnKeysAndThePublishedKeyOpensNeither) {
  const vmfest::Model& model = box_model();
  EXPECT_EQ(model.ssh_user, "vagrant");
  ASSERT_FALSE(model.published_login.private_key.empty());
  EXPECT_EQ(fs::status(model.published_login.private_key).permissions() &
                (fs::perms::group_all | fs::perms::others_all),
            fs::perms::none);
  Instance first = create(model.name, true);
  first.start();
  Instance second = create(model.name, true);
  second.start();
  // The first boots cold, logs in with the box's key and saves the warm image (the agent came
  // over that login); the second resumes it and gets its identity from the agent.
  EXPECT_TRUE(had_first_login(first));
  EXPECT_TRUE(second.resumed_warm()) << "the box got no warm image";
  for (Instance* instance : {&first, &second}) {
    expect_own_identity(*instance);
    expect_published_key_refused(model, *instance);
  }
  EXPECT_NE(vmfest::detail::read_text(first.directory() / "id_ed25519.pub"),
            vmfest::detail::read_text(second.directory() / "id_ed25519.pub"));
}

TEST(VagrantBox, APasswordOnlyApplianceLogsInOnceByPasswordThenByKey) {
  const vmfest::Model model = password_model("vagrant-by-password", "vagrant");
  EXPECT_TRUE(model.published_login.private_key.empty());
  ASSERT_FALSE(model.published_login.password_file.empty());
  // Cold: one boot is what this test is about (a warm image of its own would cost a save).
  Instance instance = create(model.name, false);
  instance.start();
  EXPECT_TRUE(had_first_login(instance));
  expect_own_identity(instance);  // instance.ssh() is a login with the instance's key
}

TEST(VagrantBox, AWrongPasswordIsRefusedAtOnceNotTimedOut) {
  const vmfest::Model model = password_model("vagrant-wrong-password", "not-the-password");
  Instance instance = create(model.name, false);
  const auto begin = std::chrono::steady_clock::now();
  try {
    instance.start();
    ADD_FAILURE() << "a wrong password let the first login in";
  } catch (const vmfest::SshAuthError& error) {
    const std::string message = error.what();
    EXPECT_NE(message.find("refused the first login with the model's published password"),
              std::string::npos)
        << message;
    EXPECT_NE(message.find("--ssh-password-file"), std::string::npos) << message;
    EXPECT_EQ(message.find("not-the-password"), std::string::npos) << "the password leaked";
  }
  // The boot takes about a minute here, and refusals are final after 30 s of them (a booting
  // guest refuses logins until its boot ends); the readiness timeout is 4 minutes and more.
  EXPECT_LT(std::chrono::steady_clock::now() - begin, std::chrono::seconds(200));
}

}  // namespace
