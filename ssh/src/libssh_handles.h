// Owning wrappers for libssh's C handles (private to the ssh component).
#pragma once

#include <libssh/libssh.h>

#include <memory>
#include <string>

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

struct ChannelDeleter {
  void operator()(ssh_channel channel) const noexcept {
    ssh_channel_close(channel);
    ssh_channel_free(channel);
  }
};
using ChannelPtr = std::unique_ptr<std::remove_pointer_t<ssh_channel>, ChannelDeleter>;

// libssh returns some strings it allocated; this frees them.
struct StringDeleter {
  void operator()(char* text) const noexcept { ssh_string_free_char(text); }
};
using CString = std::unique_ptr<char, StringDeleter>;

// Parses "ssh-ed25519 AAAA... [comment]" into a public key, or returns null.
KeyPtr import_public_line(const std::string& line);

}  // namespace vmfest::ssh::detail
