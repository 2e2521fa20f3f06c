#include "gunzip.h"

#include <fmt/format.h>

#include "vmfest/error.h"

namespace vmfest::detail {

namespace {
constexpr std::size_t kOutputBuffer = 256 * 1024;
constexpr int kGzipOnly = 16 + MAX_WBITS;  // zlib: expect a gzip header and trailer
}  // namespace

bool is_gzip(std::span<const unsigned char> head) {
  return head.size() >= 2 && head[0] == 0x1f && head[1] == 0x8b;
}

Gunzip::Gunzip(std::string what, Output output)
    : what_(std::move(what)), output_(std::move(output)), buffer_(kOutputBuffer) {
  if (inflateInit2(&stream_, kGzipOnly) != Z_OK) {
    throw SetupError(fmt::format("zlib could not start decompressing {}", what_));
  }
}

Gunzip::~Gunzip() { inflateEnd(&stream_); }

void Gunzip::write(std::span<const unsigned char> compressed) {
  // zlib's API takes a non-const pointer but does not write through next_in.
  stream_.next_in = const_cast<unsigned char*>(compressed.data());  // NOLINT
  stream_.avail_in = static_cast<uInt>(compressed.size());
  while (stream_.avail_in > 0) {
    if (!in_member_) {
      // Between members: zero padding (tar blocking, some mirrors) is allowed and skipped.
      if (*stream_.next_in == 0) {
        ++stream_.next_in;
        --stream_.avail_in;
        continue;
      }
      inflateReset(&stream_);
      in_member_ = true;
    }
    stream_.next_out = buffer_.data();
    stream_.avail_out = static_cast<uInt>(buffer_.size());
    const int status = inflate(&stream_, Z_NO_FLUSH);
    const std::size_t produced = buffer_.size() - stream_.avail_out;
    if (status != Z_OK && status != Z_STREAM_END && status != Z_BUF_ERROR) {
      throw SetupError(
          fmt::format("{} is not valid gzip data ({}): the file is corrupt or not "
                      "what the URL should serve",
                      what_, stream_.msg != nullptr ? stream_.msg : zError(status)));
    }
    if (produced > 0) output_({buffer_.data(), produced});
    if (status == Z_STREAM_END) in_member_ = false;
  }
}

void Gunzip::finish() {
  if (in_member_) {
    throw SetupError(
        fmt::format("the gzip data of {} ends early: the file is truncated (an "
                    "interrupted upload or download?); fetch it again or ask its "
                    "publisher for a complete copy",
                    what_));
  }
}

}  // namespace vmfest::detail
