// What a killed process leaves in a home, and what `reap` does with it: the folders of a setup, a
// warm-image build or a destroy that were interrupted go; those of one still under way stay.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <string>

#include <fmt/format.h>

#include "vmfest/home.h"
#include "vmfest/instance.h"
#include "vmfest/internal/base.h"
#include "vmfest/internal/registry.h"

namespace {
namespace fs = std::filesystem;
using vmfest::detail::FileLock;

class ReapLeftovers : public ::testing::Test {
 protected:
  void SetUp() override {
    fs::remove_all(root_);
    fs::create_directories(home_.models() / "tiny/warm");
    fs::create_directories(home_.instances());
  }
  void TearDown() override { fs::remove_all(root_); }
  // A folder with a file in it, as a killed process leaves them half-written.
  static fs::path folder(const fs::path& path) {
    fs::create_directories(path);
    std::ofstream(path / "partial") << "half";
    return path;
  }
  // Each test its own folder: ctest runs them side by side, in processes of their own.
  fs::path root_ = fs::temp_directory_path() / fmt::format("vmfest-reap-test-{}", ::getpid());
  vmfest::Home home_{root_ / "home"};
};

TEST_F(ReapLeftovers, InterruptedSetupsWarmBuildsAndDestroysGo) {
  const fs::path staging = folder(home_.models() / ".staging-debian-4000001");
  const fs::path unpacked = folder(home_.models() / ".staging-debian-4000001.unpacked");
  const fs::path replaced = folder(home_.models() / ".replaced-debian-4000002");
  const fs::path building = folder(home_.models() / "tiny/warm/.building-0123456789abcdef-4000003");
  // Killed halfway through a destroy: the lock file is gone, some of the rest is not.
  const fs::path destroyed = folder(home_.instances() / "half-destroyed");
  // Killed right after creating a new instance's folder, before taking its lock (pid 4000006).
  const fs::path created = folder(home_.instances() / ".new-my-vm-4000006-0badcafe");

  auto reaped = vmfest::reap_leaked_instances(home_);
  std::sort(reaped.begin(), reaped.end());
  EXPECT_EQ(reaped, (std::vector<std::string>{".new-my-vm-4000006-0badcafe", "half-destroyed"}));
  for (const fs::path& path : {staging, unpacked, replaced, building, destroyed, created}) {
    EXPECT_FALSE(fs::exists(path)) << path << " was left";
  }
  EXPECT_FALSE(fs::exists(home_.models() / ".debian.lock")) << "the name's lock file was left";
}

TEST_F(ReapLeftovers, WorkStillUnderWayStays) {
  const fs::path staging = folder(home_.models() / ".staging-ubuntu-4000004");
  const fs::path building = folder(home_.models() / "tiny/warm/.building-fedcba9876543210-4000005");
  // The setup and the build are alive: they hold their locks (as this process does here).
  FileLock setup(home_.models() / ".ubuntu.lock");
  FileLock build(home_.models() / "tiny/warm/fedcba9876543210.lock");
  const fs::path alive = folder(home_.instances() / "alive");
  FileLock owner(alive / vmfest::detail::kOwnerLock);
  // A new instance's folder in the moment before its creator (this process) takes its lock.
  const fs::path creating =
      folder(home_.instances() / fmt::format(".new-my-vm-{}-0badcafe", ::getpid()));
  // ... and one in the moment after it made the lock file, before it locked it: a reaper that
  // took the lock then removed the folder under its creator (seen with 12 processes at once).
  const fs::path locking =
      folder(home_.instances() / fmt::format(".new-my-vm-{}-1badcafe", ::getpid()));
  std::ofstream(locking / vmfest::detail::kOwnerLock).close();

  EXPECT_TRUE(vmfest::reap_leaked_instances(home_).empty());
  for (const fs::path& path : {staging, building, alive, creating, locking}) {
    EXPECT_TRUE(fs::exists(path)) << path << " was removed while its owner lives";
  }
}

}  // namespace
