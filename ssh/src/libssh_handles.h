// Owning wrappers for libssh's C handles and file descriptors (private to the ssh component).
#pragma once

#include <libssh/libssh.h>
#include <unistd.h>

#include <memory>
#include <string>
#include <utility>

namespace vmfest::ssh::detail {

struct KeyDeleter {
  void operator()(ssh_key key) const noexcept { ssh_key_free(key); }
};
using KeyPtr = std::unique_ptr<std::remove_pointer_t<ssh_key>, KeyDeleter>;

struct SessionDeleter {
  void operator()(ssh_session session) const noexcept {
    ssh_disconnect(session);
    ssh_free(session);
  }
};
using SessionPtr = std::unique_ptr<std::remove_pointer_t<ssh_session>, SessionDeleter>;

// libssh returns some strings it allocated; this frees them.
struct StringDeleter {
  void operator()(char* text) const noexcept { ssh_string_free_char(text); }
};
using CString = std::unique_ptr<char, StringDeleter>;

// Parses "ssh-ed25519 AAAA... [comment]" into a public key, or returns null.
KeyPtr import_public_line(const std::string& line);

// A file descriptor closed on destruction.
class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) noexcept : fd_(fd) {}
  UniqueFd(UniqueFd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept {
    if (this != &other) {
      reset();
      fd_ = std::exchange(other.fd_, -1);
    }
    return *this;
  }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  ~UniqueFd() { reset(); }

  [[nodiscard]] int get() const noexcept { return fd_; }
  explicit operator bool() const noexcept { return fd_ >= 0; }
  void reset() noexcept {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_ = -1;
};

}  // namespace vmfest::ssh::detail
