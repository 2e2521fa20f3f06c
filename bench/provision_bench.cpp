// Provisioned clones against provisioning in every test: the same suite of TESTS tests, each of
// which needs the same provisioning (about 20 s of guest work under TCG, calibrated first), run
// both ways one after the other in one private VMFEST_HOME:
//   per test      each test resumes a warm clone of the model and runs the steps itself;
//   provisioned   each test asks for the steps (InstanceRequest::provision): the suite's first
//                 test builds the layer (its time is the first-build cost), the rest resume it;
//   cached        the same suite again, the layer already built (a CI runner with a warm cache).
// Prints every suite's seconds and the ratios provisioned_vs_per_test (cached / per test) and
// provisioned_vs_per_test_first_run (provisioned / per test).
//   vmfest_provision_bench [TESTS (default 10)] [SECONDS OF PROVISIONING (default 20)]
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <random>
#include <string>
#include <string_view>

#include <fmt/format.h>

#include "bench_usage.h"
#include "timing.h"
#include "vmfest/error.h"
#include "vmfest/gtest/fixture.h"
#include "vmfest/instance.h"

namespace {
namespace fs = std::filesystem;
using vmfest::ProvisionStep;
using vmfest::ProvisionSteps;
using vmfest::testing::Clock;
using vmfest::testing::seconds_since;

// Guest CPU work standing in for a package build or a schema load: `loops` iterations of awk.
std::string work_command(long loops, const std::string& tag) {
  return fmt::format(
      "awk 'BEGIN {{ for (i = 0; i < {}; i++) s += i % 7; print s }}' > /root/index  # {}", loops,
      tag);
}

ProvisionSteps make_steps(long loops, const fs::path& upload, const std::string& tag) {
  return {ProvisionStep::run("mkdir -p /srv"), ProvisionStep::upload(upload, "/srv/data"),
          ProvisionStep::run(work_command(loops, tag))};
}

vmfest::Instance start(const ProvisionSteps& steps) {
  vmfest::InstanceRequest request;
  request.model = vmfest::testing::kDefaultModel;
  request.provision = steps;
  vmfest::Instance instance = vmfest::Instance::create(request);
  instance.start();
  return instance;
}

// What each test checks once it has its guest.
void exercise(vmfest::Instance& instance) {
  if (instance.ssh().run("test -s /root/index && test -s /srv/data/table.csv").exit_status != 0) {
    throw vmfest::Error("instance " + instance.name() + " is not provisioned");
  }
  instance.ssh().check("echo test > /root/result");
}

// The steps run by hand in a warm clone of the bare model.
void provision_by_hand(vmfest::Instance& instance, const ProvisionSteps& steps) {
  for (const ProvisionStep& step : steps) {
    if (step.kind == ProvisionStep::Kind::Upload) {
      instance.ssh().upload(step.local, step.remote);
    } else {
      instance.ssh().check(step.command);
    }
  }
}

}  // namespace

constexpr std::string_view kUsage =
    R"(usage: vmfest_provision_bench [TESTS (default 10, >= 2)] [SECONDS OF PROVISIONING (default 20)]
A suite whose tests all need the same provisioning, run with the steps in every test and with a
provisioned layer (first run and cached). Prints provisioned_vs_per_test and
provisioned_vs_per_test_first_run.
)";

int main(int argc, char** argv) {
  vmfest::bench::answer_help(argc, argv, kUsage);
  const int tests = argc > 1 ? std::atoi(argv[1]) : 10;
  const double target_seconds = argc > 2 ? std::atof(argv[2]) : 20.0;
  if (tests < 2 || target_seconds <= 0) {
    std::cerr << "usage: vmfest_provision_bench [TESTS >= 2] [SECONDS OF PROVISIONING]\n";
    return 2;
  }
  std::string home_template =
      (fs::temp_directory_path() / "vmfest-provision-bench-XXXXXX").string();
  if (::mkdtemp(home_template.data()) == nullptr) {
    std::cerr << "vmfest_provision_bench: cannot create a private VMFEST_HOME in /tmp\n";
    return 1;
  }
  const fs::path home = home_template;
  ::setenv("VMFEST_HOME", home.c_str(), 1);
  const fs::path upload = home / "upload";
  fs::create_directories(upload);
  {
    std::ofstream table(upload / "table.csv");
    for (int row = 0; row < 20000; ++row) table << row << ",item-" << row << "," << row * 7 << "\n";
  }
  int status = 0;
  try {
    vmfest::testing::ensure_default_model();
    // The model's warm image, and the work's speed under this host's accelerator.
    long loops = 0;
    {
      vmfest::Instance probe = start({});
      constexpr long kProbeLoops = 300000;
      const auto begin = Clock::now();
      probe.ssh().check(work_command(kProbeLoops, "probe"));
      const double took = seconds_since(begin);
      loops = static_cast<long>(static_cast<double>(kProbeLoops) * target_seconds / took);
      std::cout << fmt::format(
          "accelerator {}; {} awk loops take {:.2f} s: {} loops for about {:.0f} s\n",
          probe.accelerator(), kProbeLoops, took, loops, target_seconds);
    }
    std::random_device random;
    const std::string tag = fmt::format("bench-{:08x}", random());
    const ProvisionSteps steps = make_steps(loops, upload, tag);

    double per_test = 0;
    double provisioning = 0;
    for (int test = 0; test < tests; ++test) {
      const auto begin = Clock::now();
      vmfest::Instance instance = start({});
      const auto provision_begin = Clock::now();
      provision_by_hand(instance, steps);
      provisioning += seconds_since(provision_begin);
      exercise(instance);
      instance.destroy();
      per_test += seconds_since(begin);
    }
    std::cout << fmt::format(
        "per test:    {} tests in {:.1f} s ({:.1f} s each, {:.1f} s of it provisioning)\n", tests,
        per_test, per_test / tests, provisioning / tests);

    double first_run = 0;
    double first_build = 0;
    double layer_save = 0;
    for (int test = 0; test < tests; ++test) {
      const auto begin = Clock::now();
      vmfest::Instance instance = start(steps);
      if (test == 0) {
        first_build = seconds_since(begin);
        for (const vmfest::StartPhase& phase : instance.start_phases()) {
          if (phase.name == "layer") layer_save = phase.seconds;
        }
      }
      exercise(instance);
      instance.destroy();
      first_run += seconds_since(begin);
    }
    std::cout << fmt::format(
        "provisioned: {} tests in {:.1f} s; the first builds the layer in {:.1f} s (saving it "
        "{:.2f} s), the others take {:.2f} s each\n",
        tests, first_run, first_build, layer_save, (first_run - first_build) / (tests - 1));

    double cached = 0;
    for (int test = 0; test < tests; ++test) {
      const auto begin = Clock::now();
      vmfest::Instance instance = start(steps);
      exercise(instance);
      instance.destroy();
      cached += seconds_since(begin);
    }
    std::cout << fmt::format("cached:      {} tests in {:.1f} s ({:.2f} s each)\n", tests, cached,
                             cached / tests);
    std::cout << fmt::format("first_build_seconds {:.1f}\n", first_build);
    std::cout << fmt::format("provisioned_vs_per_test {:.3f}\n", cached / per_test);
    std::cout << fmt::format("provisioned_vs_per_test_first_run {:.3f}\n", first_run / per_test);
  } catch (const vmfest::Error& error) {
    std::cerr << "vmfest_provision_bench: " << error.what() << "\n";
    status = 1;
  }
  fs::remove_all(home);
  return status;
}
