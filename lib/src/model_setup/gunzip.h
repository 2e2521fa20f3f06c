// Streaming gzip decompression (zlib) for downloads: bytes go in as they arrive, the inflated
// bytes come out through a callback. Handles multi-member files (concatenated gzip streams, as
// `cat a.gz b.gz` or pigz make them) and tells a truncated stream from a complete one.
#pragma once

#include <functional>
#include <span>
#include <string>
#include <vector>

#include <zlib.h>

namespace vmfest::detail {

// True when `head` starts with the gzip magic bytes 1f 8b.
bool is_gzip(std::span<const unsigned char> head);

class Gunzip {
 public:
  using Output = std::function<void(std::span<const unsigned char>)>;
  // `what` names the source in error messages.
  Gunzip(std::string what, Output output);
  Gunzip(const Gunzip&) = delete;
  Gunzip& operator=(const Gunzip&) = delete;
  ~Gunzip();

  // Inflates `compressed`; SetupError on corrupt data.
  void write(std::span<const unsigned char> compressed);
  // The input is complete: SetupError when it ended inside a gzip member (truncated download).
  void finish();

 private:
  std::string what_;
  Output output_;
  z_stream stream_{};
  std::vector<unsigned char> buffer_;
  bool in_member_ = false;  // between a member's first byte and its end (trailer checked)
};

}  // namespace vmfest::detail
