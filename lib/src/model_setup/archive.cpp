#include "archive.h"

#include <archive.h>
#include <archive_entry.h>

#include <algorithm>
#include <cstring>
#include <memory>

#include <fmt/format.h>

#include "content_writer.h"
#include "output_file.h"
#include "progress.h"
#include "vmfest/error.h"

namespace vmfest::detail {
namespace fs = std::filesystem;

namespace {

constexpr std::size_t kTarMagicOffset = 257;
constexpr std::size_t kReadBlock = 1 << 20;

using ArchiveReader = std::unique_ptr<archive, decltype(&archive_read_free)>;

// The entry's name made safe to join to the destination, or SetupError.
fs::path safe_relative_name(const char* raw, const std::string& what) {
  const std::string name = raw != nullptr ? raw : "";
  const fs::path path(name);
  auto refuse = [&](const char* why) {
    return SetupError(
        fmt::format("{} holds an entry named '{}', {}: refusing to unpack it "
                    "(bundles hold files with relative names only)",
                    what, name, why));
  };
  if (name.empty()) throw refuse("which is empty");
  if (path.is_absolute()) throw refuse("an absolute path");
  for (const auto& part : path) {
    if (part == "..") throw refuse("which climbs out of the bundle with '..'");
  }
  return path.lexically_normal();
}

const char* kind_of(const archive_entry* entry) {
  if (archive_entry_hardlink(const_cast<archive_entry*>(entry)) != nullptr) return "a hard link";
  switch (archive_entry_filetype(const_cast<archive_entry*>(entry))) {
    case AE_IFLNK:
      return "a symbolic link";
    case AE_IFCHR:
    case AE_IFBLK:
      return "a device";
    case AE_IFIFO:
      return "a FIFO";
    case AE_IFSOCK:
      return "a socket";
    default:
      return "not a regular file";
  }
}

void unpack_file(archive* reader, const fs::path& target, la_int64_t declared_size,
                 const std::string& what) {
  fs::create_directories(target.parent_path());
  OutputFile out(target, OutputFile::Mode::Create);
  const void* block = nullptr;
  std::size_t size = 0;
  la_int64_t offset = 0;
  for (;;) {
    const int status = archive_read_data_block(reader, &block, &size, &offset);
    if (status == ARCHIVE_EOF) break;
    if (status < ARCHIVE_WARN) {
      throw SetupError(fmt::format("{} is damaged while unpacking {}: {}", what, target.string(),
                                   archive_error_string(reader)));
    }
    out.write_at(static_cast<std::uint64_t>(offset),
                 {static_cast<const unsigned char*>(block), size});
  }
  // A sparse member may end in a hole that has no data block.
  if (declared_size > 0 && out.size() < static_cast<std::uint64_t>(declared_size)) {
    out.resize(static_cast<std::uint64_t>(declared_size));
  }
  out.sync();
}

}  // namespace

bool is_tar(std::span<const unsigned char> head) {
  constexpr char kMagic[] = "ustar";  // "ustar\0" (POSIX) or "ustar " (GNU)
  return head.size() >= kTarMagicOffset + 5 &&
         std::memcmp(head.data() + kTarMagicOffset, kMagic, 5) == 0;
}

void extract_tar(const fs::path& archive_path, const fs::path& into, const std::string& what) {
  ArchiveReader reader(archive_read_new(), archive_read_free);
  if (!reader) throw SetupError("libarchive could not start a reader");
  archive_read_support_format_tar(reader.get());
  if (archive_read_open_filename(reader.get(), archive_path.c_str(), kReadBlock) != ARCHIVE_OK) {
    throw SetupError(fmt::format("{} is not a tar file vmfest can read: {}", what,
                                 archive_error_string(reader.get())));
  }
  // What the members declare, counted before they are written: a sparse member of a terabyte
  // packs into a few bytes, and the size limit must hold for what unpacking makes of it.
  const std::uint64_t limit = max_model_size();
  std::uint64_t declared = 0;
  archive_entry* entry = nullptr;
  for (;;) {
    const int status = archive_read_next_header(reader.get(), &entry);
    if (status == ARCHIVE_EOF) break;
    if (status < ARCHIVE_WARN) {
      throw SetupError(
          fmt::format("{} is a damaged tar file: {}", what, archive_error_string(reader.get())));
    }
    const fs::path name = safe_relative_name(archive_entry_pathname(entry), what);
    const fs::path target = into / name;
    if (archive_entry_hardlink(entry) == nullptr && archive_entry_filetype(entry) == AE_IFDIR) {
      fs::create_directories(target);
    } else if (archive_entry_hardlink(entry) == nullptr &&
               archive_entry_filetype(entry) == AE_IFREG) {
      const la_int64_t size = archive_entry_size_is_set(entry) != 0
                                  ? std::max<la_int64_t>(archive_entry_size(entry), 0)
                                  : 0;
      declared += static_cast<std::uint64_t>(size);
      if (declared > limit) {
        throw SetupError(fmt::format(
            "{} unpacks to more than VMFEST_MAX_MODEL_SIZE ({}): '{}' alone declares {}, which "
            "may be a sparse file of a few bytes in the tar; a bomb, or a bigger model than "
            "allowed (set VMFEST_MAX_MODEL_SIZE, e.g. 200G, if it is genuine); nothing was "
            "registered",
            what, human_bytes(limit), name.string(),
            human_bytes(static_cast<std::uint64_t>(size))));
      }
      unpack_file(reader.get(), target, size, what);
    } else {
      throw SetupError(
          fmt::format("{} holds '{}', which is {}: refusing to unpack it (bundles "
                      "hold regular files and folders only)",
                      what, name.string(), kind_of(entry)));
    }
  }
}

}  // namespace vmfest::detail
