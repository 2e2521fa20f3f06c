// The VirtualBox backend: VMs of a VirtualBox host driven through its web service (vboxwebsrv,
// SOAP). Clones attach the model's disk, registered once as a MultiAttach medium, so each
// instance's disk is the differencing image VirtualBox makes; SSH goes through a NAT port-forward
// on 127.0.0.1; the serial console is logged to a file in the instance folder.

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "result_codes.h"
#include "vbox_api.h"
#include "vmfest/home.h"
#include "vmfest/internal/base.h"
#include "vmfest/internal/driver.h"

namespace vmfest::detail::virtualbox {
namespace fs = std::filesystem;
using std::chrono::milliseconds;

namespace {

constexpr const char* kMachineFolder = "virtualbox";  // in the instance folder
constexpr const char* kOwnDisk = "disk.vdi";          // a permanent VM's full copy
constexpr const char* kConsoleLog = "serial.log";
// IDE (PIIX4): every VirtualBox version boots from it and the models' kernels drive it; Debian's
// cloud kernel, for one, has no AHCI (SATA) driver.
constexpr const char* kController = "IDE";
constexpr const char* kSshRule = "vmfest-ssh";
constexpr const char* kGroup = "/vmfest";
constexpr milliseconds kLaunchTimeout{120000};
constexpr milliseconds kPowerOffTimeout{60000};
constexpr milliseconds kDeleteTimeout{120000};
constexpr milliseconds kStatePoll{100};

const fs::path& qemu_img() {
  static const fs::path path = find_program("qemu-img", "qemu-utils");
  return path;
}

bool is_stopped(vbox__MachineState state) {
  switch (state) {
    case vbox__MachineState::PoweredOff:
    case vbox__MachineState::Saved:
    case vbox__MachineState::Teleported:
    case vbox__MachineState::Aborted:
    case vbox__MachineState::AbortedSaved:
      return true;
    default:
      return false;
  }
}

InstanceState to_instance_state(vbox__MachineState state) {
  if (is_stopped(state)) return InstanceState::Stopped;
  switch (state) {
    case vbox__MachineState::Paused:
    case vbox__MachineState::TeleportingPausedVM:
    case vbox__MachineState::DeletingSnapshotPaused:
    case vbox__MachineState::Stuck:  // a guru meditation: the guest no longer runs
      return InstanceState::Paused;
    default:
      return InstanceState::Running;
  }
}

// The model's disk as a VDI in the host cache, opened in VirtualBox as a MultiAttach medium: each
// instance attaches it and VirtualBox gives the instance its own differencing image on top.
std::string model_medium(VirtualBoxApi& api, const MachineConfig& config) {
  const Model& model = config.model;
  const fs::path folder = Home(config.home).cache() / "virtualbox";
  fs::create_directories(folder);
  const std::string content = model.sha256.empty() ? "unhashed" : model.sha256.substr(0, 16);
  const fs::path vdi = folder / fmt::format("{}-{}.vdi", model.name, content);
  // One process converts and registers; the others wait and find it done.
  FileLock lock(folder / fmt::format("{}.lock", model.name));
  if (!fs::exists(vdi)) {
    fs::path partial = vdi;
    partial += ".partial";
    run_tool_checked(
        qemu_img(),
        {"convert", "-f", model.format, "-O", "vdi", model.disk.string(), partial.string()},
        fmt::format("converting model '{}' to a VirtualBox disk", model.name));
    fs::rename(partial, vdi);
  }
  std::string medium =
      api.open_medium(vdi.string(), vbox__DeviceType::HardDisk, vbox__AccessMode::ReadWrite);
  if (api.medium_type(medium) != vbox__MediumType::MultiAttach) {
    api.set_medium_type(medium, vbox__MediumType::MultiAttach);
    try {
      api.set_medium_description(
          medium, fmt::format("vmfest model '{}' (sha256 {})", model.name, model.sha256));
    } catch (const RuntimeFaultError& error) {
      spdlog::debug("vmfest: VirtualBox kept no description for model '{}': {}", model.name,
                    error.what());
    }
  }
  return medium;
}

class VirtualBoxMachine final : public Machine {
 public:
  VirtualBoxMachine(MachineConfig config, const nlohmann::json& saved)
      : config_(std::move(config)), options_(ServerOptions::from_environment()) {
    options_.context = fmt::format("instance '{}'", config_.instance_name);
    if (saved.is_object()) {
      uuid_ = saved.value("uuid", "");
      port_ = saved.value("port", 0);
      // The VM lives on the server that made it.
      options_.url = saved.value("url", options_.url);
    }
  }

  void create_disk() override {
    with_api([&](VirtualBoxApi& api) {
      const fs::path folder = config_.directory / kMachineFolder;
      const std::string disk =
          config_.full_copy ? own_disk(api, folder) : model_medium(api, config_);
      const std::string machine = api.create_machine(
          (folder / (config_.instance_name + ".vbox")).string(), config_.instance_name, kGroup);
      api.set_memory_mib(machine, config_.profile.memory_mib);
      api.set_cpus(machine, config_.profile.cpus);
      api.save_settings(machine);
      api.register_machine(machine);
      uuid_ = api.machine_id(machine);
      try {
        MachineLock lock(api, machine, vbox__LockType::Write, config_.instance_name);
        const std::string editable = lock.machine();
        api.add_storage_controller(editable, kController, vbox__StorageBus::IDE);
        api.attach_device(editable, kController, 0, vbox__DeviceType::HardDisk, disk);
        api.attach_device(editable, kController, 1, vbox__DeviceType::DVD,
                          api.open_medium(config_.seed_image.string(), vbox__DeviceType::DVD,
                                          vbox__AccessMode::ReadOnly));
        api.use_nat(api.network_adapter(editable, 0), vbox__NetworkAdapterType::Virtio);
        api.log_serial_to_file(api.serial_port(editable, 0), console_log().string());
        api.save_settings(editable);
      } catch (...) {
        try {
          unregister_and_delete(api, machine);
        } catch (const std::exception& cleanup) {
          spdlog::error(
              "vmfest: could not remove the half-made VirtualBox machine {} of "
              "instance '{}': {}; `VBoxManage unregistervm {} --delete` removes it",
              uuid_, config_.instance_name, cleanup.what(), uuid_);
        }
        uuid_.clear();
        throw;
      }
    });
  }

  // The VM runs in VirtualBox's own process, which cannot inherit the slot: a VM started by
  // `vmfest start` counts against the cap only while that command runs (see Machine::launch).
  void launch(const VmSlot* /*slot*/) override {
    with_api([&](VirtualBoxApi& api) {
      const std::string machine = require_machine(api);
      port_ = config_.ssh_host_port != 0 ? config_.ssh_host_port : free_loopback_port();
      {
        MachineLock lock(api, machine, vbox__LockType::Write, config_.instance_name);
        const std::string editable = lock.machine();
        api.forward_tcp(api.network_adapter(editable, 0), kSshRule, "127.0.0.1", port_,
                        config_.model.ssh_port);
        api.save_settings(editable);
      }
      // The readiness check reads this log: a previous boot's lines must not satisfy it.
      fs::remove(console_log());
      const std::string launcher = api.new_session();
      try {
        api.launch_headless(machine, launcher, kLaunchTimeout);
      } catch (const RuntimeFaultError& error) {
        if (error.result_code() != result::kInvalidObjectState) throw;
        throw MachineLockedError(fmt::format(
            "instance '{}': VirtualBox cannot start its machine while another session holds it "
            "({}); close the VirtualBox Manager window, VBoxManage command or other process that "
            "has it open and retry",
            config_.instance_name, error.text()));
      }
      // The VM runs on in its own process; our session only launched it.
      api.unlock(launcher);
    });
  }

  void pause() override {
    with_console([](VirtualBoxApi& api, const std::string& console) { api.pause(console); });
  }

  void resume() override {
    with_console([](VirtualBoxApi& api, const std::string& console) { api.resume(console); });
  }

  void power_down(milliseconds grace) override {
    with_api([&](VirtualBoxApi& api) {
      const std::string machine = require_machine(api);
      const vbox__MachineState state = api.machine_state(machine);
      if (is_stopped(state)) return;
      bool pressed = false;
      try {
        MachineLock lock(api, machine, vbox__LockType::Shared, config_.instance_name);
        const std::string console = lock.console();
        // A paused guest cannot see the power button.
        if (state == vbox__MachineState::Paused) api.resume(console);
        api.press_power_button(console);
        pressed = true;
      } catch (const RuntimeFaultError& error) {
        spdlog::debug("instance {}: ACPI power button not delivered ({}); stopping hard",
                      config_.instance_name, error.what());
      }
      if (pressed) {
        if (poll_until(grace, kStatePoll, [&] { return is_stopped(api.machine_state(machine)); })) {
          return;
        }
        warn_power_button_ignored(config_.instance_name, grace);
      }
      power_off(api, machine);
    });
  }

  void kill() noexcept override {
    try {
      with_api([&](VirtualBoxApi& api) {
        if (auto machine = find_machine(api)) power_off(api, *machine);
      });
    } catch (const std::exception& error) {
      spdlog::warn("vmfest: could not stop the VirtualBox VM of instance '{}': {}",
                   config_.instance_name, error.what());
    }
  }

  InstanceState state() override {
    return with_api([&](VirtualBoxApi& api) {
      auto machine = find_machine(api);
      return machine ? to_instance_state(api.machine_state(*machine)) : InstanceState::Stopped;
    });
  }

  void remove() override {
    with_api([&](VirtualBoxApi& api) {
      if (auto machine = find_machine(api)) {
        power_off(api, *machine);
        unregister_and_delete(api, *machine);
      }
    });
    uuid_.clear();
  }

  [[nodiscard]] ssh::Endpoint ssh_endpoint() const override {
    return ssh::Endpoint{"127.0.0.1", port_, config_.model.ssh_user, ""};
  }
  [[nodiscard]] fs::path console_log() const override { return config_.directory / kConsoleLog; }
  [[nodiscard]] std::string accelerator() const override { return "virtualbox"; }
  [[nodiscard]] nlohmann::json saved_state() const override {
    return {{"uuid", uuid_}, {"port", port_}, {"url", options_.url}};
  }
  // The VM runs in VirtualBox's own process: there is nothing to let go of.
  void detach() noexcept override {}

 private:
  // Runs `operation` on this machine's websession, logging on first. vboxwebsrv ends a websession
  // that stays idle (5 minutes by default): when the server no longer knows it, log on again
  // and run the operation once more (nothing was done, as its first call failed).
  template <class Operation>
  auto with_api(Operation operation) -> decltype(operation(std::declval<VirtualBoxApi&>())) {
    for (int attempt = 1;; ++attempt) {
      if (!session_) session_.emplace(options_);
      VirtualBoxApi api(*session_);
      try {
        return operation(api);
      } catch (const InvalidObjectError& error) {
        const bool expired = error.bad_object() == session_->virtualbox();
        session_.reset();
        if (!expired || attempt > 1) throw;
      } catch (const ConnectionLostError&) {
        session_.reset();
        throw;
      }
    }
  }

  std::optional<std::string> find_machine(VirtualBoxApi& api) const {
    // Without a UUID the machine was never registered (or is gone already).
    if (uuid_.empty()) return std::nullopt;
    return api.find_machine(uuid_);
  }

  std::string require_machine(VirtualBoxApi& api) const {
    if (auto machine = find_machine(api)) return *machine;
    throw StateError(fmt::format(
        "instance '{}': VirtualBox at {} no longer has its machine {} (deleted in VirtualBox?); "
        "`vmfest destroy {}` removes what is left",
        config_.instance_name, options_.url, uuid_.empty() ? "(never registered)" : uuid_,
        config_.instance_name));
  }

  template <class Action>
  void with_console(Action action) {
    with_api([&](VirtualBoxApi& api) {
      MachineLock lock(api, require_machine(api), vbox__LockType::Shared, config_.instance_name);
      action(api, lock.console());
    });
  }

  // A permanent VM's own full copy of the model, in its machine folder.
  std::string own_disk(VirtualBoxApi& api, const fs::path& folder) const {
    fs::create_directories(folder);
    const fs::path disk = folder / kOwnDisk;
    run_tool_checked(qemu_img(),
                     {"convert", "-f", config_.model.format, "-O", "vdi",
                      config_.model.disk.string(), disk.string()},
                     fmt::format("copying model '{}' for permanent VM '{}'", config_.model.name,
                                 config_.instance_name));
    return api.open_medium(disk.string(), vbox__DeviceType::HardDisk, vbox__AccessMode::ReadWrite);
  }

  void power_off(VirtualBoxApi& api, const std::string& machine) {
    if (is_stopped(api.machine_state(machine))) return;
    MachineLock lock(api, machine, vbox__LockType::Shared, config_.instance_name);
    api.power_off(lock.console(), kPowerOffTimeout);
  }

  // Unregisters the machine and deletes its settings, logs and disk (the differencing image, or a
  // permanent VM's copy); the model's medium stays. Closes the seed DVD image, which VirtualBox
  // would otherwise keep listing.
  void unregister_and_delete(VirtualBoxApi& api, const std::string& machine) {
    std::optional<std::string> seed;
    if (fs::exists(config_.seed_image)) {
      seed = api.open_medium(config_.seed_image.string(), vbox__DeviceType::DVD,
                             vbox__AccessMode::ReadOnly);
    }
    api.delete_config(machine, api.unregister(machine), kDeleteTimeout);
    if (seed) api.close_medium(*seed);
  }

  MachineConfig config_;
  ServerOptions options_;
  std::optional<Websession> session_;  // logged on at first use, off with the machine
  std::string uuid_;
  int port_ = 0;
};

class VirtualBoxBackend final : public Backend {
 public:
  [[nodiscard]] std::string name() const override { return "virtualbox"; }
  // No private segments: vmfest's segment hub is a unix datagram socket, which VirtualBox has no
  // card for. No warm images: vmfest resumes a clone from a state file through the guest agent's
  // channel, and vboxwebsrv's saved states and snapshots belong to one VM, not to its clones.
  [[nodiscard]] Capabilities capabilities() const override {
    return {.why_no_warm_images = "a VirtualBox saved state belongs to one VM, not to its clones"};
  }
  std::unique_ptr<Machine> machine(const MachineConfig& config,
                                   const nlohmann::json& saved) override {
    return std::make_unique<VirtualBoxMachine>(config, saved);
  }
  // Only when VirtualBox is the default backend or given a server: a logon, and its version.
  std::vector<HostCheck> host_checks(const Home& /*home*/) override {
    if (default_backend_name() != name() && std::getenv("VMFEST_VBOX_URL") == nullptr) return {};
    ServerOptions options = ServerOptions::from_environment();
    options.context = "vmfest doctor";
    const std::string check = "vboxwebsrv " + options.url;
    try {
      const Websession session(options);
      return {{check, HostCheck::Verdict::Ok,
               fmt::format("reachable (VirtualBox API {})", to_string(session.version())), ""}};
    } catch (const Error& error) {
      return {{check, HostCheck::Verdict::Fail, error.what(),
               "start vboxwebsrv on the VirtualBox host, or fix VMFEST_VBOX_URL, "
               "VMFEST_VBOX_USER and VMFEST_VBOX_PASSWORD"}};
    }
  }
};

std::unique_ptr<Backend> make_virtualbox_backend() { return std::make_unique<VirtualBoxBackend>(); }

}  // namespace
}  // namespace vmfest::detail::virtualbox

VMFEST_REGISTER_BACKEND(virtualbox, &vmfest::detail::virtualbox::make_virtualbox_backend);
