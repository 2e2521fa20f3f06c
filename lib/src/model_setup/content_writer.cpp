#include "content_writer.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdlib>

#include <fmt/format.h>

#include "vmfest/error.h"

namespace vmfest::detail {
namespace fs = std::filesystem;

namespace {

constexpr std::size_t kHeadBytes = 512;  // enough to recognise a tar header
constexpr std::size_t kSniffBytes = 6;   // the longest magic number decide() knows (xz)
constexpr std::uint64_t kMiB = 1024 * 1024;
constexpr std::uint64_t kDefaultMaxModelSize = 64 * 1024 * kMiB;
// Free space a setup leaves on the home's disk, so that a large model cannot starve the VMs.
constexpr std::uint64_t kFreeSpaceReserve = 512 * kMiB;
constexpr std::uint64_t kFreeSpaceCheckEvery = 64 * kMiB;

}  // namespace

std::uint64_t max_model_size() {
  const char* text = std::getenv("VMFEST_MAX_MODEL_SIZE");
  if (text == nullptr || *text == '\0') return kDefaultMaxModelSize;
  char* end = nullptr;
  errno = 0;
  const unsigned long long number = std::strtoull(text, &end, 10);
  const std::string suffix = end;
  const std::string units = "KMGT";
  const std::size_t unit = suffix.size() == 1
                               ? units.find(static_cast<char>(std::toupper(suffix[0])))
                               : std::string::npos;
  if (end == text || errno != 0 || number == 0 || (!suffix.empty() && unit == std::string::npos)) {
    throw InvalidArgument(fmt::format(
        "VMFEST_MAX_MODEL_SIZE={} is not a size: use bytes or a number with K, M, G or T", text));
  }
  return suffix.empty() ? number : number << (10 * (unit + 1));
}

namespace {

std::string mib(std::uint64_t bytes) {
  return fmt::format("{:.1f} MiB", static_cast<double>(bytes) / kMiB);
}

}  // namespace

ContentWriter::ContentWriter(fs::path path, std::string what, std::string expected_sha256)
    : what_(std::move(what)),
      expected_sha256_(std::move(expected_sha256)),
      max_size_(max_model_size()),
      out_(std::move(path), OutputFile::Mode::Create) {}

void ContentWriter::write(std::span<const unsigned char> bytes) {
  served_ += bytes.size();
  if (!expected_sha256_.empty()) served_hash_.update(bytes);
  if (!decided_) {
    sniffed_.insert(sniffed_.end(), bytes.begin(), bytes.end());
    if (sniffed_.size() < kSniffBytes) return;
    decide();
    return;
  }
  route(bytes);
}

void ContentWriter::restart() {
  out_.resize(0);
  served_ = 0;
  next_space_check_ = 0;
  served_hash_ = Sha256();
  written_hash_ = Sha256();
  sniffed_.clear();
  head_.clear();
  gunzip_.reset();
  decided_ = false;
}

Content ContentWriter::finish() {
  if (!decided_) decide();
  if (!expected_sha256_.empty()) {
    const std::string actual = served_hash_.hex_digest();
    if (actual != expected_sha256_) {
      throw SetupError(fmt::format(
          "checksum mismatch for {}: expected sha256 {}, got {} (of the file as served, before "
          "decompression); the download is corrupt or the checksum is for another file",
          what_, expected_sha256_, actual));
    }
  }
  if (gunzip_) gunzip_->finish();
  if (out_.size() == 0) throw SetupError(fmt::format("{} is empty: not a disk image", what_));
  out_.sync();
  return {out_.path(), head_, written_hash_.hex_digest()};
}

void ContentWriter::decide() {
  decided_ = true;
  const std::span<const unsigned char> head(sniffed_);
  auto starts_with = [&](std::initializer_list<unsigned char> magic) {
    return head.size() >= magic.size() && std::equal(magic.begin(), magic.end(), head.begin());
  };
  const char* unsupported = starts_with({0xfd, '7', 'z', 'X', 'Z', 0x00}) ? "xz"
                            : starts_with({'B', 'Z', 'h'})                ? "bzip2"
                            : starts_with({0x28, 0xb5, 0x2f, 0xfd})       ? "zstd"
                            : starts_with({'P', 'K', 0x03, 0x04})         ? "zip"
                                                                          : nullptr;
  if (unsupported != nullptr) {
    throw SetupError(
        fmt::format("{} is {}-compressed, which setup_model does not unpack: "
                    "serve it uncompressed or gzip-compressed",
                    what_, unsupported));
  }
  if (is_gzip(head)) {
    gunzip_.emplace(what_, [this](std::span<const unsigned char> bytes) { store(bytes); });
  }
  std::vector<unsigned char> pending;
  pending.swap(sniffed_);
  route(pending);
}

void ContentWriter::route(std::span<const unsigned char> bytes) {
  if (gunzip_) {
    gunzip_->write(bytes);
  } else {
    store(bytes);
  }
}

void ContentWriter::store(std::span<const unsigned char> bytes) {
  if (head_.size() < kHeadBytes) {
    const std::size_t take = std::min(kHeadBytes - head_.size(), bytes.size());
    head_.insert(head_.end(), bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(take));
  }
  check_room(out_.size() + bytes.size());
  written_hash_.update(bytes);
  out_.append(bytes);
}

// Stops a source that outgrows the size limit or the free space, before it fills the disk.
void ContentWriter::check_room(std::uint64_t size) {
  if (size > max_size_) {
    throw SetupError(fmt::format(
        "{} grew past VMFEST_MAX_MODEL_SIZE ({}) once decompressed, from {} served: a "
        "decompression bomb, or a bigger model than allowed (set VMFEST_MAX_MODEL_SIZE, e.g. "
        "200G, if it is genuine); nothing was registered",
        what_, mib(max_size_), mib(served_)));
  }
  if (size < next_space_check_) return;
  next_space_check_ = size + kFreeSpaceCheckEvery;
  std::error_code error;
  const fs::space_info space = fs::space(out_.path().parent_path(), error);
  if (!error && space.available < kFreeSpaceReserve + kFreeSpaceCheckEvery) {
    throw SetupError(fmt::format(
        "{} stopped at {}: only {} is left free on the disk of {} (vmfest keeps {} free); "
        "free some space or move VMFEST_HOME; nothing was registered",
        what_, mib(size), mib(space.available), out_.path().parent_path().parent_path().string(),
        mib(kFreeSpaceReserve)));
  }
}

}  // namespace vmfest::detail
