// A group of three VMs on a private network, ready (every member created and started, on its
// segment with its address and the group's /etc/hosts; the wait for the host's VM slots left
// out), booted cold vs resumed warm, side by side in one run on the
// default model; then the same for a Debian cloud image when one is given (its figure, no target).
// Rounds interleave cold and warm so that load on the host hits both alike; each group is checked
// (every member reaches every other by name) outside the timing. Runs in a private VMFEST_HOME and
// takes its slots at once: under a VM cap (VMFEST_MAX_VMS) of 3, the whole host and one beyond.
// Prints each group's seconds, then `group_warm_vs_cold R` (and `debian_group_warm_vs_cold R`).
//   vmfest_group_bench [ROUNDS (default 3)] [DEBIAN IMAGE (.qcow2 or .qcow2.gz; e.g. the folder
//   tools/build-debian-image.sh prints, /debian-12-cloud.qcow2.gz)]
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <fmt/format.h>

#include "bench_usage.h"
#include "timing.h"
#include "vmfest/error.h"
#include "vmfest/gtest/environment.h"
#include "vmfest/gtest/private_network.h"
#include "vmfest/instance.h"
#include "vmfest/model.h"

namespace {
namespace fs = std::filesystem;
using vmfest::testing::Clock;
using vmfest::testing::median;
using vmfest::testing::seconds_since;

constexpr std::size_t kMembers = 3;

// create() of every member to start_all() returned: the group is ready for a test.
double group_ready(const std::string& model, bool warm, int round) {
  vmfest::testing::PrivateNetwork network;
  std::vector<std::string> group;
  for (std::size_t i = 0; i < kMembers; ++i) {
    group.push_back(fmt::format("bench-{}-{}-n{}", network.id(), round, i));
  }
  const auto begin = Clock::now();
  std::vector<vmfest::Instance> members;
  for (std::size_t i = 0; i < kMembers; ++i) {
    vmfest::InstanceRequest request;
    request.model = model;
    request.name = group[i];
    request.warm = warm;
    request.private_nic = network.attach(group);
    members.push_back(vmfest::Instance::create(request));
  }
  std::vector<vmfest::Instance*> starting;
  for (vmfest::Instance& member : members) starting.push_back(&member);
  const double created = seconds_since(begin);
  vmfest::start_all(starting);
  const double with_wait = seconds_since(begin);
  // start_all takes the group's VM slots before any start: the wait for them depends on what else
  // runs on the host, not on the group, and is left out (each start() is timed from its slots).
  double slowest_start = 0;
  for (const vmfest::Instance& member : members) {
    slowest_start = std::max(slowest_start, member.boot_seconds());
  }
  const double seconds = created + slowest_start;
  if (with_wait - seconds > 0.5) {
    std::cout << fmt::format("  ({} group waited {:.1f} s for VM slots, left out)\n",
                             warm ? "warm" : "cold", with_wait - seconds);
  }
  for (std::size_t i = 0; i < kMembers; ++i) {
    if (members[i].resumed_warm() != warm) {
      throw vmfest::Error(fmt::format("member {} of a {} group {}", members[i].name(),
                                      warm ? "warm" : "cold",
                                      warm ? "booted cold" : "resumed a warm image"));
    }
    // ping where the image has it (busybox), else bash's /dev/tcp to the peer's SSH port.
    members[i].ssh().check(fmt::format(
        "if command -v ping >/dev/null; then ping -c 1 -W 5 {0}; else timeout 10 bash -c "
        "'exec 3<>/dev/tcp/{0}/22'; fi",
        group[(i + 1) % kMembers]));
  }
  return seconds;
}

// Median seconds of cold and warm groups of `model`, interleaved over `rounds`; the first warm
// group of a fresh home builds the warm image, so one warm group runs before the rounds.
std::pair<double, double> cold_and_warm(const std::string& model, int rounds) {
  const double first = group_ready(model, true, 0);
  std::cout << fmt::format("{}: first warm group (builds the warm image) {:.2f} s\n", model, first);
  std::vector<double> cold;
  std::vector<double> warm;
  for (int round = 1; round <= rounds; ++round) {
    cold.push_back(group_ready(model, false, round));
    warm.push_back(group_ready(model, true, round));
    std::cout << fmt::format("{}: round {}: cold {:.2f} s, warm {:.2f} s\n", model, round,
                             cold.back(), warm.back());
  }
  return {median(cold), median(warm)};
}

}  // namespace

constexpr std::string_view kUsage =
    R"(usage: vmfest_group_bench [ROUNDS (default 3)] [DEBIAN IMAGE (.qcow2 or .qcow2.gz)]
A group of three VMs on a private network, ready, booted cold vs resumed warm, on the default model
(and on the Debian image when given). Prints group_warm_vs_cold (and
debian_group_warm_vs_cold).
)";

int main(int argc, char** argv) {
  vmfest::bench::answer_help(argc, argv, kUsage);
  const int rounds = argc > 1 ? std::atoi(argv[1]) : 3;
  const std::string debian_image = argc > 2 ? argv[2] : "";
  if (rounds < 1) {
    std::cerr << kUsage;
    return 2;
  }
  std::string home_template = (fs::temp_directory_path() / "vmfest-group-bench-XXXXXX").string();
  if (::mkdtemp(home_template.data()) == nullptr) {
    std::cerr << "vmfest_group_bench: cannot create a private VMFEST_HOME in /tmp\n";
    return 1;
  }
  const fs::path home = home_template;
  ::setenv("VMFEST_HOME", home.c_str(), 1);
  int status = 0;
  try {
    const std::string model = vmfest::testing::ensure_default_model();
    const auto [cold, warm] = cold_and_warm(model, rounds);
    std::cout << fmt::format("{}: 3-VM group ready, median: cold {:.2f} s, warm {:.2f} s\n", model,
                             cold, warm);
    std::optional<std::pair<double, double>> debian;
    if (!debian_image.empty()) {
      vmfest::SetupOptions options;
      options.name = "debian-12";
      vmfest::setup_model(debian_image, options);
      debian = cold_and_warm("debian-12", 1);
      std::cout << fmt::format("debian-12: 3-VM group ready: cold {:.2f} s, warm {:.2f} s\n",
                               debian->first, debian->second);
    }
    std::cout << fmt::format("group_warm_vs_cold {:.3f}\n", warm / cold);
    if (debian) {
      std::cout << fmt::format("debian_group_warm_vs_cold {:.3f}\n",
                               debian->second / debian->first);
    }
  } catch (const vmfest::Error& error) {
    std::cerr << "vmfest_group_bench: " << error.what() << "\n";
    status = 1;
  }
  fs::remove_all(home);
  return status;
}
