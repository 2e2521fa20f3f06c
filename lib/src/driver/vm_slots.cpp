#include "vm_slots.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <cstdlib>
#include <fstream>
#include <mutex>
#include <optional>
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

fs::path slot_file(const fs::path& directory, int index) {
  return directory / fmt::format("slot-{}.lock", index);
}

// Slots granted past the cap, to break a stall or to a group larger than the cap, numbered from 0.
fs::path beyond_cap_file(const fs::path& directory, int index) {
  return directory / fmt::format("beyond-cap-{}.lock", index);
}

// Held by a process while it waits for a slot with all the VMs it holds up (so it works on none).
fs::path stalled_mark(const fs::path& directory, pid_t pid) {
  return directory / fmt::format("stalled-{}.lock", pid);
}

// What this process tells the others about itself: whether it is stalled. Waits and starting slots
// of all its threads count, so a process booting one VM while another thread waits is not.
// A child forked without exec inherits it, counts and mark included: it is judged as its parent
// until it execs. The fork tests fork before either process waits or starts.
class ProcessSlotState {
 public:
  static ProcessSlotState& instance() {
    static ProcessSlotState state;
    return state;
  }
  void begin_wait(const fs::path& directory) {
    std::lock_guard guard(mutex_);
    ++waiting_;
    if (mark_ && directory != directory_) {  // another VMFEST_SLOTS_DIR: mark there instead
      mark_->remove_file();
      mark_.reset();
    }
    directory_ = directory;
    publish();
  }
  void end_wait() {
    std::lock_guard guard(mutex_);
    --waiting_;
    publish();
  }
  void add_starting(int count) {
    std::lock_guard guard(mutex_);
    starting_ += count;
    publish();
  }

 private:
  // Never throws: without the mark, other processes just do not see this one as stalled.
  void publish() noexcept {
    const bool stalled = waiting_ > 0 && starting_ == 0;
    if (!stalled && mark_) {
      mark_->remove_file();
      mark_.reset();
    } else if (stalled && !mark_) {
      try {
        mark_.emplace(stalled_mark(directory_, ::getpid()), FileLock::Mode::Wait);
      } catch (const std::exception& error) {
        spdlog::warn("vmfest: cannot mark this process as waiting for a VM slot: {}", error.what());
      }
    }
  }
  std::mutex mutex_;
  int waiting_ = 0;
  int starting_ = 0;
  fs::path directory_;
  std::optional<FileLock> mark_;
};

// While a thread waits for slots.
class WaitScope {
 public:
  explicit WaitScope(const fs::path& directory) {
    ProcessSlotState::instance().begin_wait(directory);
  }
  WaitScope(const WaitScope&) = delete;
  WaitScope& operator=(const WaitScope&) = delete;
  ~WaitScope() { ProcessSlotState::instance().end_wait(); }
};

std::optional<pid_t> holder_pid(const fs::path& file) {
  std::ifstream in(file);
  std::string word;
  pid_t pid = 0;
  if (in >> word >> pid && word == "pid" && pid > 0) return pid;
  return std::nullopt;
}

std::vector<fs::path> held_beyond_cap_files(const fs::path& directory) {
  std::vector<fs::path> held;
  for (int index = 0; fs::exists(beyond_cap_file(directory, index)); ++index) {
    if (lock_file_held(beyond_cap_file(directory, index)))
      held.push_back(beyond_cap_file(directory, index));
  }
  return held;
}

std::string holders(const fs::path& directory, int count) {
  std::vector<fs::path> files = held_beyond_cap_files(directory);
  for (int index = 0; index < count; ++index) files.push_back(slot_file(directory, index));
  std::string text;
  for (const fs::path& file : files) {
    std::ifstream in(file);
    std::string holder;
    std::getline(in, holder);
    if (!holder.empty()) text += (text.empty() ? "" : ", ") + holder;
  }
  return text.empty() ? "unknown" : text;
}

// A stall: this process holds slots, and every process holding one (of the cap's `busy` and those
// beyond the cap) waits for another with all its VMs up. Nobody will free a slot then.
bool host_stalled(const fs::path& directory, const std::vector<fs::path>& busy) {
  std::vector<fs::path> held = held_beyond_cap_files(directory);
  held.insert(held.end(), busy.begin(), busy.end());
  bool holds_one = false;
  for (const fs::path& file : held) {
    const std::optional<pid_t> pid = holder_pid(file);
    // A holder whose starter has exited (a `vmfest start` VM) runs on its own: not a stall.
    if (!pid || !lock_file_held(stalled_mark(directory, *pid))) return false;
    holds_one = holds_one || *pid == ::getpid();
  }
  return holds_one;
}

// One try at the cap's slots: those taken (up to `wanted`) and the files of those held by others.
struct Attempt {
  std::vector<VmSlot> taken;
  std::vector<fs::path> busy;

  // `lock` becomes the slot of the next instance without one; its file names the holder.
  void take(FileLock lock, int index, const std::vector<std::string>& instance_names) {
    lock.describe_holder(
        fmt::format("pid {} instance {}\n", ::getpid(), instance_names[taken.size()]));
    taken.emplace_back(std::move(lock), index);
  }
};

// Slots past the cap for the instances of `instance_names` that `attempt` has none for yet.
void take_beyond_cap(const fs::path& directory, int count,
                     const std::vector<std::string>& instance_names, Attempt& attempt) {
  for (int index = 0; attempt.taken.size() < instance_names.size(); ++index) {
    FileLock lock(beyond_cap_file(directory, index), FileLock::Mode::TryOnce);
    if (!lock.held()) continue;
    attempt.take(std::move(lock), count + index, instance_names);
  }
}

Attempt try_slots(const fs::path& directory, int count,
                  const std::vector<std::string>& instance_names) {
  Attempt attempt;
  for (int index = 0; index < count && attempt.taken.size() < instance_names.size(); ++index) {
    FileLock lock(slot_file(directory, index), FileLock::Mode::TryOnce);
    if (!lock.held()) {
      attempt.busy.push_back(slot_file(directory, index));
      continue;
    }
    attempt.take(std::move(lock), index, instance_names);
  }
  return attempt;
}

// Under the breaker lock, so only one waiter at a time decides: the first to go past the cap is
// no longer stalled when the next one looks. Empty when the stall is over.
std::vector<VmSlot> break_stall(const fs::path& directory, int count,
                                const std::vector<std::string>& instance_names) {
  FileLock breaker(directory / "breaker.lock", FileLock::Mode::Wait);
  Attempt attempt = try_slots(directory, count, instance_names);
  if (attempt.taken.size() == instance_names.size()) return std::move(attempt.taken);
  if (!host_stalled(directory, attempt.busy)) return {};
  const std::string stalled_holders = holders(directory, count);
  take_beyond_cap(directory, count, instance_names, attempt);
  spdlog::warn(
      "vmfest: instance '{}' starts beyond the host's cap of {} VMs (VMFEST_MAX_VMS): every slot "
      "is held by a process that waits for another with its VMs up ({}), so none would ever be "
      "freed. Start the VMs a test needs together (vmfest::start_all or a group fixture) to keep "
      "within the cap",
      instance_names.front(), count, stalled_holders);
  return std::move(attempt.taken);
}

}  // namespace

VmSlot::VmSlot(VmSlot&& other) noexcept
    : lock_(std::move(other.lock_)), index_(other.index_), starting_(other.starting_) {
  other.starting_ = false;
}

VmSlot::~VmSlot() { settle(); }

void VmSlot::settle() noexcept {
  if (!starting_) return;
  starting_ = false;
  ProcessSlotState::instance().add_starting(-1);
}

std::vector<VmSlot> acquire_vm_slots(const std::vector<std::string>& instance_names,
                                     std::chrono::milliseconds timeout) {
  const int count = max_running_vms();
  const int wanted = static_cast<int>(instance_names.size());
  const fs::path directory = slots_directory();
  // A group larger than the cap (3 VMs of one test on a 2-core host) waits for the whole host and
  // runs its other members beyond the cap: slower, but such a test runs wherever vmfest does.
  const int within_cap = std::min(wanted, count);
  auto granted = [&](std::vector<VmSlot> slots) {
    ProcessSlotState::instance().add_starting(wanted);
    for (VmSlot& slot : slots) slot.starting_ = true;
    return slots;
  };
  auto granted_whole_host = [&](Attempt attempt) {
    if (wanted > count) {
      take_beyond_cap(directory, count, instance_names, attempt);
      spdlog::warn(
          "vmfest: {} instances must run at once ('{}' and the rest) and the host's VM cap is {} "
          "(VMFEST_MAX_VMS): they take every slot and {} run beyond the cap",
          wanted, instance_names.front(), count, wanted - count);
    }
    return granted(std::move(attempt.taken));
  };
  Attempt attempt = try_slots(directory, count, instance_names);
  if (static_cast<int>(attempt.taken.size()) == within_cap) {
    return granted_whole_host(std::move(attempt));
  }
  attempt.taken.clear();  // all or none: give back a partial set before waiting

  const WaitScope waiting(directory);
  spdlog::info("vmfest: instance '{}' waits for {} free VM slot(s) (cap {})",
               instance_names.front(), wanted, count);
  const auto deadline = Clock::now() + timeout;
  // Clock's epoch: not stalled (an optional here draws a false maybe-uninitialized from GCC 12
  // -O2).
  Clock::time_point stalled_since{};
  std::minstd_rand jitter(static_cast<unsigned>(::getpid()));
  while (true) {
    if (Clock::now() >= deadline) {
      throw StateError(fmt::format(
          "instance '{}' waited {} s for {} of the host's {} VM slots (VMFEST_MAX_VMS); held by: "
          "{}. Raise VMFEST_MAX_VMS, run fewer VM tests at once, or stop the instances left "
          "running (`vmfest ls`, then `vmfest power-down` or `vmfest destroy`; `vmfest reap` for "
          "those of dead test processes)",
          instance_names.front(), std::chrono::duration_cast<std::chrono::seconds>(timeout).count(),
          wanted, count, holders(directory, count)));
    }
    // Jittered, so that two groups released by the same exit do not keep colliding.
    std::this_thread::sleep_for(std::chrono::milliseconds(50 + jitter() % 100));
    attempt = try_slots(directory, count, instance_names);
    if (static_cast<int>(attempt.taken.size()) == within_cap) {
      return granted_whole_host(std::move(attempt));
    }
    attempt.taken.clear();
    // A stall that lasts, not the moment between one holder's VM being up and its next start.
    constexpr auto kStallGrace = std::chrono::seconds(3);
    if (!host_stalled(directory, attempt.busy)) {
      stalled_since = {};
    } else if (stalled_since == Clock::time_point{}) {
      stalled_since = Clock::now();
    } else if (Clock::now() - stalled_since >= kStallGrace) {
      std::vector<VmSlot> beyond = break_stall(directory, count, instance_names);
      if (!beyond.empty()) return granted(std::move(beyond));
      stalled_since = {};
    }
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
