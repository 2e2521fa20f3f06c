#include "vm_slots.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <cstdlib>
#include <fstream>
#include <random>
#include <thread>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "../base/settings.h"
#include "vmfest/error.h"

namespace vmfest::detail {
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

int max_running_vms() {
  if (const auto configured = whole_number_setting("VMFEST_MAX_VMS", 1, 1024)) {
    return static_cast<int>(*configured);
  }
  long cores = std::max(1L, ::sysconf(_SC_NPROCESSORS_ONLN));
  long memory_mib = ::sysconf(_SC_PHYS_PAGES) / 1024 * ::sysconf(_SC_PAGE_SIZE) / 1024;
  constexpr long kMibPerVm = 512;
  return static_cast<int>(std::max(1L, std::min(cores, memory_mib / kMibPerVm)));
}

namespace {

// Creates `directory` (mode 0700) unless it exists, then checks that only this user can change
// it. Slot files are locks that every process of the user opens and writes: a folder another user
// planted in a shared /tmp, or a link to somewhere else, would let them choose what we write to.
void ensure_private_directory(const fs::path& directory) {
  if (::mkdir(directory.c_str(), 0700) != 0 && errno != EEXIST) {
    throw Error(fmt::format("cannot create the VM slot folder {}: {}", directory.string(),
                            std::strerror(errno)));
  }
  struct stat info {};
  if (::lstat(directory.c_str(), &info) != 0) {
    throw Error(fmt::format("cannot inspect the VM slot folder {}: {}", directory.string(),
                            std::strerror(errno)));
  }
  std::string problem;
  if (S_ISLNK(info.st_mode)) {
    problem = "is a symbolic link";
  } else if (!S_ISDIR(info.st_mode)) {
    problem = "is not a folder";
  } else if (info.st_uid != ::geteuid()) {
    problem = fmt::format("belongs to uid {}, not to you (uid {})", info.st_uid, ::geteuid());
  } else if ((info.st_mode & (S_IWGRP | S_IWOTH)) != 0) {
    problem = fmt::format("can be written by other users (mode {:o})", info.st_mode & 07777);
  }
  if (!problem.empty()) {
    throw Error(fmt::format(
        "the VM slot folder {} {}, so vmfest will not use it: someone may have planted it in a "
        "shared temporary folder. Remove it, or set VMFEST_SLOTS_DIR to a folder of your own",
        directory.string(), problem));
  }
}

}  // namespace

fs::path slots_directory() {
  if (const char* configured = std::getenv("VMFEST_SLOTS_DIR");
      configured != nullptr && *configured != '\0') {
    fs::create_directories(fs::path(configured).parent_path());
    ensure_private_directory(configured);
    return configured;
  }
  // The user's runtime folder is private by construction; /tmp is shared by everyone.
  fs::path base;
  if (const char* runtime = std::getenv("XDG_RUNTIME_DIR");
      runtime != nullptr && *runtime != '\0' && fs::is_directory(runtime)) {
    base = fs::path(runtime) / "vmfest";
  } else {
    base = fs::temp_directory_path() / fmt::format("vmfest-{}", ::geteuid());
  }
  ensure_private_directory(base);
  ensure_private_directory(base / "slots");
  return base / "slots";
}

namespace {

std::string holders(const fs::path& directory, int count) {
  std::string text;
  for (int index = 0; index < count; ++index) {
    std::ifstream in(directory / fmt::format("slot-{}.lock", index));
    std::string holder;
    std::getline(in, holder);
    if (!holder.empty()) text += (text.empty() ? "" : ", ") + holder;
  }
  return text.empty() ? "unknown" : text;
}

}  // namespace

std::vector<VmSlot> acquire_vm_slots(const std::vector<std::string>& instance_names,
                                     std::chrono::milliseconds timeout) {
  const int count = max_running_vms();
  const int wanted = static_cast<int>(instance_names.size());
  if (wanted > count) {
    throw InvalidArgument(fmt::format(
        "{} instances must run at once ('{}' and the rest) but the host's VM cap is {}: raise "
        "VMFEST_MAX_VMS to at least {}, or ask for fewer instances",
        wanted, instance_names.front(), count, wanted));
  }
  const fs::path directory = slots_directory();
  const auto deadline = Clock::now() + timeout;
  std::minstd_rand jitter(static_cast<unsigned>(::getpid()));
  bool told = false;
  while (true) {
    std::vector<VmSlot> taken;
    for (int index = 0; index < count && static_cast<int>(taken.size()) < wanted; ++index) {
      const fs::path file = directory / fmt::format("slot-{}.lock", index);
      FileLock lock(file, FileLock::Mode::TryOnce);
      if (!lock.held()) continue;
      lock.describe_holder(
          fmt::format("pid {} instance {}\n", ::getpid(), instance_names[taken.size()]));
      taken.emplace_back(std::move(lock), index);
    }
    if (static_cast<int>(taken.size()) == wanted) return taken;
    taken.clear();  // all or none: give back a partial set before waiting
    if (Clock::now() >= deadline) {
      throw StateError(fmt::format(
          "instance '{}' waited {} s for {} of the host's {} VM slots (VMFEST_MAX_VMS); held by: "
          "{}. Raise VMFEST_MAX_VMS, run fewer VM tests at once, or stop the instances left "
          "running "
          "(`vmfest ls`, then `vmfest power-down` or `vmfest destroy`; `vmfest reap` for those "
          "of dead test processes)",
          instance_names.front(), std::chrono::duration_cast<std::chrono::seconds>(timeout).count(),
          wanted, count, holders(directory, count)));
    }
    if (!told) {
      spdlog::info("vmfest: instance '{}' waits for {} free VM slot(s) (cap {})",
                   instance_names.front(), wanted, count);
      told = true;
    }
    // Jittered, so that two groups released by the same exit do not keep colliding.
    std::this_thread::sleep_for(std::chrono::milliseconds(50 + jitter() % 100));
  }
}

VmSlot acquire_vm_slot(const std::string& instance_name, std::chrono::milliseconds timeout) {
  return std::move(acquire_vm_slots({instance_name}, timeout).front());
}

// $VMFEST_SLOT_WAIT seconds, else 10 minutes. vmfest_add_tests() sets it below the test's timeout,
// so a test starved of slots fails with the holders named instead of being killed by ctest.
std::chrono::milliseconds slot_timeout() {
  const auto seconds = whole_number_setting("VMFEST_SLOT_WAIT", 1, 86400, "of seconds");
  return within_test_budget(seconds ? std::chrono::seconds(*seconds) : std::chrono::minutes(10));
}

}  // namespace vmfest::detail
