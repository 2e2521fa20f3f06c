// Cold vs warm vs raw QEMU, side by side in one run on the default model.
//
//   (a) raw   qemu-system-x86_64 on a qemu-img overlay, to the first successful SSH command: the
//   floor (b) cold  a vmfest instance booted from the model, create() to ready (c) warm  a vmfest
//   instance resumed from the model's warm image, create() to ready (d) destroy, of cold and warm
//   instances (e) a 20-test suite (fresh instance, one command, destroy; sequential), cold vs warm
//   plus 8 warm instances started at once, and where the time goes (median per phase). (f) memory:
//   the warm image's state file, and the proportional set size of QEMU for 8 idle warm clones vs 8
//   idle cold instances. (g) warm with the memory in the state (VMFEST_WARM_MEMORY=streamed, the
//   fallback for a QEMU without x-ignore-shared), beside the default mapped memory.
// Rounds interleave raw, cold and warm so that load on the host hits all three alike. Prints a
// table, then `cold_vs_raw R`, `warm_vs_cold R`, `suite_warm_vs_cold R`, `warm_state_bytes N`,
// `warm_clone_pss_mib M`, `cold_pss_mib M`, `warm_vs_cold_pss R` as the last lines, and
// writes the same as JSON (argv[1], default boot_bench.json).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <mutex>
#include <optional>
#include <string_view>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <boost/process/v2/process.hpp>
#include <boost/process/v2/start_dir.hpp>
#include <boost/process/v2/stdio.hpp>
#include <nlohmann/json.hpp>

#include "bench_usage.h"
#include "timing.h"
#include "vmfest/error.h"
#include "vmfest/gtest/environment.h"
#include "vmfest/instance.h"
#include "vmfest/internal/base.h"
#include "vmfest/internal/guest.h"
#include "vmfest/internal/registry.h"
#include "vmfest/model.h"
#include "vmfest/ssh/keys.h"
#include "vmfest/ssh/session.h"

namespace {
namespace fs = std::filesystem;
namespace bp = boost::process::v2;
using vmfest::testing::Clock;
using vmfest::testing::median;
using vmfest::testing::seconds_since;

constexpr int kRounds = 5;
constexpr int kSuiteTests = 20;
constexpr int kParallelWarm = 8;

// New SSH attempts every 100 ms, each with its own connection, until one runs `true`: user-mode
// networking retries a lost SYN only after seconds, so one blocking attempt would quantise the
// result. Returns when the first attempt succeeded, not when the slower ones gave up.
Clock::time_point wait_for_ssh(const vmfest::ssh::Endpoint& endpoint,
                               const vmfest::ssh::Credentials& keys) {
  std::mutex mutex;
  std::optional<Clock::time_point> first_success;
  auto succeeded = [&] {
    std::lock_guard lock(mutex);
    return first_success.has_value();
  };
  std::vector<std::jthread> attempts;
  const auto deadline = Clock::now() + std::chrono::seconds(120);
  while (!succeeded() && Clock::now() < deadline) {
    attempts.emplace_back([&] {
      try {
        auto session = vmfest::ssh::Session::connect(endpoint, keys, std::chrono::seconds(3));
        if (!session.run("true").ok()) return;
        const auto now = Clock::now();
        std::lock_guard lock(mutex);
        if (!first_success || now < *first_success) first_success = now;
      } catch (const vmfest::Error&) {
        // Not up yet: the next attempt follows in 100 ms.
      }
    });
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  attempts.clear();  // joins the attempts still waiting on their connect timeout
  if (!first_success) throw vmfest::Error("raw QEMU guest never answered SSH");
  return *first_success;
}

// A port the kernel calls free on 127.0.0.1 (raced only by other processes, rarely).
int free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof(addr);
  ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &length);
  ::close(fd);
  return ntohs(addr.sin_port);
}

// (a): what a user would do by hand with qemu-img and qemu-system-x86_64.
double raw_boot(const vmfest::Model& model, const fs::path& work) {
  fs::remove_all(work);
  fs::create_directories(work);
  auto client = vmfest::ssh::KeyPair::generate("raw-client");
  auto host = vmfest::ssh::KeyPair::generate("raw-host");
  vmfest::detail::write_seed_image(
      work, {"raw", client.public_openssh, host.private_openssh, host.public_openssh});
  const int port = free_port();
  const auto begin = Clock::now();
  vmfest::detail::run_tool_checked(vmfest::detail::find_program("qemu-img", "qemu-utils"),
                                   {"create", "-q", "-f", "qcow2", "-b", model.disk.string(), "-F",
                                    model.format, (work / "overlay.qcow2").string()},
                                   "overlay");
  std::vector<std::string> args = {
      "-machine",    "pc",
      "-accel",      "tcg",
      "-m",          "256",
      "-smp",        "1",
      "-nodefaults", "-no-user-config",
      "-display",    "none",
      "-kernel",     model.boot.kernel.string(),
      "-initrd",     model.boot.initrd.string(),
      "-append",     model.boot.cmdline,
      "-drive",      "file=overlay.qcow2,if=none,id=d0,format=qcow2",
      "-device",     "virtio-blk-pci,drive=d0",
      "-drive",      "file=seed.iso,if=none,id=d1,format=raw,readonly=on",
      "-device",     "virtio-blk-pci,drive=d1",
      "-netdev",     fmt::format("user,id=n0,hostfwd=tcp:127.0.0.1:{}-:22", port),
      "-device",     "virtio-net-pci,netdev=n0",
      "-device",     "virtio-rng-pci",
      "-serial",     "file:serial.log"};
  bp::process qemu(vmfest::detail::process_context(),
                   vmfest::detail::find_program("qemu-system-x86_64", "qemu-system-x86").string(),
                   args, bp::process_stdio{nullptr, nullptr, nullptr},
                   bp::process_start_dir{work.string()}, vmfest::detail::CloseInheritedFds{});
  vmfest::ssh::Credentials keys;
  keys.client_private_key = client.private_openssh;
  keys.pinned_host_key = host.public_openssh;
  const auto ready = wait_for_ssh({"127.0.0.1", port, "root", ""}, keys);
  const double seconds = std::chrono::duration<double>(ready - begin).count();
  vmfest::detail::kill_and_reap(qemu);
  fs::remove_all(work);
  return seconds;
}

struct Timing {
  double ready = 0;
  double destroy = 0;
  std::map<std::string, double> phases;  // "create" and the steps of start()
  fs::path warm_image;                   // the image a warm instance resumed
};

// Median seconds of each phase over the rounds, in the order start() runs them.
std::vector<std::pair<std::string, double>> phase_medians(const std::vector<Timing>& rounds) {
  static const std::vector<std::string> order = {"create",   "slot",    "launch",
                                                 "identity", "console", "ssh"};
  std::vector<std::pair<std::string, double>> medians;
  for (const auto& phase : order) {
    std::vector<double> values;
    for (const auto& timing : rounds) {
      if (auto found = timing.phases.find(phase); found != timing.phases.end()) {
        values.push_back(found->second);
      }
    }
    if (!values.empty()) medians.emplace_back(phase, median(values));
  }
  return medians;
}

Timing vmfest_boot(bool warm) {
  vmfest::InstanceRequest request;
  request.model = vmfest::testing::kDefaultModel;
  request.warm = warm;
  const auto begin = Clock::now();
  vmfest::Instance instance = vmfest::Instance::create(request);
  Timing timing;
  timing.phases["create"] = seconds_since(begin);
  instance.start();
  timing.ready = seconds_since(begin);
  for (const auto& phase : instance.start_phases()) timing.phases[phase.name] += phase.seconds;
  if (auto record = vmfest::detail::read_instance_record(instance.directory())) {
    timing.warm_image = record->warm_image;
  }
  if (!instance.ssh().run("true").ok()) throw vmfest::Error("instance did not run a command");
  const auto destroy_begin = Clock::now();
  instance.destroy();
  timing.destroy = seconds_since(destroy_begin);
  return timing;
}

double suite(bool warm) {
  const auto begin = Clock::now();
  for (int test = 0; test < kSuiteTests; ++test) {
    vmfest::InstanceRequest request;
    request.model = vmfest::testing::kDefaultModel;
    request.warm = warm;
    vmfest::Instance instance = vmfest::Instance::create(request);
    instance.start();
    instance.ssh().check("uname -a");
  }
  return seconds_since(begin);
}

// The proportional set size (MiB) of the QEMU running in `instance`'s folder: its share of the
// pages it maps, so pages shared by clones count once in total.
double qemu_pss_mib(const vmfest::Instance& instance) {
  for (const auto& entry : fs::directory_iterator("/proc")) {
    std::error_code error;
    if (fs::read_symlink(entry.path() / "cwd", error) != instance.directory()) continue;
    if (!fs::read_symlink(entry.path() / "exe", error).filename().string().starts_with("qemu")) {
      continue;
    }
    std::ifstream rollup(entry.path() / "smaps_rollup");
    for (std::string key; rollup >> key;) {
      long kib = 0;
      if (key == "Pss:" && rollup >> kib) return static_cast<double>(kib) / 1024;
    }
  }
  throw vmfest::Error("no QEMU found for instance " + instance.name());
}

// Starts `count` instances at once and returns them when all are ready, with the seconds that took.
std::pair<std::vector<std::optional<vmfest::Instance>>, double> start_at_once(int count,
                                                                              bool warm) {
  std::vector<std::optional<vmfest::Instance>> instances(count);
  std::mutex failures_mutex;
  std::vector<std::string> failures;
  const auto begin = Clock::now();
  {
    std::vector<std::jthread> starters;
    for (auto& slot : instances) {
      starters.emplace_back([&] {
        try {
          vmfest::InstanceRequest request;
          request.model = vmfest::testing::kDefaultModel;
          request.warm = warm;
          slot.emplace(vmfest::Instance::create(request));
          slot->start();
          slot->ssh().check("true");
        } catch (const std::exception& error) {
          std::lock_guard lock(failures_mutex);
          failures.emplace_back(error.what());
        }
      });
    }
  }
  const double seconds = seconds_since(begin);
  if (!failures.empty()) throw vmfest::Error("parallel start failed: " + failures.front());
  return {std::move(instances), seconds};
}

// The median PSS of `count` idle instances started at once, after they settled for 10 s.
double idle_pss_mib(int count, bool warm) {
  auto [instances, seconds] = start_at_once(count, warm);
  std::this_thread::sleep_for(std::chrono::seconds(10));
  std::vector<double> pss;
  for (auto& instance : instances) pss.push_back(qemu_pss_mib(*instance));
  return median(pss);
}

}  // namespace

constexpr std::string_view kUsage =
    R"(usage: vmfest_boot_bench [JSON-OUTPUT (default boot_bench.json)]
Raw QEMU vs cold vs warm instances of the default model, destroy, a 20-test suite, 8 warm
instances at once and their memory, side by side in one run. Prints a table and the ratios
(cold_vs_raw, warm_vs_cold, suite_warm_vs_cold, ...), and writes them as JSON.
)";

int main(int argc, char** argv) {
  vmfest::bench::answer_help(argc, argv, kUsage);
  const fs::path json_path = argc > 1 ? argv[1] : "boot_bench.json";
  // Eight at once is part of the benchmark; the host-wide cap would queue them.
  ::setenv("VMFEST_MAX_VMS", "16", 1);
  vmfest::testing::ensure_default_model();
  const vmfest::Model model = vmfest::ModelRegistry().get(vmfest::testing::kDefaultModel);
  const fs::path work = fs::temp_directory_path() / fmt::format("vmfest-boot-bench-{}", ::getpid());

  std::cerr << "warming up (builds the warm image once)...\n";
  const auto warm_build_begin = Clock::now();
  vmfest_boot(true);
  const double first_warm = seconds_since(warm_build_begin);

  std::vector<double> raw;
  std::vector<double> cold;
  std::vector<double> warm;
  std::vector<double> destroy_cold;
  std::vector<double> destroy_warm;
  std::vector<Timing> cold_rounds;
  std::vector<Timing> warm_rounds;
  for (int round = 1; round <= kRounds; ++round) {
    raw.push_back(raw_boot(model, work));
    Timing c = vmfest_boot(false);
    Timing w = vmfest_boot(true);
    cold_rounds.push_back(c);
    warm_rounds.push_back(w);
    cold.push_back(c.ready);
    warm.push_back(w.ready);
    destroy_cold.push_back(c.destroy);
    destroy_warm.push_back(w.destroy);
    std::cerr << fmt::format("round {}: raw {:.2f} s, cold {:.2f} s, warm {:.2f} s\n", round,
                             raw.back(), cold.back(), warm.back());
  }
  std::cerr << "suite of " << kSuiteTests << " tests, cold then warm...\n";
  const double suite_cold = suite(false);
  const double suite_warm = suite(true);
  std::cerr << kParallelWarm << " warm instances at once...\n";
  const double parallel = start_at_once(kParallelWarm, true).second;
  std::cerr << "memory of " << kParallelWarm << " idle warm, then cold instances...\n";
  const double warm_pss = idle_pss_mib(kParallelWarm, true);
  const double cold_pss = idle_pss_mib(kParallelWarm, false);
  const auto warm_state_bytes = fs::file_size(warm_rounds.front().warm_image / "state");

  std::cerr << "warm with the memory in the state (VMFEST_WARM_MEMORY=streamed)...\n";
  ::setenv("VMFEST_WARM_MEMORY", "streamed", 1);
  vmfest_boot(true);  // builds that image
  std::vector<double> warm_streamed;
  std::uintmax_t streamed_state_bytes = 0;
  for (int round = 1; round <= kRounds; ++round) {
    Timing streamed = vmfest_boot(true);
    warm_streamed.push_back(streamed.ready);
    streamed_state_bytes = fs::file_size(streamed.warm_image / "state");
  }
  ::unsetenv("VMFEST_WARM_MEMORY");

  const double cold_vs_raw = median(cold) / median(raw);
  const double warm_vs_cold = median(warm) / median(cold);
  const double suite_ratio = suite_warm / suite_cold;
  std::cout << fmt::format("{:<44} {:>10}\n", "measure (default model, TCG)", "seconds");
  auto row = [](const std::string& name, double value) {
    std::cout << fmt::format("{:<44} {:>10.3f}\n", name, value);
  };
  row(fmt::format("(a) raw qemu to first SSH, median of {}", kRounds), median(raw));
  row(fmt::format("(b) cold instance create->ready, median of {}", kRounds), median(cold));
  row(fmt::format("(c) warm instance create->ready, median of {}", kRounds), median(warm));
  row("(d) destroy cold, median", median(destroy_cold));
  row("(d) destroy warm, median", median(destroy_warm));
  row(fmt::format("(e) {}-test suite, cold", kSuiteTests), suite_cold);
  row(fmt::format("(e) {}-test suite, warm", kSuiteTests), suite_warm);
  row(fmt::format("{} warm instances at once, all ready", kParallelWarm), parallel);
  row("first warm instance (incl. building the image)", first_warm);
  row(fmt::format("(g) warm, memory streamed, median of {}", kRounds), median(warm_streamed));
  std::cout << fmt::format("{:<44} {:>10}\n", "(f) warm image state file, mapped / streamed",
                           fmt::format("{} / {} bytes", warm_state_bytes, streamed_state_bytes));
  std::cout << fmt::format("{:<44} {:>10.1f}\n",
                           fmt::format("(f) PSS of {} idle warm clones, median MiB", kParallelWarm),
                           warm_pss);
  std::cout << fmt::format("{:<44} {:>10.1f}\n",
                           fmt::format("(f) PSS of {} idle cold VMs, median MiB", kParallelWarm),
                           cold_pss);
  std::cout << fmt::format("{:<44} {:>10}\n", "(f) idle warm clones in 16 GiB (by PSS)",
                           static_cast<long>(16384 / warm_pss));
  nlohmann::json breakdown;
  for (const auto& [kind, rounds] : {std::pair{"cold", &cold_rounds}, {"warm", &warm_rounds}}) {
    for (const auto& [phase, seconds] : phase_medians(*rounds)) {
      row(fmt::format("  {} phase '{}', median", kind, phase), seconds);
      breakdown[kind][phase] = seconds;
    }
  }
  std::cout << fmt::format(
      "cold_vs_raw {:.2f}\nwarm_vs_cold {:.3f}\nsuite_warm_vs_cold {:.3f}\nwarm_state_bytes {}\n"
      "warm_clone_pss_mib {:.1f}\ncold_pss_mib {:.1f}\nwarm_vs_cold_pss {:.2f}\n",
      cold_vs_raw, warm_vs_cold, suite_ratio, warm_state_bytes, warm_pss, cold_pss,
      warm_pss / cold_pss);

  nlohmann::json report = {{"raw_seconds", raw},
                           {"cold_seconds", cold},
                           {"warm_seconds", warm},
                           {"destroy_cold_seconds", destroy_cold},
                           {"destroy_warm_seconds", destroy_warm},
                           {"suite_cold_seconds", suite_cold},
                           {"suite_warm_seconds", suite_warm},
                           {"parallel_warm_seconds", parallel},
                           {"parallel_warm_count", kParallelWarm},
                           {"cold_vs_raw", cold_vs_raw},
                           {"warm_vs_cold", warm_vs_cold},
                           {"suite_warm_vs_cold", suite_ratio},
                           {"phase_medians_seconds", breakdown},
                           {"warm_streamed_seconds", warm_streamed},
                           {"warm_state_bytes", warm_state_bytes},
                           {"streamed_state_bytes", streamed_state_bytes},
                           {"warm_clone_pss_mib", warm_pss},
                           {"cold_pss_mib", cold_pss}};
  std::ofstream(json_path) << report.dump(2) << "\n";
  return 0;
}
