// A stock distro cloud image (tools/build-debian-image.sh, or any cloud-init qcow2[.gz]) in a fresh
// home, as a new user meets it: setup-model over HTTP, the first instance (a cold boot that also
// saves the warm image), then cold and warm instances side by side, create() to ready, identity
// included, and what a clone costs on disk. Prints a table, then `warm_vs_cold R` last.
//
// Usage: vmfest_cloud_image_bench IMAGE [ROUNDS]   (IMAGE: a local .qcow2 or .qcow2.gz)
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <iostream>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include <fmt/format.h>

#include "bench_usage.h"
#include "http_server.h"
#include "timing.h"
#include "vmfest/error.h"
#include "vmfest/instance.h"
#include "vmfest/model.h"

namespace {
namespace fs = std::filesystem;
using vmfest::testing::Clock;
using vmfest::testing::median;
using vmfest::testing::seconds_since;

double mebibytes(std::uintmax_t bytes) { return static_cast<double>(bytes) / 1048576.0; }

std::uintmax_t folder_bytes(const fs::path& folder) {
  std::uintmax_t total = 0;
  for (const auto& entry : fs::recursive_directory_iterator(folder)) {
    if (entry.is_regular_file()) total += entry.file_size();
  }
  return total;
}

struct Start {
  double seconds = 0;
  bool warm = false;
  std::uintmax_t folder_bytes = 0;
  std::vector<vmfest::StartPhase> phases;
};

// create() to ready, the one command a test would run first included.
Start start_one(const vmfest::Home& home, const std::string& model, bool warm) {
  vmfest::InstanceRequest request;
  request.model = model;
  request.warm = warm;
  const auto begin = Clock::now();
  vmfest::Instance instance = vmfest::Instance::create(request, home);
  instance.start();
  instance.ssh().check("sudo -n true");
  Start start{seconds_since(begin), instance.resumed_warm(), folder_bytes(instance.directory()),
              instance.start_phases()};
  return start;
}

}  // namespace

constexpr std::string_view kUsage = R"(usage: vmfest_cloud_image_bench IMAGE [ROUNDS (default 3)]
A cloud-init image (a local .qcow2 or .qcow2.gz, e.g. from tools/build-debian-image.sh) in a fresh
home: setup-model over HTTP, the first instance, then cold and warm instances side by side.
Prints a table, then warm_vs_cold.
)";

int main(int argc, char** argv) {
  vmfest::bench::answer_help(argc, argv, kUsage);
  if (argc < 2) {
    std::cerr << "usage: vmfest_cloud_image_bench IMAGE [ROUNDS]\n";
    return 2;
  }
  const fs::path image = fs::canonical(argv[1]);
  const int rounds = argc > 2 ? std::stoi(argv[2]) : 3;
  const fs::path root =
      fs::temp_directory_path() / fmt::format("vmfest-cloud-bench-{}", ::getpid());
  fs::remove_all(root);
  fs::create_directories(root / "http");
  const vmfest::Home home(root / "home");
  int status = 0;
  try {
    vmfest::testing::HttpServer server(image.parent_path(), root / "http");
    const std::string model = "cloud-image";
    vmfest::SetupOptions options;
    options.name = model;
    options.on_progress = [](const vmfest::Progress&) {};
    auto begin = Clock::now();
    const vmfest::Model installed =
        vmfest::setup_model(server.url("-", image.filename().string()), options, home);
    const double setup_seconds = seconds_since(begin);

    // The first test in a fresh home: its instance boots cold and saves the warm image.
    const Start first = start_one(home, model, true);
    std::vector<double> cold;
    std::vector<double> warm;
    std::map<std::string, std::vector<double>> warm_phases;
    std::uintmax_t warm_bytes = 0;
    for (int round = 0; round < rounds; ++round) {
      const Start c = start_one(home, model, false);
      const Start w = start_one(home, model, true);
      if (!w.warm) throw vmfest::Error("a warm start did not resume the warm image");
      cold.push_back(c.seconds);
      warm.push_back(w.seconds);
      warm_bytes = w.folder_bytes;
      for (const auto& phase : w.phases) warm_phases[phase.name].push_back(phase.seconds);
      std::cerr << fmt::format("round {}: cold {:.2f} s, warm {:.2f} s\n", round + 1, c.seconds,
                               w.seconds);
    }
    fmt::print("cloud image: {} ({:.0f} MiB image, {:.0f} MiB gzip), profile micro, {} rounds\n",
               image.filename().string(), mebibytes(installed.size_bytes),
               mebibytes(fs::file_size(image)), rounds);
    fmt::print("setup-model over HTTP (127.0.0.1)   {:8.2f} s\n", setup_seconds);
    fmt::print("first instance in a fresh home      {:8.2f} s  (cold boot + warm image saved)\n",
               first.seconds);
    fmt::print("cold start->ready (median)          {:8.2f} s\n", median(cold));
    fmt::print("warm start->ready (median)          {:8.2f} s\n", median(warm));
    for (const auto& [name, values] : warm_phases) {
      fmt::print("  warm phase {:<24} {:8.3f} s\n", name, median(values));
    }
    fmt::print("instance folder of a warm clone     {:8.1f} MiB\n", mebibytes(warm_bytes));
    fmt::print("warm_vs_cold {:.3f}\n", median(warm) / median(cold));
  } catch (const std::exception& error) {
    std::cerr << "vmfest_cloud_image_bench: " << error.what() << "\n";
    status = 1;
  }
  for (const auto& name : vmfest::list_instances(home)) {
    vmfest::force_destroy_instance(name, home);
  }
  fs::remove_all(root);
  return status;
}
