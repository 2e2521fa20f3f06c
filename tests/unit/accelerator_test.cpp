#include <gtest/gtest.h>

#include <cstdlib>

#include "backends/qemu/accelerator.h"
#include "subprocess.h"
#include "vmfest/error.h"

namespace {
namespace fs = std::filesystem;

TEST(Accelerator, EnvironmentOverrideWins) {
  ::setenv("VMFEST_ACCEL", "tcg", 1);
  auto choice = vmfest::detail::qemu::choose_accelerator("/bin/false", fs::temp_directory_path(), {},
                                                         std::chrono::seconds(1));
  EXPECT_EQ(choice.name, "tcg");
  ::setenv("VMFEST_ACCEL", "warp", 1);
  EXPECT_THROW(vmfest::detail::qemu::choose_accelerator("/bin/false", fs::temp_directory_path(), {},
                                                        std::chrono::seconds(1)),
               vmfest::InvalidArgument);
  ::unsetenv("VMFEST_ACCEL");
}

TEST(Accelerator, ProbeChoosesAWorkingAcceleratorAndSaysWhy) {
  ::unsetenv("VMFEST_ACCEL");
  auto qemu = vmfest::detail::find_program("qemu-system-x86_64", "qemu-system-x86");
  fs::path cache = fs::temp_directory_path() / ("vmfest-accel-" + std::to_string(::getpid()));
  auto choice = vmfest::detail::qemu::choose_accelerator(qemu, cache, {}, std::chrono::seconds(5));
  EXPECT_TRUE(choice.name == "tcg" || choice.name == "kvm");
  EXPECT_FALSE(choice.reason.empty());
  fs::remove_all(cache);
}

}  // namespace
