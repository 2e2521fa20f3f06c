// Stock distro cloud images (tools/build-debian-image.sh, or any cloud-init qcow2[.gz]) in a fresh
// home, as a new user meets them: setup-model over HTTP, the first instance (a cold boot that also
// saves the warm image), then cold and warm instances side by side, create() to ready, identity
// included, and what a clone costs on disk. The images take turns in every round, so a busy host
// weighs on each alike. Prints a table per image, then per image `NAME warm_vs_cold R` and, for
// every image after the first (the reference, Debian's), `NAME cold_vs_debian_cold R`.
//
// Usage: vmfest_cloud_image_bench IMAGE... [ROUNDS]   (IMAGE: a local .qcow2 or .qcow2.gz)
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <iostream>
#include <map>
#include <memory>
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

// One image's model in the bench's home and what was measured of it.
struct Subject {
  fs::path image;
  std::string model;
  vmfest::Model installed;
  double setup_seconds = 0;
  Start first;
  std::vector<double> cold;
  std::vector<double> warm;
  std::map<std::string, std::vector<double>> warm_phases;
  std::uintmax_t warm_bytes = 0;
};

// The model's name: the image's file name without its extensions.
std::string model_name(const fs::path& image) {
  std::string name = image.filename().string();
  return name.substr(0, name.find('.'));
}

void print_subject(const Subject& subject, int rounds) {
  fmt::print("cloud image: {} ({:.0f} MiB image, {:.0f} MiB gzip), profile micro, {} rounds\n",
             subject.image.filename().string(), mebibytes(subject.installed.size_bytes),
             mebibytes(fs::file_size(subject.image)), rounds);
  fmt::print("setup-model over HTTP (127.0.0.1)   {:8.2f} s\n", subject.setup_seconds);
  fmt::print("first instance in a fresh home      {:8.2f} s  (cold boot + warm image saved)\n",
             subject.first.seconds);
  fmt::print("cold start->ready (median)          {:8.2f} s\n", median(subject.cold));
  fmt::print("warm start->ready (median)          {:8.2f} s\n", median(subject.warm));
  for (const auto& [name, values] : subject.warm_phases) {
    fmt::print("  warm phase {:<24} {:8.3f} s\n", name, median(values));
  }
  fmt::print("instance folder of a warm clone     {:8.1f} MiB\n\n", mebibytes(subject.warm_bytes));
}

}  // namespace

constexpr std::string_view kUsage = R"(usage: vmfest_cloud_image_bench IMAGE... [ROUNDS (default 3)]
Cloud-init images (local .qcow2 or .qcow2.gz, e.g. from tools/build-debian-image.sh [--shape
ubuntu]) in a fresh home: setup-model over HTTP, the first instance, then cold and warm instances
side by side, the images taking turns. Prints a table per image, then NAME warm_vs_cold R and,
for each image after the first, NAME cold_vs_debian_cold R.
)";

int main(int argc, char** argv) {
  vmfest::bench::answer_help(argc, argv, kUsage);
  std::vector<std::string_view> arguments(argv + 1, argv + argc);
  int rounds = 3;
  if (!arguments.empty() && arguments.back().find_first_not_of("0123456789") == std::string::npos) {
    rounds = std::stoi(std::string(arguments.back()));
    arguments.pop_back();
  }
  if (arguments.empty()) {
    std::cerr << kUsage;
    return 2;
  }
  std::vector<Subject> subjects;
  for (const auto& argument : arguments) {
    Subject subject;
    subject.image = fs::canonical(fs::path(argument));
    subject.model = model_name(subject.image);
    subjects.push_back(std::move(subject));
  }
  const fs::path root =
      fs::temp_directory_path() / fmt::format("vmfest-cloud-bench-{}", ::getpid());
  fs::remove_all(root);
  const vmfest::Home home(root / "home");
  int status = 0;
  try {
    std::vector<std::unique_ptr<vmfest::testing::HttpServer>> servers;
    for (Subject& subject : subjects) {
      const fs::path scratch = root / ("http-" + subject.model);
      fs::create_directories(scratch);
      servers.push_back(
          std::make_unique<vmfest::testing::HttpServer>(subject.image.parent_path(), scratch));
      vmfest::SetupOptions options;
      options.name = subject.model;
      options.on_progress = [](const vmfest::Progress&) {};
      const auto begin = Clock::now();
      subject.installed = vmfest::setup_model(
          servers.back()->url("-", subject.image.filename().string()), options, home);
      subject.setup_seconds = seconds_since(begin);
    }
    // The first test in a fresh home: its instance boots cold and saves the warm image.
    for (Subject& subject : subjects) subject.first = start_one(home, subject.model, true);
    for (int round = 0; round < rounds; ++round) {
      for (Subject& subject : subjects) {
        const Start c = start_one(home, subject.model, false);
        const Start w = start_one(home, subject.model, true);
        if (!w.warm) {
          throw vmfest::Error("a warm start of '" + subject.model +
                              "' did not resume the warm image");
        }
        subject.cold.push_back(c.seconds);
        subject.warm.push_back(w.seconds);
        subject.warm_bytes = w.folder_bytes;
        for (const auto& phase : w.phases) subject.warm_phases[phase.name].push_back(phase.seconds);
        std::cerr << fmt::format("round {}, {}: cold {:.2f} s, warm {:.2f} s\n", round + 1,
                                 subject.model, c.seconds, w.seconds);
      }
    }
    for (const Subject& subject : subjects) print_subject(subject, rounds);
    for (const Subject& subject : subjects) {
      fmt::print("{} warm_vs_cold {:.3f}\n", subject.model,
                 median(subject.warm) / median(subject.cold));
    }
    for (std::size_t i = 1; i < subjects.size(); ++i) {
      fmt::print("{} cold_vs_debian_cold {:.3f}\n", subjects[i].model,
                 median(subjects[i].cold) / median(subjects.front().cold));
    }
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
