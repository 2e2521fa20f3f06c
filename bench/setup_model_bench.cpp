// setup_model throughput from a local HTTP server vs `curl -s URL | gunzip > file`, on the same
// ~200 MiB gzip file of a disk-like image (part incompressible, part text), side by side.
// Usage: vmfest_setup_model_bench [ROUNDS]   (default 3; the median round is reported)
// The test data is made once in $TMPDIR/vmfest-setup-bench (about 0.5 GiB) and kept for reruns.
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include <fmt/format.h>

#include "bench_usage.h"
#include "child_process.h"
#include "http_server.h"
#include "timing.h"
#include "vmfest/error.h"
#include "vmfest/internal/base.h"
#include "vmfest/model.h"

namespace {
namespace fs = std::filesystem;
using vmfest::testing::Clock;
using vmfest::testing::median;
using vmfest::testing::seconds_since;

constexpr std::size_t kBlock = 1 << 20;
constexpr std::size_t kRandomBlocks = 176;  // incompressible, like packed binaries
constexpr std::size_t kTextBlocks = 144;    // compressible, like logs and docs

int run_shell(const std::string& command) {
  return std::system(command.c_str());  // NOLINT: a benchmark of a shell pipeline
}

// The image and its gzip, made once.
fs::path make_data(const fs::path& dir) {
  const fs::path gz = dir / "image.raw.gz";
  if (fs::exists(gz)) return gz;
  fs::create_directories(dir);
  std::mt19937_64 random(7);
  std::vector<char> block(kBlock);
  const std::vector<std::string> words = {"vmfest ", "model ", "qemu ",  "disk ", "image ",
                                          "kernel ", "boot ",  "guest ", "host ", "ssh\n"};
  {
    std::ofstream out(dir / "image.raw", std::ios::binary);
    for (std::size_t i = 0; i < kRandomBlocks + kTextBlocks; ++i) {
      if (i % 20 < 11) {  // interleaved, as on a real disk
        for (std::size_t j = 0; j < kBlock; j += 8) {
          const std::uint64_t word = random();
          std::memcpy(block.data() + j, &word, 8);
        }
      } else {
        std::size_t j = 0;
        while (j < kBlock) {
          const std::string& word = words[random() % words.size()];
          const std::size_t n = std::min(word.size(), kBlock - j);
          std::memcpy(block.data() + j, word.data(), n);
          j += n;
        }
      }
      out.write(block.data(), static_cast<std::streamsize>(kBlock));
    }
  }
  if (run_shell(fmt::format("gzip -c '{}' > '{}.tmp' && mv '{}.tmp' '{}'",
                            (dir / "image.raw").string(), gz.string(), gz.string(), gz.string())) !=
      0) {
    throw std::runtime_error("gzip failed");
  }
  return gz;
}

// CPU seconds used so far by this process (all threads) and its reaped children (curl, gunzip,
// qemu-img): a figure that other load on the machine does not inflate the way it does wall time.
double cpu_seconds() {
  auto total = [](int who) {
    rusage usage{};
    getrusage(who, &usage);
    auto seconds = [](const timeval& t) {
      return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_usec) / 1e6;
    };
    return seconds(usage.ru_utime) + seconds(usage.ru_stime);
  };
  return total(RUSAGE_SELF) + total(RUSAGE_CHILDREN);
}

}  // namespace

constexpr std::string_view kUsage = R"(usage: vmfest_setup_model_bench [ROUNDS (default 3)]
setup_model's download + gunzip throughput from a local HTTP server vs `curl | gunzip`, on the
same ~200 MiB file (made once in $TMPDIR/vmfest-setup-bench).
)";

int main(int argc, char** argv) {
  vmfest::bench::answer_help(argc, argv, kUsage);
  const int rounds = argc > 1 ? std::max(1, std::atoi(argv[1])) : 3;
  const fs::path dir = fs::temp_directory_path() / "vmfest-setup-bench";
  try {
    std::fprintf(stderr, "preparing %s (once)...\n", dir.c_str());
    const fs::path gz = make_data(dir);
    const double gz_mib = static_cast<double>(fs::file_size(gz)) / kBlock;
    const double raw_mib = static_cast<double>(fs::file_size(dir / "image.raw")) / kBlock;
    const fs::path scratch = dir / "run";
    fs::remove_all(scratch);
    fs::create_directories(scratch / "server");
    vmfest::testing::HttpServer server(dir, scratch / "server");
    const std::string url = server.url("ranges", gz.filename().string());
    const vmfest::Home home(scratch / "home");
    const std::string gz_sha256 = vmfest::detail::sha256_file(gz);  // checked, as users should

    std::vector<double> curl_seconds;
    std::vector<double> setup_seconds;
    std::vector<double> curl_cpu;
    std::vector<double> setup_cpu;
    for (int round = 0; round < rounds; ++round) {
      const fs::path out = scratch / "curl-out.raw";
      auto start = Clock::now();
      double cpu = cpu_seconds();
      if (run_shell(fmt::format("curl -s '{}' | gunzip > '{}'", url, out.string())) != 0) {
        throw std::runtime_error("curl | gunzip failed");
      }
      curl_seconds.push_back(seconds_since(start));
      curl_cpu.push_back(cpu_seconds() - cpu);
      fs::remove(out);

      vmfest::SetupOptions options;
      options.name = "bench";
      options.replace = true;
      options.sha256 = gz_sha256;
      options.on_progress = [](const vmfest::Progress&) {};  // no bar: measure the work only
      start = Clock::now();
      cpu = cpu_seconds();
      const vmfest::Model model = vmfest::setup_model(url, options, home);
      setup_seconds.push_back(seconds_since(start));
      setup_cpu.push_back(cpu_seconds() - cpu);
      if (model.size_bytes != fs::file_size(dir / "image.raw")) {
        throw std::runtime_error("setup_model produced a disk of the wrong size");
      }
      std::fprintf(
          stderr, "round %d: curl|gunzip %.2f s (%.2f s CPU), setup_model %.2f s (%.2f s CPU)\n",
          round + 1, curl_seconds.back(), curl_cpu.back(), setup_seconds.back(), setup_cpu.back());
    }
    const double curl_s = median(curl_seconds);
    const double setup_s = median(setup_seconds);
    std::printf("gzip file %.1f MiB -> image %.1f MiB, median of %d rounds, server on 127.0.0.1\n",
                gz_mib, raw_mib, rounds);
    std::printf("%-28s %8s %14s %14s %8s\n", "", "seconds", "MiB/s (gzip)", "MiB/s (image)",
                "CPU s");
    std::printf("%-28s %8.2f %14.1f %14.1f %8.2f\n", "curl -s URL | gunzip > file", curl_s,
                gz_mib / curl_s, raw_mib / curl_s, median(curl_cpu));
    std::printf("%-28s %8.2f %14.1f %14.1f %8.2f\n", "vmfest::setup_model", setup_s,
                gz_mib / setup_s, raw_mib / setup_s, median(setup_cpu));
    std::printf("setup_model / curl|gunzip throughput ratio: %.2f (CPU time ratio %.2f)\n",
                curl_s / setup_s, median(setup_cpu) / median(curl_cpu));
    std::printf(
        "(setup_model also keeps the raw download for resume, checks its sha256, hashes the "
        "image, checks it with qemu-img and fsyncs it)\n");
    fs::remove_all(scratch);
    return 0;
  } catch (const std::exception& error) {
    std::fprintf(stderr, "benchmark failed: %s\n", error.what());
    return 1;
  }
}
