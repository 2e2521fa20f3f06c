#include "qemu_machine.h"

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

}  // namespace

// The probe boots a Linux kernel whatever the model boots from: a disk-booted model's bootloader
// runs under KVMs that hang the kernel it loads.
AcceleratorChoice accelerator_choice(const fs::path& home, const fs::path& model_kernel) {
  const fs::path kernel =
      !model_kernel.empty() ? model_kernel : find_probe_kernel(registered_kernel(home));
  return choose_accelerator(qemu_binary(), accelerator_cache_directory(), kernel, kProbeTimeout);
}

QemuMachine::QemuMachine(MachineConfig config, const nlohmann::json& saved)
    : config_(std::move(config)) {
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

QemuMachine::~QemuMachine() {
  // The process handle would kill qemu in its destructor; the core decides that explicitly.
  detach();
}

fs::path QemuMachine::model_kernel() const {
  const Model& model = config_.model;
  return model.boot.kind == BootSpec::Kind::Kernel ? model.boot.kernel : fs::path();
}

void QemuMachine::create_disk() {
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

void QemuMachine::launch(const VmSlot* slot) {
  slot_descriptor_ = slot != nullptr ? slot->descriptor() : -1;
  AcceleratorChoice choice = accelerator_choice(config_.home, model_kernel());
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

void QemuMachine::start_process() {
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

void QemuMachine::power_down(milliseconds grace) {
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

void QemuMachine::kill() noexcept {
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

InstanceState QemuMachine::state() {
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

namespace {

// An HMP command over QMP; HMP answers in text, trimmed here.
std::string monitor_command(QmpClient client, const std::string& command) {
  std::string answer =
      client.execute("human-monitor-command", {{"command-line", command}}).get<std::string>();
  answer.erase(answer.find_last_not_of(" \r\n") + 1);
  return answer;
}

}  // namespace

void QemuMachine::add_port_forward(int host_port, int guest_port) {
  // Silent when it worked, else it says why ("Could not set up host forwarding rule ...").
  const std::string answer = monitor_command(
      qmp(),
      fmt::format("hostfwd_add {} tcp:127.0.0.1:{}-:{}", kUserNetdev, host_port, guest_port));
  if (!answer.empty()) {
    throw BackendError(
        fmt::format("cannot forward host port {} to guest port {} of instance '{}': QEMU said: {}",
                    host_port, guest_port, config_.instance_name, answer));
  }
}

void QemuMachine::remove_port_forward(int host_port) {
  // "host forwarding rule for tcp:... removed", or "... not found".
  const std::string answer = monitor_command(
      qmp(), fmt::format("hostfwd_remove {} tcp:127.0.0.1:{}", kUserNetdev, host_port));
  if (!answer.ends_with(" removed")) {
    throw BackendError(
        fmt::format("cannot remove the forward of host port {} to instance '{}': "
                    "QEMU said: {}",
                    host_port, config_.instance_name, answer));
  }
}

void QemuMachine::export_disk(const fs::path& destination) {
  // -U: a paused QEMU still holds the image's write lock; the guest writes nothing meanwhile.
  run_tool_checked(
      qemu_img(),
      {"convert", "-U", "-f", "qcow2", "-O", "qcow2", path(kDisk).string(), destination.string()},
      fmt::format("copying the disk of instance '{}'", config_.instance_name));
}

std::string QemuMachine::agent_exchange(const std::string& request, milliseconds timeout) {
  try {
    return exchange_line(path(kAgentSocket), request, timeout);
  } catch (const BackendError& error) {
    throw BackendError(fmt::format(
        "instance '{}': the guest agent did not answer ({}); is vmfest-agent running in the "
        "model?",
        config_.instance_name, error.what()));
  }
}

std::string QemuMachine::hardware_signature() {
  accelerator_ = accelerator_choice(config_.home, model_kernel()).name;
  std::string signature = fmt::format("machine {}\naccelerator {}\nmemory {}\n", machine_type(),
                                      accelerator_, to_string(warm_memory()));
  // Without the segment's card: no warm image has it (see MachineConfig::private_nic).
  const std::vector<std::string> args = arguments(false);
  for (std::size_t i = 0; i + 1 < args.size(); ++i) {
    const std::string& flag = args[i];
    if (flag == "-m" || flag == "-smp" || flag == "-device" || flag == "-append") {
      signature += flag + " " + args[i + 1] + "\n";
    }
  }
  return signature;
}

ssh::Endpoint QemuMachine::ssh_endpoint() const {
  return ssh::Endpoint{"127.0.0.1", port_, config_.model.ssh_user, ""};
}

nlohmann::json QemuMachine::saved_state() const {
  return {{"port", port_},
          {"pid", pid_},
          {"accelerator", accelerator_},
          {"warm_restored", warm_restored_},
          // How the running VM holds its memory, for a handle opened by another process.
          {"resumed_launch", resuming_}};
}

void QemuMachine::detach() noexcept {
  if (process_) {
    process_->detach();
    process_.reset();
  }
}

void QemuMachine::log_choice_once(const AcceleratorChoice& choice) {
  static std::once_flag once;
  std::call_once(once, [&] {
    if (choice.name == "tcg") {
      spdlog::info("vmfest: using TCG: {}", choice.reason);
    } else {
      spdlog::info("vmfest: using KVM: {}", choice.reason);
    }
  });
}

std::vector<std::string> QemuMachine::arguments(bool with_private_nic) const {
  return qemu_arguments(config_,
                        {port_, accelerator_, resuming_, memory_in_file(), memory_in_own_file(),
                         with_private_nic && !resuming_ && !config_.saves_warm_image});
}

bool QemuMachine::spawn() {
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
    process_.emplace(process_context_, qemu_binary().string(), arguments(true), stdio, start_dir,
                     UnblockedSignals{}, InheritFd{slot_descriptor_}, CloseInheritedFds{});
  } else {
    process_.emplace(process_context_, qemu_binary().string(), arguments(true), stdio, start_dir,
                     UnblockedSignals{}, CloseInheritedFds{});
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
  throw BackendError(fmt::format("QEMU for instance '{}' did not open its QMP socket within {} ms",
                                 config_.instance_name, kLaunchTimeout.count()));
}

KvmLaunch QemuMachine::kvm_launch() {
  return {
      .guest = fmt::format("instance '{}' (model '{}')", config_.instance_name, config_.model.name),
      .resumed = resuming_,
      .ssh_port = port_,
      .console = path(kSerialLog),
      .qemu_log = path(kQemuLog),
      .running = [this] { return alive(); },
      .qemu_status = [this] { return qemu_status(); },
      .ping_agent = [this](milliseconds timeout) { agent_exchange("ping\n", timeout); },
      .kill = [this] { kill(); }};
}

std::string QemuMachine::qemu_status() {
  try {
    QmpClient client = QmpClient::try_connect(path(kQmpSocket), milliseconds(2000));
    return client.connected() ? client.execute("query-status").value("status", "") : "";
  } catch (const BackendError&) {
    return "";
  }
}

void QemuMachine::restart_under_tcg() {
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

bool QemuMachine::alive() noexcept {
  if (process_) return is_running(*process_);
  return is_our_qemu(pid_, config_.directory);
}

bool QemuMachine::wait_for_exit(milliseconds timeout) noexcept {
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

}  // namespace vmfest::detail::qemu
