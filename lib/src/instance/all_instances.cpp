// The registry-wide operations on instances: starting groups, listing, describing, forced
// removal and the reaper of leaked instances.
#include <algorithm>
#include <exception>
#include <thread>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "../image_store/warm.h"
#include "../registry/registry_store.h"
#include "instance_impl.h"

namespace vmfest {
namespace fs = std::filesystem;
using detail::model_or_stub;
using detail::no_such_instance;
using detail::recorded_machine;
using detail::RecordedMachine;

namespace detail {

// A friend of Instance: what the registry-wide operations need of an instance's internals.
struct InstanceAccess {
  // What describe_instances() lists for an instance whose hypervisor cannot be asked.
  static InstanceInfo unknown_state(const Instance& instance, std::string problem) {
    InstanceInfo info = instance.impl_->info(InstanceState::Unknown);
    info.problem = std::move(problem);
    return info;
  }

  static void take_slots(const std::vector<Instance*>& instances) {
    std::vector<Instance*> waiting;
    std::vector<std::string> names;
    for (Instance* instance : instances) {
      if (instance->impl_->slot || !instance->impl_->backend->capabilities().runs_vms_here)
        continue;
      waiting.push_back(instance);
      names.push_back(instance->impl_->record.name);
    }
    if (names.empty()) return;
    std::vector<VmSlot> slots = acquire_vm_slots(names, slot_timeout());
    for (std::size_t index = 0; index < waiting.size(); ++index) {
      waiting[index]->impl_->slot.emplace(std::move(slots[index]));
    }
  }
};

}  // namespace detail

// ---- registry-wide operations -----------------------------------------------------------------

void start_all(const std::vector<Instance*>& instances) {
  detail::InstanceAccess::take_slots(instances);
  std::vector<std::exception_ptr> errors(instances.size());
  {
    std::vector<std::jthread> starts;
    for (std::size_t index = 0; index < instances.size(); ++index) {
      starts.emplace_back([&instances, &errors, index] {
        try {
          instances[index]->start();
        } catch (...) {
          errors[index] = std::current_exception();
        }
      });
    }
  }
  for (const std::exception_ptr& error : errors) {
    if (error) std::rethrow_exception(error);
  }
}

std::vector<std::string> list_instances(const Home& home) {
  std::vector<std::string> names;
  if (!fs::exists(home.instances())) return names;
  for (const auto& entry : fs::directory_iterator(home.instances())) {
    std::string name = entry.path().filename().string();
    if (entry.is_directory() && !name.starts_with(".")) names.push_back(name);
  }
  std::sort(names.begin(), names.end());
  return names;
}

std::vector<InstanceInfo> describe_instances(const Home& home) {
  std::vector<InstanceInfo> infos;
  for (const auto& name : list_instances(home)) {
    try {
      Instance instance = Instance::open(name, home);
      try {
        infos.push_back(instance.info());
      } catch (const BackendError& error) {
        // One hypervisor out of reach must not hide the other instances.
        infos.push_back(detail::InstanceAccess::unknown_state(instance, error.what()));
        spdlog::warn("vmfest: the state of instance '{}' is unknown: {}", name, error.what());
      }
    } catch (const StateError&) {
      // Removed between listing and opening: no longer there to describe.
    } catch (const Error& error) {
      // An unreadable record, a key file missing: the others are listed all the same.
      spdlog::warn("vmfest: {} (left out of the list)", error.what());
    }
  }
  return infos;
}

namespace {

// Stops the VM of the instance in `directory`, as `record` describes it (none: no readable
// record), and removes the folder. Without `force`, a hypervisor that cannot be reached or a
// machine state that cannot be read throws and the files stay; with it, that is logged and the
// files go anyway (a VM that hypervisor still runs is left to it).
void remove_instance_folder(const Home& home, const fs::path& directory,
                            const std::optional<detail::InstanceRecord>& record, bool force) {
  if (record) {
    try {
      RecordedMachine recorded =
          recorded_machine(home, *record, model_or_stub(home, record->model), directory);
      recorded.machine->kill();
      recorded.machine->remove();
    } catch (const Error& error) {
      if (!force) throw;
      spdlog::warn("vmfest: {}; removing its files anyway (--force)", error.what());
    }
  }
  fs::remove_all(directory);
}

}  // namespace

void force_destroy_instance(const std::string& name, const Home& home) {
  validate_name(name, "instance");
  const fs::path directory = home.instances() / name;
  if (!fs::is_directory(directory)) throw no_such_instance(home, name);
  std::optional<detail::InstanceRecord> record;
  try {
    record = detail::read_instance_record(directory);
  } catch (const InstanceRecordError& error) {
    spdlog::warn("vmfest: {}; removing its files anyway (--force)", error.what());
  }
  remove_instance_folder(home, directory, record, true);
}

std::vector<std::string> reap_leaked_instances(const Home& home, const ReapOptions& options) {
  std::vector<std::string> reaped;
  // No instances folder (a home emptied by hand) still has the backends' orphans to look for.
  const std::vector<fs::directory_entry> entries =
      fs::exists(home.instances())
          ? std::vector<fs::directory_entry>(fs::directory_iterator(home.instances()), {})
          : std::vector<fs::directory_entry>{};
  for (const auto& entry : entries) {
    const fs::path directory = entry.path();
    if (!entry.is_directory()) continue;
    try {
      // A new instance's folder while its creator lives: it makes the lock file, then locks it,
      // then writes the record and renames the folder into place. A reaper that took the lock
      // between the first two steps would remove a folder under its creator.
      if (detail::instance_creation_under_way(directory.filename().string())) continue;
      if (!fs::exists(directory / detail::kOwnerLock)) {
        // Every instance folder has its lock from birth (see create): without it, this is what
        // a destroy killed halfway left, its VM already killed.
        spdlog::info("vmfest: removing {}, left by an interrupted destroy", directory.string());
        std::error_code ignored;  // a destroy that is still under way removes it too
        fs::remove_all(directory, ignored);
        reaped.push_back(directory.filename().string());
        continue;
      }
      std::optional<detail::InstanceRecord> record;
      std::string unreadable;
      try {
        record = detail::read_instance_record(directory);
      } catch (const InstanceRecordError& error) {
        if (!options.force) throw;
        unreadable = error.what();
      }
      if (record && !options.force && (record->detached || record->permanent)) continue;
      detail::FileLock owner(directory / detail::kOwnerLock, detail::FileLock::Mode::TryExisting);
      if (!owner.held()) continue;  // the owner is alive (or the folder is being removed)
      if (!unreadable.empty()) spdlog::warn("vmfest: {}; reaping it anyway (--force)", unreadable);
      remove_instance_folder(home, directory, record, options.force);
      reaped.push_back(directory.filename().string());
    } catch (const InstanceRecordError& error) {
      spdlog::warn("vmfest: not reaping {}: {}", directory.string(), error.what());
    } catch (const Error& error) {
      spdlog::warn("vmfest: not reaping {}: {}; `vmfest reap --force` removes its files",
                   directory.string(), error.what());
    } catch (const std::exception& error) {
      spdlog::warn("vmfest: could not reap {}: {}", directory.string(), error.what());
    }
  }
  // What backends keep outside the folders, of instances whose folders are gone.
  for (const std::string& name : detail::backend_names()) {
    try {
      for (const std::string& removed : detail::make_backend(name)->remove_orphans(home)) {
        spdlog::info("vmfest: reaped {}", removed);
      }
    } catch (const std::exception& error) {
      spdlog::warn("vmfest: could not look for leftovers of the {} backend: {}", name,
                   error.what());
    }
  }
  // What killed processes left beside the models: setups' staging and warm builds' folders.
  try {
    detail::remove_interrupted_setups(home);
    detail::remove_interrupted_warm_builds(home.models());
  } catch (const std::exception& error) {
    spdlog::warn("vmfest: could not remove what interrupted setups left in {}: {}",
                 home.models().string(), error.what());
  }
  return reaped;
}

}  // namespace vmfest
