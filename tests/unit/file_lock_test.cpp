// FileLock: one holder at a time, also when a holder removes the lock file under waiters.
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "vmfest/error.h"
#include "vmfest/internal/base.h"

namespace {
namespace fs = std::filesystem;
using vmfest::detail::FileLock;
using namespace std::chrono_literals;

class FileLocks : public ::testing::Test {
 protected:
  void SetUp() override {
    directory_ = fs::temp_directory_path() / ("vmfest-lock-test-" + std::to_string(::getpid()));
    fs::create_directories(directory_);
  }
  void TearDown() override { fs::remove_all(directory_); }
  fs::path directory_;
};

TEST_F(FileLocks, RemovingTheFileWhileWaitersQueueNeverGivesTwoHolders) {
  const fs::path path = directory_ / "name.lock";
  std::atomic<int> holders = 0;
  std::atomic<int> most = 0;
  std::vector<std::jthread> workers;
  for (int worker = 0; worker < 4; ++worker) {
    workers.emplace_back([&] {
      for (int round = 0; round < 25; ++round) {
        FileLock lock(path);
        most = std::max(most.load(), ++holders);
        std::this_thread::sleep_for(1ms);
        --holders;
        lock.remove_file();  // as setup_model does when it is done
      }
    });
  }
  workers.clear();
  EXPECT_EQ(most, 1) << "two holders at once after a lock file was removed";
  EXPECT_FALSE(fs::exists(path)) << "the last holder removed it";
}

TEST_F(FileLocks, ALinkInPlaceOfALockFileIsRefused) {
  const fs::path target = directory_ / "target";
  fs::create_symlink(target, directory_ / "planted.lock");
  EXPECT_THROW(FileLock(directory_ / "planted.lock"), vmfest::Error);
  EXPECT_FALSE(fs::exists(target)) << "the open followed the link";
}

}  // namespace
