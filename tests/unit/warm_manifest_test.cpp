#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "vmfest/internal/image_store.h"

namespace {
namespace fs = std::filesystem;
using vmfest::detail::check_warm_image;
using vmfest::detail::WarmStatus;

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
  // Same size, other content: QEMU would resume this memory over a disk it does not belong to.
  std::ofstream(image_ / "state") << "memory saved at another instant";
  EXPECT_EQ(check_warm_image(image_), WarmStatus::Missing);
}

TEST_F(WarmManifest, ATouchedButUnchangedFileStillMatchesByHash) {
  vmfest::detail::write_warm_manifest(image_, "fingerprint", {}, 0.1);
  fs::last_write_time(image_ / "base.qcow2", fs::file_time_type::clock::now());
  EXPECT_EQ(check_warm_image(image_), WarmStatus::Ready);
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
