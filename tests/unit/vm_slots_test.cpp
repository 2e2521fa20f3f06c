#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <optional>

#include "vm_slots.h"
#include "vmfest/error.h"

namespace {
namespace fs = std::filesystem;
using vmfest::detail::acquire_vm_slot;
using namespace std::chrono_literals;

class VmSlots : public ::testing::Test {
 protected:
  void SetUp() override {
    directory_ = fs::temp_directory_path() / ("vmfest-slots-test-" + std::to_string(::getpid()));
    ::setenv("VMFEST_SLOTS_DIR", directory_.c_str(), 1);
    ::setenv("VMFEST_MAX_VMS", "2", 1);
  }
  void TearDown() override {
    ::unsetenv("VMFEST_SLOTS_DIR");
    ::unsetenv("VMFEST_MAX_VMS");
    fs::remove_all(directory_);
  }
  fs::path directory_;
};

TEST_F(VmSlots, TheCapHoldsAndAFreedSlotIsReused) {
  auto first = acquire_vm_slot("one", 1s);
  std::optional second(acquire_vm_slot("two", 1s));
  EXPECT_NE(first.index(), second->index());
  try {
    (void)acquire_vm_slot("three", 200ms);
    FAIL() << "a third VM must wait beyond a cap of 2";
  } catch (const vmfest::StateError& error) {
    std::string message = error.what();
    EXPECT_NE(message.find("instance 'three' waited"), std::string::npos) << message;
    EXPECT_NE(message.find("instance two"), std::string::npos) << message;
    EXPECT_NE(message.find("VMFEST_MAX_VMS"), std::string::npos) << message;
  }
  int freed = second->index();
  second.reset();
  EXPECT_EQ(acquire_vm_slot("three", 1s).index(), freed);
}

TEST_F(VmSlots, DefaultComesFromTheHostAndBadValuesAreRefused) {
  ::unsetenv("VMFEST_MAX_VMS");
  EXPECT_GE(vmfest::detail::max_running_vms(), 1);
  ::setenv("VMFEST_MAX_VMS", "lots", 1);
  EXPECT_THROW(vmfest::detail::max_running_vms(), vmfest::InvalidArgument);
}

}  // namespace
