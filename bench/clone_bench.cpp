// What a clone costs: the time of Instance::create and the space each instance takes on disk
// (allocated blocks, as du counts them), for ten copy-on-write clones of the default model and a
// few permanent (full-copy) ones, next to the model's own size. Runs in a private VMFEST_HOME; a
// first, untimed clone builds the model's warm image (when the model can have one).
//   vmfest_clone_bench [CLONES]
#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <string>
#include <string_view>
#include <vector>

#include <fmt/format.h>

#include "bench_usage.h"
#include "timing.h"
#include "vmfest/error.h"
#include "vmfest/gtest/fixture.h"
#include "vmfest/instance.h"
#include "vmfest/model.h"

namespace {
namespace fs = std::filesystem;
using vmfest::testing::Clock;
using vmfest::testing::median;
using vmfest::testing::seconds_since;

// Bytes allocated to `path` (and everything under it), like `du -s --block-size=1`.
std::uintmax_t allocated_bytes(const fs::path& path) {
  auto blocks_of = [](const fs::path& entry) -> std::uintmax_t {
    struct stat info {};
    if (::lstat(entry.c_str(), &info) != 0) return 0;
    return static_cast<std::uintmax_t>(info.st_blocks) * 512;
  };
  std::uintmax_t total = blocks_of(path);
  if (fs::is_directory(path)) {
    for (const auto& entry : fs::recursive_directory_iterator(path)) total += blocks_of(entry);
  }
  return total;
}

std::string kibibytes(double bytes) { return fmt::format("{:.0f} KiB", bytes / 1024.0); }

struct Figures {
  std::vector<double> create_ms;
  std::vector<double> directory_bytes;
  std::vector<double> disk_bytes;
};

double maximum(const std::vector<double>& values) {
  return *std::max_element(values.begin(), values.end());
}

Figures measure(int count, bool permanent) {
  vmfest::InstanceRequest request;
  request.model = vmfest::testing::kDefaultModel;
  request.permanent = permanent;
  std::vector<vmfest::Instance> instances;  // destroyed when this returns
  Figures figures;
  for (int index = 0; index < count; ++index) {
    const auto begin = Clock::now();
    instances.push_back(vmfest::Instance::create(request));
    figures.create_ms.push_back(1000 * seconds_since(begin));
    const fs::path directory = instances.back().directory();
    figures.directory_bytes.push_back(static_cast<double>(allocated_bytes(directory)));
    figures.disk_bytes.push_back(static_cast<double>(allocated_bytes(directory / "disk.qcow2")));
  }
  return figures;
}

void print(const std::string& label, const Figures& figures) {
  std::cout << fmt::format(
      "{:<22} create median {:7.1f} ms  max {:7.1f} ms | instance folder median {:>9}  max {:>9} "
      "| disk.qcow2 median {:>9}  max {:>9}\n",
      label, median(figures.create_ms), maximum(figures.create_ms),
      kibibytes(median(figures.directory_bytes)), kibibytes(maximum(figures.directory_bytes)),
      kibibytes(median(figures.disk_bytes)), kibibytes(maximum(figures.disk_bytes)));
}

}  // namespace

constexpr std::string_view kUsage = R"(usage: vmfest_clone_bench [CLONES (default 10)]
The time of Instance::create and the disk space of copy-on-write clones and permanent copies of
the default model, beside the model's own size, in a private VMFEST_HOME.
)";

int main(int argc, char** argv) {
  vmfest::bench::answer_help(argc, argv, kUsage);
  const int clones = argc > 1 ? std::atoi(argv[1]) : 10;
  if (clones < 1) {
    std::cerr << "usage: vmfest_clone_bench [CLONES (default 10)]\n";
    return 2;
  }
  std::string home_template = (fs::temp_directory_path() / "vmfest-clone-bench-XXXXXX").string();
  if (::mkdtemp(home_template.data()) == nullptr) {
    std::cerr << "vmfest_clone_bench: cannot create a private VMFEST_HOME in /tmp\n";
    return 1;
  }
  const fs::path home = home_template;
  ::setenv("VMFEST_HOME", home.c_str(), 1);
  int status = 0;
  try {
    vmfest::testing::ensure_default_model();
    const vmfest::Model model = vmfest::ModelRegistry().get(vmfest::testing::kDefaultModel);
    const auto begin = Clock::now();
    measure(1, false);
    const double warm_up_seconds = seconds_since(begin);
    std::cout << fmt::format(
        "model '{}': disk {} ({}, {} allocated); model folder {} allocated (kernel, initrd, "
        "disk, warm images)\n",
        model.name, model.disk.filename().string(),
        kibibytes(static_cast<double>(model.size_bytes)),
        kibibytes(static_cast<double>(allocated_bytes(model.disk))),
        kibibytes(static_cast<double>(allocated_bytes(model.directory))));
    std::cout << fmt::format(
        "first clone (builds the warm image, if the model supports one): {:.1f} s; warm images: "
        "{} allocated\n",
        warm_up_seconds, kibibytes(static_cast<double>(allocated_bytes(model.directory / "warm"))));
    print(fmt::format("{} clones:", clones), measure(clones, false));
    print("3 permanent copies:", measure(3, true));
  } catch (const vmfest::Error& error) {
    std::cerr << "vmfest_clone_bench: " << error.what() << "\n";
    status = 1;
  }
  fs::remove_all(home);
  return status;
}
