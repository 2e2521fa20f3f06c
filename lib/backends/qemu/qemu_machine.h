// One QEMU VM of the QEMU backend: qemu-system-x86_64 started with Boost.Process in the instance's
// folder, driven over QMP. Its lifecycle lives in qemu_machine.cpp, its warm images (saving the
// guest, resuming it in a clone, and where its memory lives meanwhile) in qemu_machine_warm.cpp.
#pragma once

#include <chrono>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/process/v2/process.hpp>
#include <nlohmann/json.hpp>

#include "accelerator.h"
#include "command_line.h"
#include "qmp_client.h"
#include "vmfest/internal/driver.h"

namespace vmfest::detail::qemu {

inline constexpr const char* kQemuLog = "qemu.log";
// A warm image's files (beside kMemoryFile and kMemoryInState, see command_line.h).
inline constexpr const char* kWarmBase = "base.qcow2";
inline constexpr const char* kWarmState = "state";

// The accelerator a VM of `home` gets: KVM or TCG as decided for this host (choose_accelerator),
// probed with `model_kernel`, or without one (a disk-booted model) another Linux kernel.
AcceleratorChoice accelerator_choice(const std::filesystem::path& home,
                                     const std::filesystem::path& model_kernel);

class QemuMachine final : public Machine {
 public:
  QemuMachine(MachineConfig config, const nlohmann::json& saved);
  ~QemuMachine() override;

  void create_disk() override;
  void launch(const VmSlot* slot) override;
  void pause() override { qmp().execute("stop"); }
  void resume() override { qmp().execute("cont"); }
  void power_down(std::chrono::milliseconds grace) override;
  void kill() noexcept override;
  InstanceState state() override;
  void remove() override {}
  void export_disk(const std::filesystem::path& destination) override;
  nlohmann::json save_warm_image(const std::filesystem::path& image_directory) override;
  nlohmann::json save_warm_image_of(const Model& model,
                                    const std::filesystem::path& image_directory) override;
  [[nodiscard]] bool warm_image_copies_memory() const override;
  std::string agent_exchange(const std::string& request,
                             std::chrono::milliseconds timeout) override;
  [[nodiscard]] bool resumed_warm() const override { return resuming_; }
  // QEMU's user-mode network takes more forwards while it runs: HMP's hostfwd_add over QMP.
  void add_port_forward(int host_port, int guest_port) override;
  void remove_port_forward(int host_port) override;
  // What a saved guest depends on: machine type, accelerator, where its memory lives, memory
  // size, CPUs, kernel command line and the ordered device list (QEMU refuses state from other
  // hardware, and would happily resume it on another memory mode).
  [[nodiscard]] std::string hardware_signature();
  [[nodiscard]] ssh::Endpoint ssh_endpoint() const override;
  [[nodiscard]] std::filesystem::path console_log() const override { return path(kSerialLog); }
  [[nodiscard]] std::string accelerator() const override { return accelerator_; }
  [[nodiscard]] nlohmann::json saved_state() const override;
  void detach() noexcept override;

 private:
  [[nodiscard]] std::filesystem::path path(const char* file) const {
    return config_.directory / file;
  }
  static void log_choice_once(const AcceleratorChoice& choice);
  // The model's kernel when it boots one, else empty (see accelerator_choice).
  [[nodiscard]] std::filesystem::path model_kernel() const;
  // Starts QEMU, retrying on another host port for SSH should another process take it first.
  void start_process();
  // Starts qemu; true once its QMP socket answers, false when the SSH port was taken meanwhile.
  bool spawn();
  // `with_private_nic`: the segment's card as a launch has it (hardware_signature leaves it out).
  std::vector<std::string> arguments(bool with_private_nic) const;
  QmpClient qmp() const {
    return QmpClient::connect(path(kQmpSocket), std::chrono::milliseconds(5000));
  }
  // This launch as the check for a fooled KVM probe watches it.
  KvmLaunch kvm_launch();
  std::string qemu_status();
  // The probe was fooled, and this host now uses TCG: starts the guest once more.
  void restart_under_tcg();
  bool alive() noexcept;
  bool wait_for_exit(std::chrono::milliseconds timeout) noexcept;

  // ---- qemu_machine_warm.cpp ----
  // The guest's memory is a file (see kMemoryFile): in a boot that becomes a warm image, and in
  // a clone resuming one, when this QEMU can leave such memory out of the saved state.
  [[nodiscard]] bool memory_in_file() const;
  // The guest's RAM is a file of this VM's own, mapped shared, which a save keeps as the image's
  // memory (see LaunchSettings): a boot that becomes a warm image, and a layer build on an image
  // whose memory is in its file (a copy of it).
  [[nodiscard]] bool memory_in_own_file() const;
  // Starts QEMU on the warm image and loads its saved memory state. WarmResumeError, the VM
  // stopped, when either fails; the image is at fault when QEMU refused its state (and said so),
  // not when the host failed the resume (a QMP timeout on a loaded host).
  void resume_warm_image();
  void load_warm_state();
  // Completes a mapped image whose state holds the guest's private memory: the memory file its
  // clones map is left empty (holes), and the marker says a layer build must map it privately.
  nlohmann::json memory_in_state_facts(const std::filesystem::path& image_directory);
  [[nodiscard]] nlohmann::json warm_image_facts(bool mapped) const;
  [[nodiscard]] std::string step(const char* what) const;

  MachineConfig config_;
  // Each machine its own: Boost.Process re-initialises the launching io_context in the forked
  // child, which deadlocks there if another thread held one of its locks at the fork (ten
  // instances started at once did). Declared before process_, which refers to it.
  boost::asio::io_context process_context_;
  std::optional<boost::process::v2::process> process_;
  int port_ = 0;
  int pid_ = 0;
  std::string accelerator_;
  bool warm_restored_ = false;  // a warm clone's image has been resumed once
  bool resuming_ = false;       // the current launch resumes the warm image
  int slot_descriptor_ = -1;    // the VM slot of the current launch (-1: none), handed to QEMU
};

}  // namespace vmfest::detail::qemu
