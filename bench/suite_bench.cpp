// A 12-test VM suite for bench/suite_bench.sh, which times it run serially, as 12 ctest tests
// with -j4 and as 4 gtest shards. Each test is what a typical VM test does: boot a fresh guest,
// run a few commands, check their output.
#include <string>

#include "vmfest/gtest/fixture.h"

namespace {

class Suite : public vmfest::testing::InstanceTest {
 protected:
  void exercise(const std::string& label) {
    ssh().check("mkdir -p /root/work && echo " + label + " > /root/work/label");
    EXPECT_EQ(ssh().check("cat /root/work/label").stdout_text, label + "\n");
    EXPECT_EQ(ssh().check("hostname").stdout_text, instance().name() + "\n");
  }
};

TEST_F(Suite, T01) { exercise("t01"); }
TEST_F(Suite, T02) { exercise("t02"); }
TEST_F(Suite, T03) { exercise("t03"); }
TEST_F(Suite, T04) { exercise("t04"); }
TEST_F(Suite, T05) { exercise("t05"); }
TEST_F(Suite, T06) { exercise("t06"); }
TEST_F(Suite, T07) { exercise("t07"); }
TEST_F(Suite, T08) { exercise("t08"); }
TEST_F(Suite, T09) { exercise("t09"); }
TEST_F(Suite, T10) { exercise("t10"); }
TEST_F(Suite, T11) { exercise("t11"); }
TEST_F(Suite, T12) { exercise("t12"); }

}  // namespace
