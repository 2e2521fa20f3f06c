// A 12-test VM suite for bench/suite_bench.sh, which times it run serially, as 12 ctest tests
// with -j4 and as 4 gtest shards. Each test is what a typical VM test does: boot a fresh guest,
// run a few commands, check their output.
#include <string>

#include "vmfest/gtest/fixture.h"

namespace {

class Suite : public vmfest::testing::InstanceTest, public ::testing::WithParamInterface<int> {};

TEST_P(Suite, Exercise) {
  const std::string label = "t" + std::to_string(GetParam());
  ssh().check("mkdir -p /root/work && echo " + label + " > /root/work/label");
  EXPECT_EQ(ssh().check("cat /root/work/label").stdout_text, label + "\n");
  EXPECT_EQ(ssh().check("hostname").stdout_text, instance().name() + "\n");
}

INSTANTIATE_TEST_SUITE_P(Twelve, Suite, ::testing::Range(1, 13));

}  // namespace
