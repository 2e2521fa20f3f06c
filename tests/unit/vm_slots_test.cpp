#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <thread>

#include "vmfest/error.h"
#include "vmfest/internal/base.h"
#include "vmfest/internal/driver.h"

namespace {
namespace fs = std::filesystem;
using vmfest::detail::acquire_vm_slot;
using vmfest::detail::acquire_vm_slots;
using namespace std::chrono_literals;

class VmSlots : public ::testing::Test {
 protected:
  void SetUp() override {
    directory_ = fs::temp_directory_path() / ("vmfest-slots-test-" + std::to_string(::getpid()));
    ::setenv("VMFEST_SLOTS_DIR", directory_.c_str(), 1);
    ::setenv("VMFEST_MAX_VMS", "2", 1);
  }
  void TearDown() override {
    ::unsetenv("VMFEST_SLOTS_DIR");
    ::unsetenv("VMFEST_MAX_VMS");
    fs::remove_all(directory_);
  }
  fs::path directory_;
};

TEST_F(VmSlots, TheCapHoldsAndAFreedSlotIsReused) {
  auto first = acquire_vm_slot("one", 1s);
  std::optional second(acquire_vm_slot("two", 1s));
  EXPECT_NE(first.index(), second->index());
  try {
    (void)acquire_vm_slot("three", 200ms);
    FAIL() << "a third VM must wait beyond a cap of 2";
  } catch (const vmfest::StateError& error) {
    std::string message = error.what();
    EXPECT_NE(message.find("instance 'three' waited"), std::string::npos) << message;
    EXPECT_NE(message.find("instance two"), std::string::npos) << message;
    EXPECT_NE(message.find("VMFEST_MAX_VMS"), std::string::npos) << message;
  }
  int freed = second->index();
  second.reset();
  EXPECT_EQ(acquire_vm_slot("three", 1s).index(), freed);
}

TEST_F(VmSlots, AGroupTakesAllItsSlotsOrNone) {
  std::optional single(acquire_vm_slot("single", 1s));
  try {
    (void)acquire_vm_slots({"client", "server"}, 300ms);
    FAIL() << "a group of 2 must wait while a cap of 2 has one slot taken";
  } catch (const vmfest::StateError& error) {
    EXPECT_NE(std::string(error.what()).find("for 2 of the host's 2 VM slots"), std::string::npos)
        << error.what();
  }
  // Waiting, the group held nothing: the free slot is still free.
  EXPECT_NO_THROW((void)acquire_vm_slot("another", 100ms));
  single.reset();
  auto group = acquire_vm_slots({"client", "server"}, 1s);
  ASSERT_EQ(group.size(), 2U);
  EXPECT_NE(group[0].index(), group[1].index());
}

TEST_F(VmSlots, TwoGroupsFillingTheCapTakeTurnsInsteadOfDeadlocking) {
  std::atomic<int> holding = 0;
  std::atomic<int> most_holding = 0;
  auto run_group = [&](const std::string& name) {
    for (int round = 0; round < 3; ++round) {
      auto group = acquire_vm_slots({name + "-a", name + "-b"}, 10s);
      most_holding = std::max(most_holding.load(), ++holding);
      std::this_thread::sleep_for(50ms);
      --holding;
    }
  };
  std::jthread first(run_group, "first");
  std::jthread second(run_group, "second");
  first.join();
  second.join();
  EXPECT_EQ(most_holding, 1) << "two groups of 2 shared a cap of 2";
}

// Hold and wait across processes: two tests each hold one running VM of a cap of 2 and each start
// a second. Neither would ever free its slot; one goes past the cap, then the other follows it.
TEST_F(VmSlots, TwoProcessesEachHoldingOneAndWaitingForAnotherBothGoOn) {
  int ready[2];   // the child holds its first slot
  int go[2];      // so does the parent: each now asks for a second
  int result[2];  // the child's second slot
  ASSERT_EQ(::pipe(ready), 0);
  ASSERT_EQ(::pipe(go), 0);
  ASSERT_EQ(::pipe(result), 0);
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    int index = -1;
    try {
      auto first = acquire_vm_slot("child-1", 1s);
      first.settle();  // its VM is up: the child now only waits
      char byte = 'r';
      if (::write(ready[1], &byte, 1) != 1 || ::read(go[0], &byte, 1) != 1) ::_exit(3);
      index = acquire_vm_slot("child-2", 30s).index();
    } catch (...) {
      ::_exit(2);
    }
    ::_exit(::write(result[1], &index, sizeof index) == sizeof index ? 0 : 4);
  }
  char byte = 0;
  ASSERT_EQ(::read(ready[0], &byte, 1), 1);
  const auto began = std::chrono::steady_clock::now();
  int parent_index = -1;
  {
    auto first = acquire_vm_slot("parent-1", 1s);
    first.settle();
    ASSERT_EQ(::write(go[1], &byte, 1), 1);
    parent_index = acquire_vm_slot("parent-2", 30s).index();
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "child status " << status;
  int child_index = -1;
  ASSERT_EQ(::read(result[0], &child_index, sizeof child_index),
            static_cast<ssize_t>(sizeof child_index));
  for (int fd : {ready[0], ready[1], go[0], go[1], result[0], result[1]}) ::close(fd);
  // Exactly one went past the cap of 2 (index 2 and up); the other took the slot it freed.
  EXPECT_EQ((parent_index >= 2) + (child_index >= 2), 1)
      << "parent got slot " << parent_index << ", child slot " << child_index;
  EXPECT_LT(std::chrono::steady_clock::now() - began, 20s) << "the stall was not broken promptly";
}

// A process whose VM is still starting works for the host: a wait beside it is no stall and keeps
// to the cap. Once the VM is up and the same process waits for another, nothing can free a slot.
TEST_F(VmSlots, OnlyAWaitWithEveryHeldVmUpGoesPastTheCap) {
  ::setenv("VMFEST_MAX_VMS", "1", 1);
  auto booting = acquire_vm_slot("booting", 1s);
  EXPECT_THROW((void)acquire_vm_slot("beside", 5s), vmfest::StateError);
  booting.settle();
  EXPECT_EQ(acquire_vm_slot("next", 10s).index(), 1) << "the second VM goes past the cap of 1";
}

// A group larger than the cap (3 VMs of one test, cap 2) waits for the whole host, then runs its
// third member beyond the cap; meanwhile nobody else gets a slot.
TEST_F(VmSlots, AGroupLargerThanTheCapTakesTheWholeHostAndRunsTheRestBeyondIt) {
  std::optional<vmfest::detail::VmSlot> other(acquire_vm_slot("other", 1s));
  EXPECT_THROW((void)acquire_vm_slots({"a", "b", "c"}, 2s), vmfest::StateError)
      << "a group took part of a host that another VM holds";
  other.reset();
  auto group = acquire_vm_slots({"a", "b", "c"}, 10s);
  ASSERT_EQ(group.size(), 3U);
  std::vector<int> indexes;
  for (const auto& slot : group) indexes.push_back(slot.index());
  std::ranges::sort(indexes);
  EXPECT_EQ(indexes, (std::vector<int>{0, 1, 2})) << "slots 0 and 1, and the first beyond the cap";
  EXPECT_THROW((void)acquire_vm_slot("beside", 2s), vmfest::StateError)
      << "another VM started while the group holds the whole host";
}

TEST_F(VmSlots, DefaultComesFromTheHostAndBadValuesAreRefused) {
  ::unsetenv("VMFEST_MAX_VMS");
  EXPECT_GE(vmfest::detail::max_running_vms(), 1);
  ::setenv("VMFEST_MAX_VMS", "lots", 1);
  EXPECT_THROW(vmfest::detail::max_running_vms(), vmfest::InvalidArgument);
}

// The slot folder in a shared /tmp, as a hostile user could prepare it before us.
class HostileSlotFolder : public VmSlots {
 protected:
  void SetUp() override {
    VmSlots::SetUp();
    ::unsetenv("VMFEST_SLOTS_DIR");
    ::unsetenv("XDG_RUNTIME_DIR");
    fs::create_directories(directory_);
    ::setenv("TMPDIR", directory_.c_str(), 1);  // our stand-in for /tmp
    ours_ = directory_ / ("vmfest-" + std::to_string(::geteuid()));
  }
  void TearDown() override {
    ::unsetenv("TMPDIR");
    VmSlots::TearDown();
  }
  std::string refusal() {
    try {
      (void)acquire_vm_slot("victimised", 1s);
    } catch (const vmfest::Error& error) {
      return error.what();
    }
    return "(no error)";
  }
  fs::path ours_;
};

TEST_F(HostileSlotFolder, ANewFolderIsPrivate) {
  { auto slot = acquire_vm_slot("fresh", 1s); }
  for (const fs::path& folder : {ours_, ours_ / "slots"}) {
    struct stat info {};
    ASSERT_EQ(::lstat(folder.c_str(), &info), 0) << folder;
    EXPECT_EQ(info.st_mode & 07777, 0700U) << folder;
  }
  struct stat lock {};
  ASSERT_EQ(::stat((ours_ / "slots/slot-0.lock").c_str(), &lock), 0);
  EXPECT_EQ(lock.st_mode & 0077, 0U) << "a slot file readable or writable by others";
}

TEST_F(HostileSlotFolder, AFolderOfAnotherUserIsRefused) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to give a folder to another uid";
  fs::create_directory(ours_);
  ASSERT_EQ(::chown(ours_.c_str(), 4242, 4242), 0);
  const std::string message = refusal();
  EXPECT_NE(message.find("belongs to uid 4242"), std::string::npos) << message;
  EXPECT_NE(message.find("VMFEST_SLOTS_DIR"), std::string::npos) << message;
}

TEST_F(HostileSlotFolder, AFolderOthersCanWriteIsRefused) {
  fs::create_directory(ours_);
  fs::permissions(ours_, fs::perms::all);
  EXPECT_NE(refusal().find("can be written by other users (mode 777)"), std::string::npos)
      << refusal();
}

TEST_F(HostileSlotFolder, ALinkInPlaceOfTheFolderIsRefused) {
  fs::create_directory(directory_ / "elsewhere");
  fs::create_directory_symlink(directory_ / "elsewhere", ours_);
  EXPECT_NE(refusal().find("is a symbolic link"), std::string::npos) << refusal();
  EXPECT_TRUE(fs::is_empty(directory_ / "elsewhere"));
}

TEST_F(HostileSlotFolder, APlantedSlotLinkIsRefusedAndItsTargetUntouched) {
  { auto slot = acquire_vm_slot("first", 1s); }  // creates the folders
  const fs::path victim = directory_ / "victim.txt";
  std::ofstream(victim) << "precious\n";
  fs::remove(ours_ / "slots/slot-0.lock");
  fs::create_symlink(victim, ours_ / "slots/slot-0.lock");
  const std::string message = refusal();
  EXPECT_NE(message.find("is a symbolic link, which vmfest never makes"), std::string::npos)
      << message;
  EXPECT_EQ(vmfest::detail::read_text(victim), "precious\n");
}

TEST_F(HostileSlotFolder, TheRuntimeFolderIsPreferredToTmp) {
  const fs::path runtime = directory_ / "run-user";
  fs::create_directory(runtime);
  fs::permissions(runtime, fs::perms::owner_all);
  ::setenv("XDG_RUNTIME_DIR", runtime.c_str(), 1);
  EXPECT_EQ(vmfest::detail::slots_directory(), runtime / "vmfest/slots");
  EXPECT_FALSE(fs::exists(ours_));
  ::unsetenv("XDG_RUNTIME_DIR");
}

}  // namespace
