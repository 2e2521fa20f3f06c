#include "vmfest/ssh/keys.h"

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <fstream>
#include <sstream>
#include <string_view>

#include <openssl/evp.h>

#include "libssh_handles.h"
#include "vmfest/error.h"

namespace vmfest::ssh {
namespace fs = std::filesystem;

namespace detail {
KeyPtr import_public_line(const std::string& line) {
  std::istringstream words(line);
  std::string type;
  std::string blob;
  words >> type >> blob;
  ssh_key key = nullptr;
  if (blob.empty() || ssh_pki_import_pubkey_base64(
                          blob.c_str(), ssh_key_type_from_name(type.c_str()), &key) != SSH_OK) {
    return nullptr;
  }
  return KeyPtr(key);
}
}  // namespace detail

KeyPair KeyPair::generate(const std::string& comment) {
  ssh_key raw = nullptr;
  if (ssh_pki_generate(SSH_KEYTYPE_ED25519, 0, &raw) != SSH_OK) {
    throw SshError("could not generate an Ed25519 key with libssh");
  }
  detail::KeyPtr key(raw);
  char* private_text = nullptr;
  char* public_blob = nullptr;
  if (ssh_pki_export_privkey_base64(key.get(), nullptr, nullptr, nullptr, &private_text) !=
          SSH_OK ||
      ssh_pki_export_pubkey_base64(key.get(), &public_blob) != SSH_OK) {
    ssh_string_free_char(private_text);
    throw SshError("could not export a generated Ed25519 key with libssh");
  }
  detail::CString private_owner(private_text);
  detail::CString public_owner(public_blob);
  return KeyPair{private_text, std::string("ssh-ed25519 ") + public_blob + " " + comment};
}

namespace {

// Reads the SSH wire types of an OpenSSH private key file's body (PROTOCOL.key).
class WireReader {
 public:
  explicit WireReader(std::string_view bytes) : bytes_(bytes) {}
  std::uint32_t u32() {
    std::string_view raw = take(4);
    return static_cast<std::uint32_t>(static_cast<unsigned char>(raw[0])) << 24 |
           static_cast<std::uint32_t>(static_cast<unsigned char>(raw[1])) << 16 |
           static_cast<std::uint32_t>(static_cast<unsigned char>(raw[2])) << 8 |
           static_cast<std::uint32_t>(static_cast<unsigned char>(raw[3]));
  }
  std::string_view string() { return take(u32()); }
  std::string_view take(std::size_t count) {
    if (count > bytes_.size()) throw SshError("malformed OpenSSH private key (truncated)");
    std::string_view part = bytes_.substr(0, count);
    bytes_.remove_prefix(count);
    return part;
  }

 private:
  std::string_view bytes_;
};

void put_u32(std::string& out, std::uint32_t value) {
  for (int shift = 24; shift >= 0; shift -= 8) out += static_cast<char>((value >> shift) & 0xff);
}

void put_string(std::string& out, std::string_view text) {
  put_u32(out, static_cast<std::uint32_t>(text.size()));
  out += text;
}

std::string base64_decode(std::string_view armored) {
  std::string text;
  for (char c : armored) {
    if (std::isalnum(static_cast<unsigned char>(c)) || c == '+' || c == '/' || c == '=') text += c;
  }
  std::string bytes(text.size() / 4 * 3, '\0');
  const int length = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(bytes.data()),
                                     reinterpret_cast<const unsigned char*>(text.data()),
                                     static_cast<int>(text.size()));
  if (length < 0) throw SshError("malformed OpenSSH private key (base64)");
  const auto padding = static_cast<std::size_t>(
      std::count(text.end() - std::min<std::size_t>(2, text.size()), text.end(), '='));
  bytes.resize(static_cast<std::size_t>(length) - padding);
  return bytes;
}

void write_file(const fs::path& path, const std::string& text, fs::perms mode) {
  {
    std::ofstream out(path, std::ios::trunc);
    if (!out) throw SshError("cannot write key file " + path.string());
  }
  // Restrict before the secret goes in, so it is never readable by others.
  fs::permissions(path, mode);
  std::ofstream out(path, std::ios::trunc);
  out << text;
  if (!out.flush()) throw SshError("cannot write key file " + path.string());
}

std::string read_file(const fs::path& path) {
  std::ifstream in(path);
  if (!in) throw SshError("cannot read key file " + path.string());
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

fs::path public_path(const fs::path& private_path) {
  return fs::path(private_path.string() + ".pub");
}
}  // namespace

void KeyPair::save(const fs::path& private_path) const {
  write_file(private_path, private_openssh, fs::perms::owner_read | fs::perms::owner_write);
  write_file(public_path(private_path), public_openssh + "\n",
             fs::perms::owner_read | fs::perms::owner_write | fs::perms::group_read |
                 fs::perms::others_read);
}

KeyPair KeyPair::load(const fs::path& private_path) {
  std::string public_line = read_file(public_path(private_path));
  while (!public_line.empty() && (public_line.back() == '\n' || public_line.back() == '\r')) {
    public_line.pop_back();
  }
  return KeyPair{read_file(private_path), public_line};
}

std::string KeyPair::private_dropbear() const {
  constexpr std::string_view kBegin = "-----BEGIN OPENSSH PRIVATE KEY-----";
  constexpr std::string_view kEnd = "-----END OPENSSH PRIVATE KEY-----";
  const auto begin = private_openssh.find(kBegin);
  const auto end = private_openssh.find(kEnd);
  if (begin == std::string::npos || end == std::string::npos || end < begin) {
    throw SshError("not an OpenSSH private key");
  }
  const std::string body = base64_decode(
      std::string_view(private_openssh).substr(begin + kBegin.size(), end - begin - kBegin.size()));
  constexpr std::string_view kMagic{"openssh-key-v1\0", 15};
  WireReader reader(body);
  if (reader.take(kMagic.size()) != kMagic) throw SshError("not an openssh-key-v1 private key");
  if (reader.string() != "none" || reader.string() != "none") {
    throw SshError("an encrypted OpenSSH private key cannot be converted");
  }
  (void)reader.string();  // KDF options
  if (reader.u32() != 1) throw SshError("an OpenSSH private key file with several keys");
  (void)reader.string();  // the public key
  WireReader secret(reader.string());
  if (secret.u32() != secret.u32()) throw SshError("malformed OpenSSH private key (check bytes)");
  const std::string_view type = secret.string();
  if (type != "ssh-ed25519") {
    throw SshError("only Ed25519 keys convert to dropbear's format, not " + std::string(type));
  }
  (void)secret.string();                          // the 32-byte public key
  const std::string_view pair = secret.string();  // 32-byte seed, then the public key again
  if (pair.size() != 64) throw SshError("malformed Ed25519 private key");
  std::string dropbear;
  put_string(dropbear, type);
  put_string(dropbear, pair);
  return dropbear;
}

bool is_usable_private_key(const std::string& text) {
  ssh_key raw = nullptr;
  if (ssh_pki_import_privkey_base64(text.c_str(), nullptr, nullptr, nullptr, &raw) != SSH_OK) {
    return false;
  }
  ssh_key_free(raw);
  return true;
}

}  // namespace vmfest::ssh
