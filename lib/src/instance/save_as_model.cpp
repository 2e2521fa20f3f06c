// Instance::save_as_model: an instance registered as a model of its own (`vmfest commit`): its
// disk, and for a running guest its memory too, as the new model's warm image.
#include <exception>
#include <string>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "../base/files.h"
#include "../image_store/base_plan.h"
#include "../image_store/warm.h"
#include "instance_impl.h"

namespace vmfest {
namespace fs = std::filesystem;
using detail::Clock;

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

struct RemoveFolder {
  fs::path path;
  ~RemoveFolder() {
    std::error_code ignored;
    fs::remove_all(path, ignored);
  }
};

}  // namespace

Model Instance::save_as_model(const std::string& model_name) {
  return impl_->save_as_model(model_name);
}

// Empty when the guest is quiet for a save of its memory; otherwise why its memory stays out.
std::string Instance::Impl::quiesce_for_memory_save() {
  if (AgentCheck agent = prepare_agent(); !agent.ok()) return agent.problem;
  const std::string reply = machine->agent_exchange(
      machine->warm_image_copies_memory() ? "quiesce\n" : "quiesce keep-cache\n",
      std::chrono::seconds(30));
  if (reply != "ok") return "its guest agent could not quiesce it (" + reply + ")";
  return {};
}

void Instance::Impl::save_memory_as_warm_image(const Model& saved) {
  detail::require_capability(*backend, detail::kWarmImages,
                             fmt::format("saving the memory of instance '{}'", record.name));
  // Keyed by what this instance runs on (of a backend's several hosts, this instance's).
  const std::string fingerprint =
      backend->warm_fingerprint(detail::machine_config(home, record, saved));
  const detail::WarmLocation location{
      detail::warm_image_directory(saved, record.profile, fingerprint), fingerprint};
  fs::create_directories(location.directory.parent_path());
  // The new model is registered already: an instance of it may be building this very image.
  detail::FileLock lock(detail::warm_build_lock(location.directory));
  if (detail::check_warm_image(location.directory) == detail::WarmStatus::Ready) return;
  const fs::path staging = detail::warm_build_folder(location.directory);
  fs::remove_all(staging);
  fs::create_directories(staging);
  fs::permissions(staging, fs::perms::owner_all);  // the guest's memory: its owner's alone
  RemoveFolder remove_staging{staging};
  const auto begin = Clock::now();
  const nlohmann::json facts = machine->save_warm_image_of(saved, staging);
  detail::write_warm_manifest(staging, location.fingerprint, facts,
                              std::chrono::duration<double>(Clock::now() - begin).count());
  fs::remove_all(location.directory);
  fs::rename(staging, location.directory);
}

Model Instance::Impl::save_as_model(const std::string& model_name) {
  validate_name(model_name, "model");
  require_alive_handle("save as a model");
  detail::require_capability(
      *backend, detail::kExportDisk,
      fmt::format("cannot save instance '{}' as model '{}'", record.name, model_name));
  if (ModelRegistry(home).find(model_name)) {
    throw ModelError(fmt::format(
        "cannot save instance '{}' as model '{}': a model of that name exists; choose another "
        "name, or `vmfest rm-model {}` first",
        record.name, model_name, model_name));
  }
  // Inside the instance's folder: removed with it whatever happens to this process.
  const fs::path bundle = directory() / kBundleFolder;
  fs::remove_all(bundle);
  fs::create_directories(bundle);
  RemoveFolder remove_bundle{bundle};

  const bool running = current_state() == InstanceState::Running;
  std::string memory_left_out = !running ? "the guest is not running"
                                : record.private_nic
                                    ? "it is on a private segment, whose card no warm image holds"
                                    : "";
  if (running) {
    if (!session) session.emplace(ssh::Session::connect(endpoint(), credentials));
    session->check("sync");  // what the guest has written reaches the disk before the copy
    if (memory_left_out.empty()) memory_left_out = quiesce_for_memory_save();
    session.reset();
    machine->pause();
  }
  // The guest runs on as it was, and gets its identity once more, as a clone would: its RNG state
  // is now also the saved image's.
  auto run_on = [&] {
    if (!running) return;
    machine->resume();
    if (memory_left_out.empty()) {
      deliver_identity();
      wait_until_ready(false);
    }
  };
  Model saved;
  try {
    machine->export_disk(bundle / "disk.qcow2");
    if (model.boot.kind == BootSpec::Kind::Kernel) {
      fs::copy_file(model.boot.kernel, bundle / "vmlinuz");
      if (!model.boot.initrd.empty()) fs::copy_file(model.boot.initrd, bundle / "initrd.img");
    }
    detail::write_text_atomically(bundle / "vmfest-model.json",
                                  bundle_description(model, model_name).dump(2));
    SetupOptions options;
    options.name = model_name;
    options.on_progress = [](const Progress&) {};  // a local copy: no progress bar
    saved = setup_model(bundle.string(), options, home);
    if (memory_left_out.empty()) {
      try {
        save_memory_as_warm_image(saved);
      } catch (const std::exception& error) {
        memory_left_out = error.what();
      }
    }
  } catch (const std::exception& error) {
    // The save's error is what the caller must see, even when the guest then fails to run on.
    std::string run_on_failure;
    try {
      run_on();
    } catch (const std::exception& run_on_error) {
      run_on_failure = run_on_error.what();
    }
    const std::string saving = fmt::format("cannot save instance '{}' as model '{}': {}",
                                           record.name, model_name, error.what());
    if (!run_on_failure.empty()) {
      std::throw_with_nested(ModelError(fmt::format(
          "{}; its guest, paused for the save, did not run on after it either ({}): `vmfest "
          "destroy {}` removes the instance",
          saving, run_on_failure, record.name)));
    }
    if (dynamic_cast<const Error*>(&error) != nullptr) throw;
    std::throw_with_nested(ModelError(saving));
  }
  try {
    run_on();
  } catch (const std::exception& error) {
    // The model stands; why its memory was not saved (a save that ended the VM) comes first.
    std::throw_with_nested(ModelError(fmt::format(
        "instance '{}' is saved as model '{}'{}, but its guest did not run on after the save: {}. "
        "`vmfest destroy {}` removes the instance",
        record.name, model_name,
        memory_left_out.empty() ? "" : fmt::format(" without its memory ({})", memory_left_out),
        error.what(), record.name)));
  }
  if (memory_left_out.empty()) {
    spdlog::info(
        "vmfest: instance '{}' is saved as model '{}', its running guest as the model's "
        "warm image ({})",
        record.name, model_name, saved.directory.string());
  } else {
    spdlog::info("vmfest: instance '{}' is saved as model '{}' ({}); its memory is not: {}",
                 record.name, model_name, saved.directory.string(), memory_left_out);
  }
  return saved;
}

}  // namespace vmfest
