// create -> ready on the libvirt backend beside the QEMU backend's, in one run, interleaved round
// by round so both see the same machine: cold boots on each, and warm starts where the backend
// has warm images (the QEMU backend; libvirt's instances boot cold, which its line says). Uses
// VMFEST_HOME and VMFEST_LIBVIRT_URI as they are (a libvirtd must run: tools/libvirt-services.sh).
//   vmfest_backend_bench [ROUNDS]
#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <iostream>
#include <map>
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

// Seconds from Instance::create to start() returning (SSH answered), destroy not counted.
double create_to_ready(const std::string& backend, bool warm) {
  ::setenv("VMFEST_BACKEND", backend.c_str(), 1);
  vmfest::InstanceRequest request;
  request.model = vmfest::testing::kDefaultModel;
  request.warm = warm;
  const auto begin = Clock::now();
  vmfest::Instance instance = vmfest::Instance::create(request);
  instance.start();
  const double seconds = seconds_since(begin);
  if (warm && !instance.resumed_warm() && backend == "qemu") {
    throw vmfest::Error("the QEMU backend booted a warm request cold: no warm image?");
  }
  return seconds;
}

}  // namespace

constexpr std::string_view kUsage = R"(usage: vmfest_backend_bench [ROUNDS (default 5)]
Times create -> ready on the libvirt backend beside the QEMU backend's (cold, and warm where the
backend has warm images), interleaved round by round. Needs VMFEST_LIBVIRT_URI and a running
libvirtd (tools/libvirt-services.sh). Prints a table and the ratios.
)";

int main(int argc, char** argv) {
  vmfest::bench::answer_help(argc, argv, kUsage);
  try {
    const int rounds = argc > 1 ? std::max(1, std::atoi(argv[1])) : 5;
    vmfest::testing::ensure_default_model();
    // Untimed: the QEMU warm image's build, and libvirt's one-time upload of the model.
    create_to_ready("qemu", true);
    create_to_ready("libvirt", false);
    std::map<std::string, std::vector<double>> figures;
    for (int round = 0; round < rounds; ++round) {
      figures["qemu cold"].push_back(create_to_ready("qemu", false));
      figures["libvirt cold"].push_back(create_to_ready("libvirt", false));
      figures["qemu warm"].push_back(create_to_ready("qemu", true));
    }
    std::cout << fmt::format("create -> ready, medians of {} interleaved rounds (TCG):\n", rounds);
    for (const auto& [label, values] : figures) {
      std::cout << fmt::format("  {:<14} {:6.2f} s\n", label, median(values));
    }
    std::cout << "  libvirt warm   n/a (the libvirt backend makes no warm images yet; it boots "
                 "cold)\n";
    std::cout << fmt::format("libvirt_cold_vs_qemu_cold {:.2f}\n",
                             median(figures["libvirt cold"]) / median(figures["qemu cold"]));
    std::cout << fmt::format("libvirt_cold_vs_qemu_warm {:.2f}\n",
                             median(figures["libvirt cold"]) / median(figures["qemu warm"]));
    return 0;
  } catch (const std::exception& error) {
    std::cerr << "vmfest_backend_bench: " << error.what() << "\n";
    return 1;
  }
}
