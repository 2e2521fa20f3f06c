// The per-test fixtures on real VMs: InstanceTest (with recorded SSH and JUnit properties) and the
// parameterised VariantTest over profiles.
#include <string>

#include "vmfest/gtest/fixture.h"

namespace {
using vmfest::testing::InstanceTest;
using vmfest::testing::VariantTest;

std::string property(const std::string& key) {
  const ::testing::TestResult* result =
      ::testing::UnitTest::GetInstance()->current_test_info()->result();
  for (int index = 0; index < result->test_property_count(); ++index) {
    if (result->GetTestProperty(index).key() == key) return result->GetTestProperty(index).value();
  }
  return "";
}

class FreshInstance : public InstanceTest {};

TEST_F(FreshInstance, RunningWithRecordedSshAndJunitProperties) {
  EXPECT_EQ(instance().state(), vmfest::InstanceState::Running);
  EXPECT_EQ(ssh().check("hostname").stdout_text, instance().name() + "\n");
  EXPECT_EQ(ssh().run("echo oops >&2; exit 3").exit_status, 3);
  EXPECT_NE(ssh().transcript().find("$ hostname\nexit 0\n--- stdout\n" + instance().name()),
            std::string::npos)
      << ssh().transcript();
  EXPECT_NE(ssh().transcript().find("exit 3\n--- stderr\noops\n"), std::string::npos)
      << ssh().transcript();

  EXPECT_EQ(property("vmfest_instance"), instance().name());
  EXPECT_EQ(property("vmfest_model"), vmfest::testing::kDefaultModel);
  EXPECT_EQ(property("vmfest_accelerator"), instance().accelerator());
  EXPECT_GT(std::stod(property("vmfest_boot_seconds")), 0.0);
}

// The memory a guest kernel reports is its profile's, less what the kernel keeps for itself.
class Profiles : public VariantTest {};

TEST_P(Profiles, GuestHasTheProfilesMemory) {
  EXPECT_EQ(instance().model_name(), GetParam().model);
  const long total_kib =
      std::stol(ssh().check("awk '/MemTotal/ {print $2}' /proc/meminfo").stdout_text);
  const long profile_kib = GetParam().profile.memory_mib * 1024L;
  EXPECT_LE(total_kib, profile_kib);
  EXPECT_GT(total_kib, profile_kib - 96 * 1024);
}

INSTANTIATE_TEST_SUITE_P(DefaultModel, Profiles,
                         ::testing::ValuesIn(vmfest::testing::variants(
                             {vmfest::testing::kDefaultModel}, {"micro", "small"})),
                         vmfest::testing::variant_name);

}  // namespace
