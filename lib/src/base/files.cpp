#include "files.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <deque>
#include <fstream>
#include <random>
#include <span>
#include <sstream>
#include <vector>

#include <fmt/format.h>

#include "sha256.h"
#include "vmfest/error.h"

namespace vmfest::detail {
namespace fs = std::filesystem;

std::string read_text(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(fmt::format("cannot read {}: {}", path.string(), std::strerror(errno)));
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

std::string read_text_if_exists(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return "";
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

void write_text_atomically(const fs::path& path, const std::string& text, unsigned mode) {
  std::random_device random;
  fs::path temporary = path;
  temporary += fmt::format(".tmp-{:08x}", random());
  int fd = ::open(temporary.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
  if (fd < 0) {
    throw Error(fmt::format("cannot write {}: {}", path.string(), std::strerror(errno)));
  }
  std::size_t written = 0;
  while (written < text.size()) {
    ssize_t n = ::write(fd, text.data() + written, text.size() - written);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int saved = errno;
      ::close(fd);
      fs::remove(temporary);
      throw Error(fmt::format("cannot write {}: {}", path.string(), std::strerror(saved)));
    }
    written += static_cast<std::size_t>(n);
  }
  bool synced = ::fsync(fd) == 0;
  ::close(fd);
  if (!synced) {
    fs::remove(temporary);
    throw Error(fmt::format("cannot write {}: fsync failed", path.string()));
  }
  fs::rename(temporary, path);
}

std::string sha256_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(fmt::format("cannot read {} to hash it", path.string()));
  Sha256 hasher;
  std::vector<unsigned char> buffer(std::size_t{1} << 20);
  while (in) {
    in.read(reinterpret_cast<char*>(buffer.data()), static_cast<std::streamsize>(buffer.size()));
    hasher.update(std::span(buffer.data(), static_cast<std::size_t>(in.gcount())));
  }
  return hasher.hex_digest();
}

std::uintmax_t punch_zero_blocks(const std::filesystem::path& path) {
  constexpr std::size_t kBlock = 4096;
  const int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) {
    throw Error(fmt::format("cannot open {} to free its zero blocks: {}", path.string(),
                            std::strerror(errno)));
  }
  std::vector<char> chunk(1 << 20);
  std::uintmax_t freed = 0;
  off_t offset = 0;
  off_t run_start = -1;  // the zero blocks not yet punched
  int failure = 0;
  auto punch_run = [&](off_t end) {
    if (run_start >= 0 && end > run_start && failure == 0) {
      if (::fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, run_start, end - run_start) ==
          0) {
        freed += static_cast<std::uintmax_t>(end - run_start);
      } else {
        failure = errno;
      }
    }
    run_start = -1;
  };
  for (;;) {
    const ssize_t got = ::pread(fd, chunk.data(), chunk.size(), offset);
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) failure = errno;
    if (got <= 0) break;
    for (std::size_t at = 0; at < static_cast<std::size_t>(got); at += kBlock) {
      const std::size_t length = std::min(kBlock, static_cast<std::size_t>(got) - at);
      const bool zero = chunk[at] == 0 && std::memcmp(&chunk[at], &chunk[at + 1], length - 1) == 0;
      const off_t block = offset + static_cast<off_t>(at);
      if (zero && length == kBlock) {
        if (run_start < 0) run_start = block;
      } else {
        punch_run(block);
      }
    }
    offset += got;
  }
  punch_run(offset);
  if (failure == 0 && ::fsync(fd) != 0) failure = errno;
  ::close(fd);
  if (failure != 0) {
    throw Error(fmt::format("cannot free the zero blocks of {}: {}", path.string(),
                            std::strerror(failure)));
  }
  return freed;
}

void copy_sparse_file(const fs::path& from, const fs::path& to, unsigned mode) {
  const int in = ::open(from.c_str(), O_RDONLY | O_CLOEXEC);
  if (in < 0) {
    throw Error(fmt::format("cannot read {} to copy it: {}", from.string(), std::strerror(errno)));
  }
  const int out = ::open(to.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode);
  if (out < 0) {
    const int saved = errno;
    ::close(in);
    throw Error(fmt::format("cannot create {}: {}", to.string(), std::strerror(saved)));
  }
  int failure = 0;
  struct stat info {};
  if (::fstat(in, &info) != 0 || ::ftruncate(out, info.st_size) != 0) failure = errno;
  for (off_t data = 0; failure == 0;) {
    data = ::lseek(in, data, SEEK_DATA);
    if (data < 0) {
      if (errno != ENXIO) failure = errno;  // ENXIO: no data after `data`
      break;
    }
    const off_t hole = ::lseek(in, data, SEEK_HOLE);
    if (hole < 0) {
      failure = errno;
      break;
    }
    off_t in_offset = data;
    off_t out_offset = data;
    while (in_offset < hole) {
      const ssize_t copied = ::copy_file_range(in, &in_offset, out, &out_offset,
                                               static_cast<std::size_t>(hole - in_offset), 0);
      if (copied < 0 && errno == EINTR) continue;
      if (copied <= 0) {
        failure = copied < 0 ? errno : EIO;
        break;
      }
    }
    data = hole;
  }
  ::close(in);
  if (failure == 0 && ::fsync(out) != 0) failure = errno;
  ::close(out);
  if (failure != 0) {
    std::error_code ignored;
    fs::remove(to, ignored);
    throw Error(fmt::format("cannot copy {} to {}: {}", from.string(), to.string(),
                            std::strerror(failure)));
  }
}

std::string tail_lines(const fs::path& path, std::size_t lines) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return "";
  std::deque<std::string> last;
  for (std::string line; std::getline(in, line);) {
    last.push_back(std::move(line));
    if (last.size() > lines) last.pop_front();
  }
  std::string text;
  for (const auto& line : last) text += line + "\n";
  return text;
}

FileLock::FileLock(const fs::path& path, Mode mode) : path_(path) {
  while (true) {
    // O_NOFOLLOW: a lock file is never a link; one planted in its place must not redirect the
    // open (and the holder's note written through it) to a file of someone else's choosing.
    fd_ = ::open(path.c_str(),
                 O_RDWR | O_CLOEXEC | O_NOFOLLOW | (mode == Mode::TryExisting ? 0 : O_CREAT), 0600);
    if (fd_ < 0 && mode == Mode::TryExisting && errno == ENOENT) return;
    if (fd_ < 0 && errno == ELOOP) {
      throw Error(
          fmt::format("the lock file {} is a symbolic link, which vmfest never makes: "
                      "someone planted it; remove it",
                      path.string()));
    }
    if (fd_ < 0) {
      throw Error(fmt::format("cannot open lock file {}: {}", path.string(), std::strerror(errno)));
    }
    int operation = LOCK_EX | (mode == Mode::Wait ? 0 : LOCK_NB);
    while (::flock(fd_, operation) != 0) {
      if (errno == EINTR) continue;
      int saved = errno;
      ::close(fd_);
      fd_ = -1;
      if (saved == EWOULDBLOCK) return;
      throw Error(fmt::format("cannot lock {}: {}", path.string(), std::strerror(saved)));
    }
    // The holder before us may have removed the file (remove_file) while we waited on it: the
    // lock we got then guards nothing, so start again on the file the path names now.
    struct stat held {};
    struct stat named {};
    if (::fstat(fd_, &held) == 0 && ::lstat(path.c_str(), &named) == 0 &&
        held.st_ino == named.st_ino && held.st_dev == named.st_dev) {
      return;
    }
    ::close(fd_);
    fd_ = -1;
  }
}

void FileLock::remove_file() noexcept {
  if (fd_ >= 0) ::unlink(path_.c_str());
}

FileLock::FileLock(FileLock&& other) noexcept : path_(std::move(other.path_)), fd_(other.fd_) {
  other.fd_ = -1;
}

void FileLock::describe_holder(const std::string& text) {
  if (::ftruncate(fd_, 0) != 0 ||
      ::pwrite(fd_, text.data(), text.size(), 0) != static_cast<ssize_t>(text.size())) {
    throw Error(fmt::format("cannot write to a lock file: {}", std::strerror(errno)));
  }
}

FileLock::~FileLock() {
  if (fd_ >= 0) ::close(fd_);
}

bool lock_file_held(const fs::path& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) return false;
  int result = 0;
  while ((result = ::flock(fd, LOCK_SH | LOCK_NB)) != 0 && errno == EINTR) {
  }
  const bool held = result != 0 && errno == EWOULDBLOCK;
  ::close(fd);
  return held;
}

}  // namespace vmfest::detail
