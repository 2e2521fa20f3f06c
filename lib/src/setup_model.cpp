#include <unistd.h>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "files.h"
#include "registry_store.h"
#include "subprocess.h"
#include "vmfest/error.h"
#include "vmfest/model.h"

namespace vmfest {
namespace fs = std::filesystem;

namespace {

const fs::path& qemu_img() {
  static const fs::path path = detail::find_program("qemu-img", "qemu-utils");
  return path;
}

// The disk format as QEMU sees it; SetupError when QEMU cannot read the image.
std::string probe_disk_format(const fs::path& disk) {
  detail::ToolResult info = detail::run_tool(qemu_img(), {"info", "--output=json", disk.string()});
  auto json = nlohmann::json::parse(info.output, nullptr, false);
  if (info.exit_code != 0 || json.is_discarded()) {
    throw SetupError(fmt::format("{} is not a disk image QEMU can read: {}", disk.string(),
                                 info.output));
  }
  std::string format = json.value("format", "");
  if (format != "qcow2" && format != "raw" && format != "vdi" && format != "vmdk") {
    throw SetupError(fmt::format("{} is a '{}' image; vmfest models are qcow2, raw, vdi or vmdk",
                                 disk.string(), format));
  }
  return format;
}

// "debian-12-genericcloud-amd64.qcow2.gz" -> "debian-12-genericcloud-amd64"
std::string name_from_source(const std::string& source) {
  std::string name = fs::path(source).filename().string();
  for (const char* suffix : {".gz", ".tar", ".tgz", ".qcow2", ".raw", ".img", ".vdi", ".vmdk"}) {
    if (name.size() > std::string(suffix).size() && name.ends_with(suffix)) {
      name.resize(name.size() - std::string(suffix).size());
    }
  }
  return name;
}

// A model staged in a private folder of the registry, ready to be renamed into place.
Model stage_local(const fs::path& source, const fs::path& staging, const std::string& name) {
  Model model;
  if (fs::is_directory(source)) {
    const fs::path manifest = source / detail::kBundleManifest;
    if (!fs::exists(manifest)) {
      throw SetupError(fmt::format("{} is a folder without {}: not a model bundle",
                                   source.string(), detail::kBundleManifest));
    }
    auto json = nlohmann::json::parse(detail::read_text(manifest), nullptr, false);
    if (json.is_discarded() || !json.contains("disk")) {
      throw SetupError(fmt::format("{} is not valid model metadata", manifest.string()));
    }
    Model described = detail::model_from_json(json, source);
    model = detail::model_from_json(json, staging);
    auto copy_in = [&](const fs::path& from, const fs::path& to) {
      if (from.empty()) return;
      if (!fs::is_regular_file(from)) {
        throw SetupError(fmt::format("bundle {} names {}, which does not exist", source.string(),
                                     from.string()));
      }
      fs::copy_file(from, to);
    };
    copy_in(described.disk, model.disk);
    copy_in(described.boot.kernel, model.boot.kernel);
    copy_in(described.boot.initrd, model.boot.initrd);
  } else if (fs::is_regular_file(source)) {
    model.directory = staging;
    model.disk = staging / "disk";
    fs::copy_file(source, model.disk);
  } else {
    throw SetupError(fmt::format("model source {} does not exist", source.string()));
  }
  model.name = name;
  model.format = probe_disk_format(model.disk);
  fs::path named_disk = model.disk;
  named_disk.replace_extension(model.format);
  if (named_disk != model.disk) {
    fs::rename(model.disk, named_disk);
    model.disk = named_disk;
  }
  model.size_bytes = fs::file_size(model.disk);
  model.sha256 = detail::sha256_file(model.disk);
  return model;
}

}  // namespace

Model setup_model(const std::string& source, const SetupOptions& options, const Home& home) {
  const std::string path = source.starts_with("file://") ? source.substr(7) : source;
  if (source.find("://") != std::string::npos && !source.starts_with("file://")) {
    throw InvalidArgument(fmt::format("cannot set up a model from '{}': only local paths and "
                                      "file:// URLs are supported by this build",
                                      source));
  }
  const fs::path local = fs::absolute(path).lexically_normal();
  std::string name = options.name;
  if (name.empty() && fs::exists(local / detail::kBundleManifest)) {
    name = nlohmann::json::parse(detail::read_text(local / detail::kBundleManifest), nullptr, false)
               .value("name", "");
  }
  if (name.empty()) name = name_from_source(path);
  validate_name(name, "model");

  fs::create_directories(home.models());
  // One installer per model name across processes; the others wait here and reuse its result.
  detail::FileLock lock(home.models() / fmt::format(".{}.lock", name));
  ModelRegistry registry(home);
  std::optional<Model> existing = registry.find(name);
  if (existing && existing->source == local.string() && !options.replace) return *existing;
  if (existing) {
    auto users = detail::instances_of_model(home, name);
    if (!users.empty()) {
      throw ModelError(fmt::format("cannot replace model '{}' while it has instances ({}); "
                                   "destroy them first",
                                   name, users.size()));
    }
  }

  const fs::path staging =
      home.models() / fmt::format(".staging-{}-{}", name, static_cast<int>(::getpid()));
  fs::remove_all(staging);
  fs::create_directories(staging);
  try {
    Model model = stage_local(local, staging, name);
    model.source = local.string();
    const fs::path final_directory = home.models() / name;
    detail::write_text_atomically(staging / detail::kModelFile,
                                  detail::model_to_json(model).dump(2));
    // Models are never written to: clones write to their own overlays.
    for (const auto& file : fs::directory_iterator(staging)) {
      fs::permissions(file.path(), fs::perms::owner_read | fs::perms::group_read |
                                       fs::perms::others_read);
    }
    if (existing) {
      const fs::path old = home.models() / fmt::format(".replaced-{}-{}", name, ::getpid());
      fs::rename(final_directory, old);
      fs::rename(staging, final_directory);
      fs::remove_all(old);
    } else {
      fs::rename(staging, final_directory);
    }
    spdlog::info("vmfest: model '{}' installed from {} ({} bytes, {})", name, local.string(),
                 model.size_bytes, model.format);
    return registry.get(name);
  } catch (...) {
    std::error_code ignored;
    fs::remove_all(staging, ignored);
    throw;
  }
}

}  // namespace vmfest
