// A file being written by setup_model (download, decompressed image, tar member), whose write
// errors say plainly what ran out: "no space left on device" names the folder to clean up.
#pragma once

#include <cstdint>
#include <filesystem>
#include <span>

namespace vmfest::detail {

class OutputFile {
 public:
  enum class Mode { Create, Append };  // Create truncates; Append keeps what is there
  OutputFile(std::filesystem::path path, Mode mode);
  OutputFile(const OutputFile&) = delete;
  OutputFile& operator=(const OutputFile&) = delete;
  ~OutputFile();

  void append(std::span<const unsigned char> bytes);
  void write_at(std::uint64_t offset, std::span<const unsigned char> bytes);
  // Sets the length (drops a tail, or extends with a hole) and moves the append position there.
  void resize(std::uint64_t size);
  // Flushes the content to the disk, so a registered model survives a power cut.
  void sync();
  [[nodiscard]] std::uint64_t size() const noexcept { return size_; }
  [[nodiscard]] const std::filesystem::path& path() const noexcept { return path_; }

 private:
  [[noreturn]] void fail(const char* action, int error) const;

  std::filesystem::path path_;
  int fd_ = -1;
  std::uint64_t size_ = 0;
};

}  // namespace vmfest::detail
