// A start that fails (the guest never becomes ready) stops the VM it launched and frees its slot,
// so a `vmfest start` that gives up leaves nothing running.
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "cli_runner.h"
#include "vmfest/error.h"
#include "vmfest/home.h"
#include "vmfest/instance.h"
#include "vmfest/model.h"

namespace {
namespace fs = std::filesystem;

TEST(FailedStart, StopsTheVmItLaunched) {
  const vmfest::Home home = vmfest::Home::from_environment();
  // One MiB of random bytes: QEMU starts, the BIOS finds nothing to boot, the guest never answers.
  const fs::path dud = fs::temp_directory_path() / ("vmfest-dud-" + std::to_string(::getpid()));
  std::vector<char> bytes(1 << 20);
  std::ifstream("/dev/urandom", std::ios::binary).read(bytes.data(), std::ssize(bytes));
  std::ofstream(dud, std::ios::binary).write(bytes.data(), std::ssize(bytes));
  vmfest::SetupOptions options;
  options.name = "dud-" + std::to_string(::getpid());
  vmfest::setup_model(dud.string(), options, home);
  fs::remove(dud);

  vmfest::InstanceRequest request;
  request.model = options.name;
  request.warm = false;
  request.ready_timeout = std::chrono::seconds(5);
  vmfest::Instance instance = vmfest::Instance::create(request, home);
  EXPECT_THROW(instance.start(), vmfest::NotReadyError);
  EXPECT_TRUE(vmfest::testing::processes_working_in(instance.directory()).empty())
      << "the failed start left its QEMU running";
  EXPECT_EQ(instance.state(), vmfest::InstanceState::Stopped);
  instance.destroy();
  vmfest::ModelRegistry(home).remove(options.name);
}

}  // namespace
