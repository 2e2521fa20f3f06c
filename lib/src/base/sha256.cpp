#include "sha256.h"

#include <array>

#include <fmt/format.h>

#include "vmfest/error.h"

namespace vmfest::detail {

Sha256::Sha256() : context_(EVP_MD_CTX_new(), EVP_MD_CTX_free) {
  if (!context_ || EVP_DigestInit_ex(context_.get(), EVP_sha256(), nullptr) != 1) {
    throw Error("OpenSSL could not start a SHA-256 digest");
  }
}

void Sha256::update(std::span<const unsigned char> bytes) {
  EVP_DigestUpdate(context_.get(), bytes.data(), bytes.size());
}

std::string Sha256::hex_digest() {
  std::array<unsigned char, EVP_MAX_MD_SIZE> digest{};
  unsigned int length = 0;
  EVP_DigestFinal_ex(context_.get(), digest.data(), &length);
  EVP_DigestInit_ex(context_.get(), EVP_sha256(), nullptr);
  std::string hex;
  hex.reserve(2 * length);
  for (unsigned int i = 0; i < length; ++i)
    fmt::format_to(std::back_inserter(hex), "{:02x}", digest[i]);
  return hex;
}

std::string sha256_text(std::string_view text) {
  Sha256 hasher;
  hasher.update(std::span(reinterpret_cast<const unsigned char*>(text.data()), text.size()));
  return hasher.hex_digest();
}

}  // namespace vmfest::detail
