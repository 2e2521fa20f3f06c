#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "files.h"
#include "registry_store.h"
#include "subprocess.h"
#include "vmfest/error.h"
#include "vmfest/instance.h"
#include "vmfest/model.h"

namespace {
namespace fs = std::filesystem;

class RegistryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() /
            ("vmfest-registry-" +
             std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()) + "-" +
             std::to_string(::getpid()));
    fs::remove_all(root_);
    fs::create_directories(root_);
  }
  void TearDown() override {
    for (auto& entry : fs::recursive_directory_iterator(root_)) {
      fs::permissions(entry.path(), fs::perms::owner_all, fs::perm_options::add);
    }
    fs::remove_all(root_);
  }
  fs::path make_qcow2(const std::string& file) {
    fs::path path = root_ / file;
    auto qemu_img = vmfest::detail::find_program("qemu-img", "qemu-utils");
    vmfest::detail::run_tool_checked(
        qemu_img, {"create", "-q", "-f", "qcow2", path.string(), "16M"}, "test image");
    return path;
  }
  vmfest::Home home() const { return vmfest::Home(root_ / "home"); }
  fs::path root_;
};

TEST_F(RegistryTest, UnknownModelErrorListsWhatIsRegistered) {
  vmfest::ModelRegistry registry(home());
  try {
    (void)registry.get("nope");
    FAIL() << "expected ModelError";
  } catch (const vmfest::ModelError& error) {
    std::string message = error.what();
    EXPECT_NE(message.find("model 'nope' is not registered"), std::string::npos) << message;
    EXPECT_NE(message.find("vmfest setup-model"), std::string::npos) << message;
  }
}

TEST_F(RegistryTest, LocalImageIsRegisteredReadOnlyWithItsHash) {
  fs::path image = make_qcow2("small.qcow2");
  std::string hash = vmfest::detail::sha256_file(image);
  vmfest::Model model = vmfest::setup_model(image.string(), {}, home());
  EXPECT_EQ(model.name, "small");
  EXPECT_EQ(model.format, "qcow2");
  EXPECT_EQ(model.sha256, hash);
  EXPECT_EQ(fs::status(model.disk).permissions() & fs::perms::owner_write, fs::perms::none);
  auto listed = vmfest::ModelRegistry(home()).list();
  ASSERT_EQ(listed.size(), 1u);
  EXPECT_EQ(listed[0].name, "small");
}

TEST_F(RegistryTest, SameSourceTwiceIsANoOp) {
  fs::path image = make_qcow2("twice.qcow2");
  auto first = vmfest::setup_model(image.string(), {}, home());
  auto second = vmfest::setup_model(image.string(), {}, home());
  EXPECT_EQ(first.disk, second.disk);
  EXPECT_EQ(fs::last_write_time(first.disk), fs::last_write_time(second.disk));
}

TEST_F(RegistryTest, NonImageIsRefusedAndNothingIsRegistered) {
  fs::path junk = root_ / "junk.qcow2";
  std::ofstream(junk) << "QFI\xfb but not really a qcow2 image";
  EXPECT_THROW(vmfest::setup_model(junk.string(), {}, home()), vmfest::SetupError);
  EXPECT_TRUE(vmfest::ModelRegistry(home()).list().empty());
  for (auto& entry : fs::directory_iterator(home().models())) {
    EXPECT_TRUE(entry.path().filename().string().starts_with(".")) << entry.path();
    EXPECT_FALSE(entry.is_directory()) << "staging left behind: " << entry.path();
  }
}

TEST_F(RegistryTest, MissingSourceAndBadNamesAreClearErrors) {
  EXPECT_THROW(vmfest::setup_model((root_ / "absent.qcow2").string(), {}, home()),
               vmfest::SetupError);
  vmfest::SetupOptions options;
  options.name = "../escape";
  fs::path image = make_qcow2("ok.qcow2");
  EXPECT_THROW(vmfest::setup_model(image.string(), options, home()), vmfest::InvalidArgument);
  EXPECT_FALSE(fs::exists(root_ / "escape"));
}

TEST_F(RegistryTest, RemoveDeletesTheModel) {
  fs::path image = make_qcow2("gone.qcow2");
  vmfest::setup_model(image.string(), {}, home());
  vmfest::ModelRegistry registry(home());
  registry.remove("gone");
  EXPECT_FALSE(registry.find("gone").has_value());
  EXPECT_THROW(registry.remove("gone"), vmfest::ModelError);
}

TEST_F(RegistryTest, UnknownModelForAnInstanceIsAModelError) {
  vmfest::InstanceRequest request;
  request.model = "missing";
  EXPECT_THROW(vmfest::Instance::create(request, home()), vmfest::ModelError);
  EXPECT_TRUE(vmfest::list_instances(home()).empty());
}

}  // namespace
