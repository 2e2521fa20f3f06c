// Real-VM tests of the walking skeleton: clone, boot, SSH, lifecycle, destroy.
#include <gtest/gtest.h>

#include <unistd.h>

#include <exception>
#include <filesystem>
#include <thread>

#include "vmfest/error.h"
#include "vmfest/gtest/fixture.h"
#include "vmfest/internal/base.h"
#include "vmfest/model.h"

namespace {
namespace fs = std::filesystem;
using vmfest::Instance;
using vmfest::InstanceState;

vmfest::InstanceRequest default_request() {
  vmfest::InstanceRequest request;
  request.model = vmfest::testing::test_model();
  return request;
}

// Bytes of the regular files under `folder`.
std::uintmax_t folder_bytes(const fs::path& folder) {
  std::uintmax_t total = 0;
  for (const auto& entry : fs::recursive_directory_iterator(folder)) {
    if (entry.is_regular_file()) total += entry.file_size();
  }
  return total;
}

class Guest : public vmfest::testing::InstanceTest {};

TEST_F(Guest, CommandOutputAndExitStatus) {
  auto result = ssh().run("echo hello; echo oops >&2; exit 3");
  EXPECT_EQ(result.stdout_text, "hello\n");
  EXPECT_EQ(result.stderr_text, "oops\n");
  EXPECT_EQ(result.exit_status, 3);
  EXPECT_EQ(ssh().run("true").exit_status, 0);
  EXPECT_EQ(ssh().run("no-such-command-here").exit_status, 127);
}

TEST_F(Guest, GuestHasTheInstanceNameAndItsOwnHostKey) {
  EXPECT_EQ(ssh().check("hostname").stdout_text, instance().name() + "\n");
  std::string pinned = vmfest::detail::read_text(instance().directory() / "host_ed25519.pub");
  EXPECT_NE(pinned.find("vmfest-host@" + instance().name()), std::string::npos);
}

TEST_F(Guest, CheckThrowsWithStatusAndStderr) {
  try {
    ssh().check("echo broken >&2; exit 4");
    FAIL() << "expected CommandFailedError";
  } catch (const vmfest::CommandFailedError& error) {
    EXPECT_EQ(error.exit_status(), 4);
    EXPECT_NE(std::string(error.what()).find("broken"), std::string::npos) << error.what();
  }
}

TEST(Clones, AreIndependentAndLeaveTheModelUnchanged) {
  vmfest::Model model = vmfest::ModelRegistry().get(vmfest::testing::test_model());
  const std::string model_hash = vmfest::detail::sha256_file(model.disk);
  fs::path first_directory;
  {
    Instance first = Instance::create(default_request());
    first_directory = first.directory();
    // A fresh clone costs kilobytes, not a copy of the image (wherever the backend keeps its disk).
    EXPECT_LT(folder_bytes(first.directory()), 1024u * 1024u);
    first.start();
    // In the login's home: root's on vmfest's default model, an unprivileged user's elsewhere.
    first.ssh().check("echo written-by-first > marker && sync");
    EXPECT_EQ(first.ssh().check("cat marker").stdout_text, "written-by-first\n");
  }
  EXPECT_FALSE(fs::exists(first_directory)) << "destroyed instance left its folder";
  Instance second = Instance::create(default_request());
  second.start();
  EXPECT_NE(second.ssh().run("test -e marker").exit_status, 0);
  EXPECT_EQ(vmfest::detail::sha256_file(model.disk), model_hash);
}

TEST(Clones, TwoInstancesRunSideBySide) {
  Instance a = Instance::create(default_request());
  Instance b = Instance::create(default_request());
  // A failure of b's start is reported as the test's, not as std::terminate of the binary.
  std::exception_ptr b_failed;
  std::jthread boot_b([&] {
    try {
      b.start();
    } catch (...) {
      b_failed = std::current_exception();
    }
  });
  a.start();
  boot_b.join();
  if (b_failed) std::rethrow_exception(b_failed);
  EXPECT_EQ(a.state(), InstanceState::Running);
  EXPECT_EQ(b.state(), InstanceState::Running);
  EXPECT_NE(a.ssh().endpoint().port, b.ssh().endpoint().port);
  EXPECT_EQ(a.ssh().check("hostname").stdout_text, a.name() + "\n");
  EXPECT_EQ(b.ssh().check("hostname").stdout_text, b.name() + "\n");
}

TEST(Lifecycle, PauseResumePowerDownDestroy) {
  Instance vm = Instance::create(default_request());
  EXPECT_EQ(vm.state(), InstanceState::Created);
  EXPECT_THROW(vm.pause(), vmfest::StateError);
  vm.start();
  EXPECT_EQ(vm.state(), InstanceState::Running);
  EXPECT_THROW(vm.start(), vmfest::StateError);
  vm.pause();
  EXPECT_EQ(vm.state(), InstanceState::Paused);
  EXPECT_THROW(vm.pause(), vmfest::StateError);
  vm.resume();
  EXPECT_EQ(vm.state(), InstanceState::Running);
  EXPECT_EQ(vm.ssh().check("echo back").stdout_text, "back\n");
  vm.power_down(std::chrono::seconds(20));
  EXPECT_EQ(vm.state(), InstanceState::Stopped);
  EXPECT_THROW(vm.resume(), vmfest::StateError);
  fs::path directory = vm.directory();
  vm.destroy();
  EXPECT_FALSE(fs::exists(directory));
  EXPECT_THROW(vm.start(), vmfest::StateError);
}

TEST(Readiness, AGuestThatIsNotReadyInTimeFailsWithItsConsoleTail) {
  vmfest::InstanceRequest request = default_request();
  request.ready_timeout = std::chrono::seconds(1);
  request.warm = false;  // a boot, not a resume
  Instance vm = Instance::create(request);
  try {
    vm.start();
    FAIL() << "a 1 s readiness budget cannot be met under TCG";
  } catch (const vmfest::NotReadyError& error) {
    std::string message = error.what();
    EXPECT_NE(message.find(vm.name()), std::string::npos) << message;
    EXPECT_NE(message.find("last lines of the console log"), std::string::npos) << message;
    EXPECT_NE(message.find("serial.log"), std::string::npos) << message;
  }
}

// A model that is one disk image boots as a distro cloud image does: the BIOS, then the bootloader
// on the disk. The default model's disk has one (SYSLINUX), so alone it is such a model.
TEST(Models, ADiskImageAloneBootsThroughItsOwnBootloader) {
  const vmfest::Model bundled = vmfest::ModelRegistry().get(vmfest::testing::kDefaultModel);
  const std::string name = "disk-only-" + std::to_string(::getpid());
  vmfest::SetupOptions options;
  options.name = name;
  options.ssh_user = "root";  // the image has no cloud-init to create vmfest's login
  const vmfest::Model disk_only = vmfest::setup_model(bundled.disk.string(), options);
  EXPECT_EQ(disk_only.boot.kind, vmfest::BootSpec::Kind::Disk);
  EXPECT_TRUE(disk_only.ready_marker.empty()) << "a plain image has no marker: readiness is SSH";
  {
    vmfest::InstanceRequest request;
    request.model = name;
    Instance instance = Instance::create(request);
    instance.start();
    const std::string cmdline = instance.ssh().check("cat /proc/cmdline").stdout_text;
    EXPECT_NE(cmdline.find("root=LABEL="), std::string::npos)
        << "expected SYSLINUX's command line, not QEMU's -append: " << cmdline;
    EXPECT_EQ(instance.ssh().check("hostname").stdout_text, instance.name() + "\n");
  }
  vmfest::ModelRegistry().remove(name);
}

// A model whose login does not exist in the guest: every SSH attempt is refused until the timeout.
// The error must say so, not merely that the last, squeezed attempt timed out.
TEST(Models, AWrongLoginFailsWithTheRefusalNotATimeout) {
  const vmfest::Model bundled = vmfest::ModelRegistry().get(vmfest::testing::kDefaultModel);
  const std::string name = "ghost-login-" + std::to_string(::getpid());
  vmfest::SetupOptions options;
  options.name = name;
  options.ssh_user = "ghost";  // the image has no cloud-init to create it
  (void)vmfest::setup_model(bundled.disk.string(), options);
  {
    vmfest::InstanceRequest request;
    request.model = name;
    request.warm = false;
    // The tiny guest is up in 5-12 s, even on a loaded runner; then it only refuses.
    request.ready_timeout = std::chrono::seconds(25);
    Instance instance = Instance::create(request);
    try {
      instance.start();
      FAIL() << "user ghost cannot log in";
    } catch (const vmfest::NotReadyError& error) {
      const std::string message = error.what();
      EXPECT_NE(message.find("error: public-key authentication as ghost@"), std::string::npos)
          << message;
      EXPECT_NE(message.find("accelerator"), std::string::npos) << message;
    }
  }
  vmfest::ModelRegistry().remove(name);
}

}  // namespace
