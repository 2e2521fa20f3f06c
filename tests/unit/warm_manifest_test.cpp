#include <gtest/gtest.h>

#include <sys/stat.h>

#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "vmfest/internal/base.h"
#include "vmfest/internal/image_store.h"

namespace {
namespace fs = std::filesystem;
using vmfest::detail::check_warm_image;
using vmfest::detail::WarmStatus;

std::uint64_t inode_of(const fs::path& path) {
  struct stat info {};
  return ::stat(path.c_str(), &info) == 0 ? info.st_ino : 0;
}

class WarmManifest : public ::testing::Test {
 protected:
  void SetUp() override {
    image_ = fs::temp_directory_path() / ("vmfest-warm-test-" + std::to_string(::getpid()));
    fs::remove_all(image_);
    fs::create_directories(image_);
    std::ofstream(image_ / "base.qcow2") << "disk frozen at the stop";
    std::ofstream(image_ / "state") << "memory saved at the same instant";
  }
  void TearDown() override { fs::remove_all(image_); }
  fs::path image_;
};

TEST_F(WarmManifest, AFreshImageIsReady) {
  EXPECT_EQ(check_warm_image(image_), WarmStatus::Missing);
  vmfest::detail::write_warm_manifest(image_, "fingerprint", {{"qemu", "7.2"}}, 0.1);
  EXPECT_EQ(check_warm_image(image_), WarmStatus::Ready);
}

TEST_F(WarmManifest, AStateFromAnotherSaveIsRefused) {
  vmfest::detail::write_warm_manifest(image_, "fingerprint", {}, 0.1);
  // Same size, other content, and the old mtime put back: a hypervisor would resume this memory
  // over a disk it does not belong to.
  const fs::path state = image_ / "state";
  const auto saved_at = fs::last_write_time(state);
  const std::string other = "memory saved at a later instant!";
  ASSERT_EQ(other.size(), fs::file_size(state));
  std::ofstream(state, std::ios::trunc) << other;
  fs::last_write_time(state, saved_at);
  ASSERT_EQ(fs::file_size(state), other.size());
  EXPECT_EQ(check_warm_image(image_), WarmStatus::Missing);
}

TEST_F(WarmManifest, ACopiedImageIsHashedOnceThenKnownByItsNewIdentity) {
  vmfest::detail::write_warm_manifest(image_, "fingerprint", {}, 0.1);
  // A CI cache restore: the same bytes in new files.
  const fs::path copy = image_.string() + "-restored";
  fs::remove_all(copy);
  fs::copy(image_, copy);
  EXPECT_EQ(check_warm_image(copy), WarmStatus::Ready);
  const auto verified = nlohmann::json::parse(std::ifstream(copy / "verified.json"));
  for (const char* file : {"base.qcow2", "state"}) {
    ASSERT_TRUE(verified.contains(file)) << verified.dump();
    EXPECT_EQ(verified[file]["inode"].get<std::uint64_t>(), inode_of(copy / file));
  }
  // Known now: a rewrite of the same size is still caught.
  std::ofstream(copy / "state", std::ios::trunc) << "memory saved at a later instant!";
  EXPECT_EQ(check_warm_image(copy), WarmStatus::Missing);
  fs::remove_all(copy);
}

TEST_F(WarmManifest, ATouchedButUnchangedFileStillMatchesByHash) {
  vmfest::detail::write_warm_manifest(image_, "fingerprint", {}, 0.1);
  fs::last_write_time(image_ / "base.qcow2", fs::file_time_type::clock::now());
  EXPECT_EQ(check_warm_image(image_), WarmStatus::Ready);
}

// An image its backend refused goes, so the next instance builds it afresh; not while a builder
// holds its lock (it is making the image anew, and would lose it).
TEST_F(WarmManifest, ADiscardedImageGoesUnlessItIsBeingRebuilt) {
  vmfest::detail::write_warm_manifest(image_, "fingerprint", {}, 0.1);
  const fs::path lock_file = vmfest::detail::warm_build_lock(image_);
  {
    const vmfest::detail::FileLock builder(lock_file);
    EXPECT_FALSE(vmfest::detail::discard_warm_image(image_));
    EXPECT_EQ(check_warm_image(image_), WarmStatus::Ready);
  }
  EXPECT_TRUE(vmfest::detail::discard_warm_image(image_));
  EXPECT_FALSE(fs::exists(image_));
  fs::remove(lock_file);
}

TEST_F(WarmManifest, UnsupportedModelsAreRemembered) {
  vmfest::detail::write_unsupported_manifest(image_, "fingerprint", "no agent");
  EXPECT_EQ(check_warm_image(image_), WarmStatus::Unsupported);
}

TEST(WarmKey, DependsOnFingerprintAndProfile) {
  vmfest::Model model;
  model.directory = "/models/m";
  auto micro = vmfest::Profile::named("micro");
  auto small = vmfest::Profile::named("small");
  auto a = vmfest::detail::warm_image_directory(model, micro, "qemu 7.2\nmachine pc-i440fx-7.2");
  EXPECT_EQ(a,
            vmfest::detail::warm_image_directory(model, micro, "qemu 7.2\nmachine pc-i440fx-7.2"));
  EXPECT_NE(a,
            vmfest::detail::warm_image_directory(model, small, "qemu 7.2\nmachine pc-i440fx-7.2"));
  EXPECT_NE(a,
            vmfest::detail::warm_image_directory(model, micro, "qemu 8.0\nmachine pc-i440fx-8.0"));
  EXPECT_EQ(a.parent_path(), fs::path("/models/m/warm"));
}

}  // namespace
