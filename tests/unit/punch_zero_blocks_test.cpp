#include <gtest/gtest.h>

#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "vmfest/error.h"
#include "vmfest/internal/base.h"

namespace {
namespace fs = std::filesystem;

// A memory file of zero and non-zero pages keeps its content (and hash) and its size, and only
// its zero blocks leave the disk.
TEST(PunchZeroBlocks, FreesOnlyZeroBlocksAndKeepsTheContent) {
  const fs::path file = fs::temp_directory_path() / ("vmfest-punch-" + std::to_string(::getpid()));
  std::string content(64 * 4096, '\0');
  for (std::size_t page : {0, 5, 6, 40, 63}) content[page * 4096 + 100] = 'x';
  content[20 * 4096 + 4095] = 'y';  // a block whose last byte alone is set
  std::ofstream(file, std::ios::binary) << content;
  const std::string before = vmfest::detail::sha256_file(file);

  const auto freed = vmfest::detail::punch_zero_blocks(file);
  EXPECT_EQ(freed, (64u - 6u) * 4096u);
  EXPECT_EQ(vmfest::detail::sha256_file(file), before);
  EXPECT_EQ(fs::file_size(file), content.size());
  struct stat info {};
  ASSERT_EQ(::stat(file.c_str(), &info), 0);
  EXPECT_LE(static_cast<std::uintmax_t>(info.st_blocks) * 512, 6u * 4096u + 8192u);
  fs::remove(file);

  EXPECT_THROW(vmfest::detail::punch_zero_blocks(file), vmfest::Error);
}

// The copy a layer build maps: same bytes, same size, and the source's holes stay holes.
TEST(CopySparseFile, CopiesTheDataAndKeepsTheHoles) {
  const fs::path source =
      fs::temp_directory_path() / ("vmfest-sparse-" + std::to_string(::getpid()));
  const fs::path copy = source.string() + ".copy";
  std::string content(256 * 4096, '\0');
  for (std::size_t page : {0, 1, 100, 255}) content[page * 4096 + 7] = 'z';
  std::ofstream(source, std::ios::binary) << content;
  vmfest::detail::punch_zero_blocks(source);

  vmfest::detail::copy_sparse_file(source, copy, 0600);
  EXPECT_EQ(vmfest::detail::sha256_file(copy), vmfest::detail::sha256_file(source));
  EXPECT_EQ(fs::file_size(copy), content.size());
  struct stat info {};
  ASSERT_EQ(::stat(copy.c_str(), &info), 0);
  EXPECT_LE(static_cast<std::uintmax_t>(info.st_blocks) * 512, 64u * 4096u);
  EXPECT_EQ(info.st_mode & 0777, 0600u);

  // An existing destination is refused and left as it was; so is a missing source.
  EXPECT_THROW(vmfest::detail::copy_sparse_file(source, copy, 0600), vmfest::Error);
  EXPECT_EQ(vmfest::detail::sha256_file(copy), vmfest::detail::sha256_file(source));
  fs::remove(source);
  fs::remove(copy);
  EXPECT_THROW(vmfest::detail::copy_sparse_file(source, copy, 0600), vmfest::Error);
  EXPECT_FALSE(fs::exists(copy));
}

}  // namespace
