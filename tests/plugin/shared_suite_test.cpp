// One instance for a whole suite (SharedInstanceTest): every test of the suite sees the same
// guest, in whatever order the tests run. Registered with vmfest_add_tests(SHARDS 1), which runs
// the suite in one process.
#include <string>

#include "vmfest/gtest/fixture.h"

namespace {

class SharedGuest : public vmfest::testing::SharedInstanceTest<SharedGuest> {
 public:
  static vmfest::testing::VmRequirements requirements() {
    return {.profile = vmfest::Profile::named("micro")};
  }

 protected:
  // Each test leaves a visit in the guest; the count shows that all tests share one guest.
  void visit() {
    ++tests_so_far;
    const auto visits = ssh().check("echo visit >> /root/visits && wc -l < /root/visits");
    EXPECT_EQ(std::stoi(visits.stdout_text), tests_so_far);
    if (first_name.empty()) first_name = instance().name();
    EXPECT_EQ(instance().name(), first_name);
    // The transcript starts afresh with each test.
    EXPECT_EQ(ssh().transcript().find("$ echo visit"), ssh().transcript().rfind("$ echo visit"));
  }

  static inline int tests_so_far = 0;
  static inline std::string first_name;
};

TEST_F(SharedGuest, FirstVisit) { visit(); }
TEST_F(SharedGuest, SecondVisit) { visit(); }
TEST_F(SharedGuest, ThirdVisit) { visit(); }

}  // namespace
