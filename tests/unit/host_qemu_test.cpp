#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>

#include "backends/qemu/host_qemu.h"
#include "vmfest/error.h"
#include "vmfest/internal/base.h"

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

// A kept hash is used while the file is unchanged, and a changed file (same path, same size) is
// hashed again: its change time moved.
TEST(HostQemu, AFileIsHashedOnceUntilItChanges) {
  namespace fs = std::filesystem;
  const fs::path folder = fs::temp_directory_path() / ("vmfest-kept-" + std::to_string(::getpid()));
  fs::create_directories(folder);
  ::setenv("VMFEST_CACHE_DIR", (folder / "cache").c_str(), 1);
  const fs::path kernel = folder / "vmlinuz";
  auto write = [&](const std::string& text) { std::ofstream(kernel, std::ios::trunc) << text; };

  write("first kernel");
  EXPECT_EQ(qemu::kept_sha256(kernel), vmfest::detail::sha256_text("first kernel"));
  // What is kept is what is returned: a record altered by hand shows through...
  const std::string identity = qemu::on_disk_identity(kernel);
  const fs::path kept =
      folder / "cache" / "sha256" / vmfest::detail::sha256_text(identity).substr(0, 32);
  ASSERT_TRUE(fs::exists(kept));
  const std::string forged(64, 'f');
  vmfest::detail::write_text_atomically(kept, identity + "\n" + forged);
  EXPECT_EQ(qemu::kept_sha256(kernel), forged);
  // ...until the file changes (past the file system's timestamp tick, a few milliseconds).
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  write("other kernel");
  EXPECT_EQ(qemu::kept_sha256(kernel), vmfest::detail::sha256_text("other kernel"));

  ::unsetenv("VMFEST_CACHE_DIR");
  fs::remove_all(folder);
}

}  // namespace
