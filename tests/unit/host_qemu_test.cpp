#include <gtest/gtest.h>

#include <cstdlib>

#include "backends/qemu/host_qemu.h"
#include "vmfest/error.h"

namespace {
namespace qemu = vmfest::detail::qemu;

// This host's QEMU (7.2) has x-ignore-shared: the probe must find it, and the setting overrides.
TEST(HostQemu, WarmMemoryIsProbedAndCanBeOverridden) {
  ::unsetenv("VMFEST_WARM_MEMORY");
  EXPECT_EQ(qemu::warm_memory(), qemu::WarmMemory::Mapped);
  ::setenv("VMFEST_WARM_MEMORY", "streamed", 1);
  EXPECT_EQ(qemu::warm_memory(), qemu::WarmMemory::Streamed);
  ::setenv("VMFEST_WARM_MEMORY", "mmap", 1);
  try {
    qemu::warm_memory();
    ADD_FAILURE() << "an unknown mode was accepted";
  } catch (const vmfest::InvalidArgument& error) {
    EXPECT_NE(std::string(error.what()).find("'mapped'"), std::string::npos) << error.what();
  }
  ::unsetenv("VMFEST_WARM_MEMORY");
}

TEST(HostQemu, TranslationCacheSizeHasADefaultAndAnOverride) {
  ::unsetenv("VMFEST_TCG_TB_SIZE");
  EXPECT_EQ(qemu::tcg_tb_size_mib(), qemu::kDefaultTbSizeMib);
  ::setenv("VMFEST_TCG_TB_SIZE", "128", 1);
  EXPECT_EQ(qemu::tcg_tb_size_mib(), 128);
  for (const char* wrong : {"0", "12M", "-5", "99999999"}) {
    ::setenv("VMFEST_TCG_TB_SIZE", wrong, 1);
    EXPECT_THROW(qemu::tcg_tb_size_mib(), vmfest::InvalidArgument) << wrong;
  }
  ::unsetenv("VMFEST_TCG_TB_SIZE");
}

}  // namespace
