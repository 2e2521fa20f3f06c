// Ed25519 key pairs for per-instance identities: one client key and one host key per instance.
#pragma once

#include <filesystem>
#include <string>

namespace vmfest::ssh {

struct KeyPair {
  std::string private_openssh;  // "-----BEGIN OPENSSH PRIVATE KEY-----..." (a secret: never log it)
  std::string public_openssh;   // "ssh-ed25519 AAAA... comment"

  // A fresh Ed25519 pair; `comment` ends the public line.
  static KeyPair generate(const std::string& comment);

  // The private key in dropbear's own format (dropbear 2022.83 cannot read OpenSSH's), as
  // `dropbearconvert openssh dropbear` writes it. A secret, like private_openssh.
  [[nodiscard]] std::string private_dropbear() const;

  // Writes the private key (mode 0600) and PATH.pub (mode 0644).
  void save(const std::filesystem::path& private_path) const;
  static KeyPair load(const std::filesystem::path& private_path);
};

// True when `text` is an unencrypted private key of any type libssh can log in with (OpenSSH or
// PEM format), such as an image's published key.
bool is_usable_private_key(const std::string& text);

}  // namespace vmfest::ssh
