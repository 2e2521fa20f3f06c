#include "vmfest/internal/base.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <string>

#include "vmfest/error.h"

namespace {

using vmfest::detail::whole_number_setting;

TEST(Settings, AWholeNumberIsReadWithinItsRangeAndAnythingElseIsRefusedByName) {
  ::unsetenv("VMFEST_TEST_SETTING");
  EXPECT_EQ(whole_number_setting("VMFEST_TEST_SETTING", 1, 10), std::nullopt);
  ::setenv("VMFEST_TEST_SETTING", "", 1);
  EXPECT_EQ(whole_number_setting("VMFEST_TEST_SETTING", 1, 10), std::nullopt);
  ::setenv("VMFEST_TEST_SETTING", "7", 1);
  EXPECT_EQ(whole_number_setting("VMFEST_TEST_SETTING", 1, 10), 7);
  for (const char* wrong : {"0", "11", "-3", "5s", "five", "9999999999999999999999"}) {
    ::setenv("VMFEST_TEST_SETTING", wrong, 1);
    try {
      whole_number_setting("VMFEST_TEST_SETTING", 1, 10, "of seconds");
      ADD_FAILURE() << wrong << " was accepted";
    } catch (const vmfest::InvalidArgument& error) {
      EXPECT_EQ(std::string(error.what()),
                std::string("VMFEST_TEST_SETTING=") + wrong +
                    " is not valid: use a whole number of seconds from 1 to 10");
    }
  }
  ::unsetenv("VMFEST_TEST_SETTING");
}

}  // namespace
