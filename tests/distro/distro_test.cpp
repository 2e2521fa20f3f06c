// A stock distro cloud image, used as a new user would: set up gzipped over HTTP, then asked for by
// name and nothing else. The image (tools/build-debian-image.sh) is built like Debian's
// genericcloud: cloud-init, OpenSSH, a default user "debian", root refused, no vmfest agent.
#include <gtest/gtest.h>

#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>

#include "cli_runner.h"
#include "http_server.h"
#include "vmfest/error.h"
#include "vmfest/gtest/fixture.h"
#include "vmfest/internal/base.h"
#include "vmfest/model.h"
#include "vmfest/ssh/keys.h"

namespace {
namespace fs = std::filesystem;
using vmfest::Instance;

constexpr const char* kModel = "debian-12";

fs::path image_file() {
  const char* image = std::getenv("VMFEST_DEBIAN_IMAGE");
  if (image == nullptr || *image == '\0') {
    throw std::runtime_error(
        "VMFEST_DEBIAN_IMAGE is not set (tests/distro/CMakeLists.txt sets it)");
  }
  return image;
}

std::string trimmed(std::string text) {
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) text.pop_back();
  return text;
}

// Sets the model up from a real HTTP server on 127.0.0.1, once for the suite, before the first
// test's instance is created: a test of this suite states the model's name and nothing else.
class DebianImage : public vmfest::testing::InstanceTest {
 protected:
  static void SetUpTestSuite() {
    const fs::path image = image_file();
    const fs::path scratch =
        fs::temp_directory_path() / ("vmfest-debian-http-" + std::to_string(::getpid()));
    fs::create_directories(scratch);
    vmfest::testing::HttpServer server(fs::canonical(image).parent_path(), scratch);
    vmfest::SetupOptions options;
    options.name = kModel;
    model_ = vmfest::setup_model(server.url("-", image.filename().string()), options);
    fs::remove_all(scratch);
  }

  [[nodiscard]] vmfest::testing::VmRequirements requirements() const override {
    return {.model = kModel};
  }

  static inline std::optional<vmfest::Model> model_;
};

TEST_F(DebianImage, TheLoginIsVmfestWithPasswordlessSudoAndNoHostnameWarning) {
  ASSERT_TRUE(model_);
  EXPECT_EQ(model_->ssh_user, "vmfest");
  EXPECT_EQ(model_->boot.kind, vmfest::BootSpec::Kind::Disk);
  EXPECT_EQ(trimmed(ssh().check("id -un").stdout_text), "vmfest");
  const auto sudo = ssh().check("sudo -n id -u; sudo -n hostname");
  EXPECT_EQ(sudo.stdout_text, "0\n" + instance().name() + "\n");
  EXPECT_EQ(sudo.stderr_text, "") << "sudo must not warn (unable to resolve host...)";
  // The image's own default user is still there, and cloud-init is done before we are ready.
  EXPECT_EQ(ssh().run("id debian").exit_status, 0);
  EXPECT_EQ(trimmed(ssh().check("cloud-init status").stdout_text), "status: done");
}

TEST_F(DebianImage, OnlyTheInstancesOwnHostKeyIsInTheGuest) {
  const std::string keys = ssh().check("ls /etc/ssh/ | grep '^ssh_host_' | sort").stdout_text;
  EXPECT_EQ(keys, "ssh_host_ed25519_key\nssh_host_ed25519_key.pub\n");
  const std::string pinned = vmfest::detail::read_text(instance().directory() / "host_ed25519.pub");
  const std::string guest = ssh().check("cat /etc/ssh/ssh_host_ed25519_key.pub").stdout_text;
  EXPECT_EQ(pinned.substr(0, pinned.rfind(' ')), guest.substr(0, guest.rfind(' ')));
}

// Root gets the image's own forced command: its message and status must reach the caller whole.
TEST_F(DebianImage, RootIsRefusedWithTheImagesOwnMessage) {
  vmfest::ssh::Endpoint root = ssh().endpoint();
  root.user = "root";
  const vmfest::ssh::Credentials credentials{
      vmfest::ssh::KeyPair::load(instance().directory() / "id_ed25519").private_openssh,
      trimmed(vmfest::detail::read_text(instance().directory() / "host_ed25519.pub"))};
  vmfest::ssh::Session session = vmfest::ssh::Session::connect(root, credentials);
  const auto result = session.run("id");
  EXPECT_EQ(result.exit_status, 142);
  EXPECT_NE(result.stdout_text.find("Please login as the user \"debian\""), std::string::npos)
      << result.stdout_text;
}

TEST_F(DebianImage, TheCliRunsSudoInTheInstance) {
  const auto result = vmfest::testing::run_cli({"ssh", instance().name(), "--", "sudo", "id"});
  EXPECT_EQ(result.exit_code, 0) << result.describe();
  EXPECT_EQ(result.out.rfind("uid=0(root) gid=0(root)", 0), 0u) << result.describe();
}

// Every instance after the first resumes the warm image its first start saved: the agent came
// through the seed. Each clone has its own identity, OpenSSH's host key included. (The fixture's
// instance and one more: the host's cap here is two VMs.)
TEST_F(DebianImage, ClonesResumeWarmWithTheirOwnIdentity) {
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

}  // namespace
