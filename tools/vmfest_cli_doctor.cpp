// `vmfest doctor`: whether this machine can run vmfest's VMs and how fast, one check a line. The
// hypervisor's checks are the backends' (Backend::host_checks); the home, the VM slots, disk,
// memory and the default model are everyone's, and asked here of the library's own checks.
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "vmfest/error.h"
#include "vmfest/home.h"
#include "vmfest/instance.h"
#include "vmfest/internal/base.h"
#include "vmfest/internal/driver.h"
#include "vmfest/internal/registry.h"
#include "vmfest/model.h"
#include "vmfest_cli.h"

namespace vmfest::cli {
namespace {
namespace fs = std::filesystem;
using detail::HostCheck;
using detail::run_host_check;
using Verdict = HostCheck::Verdict;

constexpr std::uint64_t kMib = 1024 * 1024;
// Below this free space in the home a model setup or a warm image (the guest's memory) fails;
// below the second, a few of them do.
constexpr std::uint64_t kFailDiskMib = 1024;
constexpr std::uint64_t kWarnDiskMib = 5 * 1024;

// The default backend, and every backend this program has that is configured for this host.
std::vector<HostCheck> backend_checks(const Home& home) {
  std::vector<HostCheck> checks;
  checks.push_back(
      run_host_check("backend", "set VMFEST_BACKEND to one of this vmfest's backends", [] {
        const std::string chosen = detail::default_backend_name();
        detail::make_backend(chosen);  // InvalidArgument naming the linked ones
        return HostCheck{"backend", Verdict::Ok,
                         fmt::format("{} (this vmfest has: {})", chosen,
                                     fmt::join(detail::backend_names(), ", ")),
                         ""};
      }));
  // The default backend's checks first: they decide most.
  std::vector<std::string> names = detail::backend_names();
  std::stable_partition(names.begin(), names.end(), [](const std::string& name) {
    return name == detail::default_backend_name();
  });
  for (const std::string& name : names) {
    try {
      for (HostCheck& check : detail::make_backend(name)->host_checks(home)) {
        checks.push_back(std::move(check));
      }
    } catch (const Error& error) {
      checks.push_back({name, Verdict::Fail, error.what(), ""});
    }
  }
  return checks;
}

HostCheck home_check(const Home& home) {
  const fs::path& root = home.root();
  if (!fs::exists(root)) detail::prepare_home(home);  // made as an instance would make it
  struct stat info {};
  if (::stat(root.c_str(), &info) != 0) {
    return {"home", Verdict::Fail,
            fmt::format("cannot inspect {}: {}", root.string(), std::strerror(errno)),
            "set VMFEST_HOME to a folder you can write"};
  }
  if (info.st_uid != ::geteuid()) {
    return {"home", Verdict::Fail,
            fmt::format("{} belongs to uid {}, not to you (uid {})", root.string(), info.st_uid,
                        ::geteuid()),
            "set VMFEST_HOME to a folder of your own"};
  }
  if (::access(root.c_str(), W_OK | X_OK) != 0) {
    return {"home", Verdict::Fail, fmt::format("{} is not writable", root.string()),
            fmt::format("chmod u+rwx {}", root.string())};
  }
  const detail::HomeExposure exposure = detail::home_exposure(home);
  if (!exposure.problem.empty()) {
    return {"home", Verdict::Warn, fmt::format("{} {}", root.string(), exposure.problem),
            exposure.fix};
  }
  return {"home", Verdict::Ok,
          fmt::format("{} (yours, mode {:04o})", root.string(), info.st_mode & 07777), ""};
}

HostCheck slots_check() {
  const fs::path folder = detail::slots_directory();  // Error when it is not this user's alone
  return {"vm slots", Verdict::Ok,
          fmt::format("{} (at most {} VMs at once; VMFEST_MAX_VMS sets it)", folder.string(),
                      detail::max_running_vms()),
          ""};
}

HostCheck disk_check(const Home& home) {
  struct statvfs space {};
  if (::statvfs(home.root().c_str(), &space) != 0) {
    return {"disk", Verdict::Fail,
            fmt::format("cannot ask the free space of {}: {}", home.root().string(),
                        std::strerror(errno)),
            "set VMFEST_HOME to a folder you can write"};
  }
  const std::uint64_t free_mib = std::uint64_t{space.f_bavail} * space.f_frsize / kMib;
  const std::string detail = fmt::format(
      "{:.1f} GiB free in {}", static_cast<double>(free_mib) / 1024.0, home.root().string());
  const std::string fix =
      "free some space (`vmfest prune` removes unused images) or set VMFEST_HOME to a bigger disk";
  if (free_mib < kFailDiskMib) return {"disk", Verdict::Fail, detail, fix};
  if (free_mib < kWarnDiskMib) return {"disk", Verdict::Warn, detail, fix};
  return {"disk", Verdict::Ok, detail, ""};
}

// MemAvailable of /proc/meminfo, in MiB: what new processes can have without swapping.
std::uint64_t available_memory_mib() {
  std::ifstream meminfo("/proc/meminfo");
  std::string key;
  std::uint64_t kib = 0;
  std::string unit;
  while (meminfo >> key >> kib >> unit) {
    if (key == "MemAvailable:") return kib / 1024;
  }
  throw Error("cannot read MemAvailable from /proc/meminfo");
}

HostCheck memory_check() {
  const std::uint64_t available = available_memory_mib();
  std::vector<std::string> fits;
  std::uint64_t smallest_fit = 0;
  for (const char* name : {"micro", "small", "medium", "large"}) {
    const Profile profile = Profile::named(name);
    const std::uint64_t count = available / static_cast<std::uint64_t>(profile.memory_mib);
    if (fits.empty()) smallest_fit = count;
    fits.push_back(fmt::format("{} {}", name, count));
  }
  const std::string detail = fmt::format("{} MiB available: VMs that fit by guest memory: {}",
                                         available, fmt::join(fits, ", "));
  if (smallest_fit == 0) {
    return {"memory", Verdict::Fail, detail, "free memory: not even a micro VM (256 MiB) fits"};
  }
  const auto cap = static_cast<std::uint64_t>(detail::max_running_vms());
  if (smallest_fit < cap) {
    return {"memory", Verdict::Warn, detail,
            fmt::format("the VM cap is {} but only {} micro VMs fit: set VMFEST_MAX_VMS={}", cap,
                        smallest_fit, smallest_fit)};
  }
  return {"memory", Verdict::Ok, detail, ""};
}

HostCheck default_model_check(const Home& home) {
  const char* name = kDefaultModelName;
  if (const std::optional<Model> model = ModelRegistry(home).find(name)) {
    return {"default model", Verdict::Ok,
            fmt::format("{} is registered ({})", name, model->directory.string()), ""};
  }
  const std::vector<fs::path> bundles = detail::default_model_bundles();
  if (!bundles.empty()) {
    return {"default model", Verdict::Ok,
            fmt::format("{} is built ({}); the first test registers it in this home", name,
                        bundles.front().string()),
            ""};
  }
  return {"default model", Verdict::Warn,
          fmt::format("{} is not built yet: the first test run builds it (a few minutes)", name),
          "run tools/build-default-model.sh now, or set VMFEST_DEFAULT_MODEL to a bundle"};
}

std::vector<HostCheck> all_checks() {
  const Home home = Home::from_environment();
  std::vector<HostCheck> checks = backend_checks(home);
  const HostCheck home_verdict = run_host_check("home", "set VMFEST_HOME to a folder you can write",
                                                [&home] { return home_check(home); });
  checks.push_back(home_verdict);
  checks.push_back(run_host_check("vm slots", "", slots_check));
  if (home_verdict.verdict != Verdict::Fail) {
    checks.push_back(run_host_check("disk", "", [&home] { return disk_check(home); }));
    checks.push_back(
        run_host_check("default model", "", [&home] { return default_model_check(home); }));
  }
  checks.push_back(run_host_check("memory", "", memory_check));
  return checks;
}

void print_text(const std::vector<HostCheck>& checks) {
  std::size_t width = 0;
  for (const HostCheck& check : checks) width = std::max(width, check.name.size());
  for (const HostCheck& check : checks) {
    fmt::print("{:<4}  {:<{}}  {}\n", detail::to_string(check.verdict), check.name, width,
               check.detail);
    if (!check.fix.empty()) fmt::print("{:<4}  {:<{}}  fix: {}\n", "", "", width, check.fix);
  }
}

nlohmann::json to_json(const std::vector<HostCheck>& checks) {
  nlohmann::json list = nlohmann::json::array();
  for (const HostCheck& check : checks) {
    list.push_back({{"name", check.name},
                    {"verdict", detail::to_string(check.verdict)},
                    {"detail", check.detail},
                    {"fix", check.fix}});
  }
  return list;
}

int run_doctor(bool json) {
  const std::vector<HostCheck> checks = all_checks();
  const auto count = [&checks](Verdict verdict) {
    return std::count_if(checks.begin(), checks.end(),
                         [verdict](const HostCheck& check) { return check.verdict == verdict; });
  };
  const auto failures = count(Verdict::Fail);
  if (json) {
    fmt::print("{}\n", to_json(checks).dump(2));
  } else {
    print_text(checks);
    if (failures == 0) {
      fmt::print("vmfest can run here ({} warning{})\n", count(Verdict::Warn),
                 count(Verdict::Warn) == 1 ? "" : "s");
    } else {
      fmt::print("vmfest cannot run here: {} check{} failed\n", failures, failures == 1 ? "" : "s");
    }
  }
  return failures == 0 ? 0 : kExitFailure;
}

}  // namespace

void add_doctor_command(CLI::App& app, Command& command) {
  auto json = std::make_shared<bool>(false);
  CLI::App* sub = app.add_subcommand(
      "doctor",
      "Check whether this machine can run vmfest's VMs and how fast: the hypervisor, KVM, the "
      "home, disk, memory, the default model. Exit status 0 when it can (warnings allowed)");
  sub->add_flag("--json", *json, "print the checks as a JSON list (name, verdict, detail, fix)");
  sub->callback([&command, json] { command.run = [json] { return run_doctor(*json); }; });
}

}  // namespace vmfest::cli
