// Bytes of a model source -> one content file: gunzipped on the fly when they are gzip, hashed,
// and stopped before they outgrow the size limit or the disk.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "../base/sha256.h"
#include "byte_sink.h"
#include "gunzip.h"
#include "output_file.h"

namespace vmfest::detail {

// $VMFEST_MAX_MODEL_SIZE (bytes, or with a K/M/G/T suffix, binary), else 64 GiB: what a source may
// grow to once decompressed, so that a few MB of gzip cannot fill the disk. InvalidArgument when
// it is not a size.
std::uint64_t max_model_size();

struct Content {
  std::filesystem::path path;
  std::vector<unsigned char> head;  // its first bytes, to recognise a tar
  std::string sha256;               // of the content (after decompression)
};

// Writes a source's bytes to a content file, gunzipped when they are gzip (recognised by their
// magic bytes), hashing the bytes as served (for SetupOptions::sha256) and as written. SetupError
// when the content outgrows max_model_size() or would leave too little free space.
class ContentWriter final : public ByteSink {
 public:
  // `what` names the source in errors; `expected_sha256` (may be empty) is of the served bytes.
  ContentWriter(std::filesystem::path path, std::string what, std::string expected_sha256);

  void write(std::span<const unsigned char> bytes) override;
  void restart() override;
  // The source is complete: checks the sha256 and the gzip end, flushes to disk.
  Content finish();

 private:
  void decide();
  void route(std::span<const unsigned char> bytes);
  void store(std::span<const unsigned char> bytes);
  void check_room(std::uint64_t size);

  std::string what_;
  std::string expected_sha256_;
  std::uint64_t max_size_;
  std::uint64_t served_ = 0;
  std::uint64_t next_space_check_ = 0;
  OutputFile out_;
  Sha256 served_hash_;
  Sha256 written_hash_;
  std::vector<unsigned char> sniffed_;
  std::vector<unsigned char> head_;
  std::optional<Gunzip> gunzip_;
  bool decided_ = false;
};

}  // namespace vmfest::detail
