// setup_model: fetch a source (URL or path), gunzip it on the fly, unpack a tar bundle, check the
// disk with qemu-img and register the result atomically (staging folder + rename).
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <optional>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "archive.h"
#include "download.h"
#include "files.h"
#include "gunzip.h"
#include "json_file.h"
#include "output_file.h"
#include "registry_store.h"
#include "sha256.h"
#include "subprocess.h"
#include "vmfest/error.h"
#include "vmfest/model.h"

namespace vmfest {
namespace fs = std::filesystem;

namespace {

constexpr std::size_t kHeadBytes = 512;  // enough to recognise a tar header
constexpr std::uint64_t kSector = 512;

const fs::path& qemu_img() {
  static const fs::path path = detail::find_program("qemu-img", "qemu-utils");
  return path;
}

// ---- the source ------------------------------------------------------------------------------

struct Source {
  std::string url;        // http(s); empty for a local source
  fs::path local;         // a local path or a file:// URL's path
  std::string recorded;   // what Model::source says: the URL, or the absolute path
  std::string file_name;  // to derive a model name from
};

Source parse_source(const std::string& text) {
  Source source;
  if (text.find("://") == std::string::npos) {
    source.local = fs::absolute(text).lexically_normal();
  } else {
    const detail::UrlParts url = detail::parse_url(text);
    if (url.scheme == "http" || url.scheme == "https") {
      source.url = text;
      source.recorded = text;
      source.file_name = fs::path(url.path).filename().string();
      return source;
    }
    if (url.scheme != "file") {
      throw InvalidArgument(
          fmt::format("cannot set up a model from '{}': the '{}' scheme is not "
                      "supported (use http, https, file or a local path)",
                      text, url.scheme));
    }
    source.local = fs::path(url.path).lexically_normal();
  }
  source.recorded = source.local.string();
  source.file_name = source.local.filename().string();
  return source;
}

// "debian-12-genericcloud-amd64.qcow2.gz" -> "debian-12-genericcloud-amd64"
std::string name_from_file_name(std::string name) {
  for (const char* suffix :
       {".gz", ".tgz", ".tar", ".qcow2", ".raw", ".img", ".vdi", ".vmdk", ".vhd", ".vhdx"}) {
    const std::string_view ending(suffix);
    if (name.size() > ending.size() && name.ends_with(ending))
      name.resize(name.size() - ending.size());
  }
  return name;
}

std::string model_name(const Source& source, const SetupOptions& options) {
  if (!options.name.empty()) return options.name;
  const fs::path manifest = source.local / detail::kBundleManifest;
  if (!source.local.empty() && fs::exists(manifest)) {
    std::string name = detail::read_json_file(
        manifest, [](const nlohmann::json& json) { return json.value("name", ""); },
        [&](std::string_view why) {
          return SetupError(
              fmt::format("{} is not valid model metadata ({})", manifest.string(), why));
        });
    if (!name.empty()) return name;
  }
  std::string name = name_from_file_name(source.file_name);
  try {
    validate_name(name, "model");
  } catch (const InvalidArgument& error) {
    throw InvalidArgument(
        fmt::format("cannot derive a model name from '{}' ({}); pass one in "
                    "SetupOptions::name",
                    source.recorded, error.what()));
  }
  return name;
}

std::string checked_sha256(std::string hex) {
  std::transform(hex.begin(), hex.end(), hex.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  if (hex.size() != 64 || hex.find_first_not_of("0123456789abcdef") != std::string::npos) {
    throw InvalidArgument(
        fmt::format("SetupOptions::sha256 '{}' is not a sha256 (64 hex digits)", hex));
  }
  return hex;
}

// ---- bytes -> content file -------------------------------------------------------------------

struct Content {
  fs::path path;
  std::vector<unsigned char> head;  // its first bytes, to recognise a tar
  std::string sha256;               // of the content (after decompression)
};

// Writes a source's bytes to a content file, gunzipped when they are gzip (recognised by their
// magic bytes), hashing the bytes as served (for SetupOptions::sha256) and as written.
class ContentWriter final : public detail::ByteSink {
 public:
  ContentWriter(fs::path path, std::string what, std::string expected_sha256)
      : what_(std::move(what)),
        expected_sha256_(std::move(expected_sha256)),
        out_(std::move(path), detail::OutputFile::Mode::Create) {}

  void write(std::span<const unsigned char> bytes) override {
    if (!expected_sha256_.empty()) served_hash_.update(bytes);
    if (!decided_) {
      sniffed_.insert(sniffed_.end(), bytes.begin(), bytes.end());
      if (sniffed_.size() < kSniffBytes) return;
      decide();
      return;
    }
    route(bytes);
  }

  void restart() override {
    out_.resize(0);
    served_hash_ = detail::Sha256();
    written_hash_ = detail::Sha256();
    sniffed_.clear();
    head_.clear();
    gunzip_.reset();
    decided_ = false;
  }

  // The source is complete: checks the sha256 and the gzip end, flushes to disk.
  Content finish() {
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

 private:
  static constexpr std::size_t kSniffBytes = 6;  // the longest magic number below (xz)

  void decide() {
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
    if (detail::is_gzip(head)) {
      gunzip_.emplace(what_, [this](std::span<const unsigned char> bytes) { store(bytes); });
    }
    std::vector<unsigned char> pending;
    pending.swap(sniffed_);
    route(pending);
  }

  void route(std::span<const unsigned char> bytes) {
    if (gunzip_) {
      gunzip_->write(bytes);
    } else {
      store(bytes);
    }
  }

  void store(std::span<const unsigned char> bytes) {
    if (head_.size() < kHeadBytes) {
      const std::size_t take = std::min(kHeadBytes - head_.size(), bytes.size());
      head_.insert(head_.end(), bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(take));
    }
    written_hash_.update(bytes);
    out_.append(bytes);
  }

  std::string what_;
  std::string expected_sha256_;
  detail::OutputFile out_;
  detail::Sha256 served_hash_;
  detail::Sha256 written_hash_;
  std::vector<unsigned char> sniffed_;
  std::vector<unsigned char> head_;
  std::optional<detail::Gunzip> gunzip_;
  bool decided_ = false;
};

// ---- disks -----------------------------------------------------------------------------------

// The disk's format as QEMU sees it, after checking that a model can be cloned from it.
std::string probe_disk_format(const fs::path& disk, const std::string& what) {
  detail::ToolResult info = detail::run_tool(qemu_img(), {"info", "--output=json", disk.string()});
  auto json = nlohmann::json::parse(info.output, nullptr, false);
  if (info.exit_code != 0 || !json.is_object()) {
    throw SetupError(fmt::format("{} is not a disk image QEMU can read: {}", what, info.output));
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
    // Every file is a "raw image" to QEMU; an error page or a cut-off file is not a disk.
    const std::uint64_t size = fs::file_size(disk);
    if (size % kSector != 0) {
      throw SetupError(
          fmt::format("{} is not a disk image QEMU can use: it reads as raw, but its "
                      "{} bytes are not a whole number of 512-byte sectors (an error "
                      "page, or a truncated file?)",
                      what, size));
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

// Checks the staged disk, converts it to qcow2 when QEMU cannot back an overlay on it as it is,
// names it disk.<format> and fills in the model's disk facts. `sha256` is the disk's, if known.
void finish_disk(Model& model, const std::string& what, std::string sha256) {
  std::string format = probe_disk_format(model.disk, what);
  if (format != "qcow2" && format != "raw" && format != "vdi" && format != "vmdk") {
    fs::path converted = model.disk;
    converted.replace_extension(".converted.qcow2");
    try {
      detail::run_tool_checked(
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
  model.sha256 = sha256.empty() ? detail::sha256_file(model.disk) : sha256;
}

// ---- bundles ---------------------------------------------------------------------------------

// A file a bundle's manifest names, checked to lie inside the bundle.
fs::path bundle_file(const fs::path& root, const std::string& name, const std::string& what) {
  const fs::path relative(name);
  const bool escapes =
      relative.is_absolute() || std::any_of(relative.begin(), relative.end(),
                                            [](const fs::path& part) { return part == ".."; });
  if (name.empty() || escapes || relative.lexically_normal() == detail::kModelFile) {
    throw SetupError(
        fmt::format("{} names the file '{}': bundle files must have relative names "
                    "inside the bundle (and not {})",
                    what, name, detail::kModelFile));
  }
  const fs::path path = root / relative.lexically_normal();
  if (!fs::is_regular_file(path)) {
    throw SetupError(fmt::format("{} names '{}', which is not a file in the bundle", what, name));
  }
  return path;
}

// Stages the files a bundle's manifest names (copied, or moved when the bundle is our own unpacked
// tar) and returns the model they make.
Model stage_bundle(const fs::path& root, const fs::path& staging, bool move,
                   const std::string& what) {
  const fs::path manifest_path = root / detail::kBundleManifest;
  const std::string manifest_what = fmt::format("the {} of {}", detail::kBundleManifest, what);
  auto manifest = nlohmann::json::parse(detail::read_text(manifest_path), nullptr, false);
  if (!manifest.is_object() || !manifest.contains("disk")) {
    throw SetupError(
        fmt::format("{} is not valid model metadata (a JSON object naming at least "
                    "its \"disk\")",
                    manifest_what));
  }
  Model model;
  try {
    std::vector<std::string> names = {manifest.at("disk").get<std::string>()};
    const auto boot = manifest.value("boot", nlohmann::json::object());
    if (boot.value("kind", "disk") == "kernel") {
      names.push_back(boot.at("kernel").get<std::string>());
      if (!boot.value("initrd", "").empty()) names.push_back(boot.value("initrd", ""));
    }
    for (const std::string& name : names) {
      const fs::path from = bundle_file(root, name, manifest_what);
      const fs::path to = staging / fs::path(name).lexically_normal();
      fs::create_directories(to.parent_path());
      if (move) {
        fs::rename(from, to);
      } else {
        fs::copy_file(from, to, fs::copy_options::overwrite_existing);
      }
    }
    model = detail::model_from_json(manifest, staging);
  } catch (const nlohmann::json::exception& error) {
    throw SetupError(
        fmt::format("{} is not valid model metadata: {}", manifest_what, error.what()));
  }
  finish_disk(model, what, "");
  return model;
}

// The folder of an unpacked tar holding the manifest: its top, or its only top-level folder.
fs::path bundle_root(const fs::path& unpacked, const std::string& what) {
  if (fs::exists(unpacked / detail::kBundleManifest)) return unpacked;
  std::vector<fs::path> entries;
  for (const auto& entry : fs::directory_iterator(unpacked)) entries.push_back(entry.path());
  if (entries.size() == 1 && fs::exists(entries[0] / detail::kBundleManifest)) return entries[0];
  throw SetupError(
      fmt::format("{} is a tar without {} at its top (or in its only folder): not a "
                  "model bundle",
                  what, detail::kBundleManifest));
}

// Turns a source's content, in the staging folder, into the model's files.
Model stage_content(const Content& content, const fs::path& staging, const std::string& what) {
  if (detail::is_tar(content.head)) {
    fs::path unpacked = staging;
    unpacked += ".unpacked";
    fs::create_directories(unpacked);
    detail::extract_tar(content.path, unpacked, what);
    fs::remove(content.path);
    Model model = stage_bundle(bundle_root(unpacked, what), staging, true, what);
    fs::remove_all(unpacked);
    return model;
  }
  Model model;
  model.directory = staging;
  model.disk = staging / "disk";
  fs::rename(content.path, model.disk);
  finish_disk(model, what, content.sha256);
  return model;
}

Model stage_source(const Source& source, const SetupOptions& options, const Home& home,
                   const fs::path& staging, const std::string& name) {
  const std::string what = source.recorded;
  if (!source.local.empty() && fs::is_directory(source.local)) {
    if (!options.sha256.empty()) {
      throw InvalidArgument(fmt::format("SetupOptions::sha256 is for files; {} is a folder", what));
    }
    if (!fs::exists(source.local / detail::kBundleManifest)) {
      throw SetupError(fmt::format("{} is a folder without {}: not a model bundle", what,
                                   detail::kBundleManifest));
    }
    return stage_bundle(source.local, staging, false, what);
  }
  if (!source.local.empty() && !fs::exists(source.local)) {
    throw SetupError(fmt::format("model source {} does not exist", what));
  }
  ContentWriter writer(staging / ".content", what,
                       options.sha256.empty() ? "" : checked_sha256(options.sha256));
  detail::BackgroundSink background(writer);  // gunzip and write while the next bytes arrive
  detail::ProgressReporter progress(fmt::format("model '{}'", name), options.on_progress);
  if (!source.local.empty()) {
    detail::read_local(source.local, background, progress);
    background.drain();
    return stage_content(writer.finish(), staging, what);
  }
  detail::DownloadCache cache(home.cache() / "downloads", source.url);
  try {
    detail::TransferLimits limits;
    limits.stall_timeout = options.stall_timeout;
    detail::download(source.url, cache, background, limits, progress);
    background.drain();
    Model model = stage_content(writer.finish(), staging, what);
    cache.discard();
    return model;
  } catch (const detail::DownloadInterrupted&) {
    throw;  // keep the bytes: the next call resumes
  } catch (...) {
    cache.discard();  // what arrived is bad (checksum, gzip, format) or there is no room for it
    throw;
  }
}

// Removes what a process killed while setting up `name` left behind; we hold the name's lock.
void remove_stale_staging(const Home& home, const std::string& name) {
  for (const char* kind : {".staging-", ".replaced-"}) {
    const std::string prefix = kind + name + "-";
    for (const auto& entry : fs::directory_iterator(home.models())) {
      std::string file = entry.path().filename().string();
      if (!file.starts_with(prefix)) continue;
      std::string rest = file.substr(prefix.size());
      if (rest.ends_with(".unpacked"))
        rest.resize(rest.size() - std::string_view(".unpacked").size());
      if (rest.empty() || rest.find_first_not_of("0123456789") != std::string::npos) continue;
      spdlog::info("vmfest: removing {}, left by an interrupted setup of model '{}'",
                   entry.path().string(), name);
      fs::remove_all(entry.path());
    }
  }
}

}  // namespace

Model setup_model(const std::string& source_text, const SetupOptions& options, const Home& home) {
  const Source source = parse_source(source_text);
  if (!options.sha256.empty()) (void)checked_sha256(options.sha256);
  const std::string name = model_name(source, options);
  validate_name(name, "model");

  fs::create_directories(home.models());
  // One installer per model name across processes; the others wait here and reuse its result.
  const fs::path lock_path = home.models() / fmt::format(".{}.lock", name);
  std::optional<detail::FileLock> lock;
  lock.emplace(lock_path, detail::FileLock::Mode::TryOnce);
  if (!lock->held()) {
    spdlog::info("vmfest: another process is setting up model '{}'; waiting for it", name);
    lock.reset();
    lock.emplace(lock_path, detail::FileLock::Mode::Wait);
  }
  remove_stale_staging(home, name);
  ModelRegistry registry(home);
  std::optional<Model> existing = registry.find(name);
  if (existing && existing->source == source.recorded && !options.replace) return *existing;
  if (existing) {
    auto users = detail::instances_of_model(home, name);
    if (!users.empty()) {
      throw ModelError(
          fmt::format("cannot replace model '{}' while it has instances ({}); "
                      "destroy them first",
                      name, users.size()));
    }
  }

  const fs::path staging =
      home.models() / fmt::format(".staging-{}-{}", name, static_cast<int>(::getpid()));
  fs::path unpacked = staging;
  unpacked += ".unpacked";
  fs::create_directories(staging);
  try {
    spdlog::info("vmfest: setting up model '{}' from {}", name, source.recorded);
    Model model = stage_source(source, options, home, staging, name);
    model.name = name;
    model.source = source.recorded;
    const fs::path final_directory = home.models() / name;
    detail::write_text_atomically(staging / detail::kModelFile,
                                  detail::model_to_json(model).dump(2));
    // Models are never written to: clones write to their own overlays.
    for (const auto& file : fs::recursive_directory_iterator(staging)) {
      if (!file.is_regular_file()) continue;
      fs::permissions(file.path(),
                      fs::perms::owner_read | fs::perms::group_read | fs::perms::others_read);
    }
    if (existing) {
      const fs::path old = home.models() / fmt::format(".replaced-{}-{}", name, ::getpid());
      fs::rename(final_directory, old);
      fs::rename(staging, final_directory);
      fs::remove_all(old);
    } else {
      fs::rename(staging, final_directory);
    }
    spdlog::info("vmfest: model '{}' installed from {} ({} bytes, {})", name, source.recorded,
                 model.size_bytes, model.format);
    return registry.get(name);
  } catch (...) {
    std::error_code ignored;
    fs::remove_all(staging, ignored);
    fs::remove_all(unpacked, ignored);
    throw;
  }
}

}  // namespace vmfest
