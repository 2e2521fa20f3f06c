// Incremental SHA-256 (OpenSSL), for hashing a stream as it passes by.
#pragma once

#include <memory>
#include <span>
#include <string>
#include <string_view>

#include <openssl/evp.h>

namespace vmfest::detail {

class Sha256 {
 public:
  Sha256();
  void update(std::span<const unsigned char> bytes);
  // Lowercase hex of everything updated so far; the hasher starts over afterwards.
  [[nodiscard]] std::string hex_digest();

 private:
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> context_;
};

// Lowercase hex sha256 of `text`.
std::string sha256_text(std::string_view text);

}  // namespace vmfest::detail
