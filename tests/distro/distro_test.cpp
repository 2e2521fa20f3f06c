// A stock distro cloud image, used as a new user would: set up gzipped over HTTP, then asked for by
// name and nothing else. The images (tools/build-debian-image.sh) are built like Debian's
// genericcloud (OpenSSH as a daemon, a default user "debian") or like Ubuntu's server cloud images
// (OpenSSH by ssh.socket, a default user "ubuntu"): cloud-init, root refused, no vmfest agent.
// tests/distro/CMakeLists.txt runs the suite once per image, naming it in the environment.
#include <gtest/gtest.h>

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "cli_runner.h"
#include "http_server.h"
#include "vmfest/error.h"
#include "vmfest/gtest/fixture.h"
#include "vmfest/home.h"
#include "vmfest/internal/base.h"
#include "vmfest/model.h"
#include "vmfest/ssh/keys.h"

#include "distro_environment.h"

namespace {
namespace fs = std::filesystem;
using vmfest::Instance;

using vmfest::testing::from_environment;

const std::string kModel = from_environment("VMFEST_DISTRO_MODEL");
// The image's own default user, whose name root's refusal names.
const std::string kDefaultUser = from_environment("VMFEST_DISTRO_DEFAULT_USER");

std::string trimmed(std::string text) {
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) text.pop_back();
  return text;
}

// Sets the model up from a real HTTP server on 127.0.0.1, once for the process, before the first
// instance is created: a test of this suite states the model's name and nothing else.
const vmfest::Model& distro_model() {
  static const vmfest::Model model = [] {
    const fs::path image = from_environment("VMFEST_DISTRO_IMAGE");
    const fs::path scratch =
        fs::temp_directory_path() / ("vmfest-distro-http-" + std::to_string(::getpid()));
    fs::create_directories(scratch);
    vmfest::testing::HttpServer server(fs::canonical(image).parent_path(), scratch);
    vmfest::SetupOptions options;
    options.name = kModel;
    vmfest::Model installed =
        vmfest::setup_model(server.url("-", image.filename().string()), options);
    fs::remove_all(scratch);
    return installed;
  }();
  return model;
}

class DistroImage : public vmfest::testing::InstanceTest {
 protected:
  static void SetUpTestSuite() { model_ = distro_model(); }

  [[nodiscard]] vmfest::testing::VmRequirements requirements() const override {
    return {.model = kModel};
  }

  static inline std::optional<vmfest::Model> model_;
};

TEST_F(DistroImage, TheLoginIsVmfestWithPasswordlessSudoAndNoHostnameWarning) {
  ASSERT_TRUE(model_);
  EXPECT_EQ(model_->ssh_user, "vmfest");
  EXPECT_EQ(model_->boot.kind, vmfest::BootSpec::Kind::Disk);
  EXPECT_EQ(trimmed(ssh().check("id -un").stdout_text), "vmfest");
  const auto sudo = ssh().check("sudo -n id -u; sudo -n hostname");
  EXPECT_EQ(sudo.stdout_text, "0\n" + instance().name() + "\n");
  EXPECT_EQ(sudo.stderr_text, "") << "sudo must not warn (unable to resolve host...)";
  // The image's own default user is still there, and cloud-init is done before we are ready.
  EXPECT_EQ(ssh().run("id " + kDefaultUser).exit_status, 0);
  EXPECT_EQ(trimmed(ssh().check("cloud-init status").stdout_text), "status: done");
}

TEST_F(DistroImage, OnlyTheInstancesOwnHostKeyIsInTheGuest) {
  const std::string keys = ssh().check("ls /etc/ssh/ | grep '^ssh_host_' | sort").stdout_text;
  EXPECT_EQ(keys, "ssh_host_ed25519_key\nssh_host_ed25519_key.pub\n");
  const std::string pinned = vmfest::detail::read_text(instance().directory() / "host_ed25519.pub");
  const std::string guest = ssh().check("cat /etc/ssh/ssh_host_ed25519_key.pub").stdout_text;
  EXPECT_EQ(pinned.substr(0, pinned.rfind(' ')), guest.substr(0, guest.rfind(' ')));
}

// Root gets the image's own forced command: its message and status must reach the caller whole.
TEST_F(DistroImage, RootIsRefusedWithTheImagesOwnMessage) {
  vmfest::ssh::Endpoint root = ssh().endpoint();
  root.user = "root";
  vmfest::ssh::Credentials credentials;
  credentials.client_private_key =
      vmfest::ssh::KeyPair::load(instance().directory() / "id_ed25519").private_openssh;
  credentials.pinned_host_key =
      trimmed(vmfest::detail::read_text(instance().directory() / "host_ed25519.pub"));
  vmfest::ssh::Session session = vmfest::ssh::Session::connect(root, credentials);
  const auto result = session.run("id");
  EXPECT_EQ(result.exit_status, 142);
  EXPECT_NE(result.stdout_text.find("Please login as the user \"" + kDefaultUser + "\""),
            std::string::npos)
      << result.stdout_text;
}

TEST_F(DistroImage, TheCliRunsSudoInTheInstance) {
  const auto result = vmfest::testing::run_cli({"ssh", instance().name(), "--", "sudo", "id"});
  EXPECT_EQ(result.exit_code, 0) << result.describe();
  EXPECT_EQ(result.out.rfind("uid=0(root) gid=0(root)", 0), 0u) << result.describe();
}

// Every instance after the first resumes the warm image its first start saved: the agent came
// through the seed. Each clone has its own identity, OpenSSH's host key included. (The fixture's
// instance and one more: the host's cap here is two VMs.)
TEST_F(DistroImage, ClonesResumeWarmWithTheirOwnIdentity) {
  vmfest::InstanceRequest request;
  request.model = kModel;
  Instance other = Instance::create(request);
  other.start();
  Instance& mine = instance();
  for (Instance* vm : {&mine, &other}) {
    ASSERT_TRUE(vm->resumed_warm()) << "expected a warm clone; console:\n" << vm->console_tail();
    EXPECT_EQ(vm->ssh().check("hostname").stdout_text, vm->name() + "\n");
    const auto sudo = vm->ssh().check("sudo -n true");
    EXPECT_EQ(sudo.stderr_text, "") << "the new hostname must resolve";
    const long guest = std::stol(vm->ssh().check("date +%s").stdout_text);
    EXPECT_NEAR(static_cast<double>(guest), static_cast<double>(std::time(nullptr)), 3.0);
    EXPECT_EQ(vm->ssh().check("ls /etc/ssh/ | grep -c '^ssh_host_'").stdout_text, "2\n");
  }
  const std::string random = "head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n'";
  EXPECT_NE(mine.ssh().check(random).stdout_text, other.ssh().check(random).stdout_text);
  mine.ssh().check("echo only-mine > mine && sync");
  EXPECT_NE(other.ssh().run("test -e mine").exit_status, 0);
  // A clone's disk is an overlay: kilobytes to megabytes, never a copy of the image.
  EXPECT_LT(fs::file_size(other.directory() / "disk.qcow2"), 64u << 20);
}

// Two members of a group on a private network, warm clones of the image single instances resume
// (the segment's card plugged in after the resume): each has its address and reaches the other's
// OpenSSH by name and by address. No ping in the image: bash's /dev/tcp reads the SSH banner.
class DistroGroup : public vmfest::testing::InstanceTest {
 protected:
  static void SetUpTestSuite() { distro_model(); }

  [[nodiscard]] vmfest::testing::VmRequirements requirements() const override {
    return {.model = kModel, .instances = 2, .private_network = true};
  }
};

TEST_F(DistroGroup, WarmMembersReachEachOtherByNameAndAddress) {
  for (std::size_t i = 0; i < 2; ++i) {
    const std::size_t peer = 1 - i;
    Instance& member = instance(i);
    EXPECT_TRUE(member.resumed_warm()) << member.name() << ": console:\n" << member.console_tail();
    EXPECT_NE(ssh(i)
                  .check("ip -4 -o addr")
                  .stdout_text.find("inet " + instances().private_address(i) + "/24"),
              std::string::npos);
    for (const std::string& target : {instances().private_address(peer), instance(peer).name(),
                                      "node" + std::to_string(peer)}) {
      const auto banner =
          ssh(i).check("timeout 10 bash -c 'exec 3<>/dev/tcp/" + target + "/22 && head -c 4 <&3'");
      EXPECT_EQ(banner.stdout_text, "SSH-") << "from " << member.name() << " to " << target;
    }
  }
}

// The ways cloud images run their SSH server, each set up by the steps of a provisioned layer: the
// layer is saved from one guest and resumed by every later instance, each with its own host key,
// served by a server started after its resume (no key or RNG state of the saved guest's server).
namespace ssh_servers {

using vmfest::ProvisionStep;
using vmfest::ProvisionSteps;

bool had_phase(const Instance& instance, const std::string& name) {
  const auto& phases = instance.start_phases();
  return std::any_of(phases.begin(), phases.end(),
                     [&](const vmfest::StartPhase& phase) { return phase.name == name; });
}

// As Debian 12's own ssh.socket and Ubuntu's (22.10 and later): systemd holds port 22 and starts
// ssh.service, which serves every connection, at the first one.
const ProvisionSteps kSocketAcceptNo = {ProvisionStep::run(
    "sudo systemctl disable --now ssh.service && sudo systemctl enable --now ssh.socket")};

// One `sshd -i` per connection (ssh@.service, as Debian's before bookworm).
const ProvisionSteps kSocketAcceptYes = {ProvisionStep::run(
    "printf '[Unit]\\nDescription=OpenSSH per-connection server\\n[Service]\\n"
    "ExecStart=-/usr/sbin/sshd -i\\nStandardInput=socket\\nRuntimeDirectory=sshd\\n"
    "RuntimeDirectoryPreserve=yes\\n' | sudo tee /etc/systemd/system/ssh@.service >/dev/null && "
    "sudo mkdir -p /etc/systemd/system/ssh.socket.d && "
    "printf '[Socket]\\nAccept=yes\\n' | sudo tee /etc/systemd/system/ssh.socket.d/accept.conf "
    ">/dev/null && sudo systemctl daemon-reload && sudo systemctl disable --now ssh.service && "
    "sudo systemctl enable ssh.socket && sudo systemctl restart ssh.socket")};

Instance start_provisioned(const ProvisionSteps& steps) {
  distro_model();
  vmfest::InstanceRequest request;
  request.model = kModel;
  request.provision = steps;
  Instance instance = Instance::create(request);
  instance.start();
  return instance;
}

std::string host_key_in_guest(Instance& vm) {
  const std::string key = vm.ssh().check("cat /etc/ssh/ssh_host_ed25519_key.pub").stdout_text;
  return key.substr(0, key.rfind(' '));
}

// What a resumed instance of a layer with a socket-activated OpenSSH must show; its host key.
std::string expect_served_by_its_own_server(Instance& vm, const std::string& socket_accepts,
                                            std::chrono::steady_clock::time_point created) {
  EXPECT_TRUE(vm.resumed_warm()) << vm.console_tail();
  EXPECT_EQ(trimmed(vm.ssh().check("systemctl show -p Accept --value ssh.socket").stdout_text),
            socket_accepts);
  EXPECT_EQ(trimmed(vm.ssh().check("systemctl is-enabled ssh.service || true").stdout_text),
            "disabled");
  EXPECT_EQ(vm.ssh().check("hostname").stdout_text, vm.name() + "\n");
  const std::string pinned = vmfest::detail::read_text(vm.directory() / "host_ed25519.pub");
  const std::string key = host_key_in_guest(vm);
  EXPECT_EQ(pinned.substr(0, pinned.rfind(' ')), key);
  EXPECT_EQ(vm.ssh().check("ls /etc/ssh/ | grep -c '^ssh_host_'").stdout_text, "2\n");
  // Every sshd serving it (the daemon ssh.service runs with Accept=no, this session's own with
  // Accept=yes) started after its resume, none in the saved guest.
  const double age =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - created).count();
  const long oldest =
      std::stol(vm.ssh().check("ps -o etimes= -C sshd | sort -n | tail -n 1").stdout_text);
  EXPECT_LE(static_cast<double>(oldest), age);
  return key;
}

// The builder saves the layer and resumes it itself; then a clone only resumes it (one VM at a
// time). Each is served with its own host key by a server of its own.
void expect_layer_clones_with_their_own_server(const ProvisionSteps& steps,
                                               const std::string& socket_accepts) {
  std::string builder_key;
  {
    const auto created = std::chrono::steady_clock::now();
    Instance builder = start_provisioned(steps);
    EXPECT_TRUE(had_phase(builder, "layer")) << "the layer was not saved";
    builder_key = expect_served_by_its_own_server(builder, socket_accepts, created);
  }
  const auto created = std::chrono::steady_clock::now();
  Instance clone = start_provisioned(steps);
  EXPECT_FALSE(had_phase(clone, "provision")) << "the clone ran the steps again";
  EXPECT_NE(expect_served_by_its_own_server(clone, socket_accepts, created), builder_key);
}

TEST(DistroSshServer, ClonesOfALayerWithOpenSshOnASocketAcceptingOnce) {
  expect_layer_clones_with_their_own_server(kSocketAcceptNo, "no");
}

TEST(DistroSshServer, ClonesOfALayerWithOpenSshOnASocketAcceptingEachConnection) {
  expect_layer_clones_with_their_own_server(kSocketAcceptYes, "yes");
}

// A server the agent does not know: a socket unit on port 22 starting a program of its own.
const ProvisionSteps kGuardedSsh = {ProvisionStep::run(
    "printf '#!/bin/sh\\nexec /usr/sbin/sshd -i \"$@\"\\n' | sudo tee /usr/local/sbin/guarded-sshd "
    ">/dev/null && sudo chmod 755 /usr/local/sbin/guarded-sshd && "
    "printf '[Socket]\\nListenStream=22\\nAccept=yes\\n[Install]\\nWantedBy=sockets.target\\n' | "
    "sudo tee /etc/systemd/system/guarded-ssh.socket >/dev/null && "
    "printf '[Service]\\nExecStart=-/usr/local/sbin/guarded-sshd\\nStandardInput=socket\\n"
    "RuntimeDirectory=sshd\\nRuntimeDirectoryPreserve=yes\\n' | "
    "sudo tee /etc/systemd/system/guarded-ssh@.service >/dev/null && sudo systemctl daemon-reload "
    "&& sudo systemctl disable --now ssh.service ssh.socket && "
    "sudo systemctl enable --now guarded-ssh.socket")};

// With it no layer is saved, since a clone's host key would not reach that server; every instance
// runs the steps.
TEST(DistroSshServer, AnSshServerVmfestDoesNotKnowGetsNoLayer) {
  {
    Instance builder = start_provisioned(kGuardedSsh);
    EXPECT_TRUE(had_phase(builder, "provision"));
    EXPECT_FALSE(had_phase(builder, "layer"));
  }
  Instance clone = start_provisioned(kGuardedSsh);
  EXPECT_TRUE(had_phase(clone, "provision")) << "a layer was saved after all";
  EXPECT_EQ(trimmed(clone.ssh().check("systemctl is-active guarded-ssh.socket").stdout_text),
            "active");
}

// A model whose image runs such a server gets no warm image: its first instance finds out, says
// why (naming the server and port 22's owner) and records it; every instance boots cold, and the
// later ones do not try again.
TEST(DistroSshServer, AModelWithAnSshServerVmfestDoesNotKnowBootsColdAndSaysWhyOnce) {
  const std::string name = kModel + "-guarded-" + std::to_string(::getpid());
  struct RemoveModel {
    std::string name;
    ~RemoveModel() {
      try {
        vmfest::ModelRegistry().remove(name);
      } catch (const vmfest::Error&) {  // the test failed before the model existed
      }
    }
  } remove_model{name};
  start_provisioned(kGuardedSsh).save_as_model(name);
  vmfest::InstanceRequest request;
  request.model = name;
  {
    Instance first = Instance::create(request);
    first.start();
    EXPECT_FALSE(first.resumed_warm());
    EXPECT_EQ(trimmed(first.ssh().check("systemctl is-active guarded-ssh.socket").stdout_text),
              "active");
  }
  std::string reason;
  fs::path manifest_file;
  const fs::path warm = vmfest::Home::from_environment().models() / name / "warm";
  for (const auto& entry : fs::directory_iterator(warm)) {
    if (!fs::exists(entry.path() / "manifest.json")) continue;
    manifest_file = entry.path() / "manifest.json";
    const auto manifest = nlohmann::json::parse(vmfest::detail::read_text(manifest_file));
    EXPECT_EQ(manifest.value("status", ""), "unsupported");
    reason = manifest.value("reason", "");
  }
  EXPECT_NE(reason.find("/usr/local/sbin/guarded-sshd"), std::string::npos) << reason;
  EXPECT_NE(reason.find("pid 1 (systemd)"), std::string::npos) << reason;
  ASSERT_FALSE(manifest_file.empty()) << "no warm image records why";
  const auto recorded = fs::last_write_time(manifest_file);
  Instance second = Instance::create(request);
  second.start();
  EXPECT_FALSE(second.resumed_warm());
  EXPECT_EQ(fs::last_write_time(manifest_file), recorded) << "the second instance tried again";
}

}  // namespace ssh_servers

}  // namespace
