// The seed's example: ten instances of one model, created, all started, all powered down, all
// destroyed. Runs with VMFEST_MAX_VMS=10 (see CMakeLists.txt), else the cap would queue them.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <exception>
#include <filesystem>
#include <functional>
#include <set>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include "timing.h"
#include "vmfest/gtest/fixture.h"
#include "vmfest/instance.h"

namespace {
namespace fs = std::filesystem;
using vmfest::Instance;
using vmfest::InstanceState;
using vmfest::testing::Clock;
using vmfest::testing::seconds_since;

// Runs `action` on every instance, each in its own thread; rethrows the first failure.
void on_each_at_once(std::vector<Instance>& instances,
                     const std::function<void(Instance&)>& action) {
  std::vector<std::exception_ptr> failures(instances.size());
  {
    std::vector<std::jthread> threads;
    for (std::size_t index = 0; index < instances.size(); ++index) {
      threads.emplace_back([&, index] {
        try {
          action(instances[index]);
        } catch (...) {
          failures[index] = std::current_exception();
        }
      });
    }
  }
  for (const auto& failure : failures) {
    if (failure) std::rethrow_exception(failure);
  }
}

TEST(ManyInstances, TenOfOneModelCreatedStartedPoweredDownDestroyed) {
  constexpr int kCount = 10;
  vmfest::InstanceRequest request;
  request.model = vmfest::testing::kDefaultModel;
  request.profile = vmfest::Profile::named("micro");
  // Ten TCG guests share the host's cores: each boots several times slower than alone (up to
  // 80 s measured on 2 busy cores). A guest that hangs fails here, console tail included, well
  // before ctest's timeout.
  request.ready_timeout = std::chrono::minutes(5);

  std::vector<Instance> instances;
  auto begin = Clock::now();
  for (int index = 0; index < kCount; ++index) instances.push_back(Instance::create(request));
  const double create_seconds = seconds_since(begin);

  begin = Clock::now();
  on_each_at_once(instances, [](Instance& instance) { instance.start(); });
  const double start_seconds = seconds_since(begin);

  std::set<int> ports;
  std::vector<double> boots;
  for (Instance& instance : instances) {
    EXPECT_EQ(instance.state(), InstanceState::Running) << instance.name();
    EXPECT_EQ(instance.ssh().check("hostname").stdout_text, instance.name() + "\n");
    ports.insert(instance.info().ssh.port);
    boots.push_back(instance.boot_seconds());
  }
  EXPECT_EQ(ports.size(), static_cast<std::size_t>(kCount)) << "two instances share an SSH port";

  begin = Clock::now();
  on_each_at_once(instances,
                  [](Instance& instance) { instance.power_down(std::chrono::seconds(60)); });
  const double power_down_seconds = seconds_since(begin);
  for (Instance& instance : instances) {
    EXPECT_EQ(instance.state(), InstanceState::Stopped) << instance.name();
  }

  std::vector<fs::path> directories;
  begin = Clock::now();
  for (Instance& instance : instances) {
    directories.push_back(instance.directory());
    instance.destroy();
  }
  const double destroy_seconds = seconds_since(begin);
  for (const fs::path& directory : directories) EXPECT_FALSE(fs::exists(directory)) << directory;

  std::sort(boots.begin(), boots.end());
  const std::string figures = fmt::format(
      "{} instances: create all {:.2f} s, start all (in parallel) {:.1f} s (boot median {:.1f} s, "
      "max {:.1f} s), power down all {:.1f} s, destroy all {:.2f} s",
      kCount, create_seconds, start_seconds, boots[boots.size() / 2], boots.back(),
      power_down_seconds, destroy_seconds);
  std::cout << "[vmfest] " << figures << "\n";
  RecordProperty("figures", figures);
}

}  // namespace
