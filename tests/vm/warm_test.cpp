// Warm instances: resumed from a saved booted guest, each with its own identity.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <ctime>
#include <thread>

#include "files.h"
#include "vmfest/error.h"
#include "vmfest/gtest/environment.h"
#include "vmfest/instance.h"

namespace {
using vmfest::Instance;
using vmfest::InstanceState;

Instance start_warm() {
  vmfest::InstanceRequest request;
  request.model = vmfest::testing::test_model();
  Instance instance = Instance::create(request);
  instance.start();
  return instance;
}

TEST(Warm, ClonesResumeWithTheirOwnIdentity) {
  Instance a = start_warm();
  Instance b = start_warm();
  ASSERT_TRUE(a.resumed_warm()) << "expected a resumed warm image; console:\n" << a.console_tail();
  ASSERT_TRUE(b.resumed_warm());

  // Hostname and host key: each clone's own (the SSH handle pins the instance's key).
  EXPECT_EQ(a.ssh().check("hostname").stdout_text, a.name() + "\n");
  EXPECT_EQ(b.ssh().check("hostname").stdout_text, b.name() + "\n");
  const std::string key_a = vmfest::detail::read_text(a.directory() / "host_ed25519.pub");
  const std::string key_b = vmfest::detail::read_text(b.directory() / "host_ed25519.pub");
  EXPECT_NE(key_a, key_b);

  // Clock: the host's, not the time the image was saved.
  for (Instance* vm : {&a, &b}) {
    long guest = std::stol(vm->ssh().check("date +%s").stdout_text);
    EXPECT_NEAR(static_cast<double>(guest), static_cast<double>(std::time(nullptr)), 3.0);
  }

  // RNG: reseeded per clone, so the streams differ.
  const std::string read_random = "head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n'";
  EXPECT_NE(a.ssh().check(read_random).stdout_text, b.ssh().check(read_random).stdout_text);

  // Clones of one memory image stay independent on disk.
  a.ssh().check("echo only-a > mine && sync");
  EXPECT_NE(b.ssh().run("test -e mine").exit_status, 0);
}

TEST(Warm, LifecycleWorksAsOnColdInstances) {
  Instance vm = start_warm();
  ASSERT_TRUE(vm.resumed_warm());
  vm.pause();
  EXPECT_EQ(vm.state(), InstanceState::Paused);
  vm.resume();
  EXPECT_EQ(vm.ssh().check("echo alive").stdout_text, "alive\n");
  vm.power_down(std::chrono::seconds(20));
  EXPECT_EQ(vm.state(), InstanceState::Stopped);
  // A second start boots the clone's disk cold: its memory image is spent.
  vm.start();
  EXPECT_FALSE(vm.resumed_warm());
  EXPECT_EQ(vm.ssh().check("hostname").stdout_text, vm.name() + "\n");
  const auto directory = vm.directory();
  vm.destroy();
  EXPECT_FALSE(std::filesystem::exists(directory));
}

TEST(Warm, EightAtOnceAllBecomeReady) {
  constexpr int kCount = 8;
  // All eight at once is the point: lift the host-wide cap for this process.
  ::setenv("VMFEST_MAX_VMS", "8", 1);
  std::vector<std::optional<Instance>> vms(kCount);
  std::vector<std::string> errors(kCount);
  {
    std::vector<std::jthread> starters;
    for (int i = 0; i < kCount; ++i) {
      starters.emplace_back([&, i] {
        try {
          vms[i].emplace(start_warm());
        } catch (const std::exception& error) {
          errors[i] = error.what();
        }
      });
    }
  }
  for (int i = 0; i < kCount; ++i) {
    ASSERT_TRUE(errors[i].empty()) << errors[i];
    EXPECT_EQ(vms[i]->ssh().check("hostname").stdout_text, vms[i]->name() + "\n");
  }
}

}  // namespace
