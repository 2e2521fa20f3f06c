// create -> ready on the libvirt backend beside the QEMU backend's, in one run, interleaved round
// by round so all see the same machine: cold boots and warm starts on each backend, and on each
// host of VMFEST_LIBVIRT_URI (comma-separated) in turn. Uses VMFEST_HOME as it is (a libvirtd must
// run: tools/libvirt-services.sh). Both backends give TCG the same translation cache
// (VMFEST_TCG_TB_SIZE, default 256 MiB); each arm prints the accelerator its instances ran under
// and where their time went.
//   vmfest_backend_bench [ROUNDS]
#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <iostream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include <fmt/format.h>

#include "bench_usage.h"
#include "timing.h"
#include "vmfest/error.h"
#include "vmfest/gtest/fixture.h"
#include "vmfest/instance.h"

namespace {
using vmfest::testing::Clock;
using vmfest::testing::median;
using vmfest::testing::seconds_since;

struct Arm {
  std::vector<double> seconds;
  std::set<std::string> accelerators;  // what its instances really ran under
  // Where the time went: "create" (Instance::create), then each phase of start().
  std::vector<std::string> phase_order;
  std::map<std::string, std::vector<double>> phase_seconds;

  void add_phase(const std::string& name, double phase_seconds_taken) {
    if (!phase_seconds.contains(name)) phase_order.push_back(name);
    phase_seconds[name].push_back(phase_seconds_taken);
  }
};

// Seconds from Instance::create to start() returning (SSH answered), destroy not counted. False
// when a warm request booted cold.
bool timed_start(const std::string& backend, bool warm, Arm& arm) {
  ::setenv("VMFEST_BACKEND", backend.c_str(), 1);
  vmfest::InstanceRequest request;
  request.model = vmfest::testing::kDefaultModel;
  request.warm = warm;
  const auto begin = Clock::now();
  vmfest::Instance instance = vmfest::Instance::create(request);
  arm.add_phase("create", seconds_since(begin));
  instance.start();
  arm.seconds.push_back(seconds_since(begin));
  arm.accelerators.insert(instance.accelerator());
  for (const vmfest::StartPhase& phase : instance.start_phases()) {
    arm.add_phase(phase.name, phase.seconds);
  }
  return !warm || instance.resumed_warm();
}

void create_to_ready(const std::string& backend, bool warm, Arm& arm) {
  if (!timed_start(backend, warm, arm)) {
    throw vmfest::Error(
        fmt::format("the {} backend booted a warm request cold: no warm image?", backend));
  }
}

// Untimed: makes the backend's warm image (a stale one is discarded by the first start and built
// by the second).
void make_warm_image(const std::string& backend) {
  Arm untimed;
  if (!timed_start(backend, true, untimed) && !timed_start(backend, true, untimed)) {
    create_to_ready(backend, true, untimed);
  }
}

std::vector<std::string> libvirt_uris() {
  const char* setting = std::getenv("VMFEST_LIBVIRT_URI");
  std::vector<std::string> uris;
  std::stringstream list(setting != nullptr ? setting : "qemu:///system");
  for (std::string uri; std::getline(list, uri, ',');) uris.push_back(uri);
  return uris;
}

std::string joined(const std::set<std::string>& words) {
  std::string text;
  for (const std::string& word : words) text += (text.empty() ? "" : ",") + word;
  return text;
}

}  // namespace

constexpr std::string_view kUsage = R"(usage: vmfest_backend_bench [ROUNDS (default 5)]
Times create -> ready, cold and warm, on the QEMU backend and on the libvirt backend on each host
of VMFEST_LIBVIRT_URI (comma-separated) in turn, interleaved round by round. Needs a running
libvirtd (tools/libvirt-services.sh). Prints a table, the accelerator each arm ran under, the
medians of its phases (create, then those of Instance::start_phases()), and the ratios.
)";

int main(int argc, char** argv) {
  vmfest::bench::answer_help(argc, argv, kUsage);
  try {
    const int rounds = argc > 1 ? std::max(1, std::atoi(argv[1])) : 5;
    const std::vector<std::string> uris = libvirt_uris();
    vmfest::testing::ensure_default_model();
    std::map<std::string, Arm> arms;
    // Untimed: the warm images' builds, and libvirt's one-time upload of the model.
    make_warm_image("qemu");
    for (const std::string& uri : uris) {
      ::setenv("VMFEST_LIBVIRT_URI", uri.c_str(), 1);
      make_warm_image("libvirt");
    }
    for (int round = 0; round < rounds; ++round) {
      create_to_ready("qemu", false, arms["qemu cold"]);
      create_to_ready("qemu", true, arms["qemu warm"]);
      for (std::size_t host = 0; host < uris.size(); ++host) {
        ::setenv("VMFEST_LIBVIRT_URI", uris[host].c_str(), 1);
        create_to_ready("libvirt", false, arms[fmt::format("libvirt{} cold", host + 1)]);
        create_to_ready("libvirt", true, arms[fmt::format("libvirt{} warm", host + 1)]);
      }
    }
    std::cout << fmt::format("create -> ready, medians of {} interleaved rounds:\n", rounds);
    for (const auto& [label, arm] : arms) {
      std::cout << fmt::format("  {:<14} {:6.2f} s  ({})\n", label, median(arm.seconds),
                               joined(arm.accelerators));
      std::string phases;
      for (const std::string& phase : arm.phase_order) {
        phases += fmt::format("{}{} {:.2f}", phases.empty() ? "" : ", ", phase,
                              median(arm.phase_seconds.at(phase)));
      }
      std::cout << fmt::format("  {:<14}   phases: {}\n", "", phases);
    }
    for (std::size_t host = 0; host < uris.size(); ++host) {
      std::cout << fmt::format("  libvirt{}: {}\n", host + 1, uris[host]);
    }
    auto of = [&](const std::string& label) { return median(arms[label].seconds); };
    for (std::size_t host = 1; host <= uris.size(); ++host) {
      const std::string cold = fmt::format("libvirt{} cold", host);
      const std::string warm = fmt::format("libvirt{} warm", host);
      const std::string suffix = uris.size() > 1 ? fmt::format(" (libvirt{})", host) : "";
      std::cout << fmt::format("libvirt_warm_vs_libvirt_cold {:.2f}{}\n", of(warm) / of(cold),
                               suffix);
      std::cout << fmt::format("libvirt_warm_vs_qemu_warm {:.2f}{}\n", of(warm) / of("qemu warm"),
                               suffix);
      std::cout << fmt::format("libvirt_cold_vs_qemu_cold {:.2f}{}\n", of(cold) / of("qemu cold"),
                               suffix);
    }
    return 0;
  } catch (const std::exception& error) {
    std::cerr << "vmfest_backend_bench: " << error.what() << "\n";
    return 1;
  }
}
