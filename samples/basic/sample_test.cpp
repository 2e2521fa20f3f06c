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
