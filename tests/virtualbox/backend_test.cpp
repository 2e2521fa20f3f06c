// The VirtualBox backend through vmfest's public API, against a double, without booting: what an
// instance leaves in VirtualBox, what destroy removes, how a lock held elsewhere is reported.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <thread>

#include "backends/virtualbox/vbox_api.h"
#include "double_process.h"
#include "vmfest/error.h"
#include "vmfest/gtest/fixture.h"
#include "vmfest/instance.h"
#include "vmfest/model.h"

namespace {
namespace fs = std::filesystem;
namespace vb = vmfest::detail::virtualbox;
using vmfest::Instance;
using vmfest::testing::DoubleProcess;

class VirtualBoxBackend : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { vmfest::testing::ensure_default_model(); }

  void SetUp() override { use(server_); }
  void TearDown() override {
    ::unsetenv("VMFEST_BACKEND");
    ::unsetenv("VMFEST_VBOX_URL");
  }

  static void use(const DoubleProcess& server) {
    ::setenv("VMFEST_BACKEND", "virtualbox", 1);
    ::setenv("VMFEST_VBOX_URL", server.url().c_str(), 1);
  }

  static Instance create() {
    vmfest::InstanceRequest request;
    request.model = vmfest::testing::kDefaultModel;
    return Instance::create(request);
  }

  vb::ServerOptions options() const {
    vb::ServerOptions options;
    options.url = server_.url();
    return options;
  }

  DoubleProcess server_{"7.1"};
};

TEST_F(VirtualBoxBackend, AnInstanceIsARegisteredMachineUntilDestroyed) {
  Instance vm = create();
  EXPECT_EQ(vm.state(), vmfest::InstanceState::Created);
  const fs::path settings = vm.directory() / "virtualbox" / (vm.name() + ".vbox");
  EXPECT_TRUE(fs::exists(settings));
  {
    vb::Websession session(options());
    EXPECT_TRUE(vb::VirtualBoxApi(session).find_machine(vm.name()).has_value());
  }
  const vmfest::Model model = vmfest::ModelRegistry().get(vmfest::testing::kDefaultModel);
  const fs::path cache = vmfest::Home::from_environment().cache() / "virtualbox";
  const fs::path vdi = cache / (model.name + "-" + model.sha256.substr(0, 16) + ".vdi");
  EXPECT_TRUE(fs::exists(vdi)) << "the model's VDI is cached in " << cache;

  vm.destroy();
  vb::Websession session(options());
  EXPECT_FALSE(vb::VirtualBoxApi(session).find_machine(vm.name()).has_value());
  EXPECT_FALSE(fs::exists(settings));
  EXPECT_TRUE(fs::exists(vdi)) << "destroy deleted the model's medium";
}

TEST_F(VirtualBoxBackend, StartingAMachineHeldByAnotherSessionSaysWhoToClose) {
  Instance vm = create();
  vb::Websession other(options());
  vb::VirtualBoxApi api(other);
  vb::MachineLock held(api, *api.find_machine(vm.name()), vbox__LockType::Write, "other");
  try {
    vm.start();
    FAIL() << "started a machine another session holds";
  } catch (const vb::MachineLockedError& error) {
    const std::string message = error.what();
    EXPECT_NE(message.find(vm.name()), std::string::npos) << message;
    EXPECT_NE(message.find("VirtualBox Manager"), std::string::npos) << message;
  }
}

TEST_F(VirtualBoxBackend, AnExpiredWebsessionIsReplacedByANewLogon) {
  DoubleProcess forgetful("6.1", {"--session-timeout", "1"});
  use(forgetful);
  Instance vm = create();
  // vboxwebsrv drops a websession idle longer than its --timeout; the instance logs on again.
  std::this_thread::sleep_for(std::chrono::milliseconds(2100));
  EXPECT_EQ(vm.state(), vmfest::InstanceState::Created);
}

TEST_F(VirtualBoxBackend, AnUnreachableServerFailsCreateWithAHint) {
  ::setenv("VMFEST_VBOX_URL",
           ("http://127.0.0.1:" + std::to_string(vmfest::testing::closed_port()) + "/").c_str(), 1);
  vmfest::InstanceRequest request;
  request.model = vmfest::testing::kDefaultModel;
  request.name = "vbox-unreachable-" + std::to_string(::getpid());
  try {
    Instance::create(request);
    FAIL() << "created an instance without a server";
  } catch (const vmfest::BackendError& error) {
    EXPECT_NE(std::string(error.what()).find("vboxwebsrv --host"), std::string::npos)
        << error.what();
  }
  EXPECT_FALSE(fs::exists(vmfest::Home::from_environment().instances() / request.name))
      << "a failed create left its instance behind";
}

}  // namespace
