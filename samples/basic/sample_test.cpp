// Each TEST_F gets its own freshly cloned and booted VM; it is destroyed when the test ends.
#include <vmfest/gtest/fixture.h>

class MyGuestTest : public vmfest::testing::InstanceTest {};

TEST_F(MyGuestTest, RunsACommand) {
  auto result = ssh().run("uname -s");
  EXPECT_EQ(result.exit_status, 0);
  EXPECT_EQ(result.stdout_text, "Linux\n");
}

TEST_F(MyGuestTest, StartsFromACleanDisk) {
  EXPECT_NE(ssh().run("test -e /root/state-from-another-test").exit_status, 0);
  ssh().check("touch /root/state-from-another-test");
}

// A bigger VM for one suite: the fixture states what it needs.
class BiggerGuestTest : public vmfest::testing::InstanceTest {
  vmfest::testing::VmRequirements requirements() const override {
    return {.profile = vmfest::Profile::named("small")};
  }
};

TEST_F(BiggerGuestTest, HasTheMemoryItAskedFor) {
  auto kib = std::stol(ssh().check("awk '/MemTotal/ {print $2}' /proc/meminfo").stdout_text);
  EXPECT_GT(kib, 400 * 1024);  // 512 MiB minus what the kernel keeps for itself
}
