#include <fmt/format.h>
#include <fmt/ranges.h>

#include <spdlog/spdlog.h>

#include "../base/files.h"
#include "../base/json_file.h"
#include "instance_record.h"
#include "registry_store.h"
#include "vmfest/error.h"
#include "vmfest/model.h"

namespace vmfest {
namespace fs = std::filesystem;

namespace detail {

Model model_from_json(const nlohmann::json& json, const fs::path& directory) {
  auto file = [&](const std::string& name) {
    return name.empty() ? fs::path() : (directory / name).lexically_normal();
  };
  Model model;
  model.name = json.value("name", "");
  model.directory = directory;
  model.disk = file(json.at("disk").get<std::string>());
  model.format = json.value("format", "qcow2");
  model.size_bytes = json.value("size_bytes", std::uint64_t{0});
  model.sha256 = json.value("sha256", "");
  model.source = json.value("source", "");
  const auto boot = json.value("boot", nlohmann::json::object());
  if (boot.value("kind", "disk") == "kernel") {
    model.boot.kind = BootSpec::Kind::Kernel;
    model.boot.kernel = file(boot.at("kernel").get<std::string>());
    model.boot.initrd = file(boot.value("initrd", ""));
    model.boot.cmdline = boot.value("cmdline", "");
  }
  const auto ssh = json.value("ssh", nlohmann::json::object());
  model.ssh_user = ssh.value("user", std::string(kDefaultSshUser));
  model.ssh_port = ssh.value("port", 22);
  model.published_login.private_key = file(ssh.value("private_key", ""));
  model.published_login.password_file = file(ssh.value("password_file", ""));
  model.ready_marker = json.value("ready_marker", "");
  model.guest_agent = json.value("guest_agent", false);
  return model;
}

nlohmann::json model_to_json(const Model& model) {
  auto relative = [&](const fs::path& path) {
    return path.empty() ? std::string() : path.lexically_relative(model.directory).string();
  };
  nlohmann::json boot = {{"kind", model.boot.kind == BootSpec::Kind::Kernel ? "kernel" : "disk"}};
  if (model.boot.kind == BootSpec::Kind::Kernel) {
    boot["kernel"] = relative(model.boot.kernel);
    boot["initrd"] = relative(model.boot.initrd);
    boot["cmdline"] = model.boot.cmdline;
  }
  nlohmann::json ssh = {{"user", model.ssh_user}, {"port", model.ssh_port}};
  if (!model.published_login.private_key.empty()) {
    ssh["private_key"] = relative(model.published_login.private_key);
  }
  if (!model.published_login.password_file.empty()) {
    ssh["password_file"] = relative(model.published_login.password_file);
  }
  return {{"name", model.name},
          {"disk", relative(model.disk)},
          {"format", model.format},
          {"size_bytes", model.size_bytes},
          {"sha256", model.sha256},
          {"source", model.source},
          {"boot", boot},
          {"ssh", ssh},
          {"ready_marker", model.ready_marker},
          {"guest_agent", model.guest_agent}};
}

std::vector<std::string> instances_of_model(const Home& home, const std::string& model) {
  std::vector<std::string> names;
  for (const auto& name : list_instances(home)) {
    try {
      auto record = read_instance_record(home.instances() / name);
      if (record && record->model == model) names.push_back(name);
    } catch (const InstanceRecordError&) {
      // Whose clone it is cannot be told; `vmfest ls` and `vmfest reap` report it.
    }
  }
  return names;
}

}  // namespace detail

ModelRegistry::ModelRegistry(Home home) : home_(std::move(home)) {}

std::optional<Model> ModelRegistry::find(const std::string& name) const {
  validate_name(name, "model");
  const fs::path directory = home_.models() / name;
  const fs::path file = directory / detail::kModelFile;
  if (!fs::exists(file)) return std::nullopt;
  return detail::read_json_file(
      file, [&](const nlohmann::json& json) { return detail::model_from_json(json, directory); },
      [&](std::string_view why) {
        return ModelError(
            fmt::format("model '{}': {} is not a valid model description ({}); remove it with "
                        "`vmfest rm-model --force {}` and set it up again",
                        name, file.string(), why, name));
      });
}

namespace {

ModelError not_registered(const ModelRegistry& registry, const std::string& name) {
  std::vector<std::string> known;
  for (const auto& model : registry.list()) known.push_back(model.name);
  return ModelError(
      fmt::format("model '{}' is not registered in {} (registered: {}); install it with "
                  "`vmfest setup-model URL --name {}` or vmfest::setup_model()",
                  name, registry.home().models().string(),
                  known.empty() ? "none" : fmt::format("{}", fmt::join(known, ", ")), name));
}

}  // namespace

Model ModelRegistry::get(const std::string& name) const {
  if (auto model = find(name)) return *model;
  throw not_registered(*this, name);
}

std::vector<Model> ModelRegistry::list() const {
  std::vector<Model> models;
  if (!fs::exists(home_.models())) return models;
  for (const auto& entry : fs::directory_iterator(home_.models())) {
    const std::string name = entry.path().filename().string();
    if (!entry.is_directory() || name.starts_with(".")) continue;
    try {
      if (auto model = find(name)) models.push_back(*model);
    } catch (const ModelError& error) {
      spdlog::warn("vmfest: {} (left out of the list of models)", error.what());
    }
  }
  std::sort(models.begin(), models.end(),
            [](const Model& a, const Model& b) { return a.name < b.name; });
  return models;
}

void ModelRegistry::remove(const std::string& name) {
  // find() refuses a model.json that cannot be read, pointing to force_remove().
  if (!find(name)) throw not_registered(*this, name);
  force_remove(name);
}

void ModelRegistry::force_remove(const std::string& name) {
  validate_name(name, "model");
  const fs::path directory = home_.models() / name;
  if (!fs::is_directory(directory)) throw not_registered(*this, name);
  detail::FileLock lock(home_.models() / fmt::format(".{}.lock", name));
  auto users = detail::instances_of_model(home_, name);
  if (!users.empty()) {
    throw ModelError(
        fmt::format("model '{}' still has {} instance(s) ({}); destroy them first "
                    "(`vmfest destroy NAME`, or `vmfest reap` for leaked ones)",
                    name, users.size(), fmt::join(users, ", ")));
  }
  // Rename first so a concurrent reader never sees a half-deleted model.
  const fs::path trash = home_.models() / fmt::format(".removed-{}-{}", name, ::getpid());
  fs::rename(directory, trash);
  fs::permissions(trash, fs::perms::owner_all, fs::perm_options::add);
  fs::remove_all(trash);
}

}  // namespace vmfest
