// Instance::save_as_model: an instance's disk registered as a model of its own (`vmfest commit`).
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "files.h"
#include "instance_impl.h"

namespace vmfest {
namespace fs = std::filesystem;

namespace {

constexpr const char* kBundleFolder = "model-bundle";

// What the new model keeps of the old one: how it boots, its login, its agent.
nlohmann::json bundle_description(const Model& model, const std::string& name) {
  nlohmann::json description = {{"name", name},
                                {"disk", "disk.qcow2"},
                                {"format", "qcow2"},
                                {"ssh", {{"user", model.ssh_user}, {"port", model.ssh_port}}},
                                {"guest_agent", model.guest_agent}};
  if (!model.ready_marker.empty()) description["ready_marker"] = model.ready_marker;
  if (model.boot.kind == BootSpec::Kind::Kernel) {
    description["boot"] = {
        {"kind", "kernel"}, {"kernel", "vmlinuz"}, {"cmdline", model.boot.cmdline}};
    if (!model.boot.initrd.empty()) description["boot"]["initrd"] = "initrd.img";
  }
  return description;
}

}  // namespace

Model Instance::save_as_model(const std::string& model_name) {
  validate_name(model_name, "model");
  impl_->require_alive_handle("save as a model");
  if (ModelRegistry(impl_->home).find(model_name)) {
    throw ModelError(fmt::format(
        "cannot save instance '{}' as model '{}': a model of that name exists; choose another "
        "name, or `vmfest rm-model {}` first",
        impl_->record.name, model_name, model_name));
  }
  // Inside the instance's folder: removed with it whatever happens to this process.
  const fs::path bundle = impl_->directory() / kBundleFolder;
  fs::remove_all(bundle);
  fs::create_directories(bundle);
  struct RemoveBundle {
    fs::path path;
    ~RemoveBundle() {
      std::error_code ignored;
      fs::remove_all(path, ignored);
    }
  } remove_bundle{bundle};

  const bool running = impl_->current_state() == InstanceState::Running;
  if (running) {
    ssh().check("sync");  // what the guest has written reaches the disk before the copy
    impl_->machine->pause();
  }
  try {
    impl_->machine->export_disk(bundle / "disk.qcow2");
  } catch (...) {
    if (running) impl_->machine->resume();
    throw;
  }
  if (running) impl_->machine->resume();

  const Model& model = impl_->model;
  try {
    if (model.boot.kind == BootSpec::Kind::Kernel) {
      fs::copy_file(model.boot.kernel, bundle / "vmlinuz");
      if (!model.boot.initrd.empty()) fs::copy_file(model.boot.initrd, bundle / "initrd.img");
    }
  } catch (const fs::filesystem_error& error) {
    throw ModelError(fmt::format("cannot copy the boot files of model '{}' for model '{}': {}",
                                 model.name, model_name, error.what()));
  }
  detail::write_text_atomically(bundle / "vmfest-model.json",
                                bundle_description(model, model_name).dump(2));
  SetupOptions options;
  options.name = model_name;
  options.on_progress = [](const Progress&) {};  // a local copy: no progress bar
  Model saved = setup_model(bundle.string(), options, impl_->home);
  spdlog::info("vmfest: instance '{}' is saved as model '{}' ({})", impl_->record.name, model_name,
               saved.directory.string());
  return saved;
}

}  // namespace vmfest
