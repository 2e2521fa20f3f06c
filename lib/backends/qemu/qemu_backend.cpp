#include "qemu_backend.h"

#include <algorithm>
#include <cstdio>
#include <optional>
#include <thread>

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <boost/asio/io_context.hpp>
#include <boost/process/v2/process.hpp>
#include <boost/process/v2/start_dir.hpp>
#include <boost/process/v2/stdio.hpp>

#include "accelerator.h"
#include "command_line.h"
#include "host_qemu.h"
#include "qemu_process.h"
#include "qmp_client.h"
#include "unix_socket.h"
#include "vmfest/error.h"
#include "vmfest/home.h"
#include "vmfest/internal/base.h"
#include "vmfest/internal/driver.h"
#include "vmfest/model.h"
#include "warm_state.h"

namespace vmfest::detail::qemu {
namespace fs = std::filesystem;
namespace bp = boost::process::v2;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

namespace {

constexpr const char* kQemuLog = "qemu.log";
constexpr const char* kWarmBase = "base.qcow2";
constexpr const char* kWarmState = "state";
constexpr int kPortAttempts = 5;
constexpr milliseconds kLaunchTimeout{15000};
constexpr milliseconds kProbeTimeout{8000};

// The kernel of a kernel-boot model registered in `home`; empty if none.
fs::path registered_kernel(const fs::path& home) {
  try {
    for (const Model& model : ModelRegistry(Home(home)).list()) {
      if (model.boot.kind == BootSpec::Kind::Kernel) return model.boot.kernel;
    }
  } catch (const Error& error) {
    spdlog::debug("vmfest: no kernel-boot model found in {}: {}", home.string(), error.what());
  }
  return {};
}

// The probe boots a Linux kernel whatever the model boots from: a disk-booted model's bootloader
// runs under KVMs that hang the kernel it loads.
AcceleratorChoice accelerator_choice(const MachineConfig& config) {
  const fs::path kernel = config.model.boot.kind == BootSpec::Kind::Kernel
                              ? config.model.boot.kernel
                              : find_probe_kernel(registered_kernel(config.home));
  return choose_accelerator(qemu_binary(), accelerator_cache_directory(), kernel, kProbeTimeout);
}

class QemuMachine final : public Machine {
 public:
  QemuMachine(MachineConfig config, const nlohmann::json& saved) : config_(std::move(config)) {
    if (saved.is_object()) {
      port_ = saved.value("port", 0);
      pid_ = saved.value("pid", 0);
      accelerator_ = saved.value("accelerator", "");
      warm_restored_ = saved.value("warm_restored", false);
      resuming_ = saved.value("resumed_launch", false);
    }
    if (pid_ == 0) {
      // Killed between spawn and the record update: QEMU's own pidfile still says who it is.
      std::string pid_text = read_text_if_exists(path(kPidFile));
      if (!pid_text.empty()) pid_ = std::atoi(pid_text.c_str());
    }
  }

  ~QemuMachine() override {
    // The process handle would kill qemu in its destructor; the core decides that explicitly.
    detach();
  }

  void create_disk() override {
    const fs::path disk = path(kDisk);
    fs::remove(disk);  // a warm clone falling back to a cold boot starts over
    if (config_.full_copy) {
      run_tool_checked(qemu_img(),
                       {"convert", "-f", config_.model.format, "-O", "qcow2",
                        config_.model.disk.string(), disk.string()},
                       fmt::format("copying model '{}' for permanent VM '{}'", config_.model.name,
                                   config_.instance_name));
    } else if (!config_.warm_image.empty()) {
      run_tool_checked(qemu_img(),
                       {"create", "-q", "-f", "qcow2", "-b",
                        (config_.warm_image / kWarmBase).string(), "-F", "qcow2", disk.string()},
                       fmt::format("cloning the warm image of model '{}' for instance '{}'",
                                   config_.model.name, config_.instance_name));
    } else {
      run_tool_checked(qemu_img(),
                       {"create", "-q", "-f", "qcow2", "-b", config_.model.disk.string(), "-F",
                        config_.model.format, disk.string()},
                       fmt::format("cloning model '{}' for instance '{}'", config_.model.name,
                                   config_.instance_name));
    }
  }

  void launch(const VmSlot* slot) override {
    slot_descriptor_ = slot != nullptr ? slot->descriptor() : -1;
    AcceleratorChoice choice = accelerator_choice(config_);
    log_choice_once(choice);
    accelerator_ = choice.name;
    // Only the first launch of a warm clone resumes the image; later ones boot its disk.
    resuming_ = !config_.warm_image.empty() && !warm_restored_;
    if (resuming_) {
      resume_warm_image();
    } else {
      start_process();
    }
    spdlog::debug("instance {}: QEMU (pid {}) answers on QMP", config_.instance_name, pid_);
    if (accelerator_ != "kvm") return;
    if (fall_back_to_tcg_if_silent(choice, kvm_launch())) restart_under_tcg();
  }

  void start_process() {
    if (config_.ssh_host_port != 0) {
      port_ = config_.ssh_host_port;
      if (spawn()) return;
      throw BackendError(fmt::format("instance '{}': host port {} for SSH is already in use",
                                     config_.instance_name, port_));
    }
    for (int attempt = 1; attempt <= kPortAttempts; ++attempt) {
      port_ = free_loopback_port();  // launch() retries should another process take it
      if (spawn()) return;
      spdlog::debug("instance {}: port {} was taken before QEMU bound it; retrying",
                    config_.instance_name, port_);
    }
    throw BackendError(fmt::format(
        "instance '{}': QEMU could not bind a host port for SSH after {} attempts; see {}",
        config_.instance_name, kPortAttempts, path(kQemuLog).string()));
  }

  void pause() override { qmp().execute("stop"); }
  void resume() override { qmp().execute("cont"); }

  void power_down(milliseconds grace) override {
    if (!alive()) return;
    try {
      QmpClient client = qmp();
      // A paused guest cannot see the power button.
      if (client.execute("query-status").value("status", "") != "running") client.execute("cont");
      client.execute("system_powerdown");
    } catch (const BackendError& error) {
      spdlog::debug("instance {}: ACPI power-down not delivered ({}); stopping hard",
                    config_.instance_name, error.what());
    }
    if (wait_for_exit(grace)) return;
    warn_power_button_ignored(config_.instance_name, grace);
    kill();
  }

  void kill() noexcept override {
    if (process_) {
      kill_and_reap(*process_);
      process_.reset();
    } else {
      // Not our child (another process started it): the recorded pid, and any QEMU working in
      // the instance folder, since an owner killed between QEMU's start and the record of its
      // pid leaves a QEMU that only its folder names.
      std::vector<int> pids = qemus_working_in(config_.directory);
      if (is_our_qemu(pid_, config_.directory) &&
          std::find(pids.begin(), pids.end(), pid_) == pids.end()) {
        pids.push_back(pid_);
      }
      for (int pid : pids) kill_and_wait(pid);
    }
  }

  InstanceState state() override {
    if (!alive()) return InstanceState::Stopped;
    std::string status;
    try {
      QmpClient client = QmpClient::try_connect(path(kQmpSocket), milliseconds(5000));
      if (!client.connected()) return alive() ? InstanceState::Running : InstanceState::Stopped;
      status = client.execute("query-status").value("status", "");
    } catch (const BackendError&) {
      // QEMU exiting (a guest power-off) closes its socket before the process is gone: give it
      // a moment to finish exiting before calling the socket's failure an error.
      if (wait_for_exit(milliseconds(3000))) return InstanceState::Stopped;
      throw;
    }
    if (status == "running") return InstanceState::Running;
    if (status == "shutdown" || status == "guest-panicked" || status == "internal-error") {
      return InstanceState::Stopped;
    }
    return InstanceState::Paused;
  }

  void remove() override {}

  void export_disk(const fs::path& destination) override {
    // -U: a paused QEMU still holds the image's write lock; the guest writes nothing meanwhile.
    run_tool_checked(
        qemu_img(),
        {"convert", "-U", "-f", "qcow2", "-O", "qcow2", path(kDisk).string(), destination.string()},
        fmt::format("copying the disk of instance '{}'", config_.instance_name));
  }

  nlohmann::json save_warm_image(const fs::path& image_directory) override {
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

  nlohmann::json save_warm_image_of(const Model& model, const fs::path& image_directory) override {
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
    run_tool_checked(qemu_img(),
                     {"create", "-q", "-f", "qcow2", "-b", model.disk.string(), "-F", model.format,
                      base.string()},
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

  // Completes a mapped image whose state holds the guest's private memory: the memory file its
  // clones map is left empty (holes), and the marker says a layer build must map it privately.
  nlohmann::json memory_in_state_facts(const fs::path& image_directory) {
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

  [[nodiscard]] bool warm_image_copies_memory() const override {
    // A layer build on an image whose state holds the memory saves its layer that way too.
    return !memory_in_file() || (config_.saves_warm_image && !memory_in_own_file());
  }

  std::string agent_exchange(const std::string& request, milliseconds timeout) override {
    try {
      return exchange_line(path(kAgentSocket), request, timeout);
    } catch (const BackendError& error) {
      throw BackendError(fmt::format(
          "instance '{}': the guest agent did not answer ({}); is vmfest-agent running in the "
          "model?",
          config_.instance_name, error.what()));
    }
  }

  [[nodiscard]] bool resumed_warm() const override { return resuming_; }

  // What a saved guest depends on: machine type, accelerator, where its memory lives, memory
  // size, CPUs, kernel command line and the ordered device list (QEMU refuses state from other
  // hardware, and would happily resume it on another memory mode).
  [[nodiscard]] std::string hardware_signature() {
    accelerator_ = accelerator_choice(config_).name;
    std::string signature = fmt::format("machine {}\naccelerator {}\nmemory {}\n", machine_type(),
                                        accelerator_, to_string(warm_memory()));
    const std::vector<std::string> args = arguments();
    for (std::size_t i = 0; i + 1 < args.size(); ++i) {
      const std::string& flag = args[i];
      if (flag == "-m" || flag == "-smp" || flag == "-device" || flag == "-append") {
        signature += flag + " " + args[i + 1] + "\n";
      }
    }
    return signature;
  }

  [[nodiscard]] ssh::Endpoint ssh_endpoint() const override {
    return ssh::Endpoint{"127.0.0.1", port_, config_.model.ssh_user, ""};
  }
  [[nodiscard]] fs::path console_log() const override { return path(kSerialLog); }
  [[nodiscard]] std::string accelerator() const override { return accelerator_; }
  [[nodiscard]] nlohmann::json saved_state() const override {
    return {{"port", port_},
            {"pid", pid_},
            {"accelerator", accelerator_},
            {"warm_restored", warm_restored_},
            // How the running VM holds its memory, for a handle opened by another process.
            {"resumed_launch", resuming_}};
  }

  void detach() noexcept override {
    if (process_) {
      process_->detach();
      process_.reset();
    }
  }

 private:
  [[nodiscard]] fs::path path(const char* file) const { return config_.directory / file; }

  static void log_choice_once(const AcceleratorChoice& choice) {
    static std::once_flag once;
    std::call_once(once, [&] {
      if (choice.name == "tcg") {
        spdlog::info("vmfest: using TCG: {}", choice.reason);
      } else {
        spdlog::info("vmfest: using KVM: {}", choice.reason);
      }
    });
  }

  // The guest's memory is a file (see kMemoryFile): in a boot that becomes a warm image, and in
  // a clone resuming one, when this QEMU can leave such memory out of the saved state.
  [[nodiscard]] bool memory_in_file() const {
    return (resuming_ || config_.saves_warm_image) && warm_memory() == WarmMemory::Mapped;
  }

  // The guest's RAM is a file of this VM's own, mapped shared, which a save keeps as the image's
  // memory (see LaunchSettings): a boot that becomes a warm image, and a layer build on an image
  // whose memory is in its file (a copy of it).
  [[nodiscard]] bool memory_in_own_file() const {
    if (!memory_in_file()) return false;
    if (!resuming_) return true;
    return config_.saves_warm_image && !fs::exists(config_.warm_image / kMemoryInState);
  }

  std::vector<std::string> arguments() const {
    return qemu_arguments(config_,
                          {port_, accelerator_, resuming_, memory_in_file(), memory_in_own_file()});
  }

  // Starts qemu; true once its QMP socket answers, false when the SSH port was taken meanwhile.
  bool spawn() {
    fs::remove(path(kQmpSocket));
    // A boot that becomes a warm image starts on fresh memory, not an earlier attempt's; a layer
    // build (it resumes a warm image and saves another) on a copy of the image's memory.
    fs::remove(path(kMemoryFile));
    if (resuming_ && memory_in_own_file()) {
      copy_sparse_file(config_.warm_image / kMemoryFile, path(kMemoryFile), 0600);
    }
    // QEMU binds the private card's port socket and leaves it behind when it exits.
    if (config_.private_nic) fs::remove(config_.private_nic->port_socket);
    FILE* log = std::fopen(path(kQemuLog).c_str(), "w");
    if (log == nullptr) {
      throw BackendError(fmt::format("cannot write {}", path(kQemuLog).string()));
    }
    // Relative file names and the instance folder as working directory keep the QMP socket path
    // short (unix socket paths are limited to ~107 bytes) and mark the process as ours (/proc/cwd).
    // Not const: Boost.Process silently skips an initializer whose hooks it cannot call.
    bp::process_stdio stdio{nullptr, log, log};
    bp::process_start_dir start_dir{config_.directory.string()};
    if (slot_descriptor_ >= 0) {
      // QEMU shares the slot's lock: the slot is taken exactly as long as this VM runs.
      process_.emplace(process_context_, qemu_binary().string(), arguments(), stdio, start_dir,
                       InheritFd{slot_descriptor_}, CloseInheritedFds{});
    } else {
      process_.emplace(process_context_, qemu_binary().string(), arguments(), stdio, start_dir,
                       CloseInheritedFds{});
    }
    std::fclose(log);
    pid_ = process_->id();

    const auto deadline = Clock::now() + kLaunchTimeout;
    while (Clock::now() < deadline) {
      if (!is_running(*process_)) {
        kill_and_reap(*process_);
        process_.reset();
        std::string log_text = read_text_if_exists(path(kQemuLog));
        if (log_text.find("host forwarding") != std::string::npos) return false;
        throw BackendError(fmt::format("QEMU exited while starting instance '{}' (model '{}'): {}",
                                       config_.instance_name, config_.model.name,
                                       tail_lines(path(kQemuLog), 10)));
      }
      if (QmpClient::try_connect(path(kQmpSocket), milliseconds(2000)).connected()) return true;
      std::this_thread::sleep_for(milliseconds(10));
    }
    kill();
    throw BackendError(
        fmt::format("QEMU for instance '{}' did not open its QMP socket within {} ms",
                    config_.instance_name, kLaunchTimeout.count()));
  }

  QmpClient qmp() const { return QmpClient::connect(path(kQmpSocket), milliseconds(5000)); }

  // This launch as the check for a fooled KVM probe watches it.
  KvmLaunch kvm_launch() {
    return {.guest = fmt::format("instance '{}' (model '{}')", config_.instance_name,
                                 config_.model.name),
            .resumed = resuming_,
            .ssh_port = port_,
            .console = path(kSerialLog),
            .qemu_log = path(kQemuLog),
            .running = [this] { return alive(); },
            .qemu_status = [this] { return qemu_status(); },
            .ping_agent = [this](milliseconds timeout) { agent_exchange("ping\n", timeout); },
            .kill = [this] { kill(); }};
  }

  std::string qemu_status() {
    try {
      QmpClient client = QmpClient::try_connect(path(kQmpSocket), milliseconds(2000));
      return client.connected() ? client.execute("query-status").value("status", "") : "";
    } catch (const BackendError&) {
      return "";
    }
  }

  // The probe was fooled, and this host now uses TCG: starts the guest once more.
  void restart_under_tcg() {
    accelerator_ = "tcg";
    if (resuming_) {
      // The warm image holds a KVM guest, not one for TCG: boot the model's disk afresh.
      config_.warm_image.clear();
      resuming_ = false;
      warm_restored_ = true;
      create_disk();
    }
    start_process();
  }

  // Starts QEMU on the warm image and loads its saved memory state. WarmResumeError, the VM
  // stopped, when either fails; the image is at fault when QEMU refused its state (and said so),
  // not when the host failed the resume (a QMP timeout on a loaded host).
  void resume_warm_image() {
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

  void load_warm_state() {
    QmpClient client = qmp();
    if (!load_state(client, config_.warm_image / kWarmState, memory_in_file(),
                    [&] { return alive(); })) {
      throw BackendError("QEMU exited while loading it, or the load outran its timeout");
    }
    spdlog::debug("instance {}: warm state loaded", config_.instance_name);
    // The image was saved from a stopped VM, so it arrives paused.
    client.execute("cont");
    warm_restored_ = true;
  }

  [[nodiscard]] std::string step(const char* what) const {
    return fmt::format("instance '{}': {}", config_.instance_name, what);
  }

  [[nodiscard]] nlohmann::json warm_image_facts(bool mapped) const {
    return {{"qemu_version", qemu_version()},
            {"machine_type", machine_type()},
            {"accelerator", accelerator_},
            {"memory", to_string(mapped ? WarmMemory::Mapped : WarmMemory::Streamed)}};
  }

  bool alive() noexcept {
    if (process_) return is_running(*process_);
    return is_our_qemu(pid_, config_.directory);
  }

  bool wait_for_exit(milliseconds timeout) noexcept {
    const auto deadline = Clock::now() + timeout;
    while (Clock::now() < deadline) {
      if (!alive()) {
        if (process_) {
          kill_and_reap(*process_);
          process_.reset();
        }
        return true;
      }
      std::this_thread::sleep_for(milliseconds(20));
    }
    return false;
  }

  MachineConfig config_;
  // Each machine its own: Boost.Process re-initialises the launching io_context in the forked
  // child, which deadlocks there if another thread held one of its locks at the fork (ten
  // instances started at once did). Declared before process_, which refers to it.
  boost::asio::io_context process_context_;
  std::optional<bp::process> process_;
  int port_ = 0;
  int pid_ = 0;
  std::string accelerator_;
  bool warm_restored_ = false;  // a warm clone's image has been resumed once
  bool resuming_ = false;       // the current launch resumes the warm image
  int slot_descriptor_ = -1;    // the VM slot of the current launch (-1: none), handed to QEMU
};

class QemuBackend final : public Backend {
 public:
  [[nodiscard]] std::string name() const override { return "qemu"; }
  [[nodiscard]] Capabilities capabilities() const override {
    return {.warm_images = true,
            .export_disk = true,
            .private_segments = true,
            .why_no_warm_images = {}};
  }
  std::unique_ptr<Machine> machine(const MachineConfig& config,
                                   const nlohmann::json& saved) override {
    return std::make_unique<QemuMachine>(config, saved);
  }

  std::string warm_fingerprint(const MachineConfig& config) override {
    const Model& model = config.model;
    std::string fingerprint = fmt::format("{}\nmodel {}\n", qemu_version(), model.sha256);
    if (model.boot.kind == BootSpec::Kind::Kernel) {
      fingerprint += fmt::format("kernel {}\ninitrd {}\n", kept_sha256(model.boot.kernel),
                                 model.boot.initrd.empty() ? "" : kept_sha256(model.boot.initrd));
    }
    return fingerprint + QemuMachine(config, nlohmann::json()).hardware_signature();
  }
};

}  // namespace

std::unique_ptr<Backend> make_qemu_backend() { return std::make_unique<QemuBackend>(); }

}  // namespace vmfest::detail::qemu

VMFEST_REGISTER_BACKEND(qemu, &vmfest::detail::qemu::make_qemu_backend);
