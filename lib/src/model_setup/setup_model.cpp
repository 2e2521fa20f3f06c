// setup_model: fetch a source (URL or path), gunzip it on the fly, unpack a tar bundle, check the
// disk with qemu-img and register the result atomically (staging folder + rename).
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <optional>
#include <set>
#include <string_view>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "../base/files.h"
#include "../base/json_file.h"
#include "../base/sha256.h"
#include "../base/subprocess.h"
#include "../registry/registry_store.h"
#include "archive.h"
#include "bundle.h"
#include "byte_sink.h"
#include "content_writer.h"
#include "download.h"
#include "model_disk.h"
#include "output_file.h"
#include "progress.h"
#include "url.h"
#include "vagrant_box.h"
#include "vmfest/error.h"
#include "vmfest/model.h"

namespace vmfest {
namespace fs = std::filesystem;

namespace {

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
  for (const char* suffix : {".gz", ".tgz", ".tar", ".box", ".qcow2", ".raw", ".img", ".vdi",
                             ".vmdk", ".vhd", ".vhdx"}) {
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

// ---- bundles ---------------------------------------------------------------------------------

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
      const fs::path from = detail::bundle_file(root, name, manifest_what);
      const fs::path to = staging / fs::path(name).lexically_normal();
      fs::create_directories(to.parent_path());
      if (move) {
        fs::rename(from, to);
      } else {
        fs::copy_file(from, to, fs::copy_options::overwrite_existing);
      }
    }
    model = detail::model_from_json(manifest, staging);
    detail::stage_manifest_login(model, manifest.value("ssh", nlohmann::json::object()), root,
                                 staging, manifest_what);
  } catch (const nlohmann::json::exception& error) {
    throw SetupError(
        fmt::format("{} is not valid model metadata: {}", manifest_what, error.what()));
  }
  detail::finish_disk(model, what, "");
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
Model stage_content(const detail::Content& content, const fs::path& staging,
                    const std::string& what) {
  if (detail::is_tar(content.head)) {
    fs::path unpacked = staging;
    unpacked += ".unpacked";
    fs::create_directories(unpacked);
    detail::extract_tar(content.path, unpacked, what);
    fs::remove(content.path);
    Model model = detail::is_vagrant_box(unpacked)
                      ? detail::stage_vagrant_box(unpacked, staging, true, what)
                      : stage_bundle(bundle_root(unpacked, what), staging, true, what);
    fs::remove_all(unpacked);
    return model;
  }
  Model model;
  model.directory = staging;
  model.disk = staging / "disk";
  fs::rename(content.path, model.disk);
  detail::finish_disk(model, what, content.sha256);
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
      if (detail::is_vagrant_box(source.local)) {
        return detail::stage_vagrant_box(source.local, staging, false, what);
      }
      throw SetupError(fmt::format("{} is a folder without {}: not a model bundle", what,
                                   detail::kBundleManifest));
    }
    return stage_bundle(source.local, staging, false, what);
  }
  if (!source.local.empty() && !fs::exists(source.local)) {
    throw SetupError(fmt::format("model source {} does not exist", what));
  }
  detail::ContentWriter writer(staging / ".content", what,
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

// The model name of a setup's staging folder (.staging-NAME-PID, .replaced-NAME-PID, each maybe
// with .unpacked), or "" for any other file.
std::string staged_model(const std::string& file) {
  for (const std::string_view kind : {".staging-", ".replaced-"}) {
    if (!file.starts_with(kind)) continue;
    std::string rest = file.substr(kind.size());
    if (rest.ends_with(".unpacked"))
      rest.resize(rest.size() - std::string_view(".unpacked").size());
    const auto dash = rest.rfind('-');
    if (dash == std::string::npos || dash == 0 || dash + 1 == rest.size() ||
        rest.find_first_not_of("0123456789", dash + 1) != std::string::npos) {
      return "";
    }
    return rest.substr(0, dash);
  }
  return "";
}

// Removes what a process killed while setting up `name` left behind; we hold the name's lock.
void remove_stale_staging(const Home& home, const std::string& name) {
  for (const auto& entry : fs::directory_iterator(home.models())) {
    if (staged_model(entry.path().filename().string()) != name) continue;
    spdlog::info("vmfest: removing {}, left by an interrupted setup of model '{}'",
                 entry.path().string(), name);
    fs::remove_all(entry.path());
  }
}

fs::path setup_lock_path(const Home& home, const std::string& name) {
  return home.models() / fmt::format(".{}.lock", name);
}

}  // namespace

void detail::remove_interrupted_setups(const Home& home) {
  if (!fs::exists(home.models())) return;
  std::set<std::string> names;
  for (const auto& entry : fs::directory_iterator(home.models())) {
    if (const std::string name = staged_model(entry.path().filename().string()); !name.empty()) {
      names.insert(name);
    }
  }
  for (const std::string& name : names) {
    // A setup holds its name's lock while it runs: a lock we get has no living owner.
    FileLock lock(setup_lock_path(home, name), FileLock::Mode::TryOnce);
    if (!lock.held()) continue;
    remove_stale_staging(home, name);
    lock.remove_file();
  }
}

namespace {

// A login name every distro's useradd takes, and nothing a YAML seed or a shell could misread.
void validate_ssh_user(const std::string& user) {
  const bool valid = !user.empty() && user.size() <= 32 &&
                     (std::islower(static_cast<unsigned char>(user[0])) || user[0] == '_') &&
                     std::all_of(user.begin(), user.end(), [](char c) {
                       return std::islower(static_cast<unsigned char>(c)) ||
                              std::isdigit(static_cast<unsigned char>(c)) || c == '_' || c == '-';
                     });
  if (!valid) {
    throw InvalidArgument(fmt::format(
        "'{}' is not a valid SSH user: use 1-32 lowercase letters, digits, '_' or '-', starting "
        "with a letter or '_' (e.g. vmfest, debian, ubuntu, root)",
        user));
  }
}

// The published login SetupOptions state, stored in the model's folder `directory`.
void apply_login_options(Model& model, const SetupOptions& options, const fs::path& directory) {
  if (!options.ssh_user.empty()) model.ssh_user = options.ssh_user;
  if (!options.ssh_key.empty()) {
    detail::store_published_key(model.published_login, directory, options.ssh_key, "--ssh-key");
  } else if (!options.ssh_password_file.empty()) {
    detail::store_published_password(model.published_login, directory,
                                     detail::read_password_file(options.ssh_password_file),
                                     "--ssh-password-file");
  }
}

bool changes_login(const Model& model, const SetupOptions& options) {
  return (!options.ssh_user.empty() && options.ssh_user != model.ssh_user) ||
         !options.ssh_key.empty() || !options.ssh_password_file.empty();
}

// A new login for an installed model: only its model.json (and published login) change.
Model change_login(ModelRegistry& registry, Model model, const SetupOptions& options) {
  apply_login_options(model, options, model.directory);
  spdlog::info("vmfest: model '{}' now logs in as '{}'{}", model.name, model.ssh_user,
               model.published_login.empty() ? ""
               : model.published_login.password_file.empty()
                   ? " (first by its published key)"
                   : " (first by its published password)");
  const fs::path file = model.directory / detail::kModelFile;
  detail::write_text_atomically(file, detail::model_to_json(model).dump(2));
  fs::permissions(file, fs::perms::owner_write | fs::perms::group_write | fs::perms::others_write,
                  fs::perm_options::remove);
  return registry.get(model.name);
}

}  // namespace

Model setup_model(const std::string& source_text, const SetupOptions& options, const Home& home) {
  const Source source = parse_source(source_text);
  if (!options.ssh_user.empty()) validate_ssh_user(options.ssh_user);
  if (!options.ssh_key.empty() && !options.ssh_password_file.empty()) {
    throw InvalidArgument(
        "an SSH key and an SSH password file were both given for the model's published login: "
        "give one (a key, or a password)");
  }
  if (!options.ssh_password_file.empty())
    (void)detail::read_password_file(options.ssh_password_file);
  if (!options.sha256.empty()) (void)checked_sha256(options.sha256);
  const std::string name = model_name(source, options);
  validate_name(name, "model");

  detail::prepare_home(home);
  fs::create_directories(home.models());
  // One installer per model name across processes; the others wait here and reuse its result.
  const fs::path lock_path = setup_lock_path(home, name);
  std::optional<detail::FileLock> lock;
  lock.emplace(lock_path, detail::FileLock::Mode::TryOnce);
  if (!lock->held()) {
    spdlog::info("vmfest: another process is setting up model '{}'; waiting for it", name);
    lock.reset();
    lock.emplace(lock_path, detail::FileLock::Mode::Wait);
  }
  // Removed while held when this setup ends, so that one lock file per name ever set up does not
  // pile up; a waiter on it starts again on a fresh one (see FileLock::remove_file).
  struct LockFileRemover {
    std::optional<detail::FileLock>& lock;
    ~LockFileRemover() { lock->remove_file(); }
  } remove_lock_file{lock};
  remove_stale_staging(home, name);
  ModelRegistry registry(home);
  std::optional<Model> existing = registry.find(name);
  if (existing && existing->source == source.recorded && !options.replace) {
    if (!changes_login(*existing, options)) return *existing;
    return change_login(registry, *existing, options);
  }
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
    apply_login_options(model, options, staging);
    const fs::path final_directory = home.models() / name;
    detail::write_text_atomically(staging / detail::kModelFile,
                                  detail::model_to_json(model).dump(2));
    // Models are never written to: clones write to their own overlays. Only write and execute
    // bits go: a file copied from a bundle keeps who may read it, never more.
    for (const auto& file : fs::recursive_directory_iterator(staging)) {
      if (!file.is_regular_file()) continue;
      fs::permissions(file.path(),
                      fs::perms::owner_write | fs::perms::group_write | fs::perms::others_write |
                          fs::perms::owner_exec | fs::perms::group_exec | fs::perms::others_exec,
                      fs::perm_options::remove);
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
