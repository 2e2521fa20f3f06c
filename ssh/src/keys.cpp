#include "vmfest/ssh/keys.h"

#include <fstream>
#include <sstream>

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

}  // namespace vmfest::ssh
