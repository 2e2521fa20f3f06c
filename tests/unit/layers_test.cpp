// Layer keys and plans, without a VM: what makes a new layer, and which saved layer a new
// instance builds on.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>

#include "vmfest/error.h"
#include "vmfest/images.h"
#include "vmfest/internal/image_store.h"

namespace {
namespace fs = std::filesystem;
using vmfest::ProvisionStep;
using vmfest::ProvisionSteps;
using vmfest::detail::plan_layers;
using vmfest::detail::provision_step_key;

class Layers : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() / ("vmfest-layers-test-" + std::to_string(::getpid()));
    fs::remove_all(root_);
    fs::create_directories(root_ / "upload" / "sub");
    std::ofstream(root_ / "upload" / "a.txt") << "alpha";
    std::ofstream(root_ / "upload" / "sub" / "b.txt") << "beta";
    base_ = root_ / "warm" / "0123456789abcdef";
  }
  void TearDown() override { fs::remove_all(root_); }

  // Saves a stand-in image (one file and its manifest) at `directory`.
  static void save_image(const fs::path& directory, const nlohmann::json& layer = nullptr) {
    fs::create_directories(directory);
    std::ofstream(directory / "base.qcow2") << directory.filename().string();
    vmfest::detail::write_warm_manifest(directory, "fingerprint", {}, 0.1, layer);
  }

  fs::path root_;
  fs::path base_;
};

TEST_F(Layers, AnUploadIsKeyedByItsContentNamesAndModes) {
  const ProvisionStep upload = ProvisionStep::upload(root_ / "upload", "/opt/upload");
  const std::string key = provision_step_key(upload, 1);
  EXPECT_EQ(provision_step_key(upload, 1), key);
  std::ofstream(root_ / "upload" / "sub" / "b.txt") << "gamma";
  const std::string changed_content = provision_step_key(upload, 1);
  EXPECT_NE(changed_content, key);
  fs::permissions(root_ / "upload" / "a.txt", fs::perms::owner_exec, fs::perm_options::add);
  const std::string changed_mode = provision_step_key(upload, 1);
  EXPECT_NE(changed_mode, changed_content);
  fs::rename(root_ / "upload" / "a.txt", root_ / "upload" / "c.txt");
  EXPECT_NE(provision_step_key(upload, 1), changed_mode);
  EXPECT_NE(provision_step_key(ProvisionStep::upload(root_ / "upload", "/opt/other"), 1),
            provision_step_key(upload, 1));
}

TEST_F(Layers, UploadsOfLinksOrMissingFilesAreRefusedNamingTheStep) {
  fs::create_symlink("/etc/passwd", root_ / "upload" / "link");
  try {
    provision_step_key(ProvisionStep::upload(root_ / "upload", "/opt/upload"), 3);
    FAIL() << "a symbolic link was accepted";
  } catch (const vmfest::InvalidArgument& error) {
    const std::string message = error.what();
    EXPECT_NE(message.find("provisioning step 3"), std::string::npos) << message;
    EXPECT_NE(message.find("symbolic link"), std::string::npos) << message;
  }
  EXPECT_THROW(provision_step_key(ProvisionStep::upload(root_ / "missing", "/opt/x"), 1),
               vmfest::InvalidArgument);
  EXPECT_THROW(provision_step_key(ProvisionStep::upload(root_ / "upload" / "sub", ""), 1),
               vmfest::InvalidArgument);
}

TEST_F(Layers, ANewListBuildsOnTheLongestSavedPrefix) {
  const ProvisionSteps steps = {ProvisionStep::run("one"), ProvisionStep::run("two"),
                                ProvisionStep::reboot()};
  save_image(base_);
  vmfest::detail::LayerPlan plan = plan_layers(base_, steps);
  EXPECT_FALSE(plan.ready);
  EXPECT_EQ(plan.parent, base_);
  EXPECT_EQ(plan.steps_done, 0u);
  EXPECT_EQ(plan.layer.parent_path(), base_.parent_path());
  EXPECT_TRUE(plan.layer.filename().string().starts_with("layer-"));

  // The layer of the first two steps, saved by another suite.
  const ProvisionSteps prefix(steps.begin(), steps.begin() + 2);
  const fs::path prefix_layer = plan_layers(base_, prefix).layer;
  save_image(prefix_layer, vmfest::detail::layer_manifest(base_, prefix, 0, 1.0));
  plan = plan_layers(base_, steps);
  EXPECT_FALSE(plan.ready);
  EXPECT_EQ(plan.parent, prefix_layer);
  EXPECT_EQ(plan.steps_done, 2u);

  save_image(plan.layer, vmfest::detail::layer_manifest(prefix_layer, steps, 2, 1.0));
  EXPECT_TRUE(plan_layers(base_, steps).ready);
  // Another order of the same steps is another layer.
  EXPECT_NE(plan_layers(base_, {steps[1], steps[0], steps[2]}).layer, plan.layer);
}

TEST_F(Layers, ALayerOnARebuiltParentIsStale) {
  const ProvisionSteps steps = {ProvisionStep::run("one")};
  save_image(base_);
  const fs::path layer = plan_layers(base_, steps).layer;
  save_image(layer, vmfest::detail::layer_manifest(base_, steps, 0, 1.0));
  EXPECT_EQ(vmfest::detail::check_warm_image(layer), vmfest::detail::WarmStatus::Ready);
  // The parent saved again (another disk, another manifest): the layer's disk was an overlay on
  // the old one.
  std::ofstream(base_ / "base.qcow2") << " rebuilt";
  vmfest::detail::write_warm_manifest(base_, "fingerprint", {}, 0.2);
  EXPECT_EQ(vmfest::detail::check_warm_image(layer), vmfest::detail::WarmStatus::Missing);
  EXPECT_FALSE(plan_layers(base_, steps).ready);
  fs::remove_all(base_);
  EXPECT_EQ(vmfest::detail::check_warm_image(layer), vmfest::detail::WarmStatus::Missing);
}

// Pruning by last use: a layer still in use keeps the image it builds on; unused ones go, leaves
// first, and so does their parent once nothing builds on it.
TEST_F(Layers, PruneRemovesUnusedImagesLeavesFirstAndKeepsWhatOthersBuildOn) {
  const vmfest::Home home(root_ / "home");
  const fs::path warm = home.models() / "tiny" / "warm";
  const fs::path base = warm / "0123456789abcdef";
  save_image(base);
  const ProvisionSteps old_steps = {ProvisionStep::run("old")};
  const ProvisionSteps new_steps = {ProvisionStep::run("new")};
  const fs::path old_layer = plan_layers(base, old_steps).layer;
  const fs::path new_layer = plan_layers(base, new_steps).layer;
  save_image(old_layer, vmfest::detail::layer_manifest(base, old_steps, 0, 1.0));
  save_image(new_layer, vmfest::detail::layer_manifest(base, new_steps, 0, 1.0));
  // Last used ten days ago, except the new layer, used now.
  const auto ten_days_ago = std::chrono::system_clock::now() - std::chrono::hours(240);
  for (const fs::path& image : {base, old_layer}) {
    std::ofstream(image / "last-used").flush();
    const timespec when{std::chrono::system_clock::to_time_t(ten_days_ago), 0};
    const timespec times[2] = {when, when};
    ASSERT_EQ(::utimensat(AT_FDCWD, (image / "last-used").c_str(), times, 0), 0);
    ASSERT_EQ(::utimensat(AT_FDCWD, (image / "manifest.json").c_str(), times, 0), 0);
  }
  vmfest::detail::mark_warm_image_used(new_layer);

  const auto listed = vmfest::list_warm_images(home);
  ASSERT_EQ(listed.size(), 3u);
  EXPECT_EQ(listed.front().status, "ready");

  auto removed = vmfest::prune_warm_images(std::chrono::hours(24 * 7), home);
  ASSERT_EQ(removed.size(), 1u);
  EXPECT_EQ(removed.front().directory, old_layer);
  EXPECT_TRUE(fs::exists(base)) << "the base of a layer in use was removed";
  EXPECT_TRUE(fs::exists(new_layer));

  removed = vmfest::prune_warm_images(std::chrono::seconds(0), home);
  ASSERT_EQ(removed.size(), 2u);
  EXPECT_EQ(removed[0].directory, new_layer);  // the leaf first, then what it built on
  EXPECT_EQ(removed[1].directory, base);
  EXPECT_TRUE(vmfest::list_warm_images(home).empty());
}

}  // namespace
