// Small file helpers shared by the registry, instances and backends.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>

namespace vmfest::detail {

std::string read_text(const std::filesystem::path& path);
// The file's content, or "" when it does not exist (yet).
std::string read_text_if_exists(const std::filesystem::path& path);
// Writes to a temporary file beside `path`, fsyncs and renames, so readers see old or new, never
// half. The file is created with `mode` (less the umask): 0600 keeps a secret private from birth.
void write_text_atomically(const std::filesystem::path& path, const std::string& text,
                           unsigned mode = 0644);
// Lowercase hex sha256 of a file's content.
std::string sha256_file(const std::filesystem::path& path);
// Deallocates every all-zero 4 KiB block of a file (a hole reads as zeros), fsyncs it, and returns
// the bytes freed: a guest's memory file is mostly pages the guest zeroed. Error on failure.
std::uintmax_t punch_zero_blocks(const std::filesystem::path& path);
// Copies `from` to a new file `to` (mode `mode`) data extent by data extent, so the copy keeps the
// source's holes: a warm image's memory file is mostly holes. Error on failure (no copy left).
void copy_sparse_file(const std::filesystem::path& from, const std::filesystem::path& to,
                      unsigned mode);
// The last `lines` lines of a text file ("" if it does not exist).
std::string tail_lines(const std::filesystem::path& path, std::size_t lines);

// An exclusive flock(2) on a lock file, released on destruction. Close-on-exec, so child processes
// (a hypervisor) never inherit it.
class FileLock {
 public:
  // Wait: block until free. TryOnce: give up at once when held. TryExisting: like TryOnce, and
  // also not held when the lock file does not exist (it is never created).
  enum class Mode { Wait, TryOnce, TryExisting };
  FileLock(const std::filesystem::path& path, Mode mode = Mode::Wait);
  FileLock(FileLock&& other) noexcept;
  FileLock& operator=(FileLock&&) = delete;
  FileLock(const FileLock&) = delete;
  FileLock& operator=(const FileLock&) = delete;
  ~FileLock();
  // False when Mode::TryOnce found the lock held by someone else.
  [[nodiscard]] bool held() const noexcept { return fd_ >= 0; }
  // The locked descriptor: a child process that inherits it holds the lock too (flock locks belong
  // to the open file, which the child shares), until both have closed it.
  [[nodiscard]] int descriptor() const noexcept { return fd_; }
  // Replaces the lock file's content (who holds it), through the locked descriptor itself.
  void describe_holder(const std::string& text);
  // Removes the lock file while still holding it, so lock files do not pile up: a process waiting
  // on the removed file finds it gone once it gets the lock, and starts again on a new one.
  void remove_file() noexcept;

 private:
  std::filesystem::path path_;
  int fd_ = -1;
};

// Whether some process holds the FileLock on `path` now (false when the file does not exist).
// Asks with a shared lock, so two processes asking at once never mistake each other for holders.
bool lock_file_held(const std::filesystem::path& path);

}  // namespace vmfest::detail
