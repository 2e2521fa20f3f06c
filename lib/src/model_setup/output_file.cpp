#include "output_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <fmt/format.h>

#include "vmfest/error.h"

namespace vmfest::detail {

OutputFile::OutputFile(std::filesystem::path path, Mode mode) : path_(std::move(path)) {
  const int flags =
      O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW | (mode == Mode::Create ? O_TRUNC : 0);
  fd_ = ::open(path_.c_str(), flags, 0644);
  if (fd_ < 0) fail("create", errno);
  struct stat status {};
  if (::fstat(fd_, &status) != 0) fail("inspect", errno);
  size_ = static_cast<std::uint64_t>(status.st_size);
}

OutputFile::~OutputFile() {
  if (fd_ >= 0) ::close(fd_);
}

void OutputFile::append(std::span<const unsigned char> bytes) { write_at(size_, bytes); }

void OutputFile::write_at(std::uint64_t offset, std::span<const unsigned char> bytes) {
  while (!bytes.empty()) {
    const ssize_t written = ::pwrite(fd_, bytes.data(), bytes.size(), static_cast<off_t>(offset));
    if (written < 0 && errno == EINTR) continue;
    if (written < 0) fail("write", errno);
    offset += static_cast<std::uint64_t>(written);
    bytes = bytes.subspan(static_cast<std::size_t>(written));
  }
  size_ = std::max(size_, offset);
}

void OutputFile::resize(std::uint64_t size) {
  if (::ftruncate(fd_, static_cast<off_t>(size)) != 0) fail("resize", errno);
  size_ = size;
}

void OutputFile::sync() {
  if (::fsync(fd_) != 0) fail("flush", errno);
}

void OutputFile::fail(const char* action, int error) const {
  if (error == ENOSPC || error == EDQUOT || error == EFBIG) {
    throw SetupError(fmt::format(
        "cannot {} {}: {}: free space in {} (or set VMFEST_HOME to a roomier place) and run "
        "again; nothing was registered",
        action, path_.string(), std::strerror(error), path_.parent_path().string()));
  }
  throw SetupError(fmt::format("cannot {} {}: {}", action, path_.string(), std::strerror(error)));
}

}  // namespace vmfest::detail
