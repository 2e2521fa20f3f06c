#include "vmfest/internal/registry.h"

#include <gtest/gtest.h>

#include <unistd.h>

#include <filesystem>

#include "vmfest/internal/base.h"

namespace {
namespace fs = std::filesystem;

class BootTimes : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() / ("vmfest-boot-times-" + std::to_string(::getpid()));
    fs::remove_all(root_);
    model_.name = "debian";
    model_.sha256 = std::string(64, 'a');
  }
  void TearDown() override { fs::remove_all(root_); }

  vmfest::Home home() const { return vmfest::Home(root_); }

  fs::path root_;
  vmfest::Model model_;
};

TEST_F(BootTimes, NoneBeforeTheFirstBoot) {
  EXPECT_FALSE(vmfest::detail::usual_cold_boot(home(), model_, "tcg"));
}

TEST_F(BootTimes, TheUsualBootIsTheMedianOfTheLastFivePerAccelerator) {
  for (double seconds : {100.0, 60.0, 61.0, 62.0, 200.0, 63.0}) {
    vmfest::detail::record_cold_boot(home(), model_, "tcg", seconds);
  }
  vmfest::detail::record_cold_boot(home(), model_, "kvm", 4.0);
  // The first (100 s) fell out; of 60, 61, 62, 200, 63 the median is 62.
  EXPECT_DOUBLE_EQ(*vmfest::detail::usual_cold_boot(home(), model_, "tcg"), 62.0);
  EXPECT_DOUBLE_EQ(*vmfest::detail::usual_cold_boot(home(), model_, "kvm"), 4.0);
}

TEST_F(BootTimes, AnotherImageUnderTheSameNameStartsAfresh) {
  vmfest::detail::record_cold_boot(home(), model_, "tcg", 60.0);
  vmfest::Model replaced = model_;
  replaced.sha256 = std::string(64, 'b');
  EXPECT_FALSE(vmfest::detail::usual_cold_boot(home(), replaced, "tcg"));
}

TEST_F(BootTimes, AnUnreadableHistoryIsIgnoredAndReplaced) {
  fs::create_directories(home().cache());
  vmfest::detail::write_text_atomically(home().cache() / "boot-times.json", "{not json");
  EXPECT_FALSE(vmfest::detail::usual_cold_boot(home(), model_, "tcg"));
  vmfest::detail::record_cold_boot(home(), model_, "tcg", 30.0);
  EXPECT_DOUBLE_EQ(*vmfest::detail::usual_cold_boot(home(), model_, "tcg"), 30.0);
}

}  // namespace
