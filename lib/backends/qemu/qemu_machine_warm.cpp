// QemuMachine's warm images: saving a booted guest (or a running clone's memory) as one, resuming
// one in a clone, and where the guest's memory lives meanwhile (see command_line.h).
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "host_qemu.h"
#include "qemu_machine.h"
#include "vmfest/error.h"
#include "vmfest/internal/base.h"
#include "warm_state.h"

namespace vmfest::detail::qemu {
namespace fs = std::filesystem;
using std::chrono::milliseconds;

nlohmann::json QemuMachine::save_warm_image(const fs::path& image_directory) {
  const bool mapped = memory_in_file();
  QmpClient client = qmp();
  client.execute("stop");
  // Memory in a file of its own is there already: the state is left with the devices' (hundreds
  // of KiB). A layer build on an image whose state holds the memory saves it in the state too.
  const fs::path state = image_directory / kWarmState;
  save_state(client, state, mapped, step("saving the warm image"));
  client.execute("quit");
  if (!wait_for_exit(milliseconds(10000))) kill();
  // The disk as it was at the stop is the base every clone's overlay sits on, and the memory
  // file what each clone maps: never written again. QEMU 7.2 opens a memory file read-write
  // even for a private mapping, so that one stays writable by its owner; the manifest's hashes
  // guard both.
  const auto read_only = fs::perms::owner_read;  // the guest's memory and disk: no one else's
  keep_durably(path(kDisk), image_directory / kWarmBase, read_only, config_.instance_name);
  keep_durably(state, state, read_only, config_.instance_name);
  if (mapped && !memory_in_own_file()) return memory_in_state_facts(image_directory);
  if (mapped) {
    const fs::path memory = image_directory / kMemoryFile;
    keep_durably(path(kMemoryFile), memory, fs::perms::owner_read | fs::perms::owner_write,
                 config_.instance_name);
    // Most of it is pages the guest zeroed (init_on_free): holes on disk, zeros to every clone.
    const auto freed = punch_zero_blocks(memory);
    spdlog::debug("instance {}: {} MiB of zero pages left out of the memory file on disk",
                  config_.instance_name, freed >> 20);
  }
  return warm_image_facts(mapped);
}

nlohmann::json QemuMachine::save_warm_image_of(const Model& model,
                                               const fs::path& image_directory) {
  const bool mapped = warm_memory() == WarmMemory::Mapped;
  // The clones' RAM must be the same block as this VM's: a mapped image's clones map a file.
  if (mapped != memory_in_file()) {
    throw BackendError(fmt::format(
        "instance '{}' was booted, not resumed from a warm image, and so keeps its memory "
        "apart from where clones of model '{}' would look for it",
        config_.instance_name, model.name));
  }
  QmpClient client = qmp();
  // This VM's memory is private, so the state holds it all the same (x-ignore-shared skips only
  // shared memory), and the image's memory file is left empty (holes).
  const fs::path state = image_directory / kWarmState;
  save_state(client, state, mapped, step("saving the guest's memory"));
  const fs::path base = image_directory / kWarmBase;
  run_tool_checked(
      qemu_img(),
      {"create", "-q", "-f", "qcow2", "-b", model.disk.string(), "-F", model.format, base.string()},
      fmt::format("making the warm image of model '{}'", model.name));
  const auto read_only = fs::perms::owner_read;  // the guest's memory and disk: no one else's
  keep_durably(base, base, read_only, config_.instance_name);
  keep_durably(state, state, read_only, config_.instance_name);
  if (!mapped) {
    nlohmann::json facts = warm_image_facts(mapped);
    facts["memory_in_state"] = true;
    return facts;
  }
  return memory_in_state_facts(image_directory);
}

nlohmann::json QemuMachine::memory_in_state_facts(const fs::path& image_directory) {
  const fs::path memory = image_directory / kMemoryFile;
  write_text_atomically(memory, "", 0600);
  fs::resize_file(memory, static_cast<std::uintmax_t>(config_.profile.memory_mib) << 20);
  keep_durably(memory, memory, fs::perms::owner_read | fs::perms::owner_write,
               config_.instance_name);
  write_text_atomically(image_directory / kMemoryInState, "", 0400);
  nlohmann::json facts = warm_image_facts(true);
  facts["memory_in_state"] = true;
  return facts;
}

bool QemuMachine::warm_image_copies_memory() const {
  // A layer build on an image whose state holds the memory saves its layer that way too.
  return !memory_in_file() || (config_.saves_warm_image && !memory_in_own_file());
}

bool QemuMachine::memory_in_file() const {
  return (resuming_ || config_.saves_warm_image) && warm_memory() == WarmMemory::Mapped;
}

bool QemuMachine::memory_in_own_file() const {
  if (!memory_in_file()) return false;
  if (!resuming_) return true;
  return config_.saves_warm_image && !fs::exists(config_.warm_image / kMemoryInState);
}

void QemuMachine::resume_warm_image() {
  try {
    start_process();
  } catch (const std::exception& error) {
    throw WarmResumeError(
        fmt::format("instance '{}': QEMU did not start to resume warm image {}: {}",
                    config_.instance_name, config_.warm_image.string(), error.what()),
        false);
  }
  try {
    load_warm_state();
  } catch (const std::exception& error) {
    kill();
    const bool refused =
        read_text_if_exists(path(kQemuLog)).find("load of migration failed") != std::string::npos;
    std::string qemu_said = tail_lines(path(kQemuLog), 5);
    while (!qemu_said.empty() && qemu_said.back() == '\n') qemu_said.pop_back();
    throw WarmResumeError(
        fmt::format("instance '{}': {} warm image {} ({}): {}", config_.instance_name,
                    refused ? "QEMU refused the saved state of" : "QEMU could not resume",
                    config_.warm_image.string(), error.what(), qemu_said),
        refused);
  }
}

void QemuMachine::load_warm_state() {
  QmpClient client = qmp();
  if (!load_state(client, config_.warm_image / kWarmState, memory_in_file(),
                  [&] { return alive(); })) {
    throw BackendError("QEMU exited while loading it, or the load outran its timeout");
  }
  spdlog::debug("instance {}: warm state loaded", config_.instance_name);
  // The segment's card joins while the guest is still paused: it sees it the moment it runs.
  if (config_.private_nic && !config_.saves_warm_image) {
    client.execute("netdev_add", private_nic_netdev(*config_.private_nic));
    client.execute("device_add", private_nic_device(*config_.private_nic));
  }
  // The image was saved from a stopped VM, so it arrives paused.
  client.execute("cont");
  warm_restored_ = true;
}

std::string QemuMachine::step(const char* what) const {
  return fmt::format("instance '{}': {}", config_.instance_name, what);
}

nlohmann::json QemuMachine::warm_image_facts(bool mapped) const {
  return {{"qemu_version", qemu_version()},
          {"machine_type", machine_type()},
          {"accelerator", accelerator_},
          {"memory", to_string(mapped ? WarmMemory::Mapped : WarmMemory::Streamed)}};
}
}  // namespace vmfest::detail::qemu
