// Test and bench support: incompressible files (transfers that compression cannot shortcut).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <random>
#include <vector>

namespace vmfest::testing {

// `size` pseudo-random bytes, the same on every call (a fixed seed), so a failure reproduces.
inline void write_random_file(const std::filesystem::path& path, std::size_t size) {
  std::mt19937_64 generator(42);
  std::vector<std::uint64_t> block(1 << 16);
  std::ofstream out(path, std::ios::binary);
  for (std::size_t written = 0; written < size;) {
    for (auto& word : block) word = generator();
    const std::size_t n = std::min(size - written, block.size() * sizeof(std::uint64_t));
    out.write(reinterpret_cast<const char*>(block.data()), static_cast<std::streamsize>(n));
    written += n;
  }
}

}  // namespace vmfest::testing
