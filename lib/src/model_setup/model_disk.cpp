#include "model_disk.h"

#include <algorithm>
#include <array>
#include <fstream>
#include <string_view>

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <nlohmann/json.hpp>

#include "../base/files.h"
#include "../base/sha256.h"
#include "../base/subprocess.h"
#include "vmfest/error.h"

namespace vmfest::detail {
namespace fs = std::filesystem;

namespace {

constexpr std::uint64_t kSector = 512;

const fs::path& qemu_img() {
  static const fs::path path = find_program("qemu-img", "qemu-utils");
  return path;
}

// True when a raw image starts like a disk: a partition table or a file system vmfest knows.
bool has_disk_signature(const fs::path& disk) {
  struct Signature {
    std::size_t offset;
    std::string_view bytes;
  };
  static constexpr std::array<Signature, 8> kSignatures = {{
      {510, "\x55\xAA"},    // MBR (and the protective MBR of GPT)
      {512, "EFI PART"},    // GPT header
      {1080, "\x53\xEF"},   // ext2/3/4 superblock magic
      {0, "XFSB"},          // XFS
      {65600, "_BHRfS_M"},  // btrfs
      {54, "FAT"},          // FAT12/16 boot sector
      {82, "FAT32"},        // FAT32 boot sector
      {32769, "CD001"},     // ISO 9660
  }};
  std::ifstream in(disk, std::ios::binary);
  std::string head(65608, '\0');
  in.read(head.data(), static_cast<std::streamsize>(head.size()));
  head.resize(static_cast<std::size_t>(in.gcount()));
  return std::any_of(kSignatures.begin(), kSignatures.end(), [&](const Signature& signature) {
    return head.size() >= signature.offset + signature.bytes.size() &&
           std::string_view(head).substr(signature.offset, signature.bytes.size()) ==
               signature.bytes;
  });
}

}  // namespace

std::string probe_disk_format(const fs::path& disk, const std::string& what) {
  ToolResult info = run_tool(qemu_img(), {"info", "--output=json", disk.string()});
  auto json = nlohmann::json::parse(info.output, nullptr, false);
  if (info.exit_code != 0 || !json.is_object()) {
    throw SetupError(
        fmt::format("{} is not a disk image qemu-img can read: {}", what, info.output));
  }
  if (json.contains("backing-filename")) {
    throw SetupError(fmt::format(
        "{} is an overlay on '{}': a model must stand alone; flatten it first with `qemu-img "
        "convert -O qcow2 OVERLAY MODEL.qcow2`",
        what, json.value("backing-filename", "")));
  }
  const std::string format = json.value("format", "");
  const auto specific = json.value("format-specific", nlohmann::json::object())
                            .value("data", nlohmann::json::object());
  if (specific.contains("data-file")) {
    throw SetupError(
        fmt::format("{} keeps its data in an external file ('{}'): a model must be "
                    "one self-contained image",
                    what, specific.value("data-file", "")));
  }
  if (format == "vmdk") {
    for (const auto& extent : specific.value("extents", nlohmann::json::array())) {
      if (fs::path(extent.value("filename", "")) != disk) {
        throw SetupError(
            fmt::format("{} is a VMDK whose data lives in other files ({}): use a single-file VMDK "
                        "(`qemu-img convert -O vmdk -o subformat=monolithicSparse IN OUT`)",
                        what, extent.value("filename", "")));
      }
    }
  }
  if (format == "raw") {
    // Every file is a "raw image" to qemu-img; an error page or a cut-off file is not a disk.
    const std::uint64_t size = fs::file_size(disk);
    if (size % kSector != 0) {
      throw SetupError(
          fmt::format("{} is not a disk image qemu-img can use: it reads as raw, but its "
                      "{} bytes are not a whole number of 512-byte sectors (an error "
                      "page, or a truncated file?)",
                      what, size));
    }
    if (!has_disk_signature(disk)) {
      spdlog::warn(
          "vmfest: {} reads as a raw disk image, but it has no partition table (MBR, GPT) and no "
          "file system signature vmfest knows (ext2/3/4, XFS, btrfs, FAT, ISO 9660) at its "
          "start: is it really a disk image? A guest will not boot from it unless its bootloader "
          "or file system is one of another kind",
          what);
    }
  }
  if (format == "luks") {
    throw SetupError(
        fmt::format("{} is an encrypted (LUKS) image; vmfest models are not "
                    "encrypted",
                    what));
  }
  return format;
}

void finish_disk(Model& model, const std::string& what, std::string sha256) {
  std::string format = probe_disk_format(model.disk, what);
  if (format != "qcow2" && format != "raw" && format != "vdi" && format != "vmdk") {
    fs::path converted = model.disk;
    converted.replace_extension(".converted.qcow2");
    try {
      run_tool_checked(
          qemu_img(),
          {"convert", "-q", "-f", format, "-O", "qcow2", model.disk.string(), converted.string()},
          fmt::format("converting {} from {} to qcow2", what, format));
    } catch (const BackendError& error) {
      throw SetupError(error.what());
    }
    spdlog::info("vmfest: converted {} from {} to qcow2", what, format);
    fs::remove(model.disk);
    model.disk = converted;
    format = "qcow2";
    sha256.clear();
  }
  fs::path named = model.directory / ("disk." + format);
  if (model.disk.parent_path() == model.directory && model.disk != named && !fs::exists(named)) {
    fs::rename(model.disk, named);
    model.disk = named;
  }
  model.format = format;
  model.size_bytes = fs::file_size(model.disk);
  model.sha256 = sha256.empty() ? sha256_file(model.disk) : sha256;
}

}  // namespace vmfest::detail
