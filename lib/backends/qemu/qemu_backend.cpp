#include "qemu_backend.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <optional>
#include <thread>

#include <boost/process/v2/process.hpp>
#include <boost/process/v2/start_dir.hpp>
#include <boost/process/v2/stdio.hpp>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "../../src/files.h"
#include "../../src/subprocess.h"
#include "accelerator.h"
#include "qmp_client.h"
#include "vmfest/error.h"

namespace vmfest::detail::qemu {
namespace fs = std::filesystem;
namespace bp = boost::process::v2;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

namespace {

constexpr const char* kDisk = "disk.qcow2";
constexpr const char* kSerialLog = "serial.log";
constexpr const char* kQemuLog = "qemu.log";
constexpr const char* kQmpSocket = "qmp.sock";
constexpr const char* kPidFile = "qemu.pid";
constexpr int kPortAttempts = 5;
constexpr milliseconds kLaunchTimeout{15000};
constexpr milliseconds kProbeTimeout{8000};

const fs::path& qemu_binary() {
  static const fs::path path = [] {
    if (const char* custom = std::getenv("VMFEST_QEMU"); custom != nullptr && *custom != '\0') {
      return fs::path(custom);
    }
    return find_program("qemu-system-x86_64", "qemu-system-x86");
  }();
  return path;
}

const fs::path& qemu_img() {
  static const fs::path path = find_program("qemu-img", "qemu-utils");
  return path;
}

// A port the kernel considers free on 127.0.0.1 right now. Another process may take it before
// QEMU binds it; launch() retries with a new one when QEMU reports that.
int pick_free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw BackendError("cannot create a socket to find a free port");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t length = sizeof(addr);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &length) != 0) {
    ::close(fd);
    throw BackendError("cannot find a free TCP port on 127.0.0.1");
  }
  ::close(fd);
  return ntohs(addr.sin_port);
}

// True while `pid` is a live (non-zombie) process whose working directory is `directory`: the
// check that keeps us from signalling an unrelated process that reused the pid.
bool is_our_qemu(int pid, const fs::path& directory) {
  if (pid <= 0) return false;
  std::error_code error;
  fs::path cwd = fs::read_symlink(fmt::format("/proc/{}/cwd", pid), error);
  if (error || cwd != directory) return false;
  std::string stat = read_text_if_exists(fmt::format("/proc/{}/stat", pid));
  auto close_paren = stat.rfind(')');
  return close_paren != std::string::npos && close_paren + 2 < stat.size() &&
         stat[close_paren + 2] != 'Z';
}

class QemuMachine final : public Machine {
 public:
  QemuMachine(MachineConfig config, const nlohmann::json& saved) : config_(std::move(config)) {
    if (saved.is_object()) {
      port_ = saved.value("port", 0);
      pid_ = saved.value("pid", 0);
      accelerator_ = saved.value("accelerator", "");
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
    if (config_.full_copy) {
      run_tool_checked(qemu_img(),
                       {"convert", "-f", config_.model.format, "-O", "qcow2",
                        config_.model.disk.string(), disk.string()},
                       fmt::format("copying model '{}' for permanent VM '{}'", config_.model.name,
                                   config_.instance_name));
    } else {
      run_tool_checked(qemu_img(),
                       {"create", "-q", "-f", "qcow2", "-b", config_.model.disk.string(), "-F",
                        config_.model.format, disk.string()},
                       fmt::format("cloning model '{}' for instance '{}'", config_.model.name,
                                   config_.instance_name));
    }
  }

  void launch() override {
    const fs::path kernel =
        config_.model.boot.kind == BootSpec::Kind::Kernel ? config_.model.boot.kernel : fs::path();
    AcceleratorChoice choice =
        choose_accelerator(qemu_binary(), config_.cache_directory, kernel, kProbeTimeout);
    log_choice_once(choice);
    accelerator_ = choice.name;

    if (config_.ssh_host_port != 0) {
      port_ = config_.ssh_host_port;
      if (spawn()) return;
      throw BackendError(fmt::format("instance '{}': host port {} for SSH is already in use",
                                     config_.instance_name, port_));
    }
    for (int attempt = 1; attempt <= kPortAttempts; ++attempt) {
      port_ = pick_free_port();
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
    spdlog::warn("instance {}: guest did not power off within {} ms after the ACPI button; "
                 "stopping it hard",
                 config_.instance_name, grace.count());
    kill();
  }

  void kill() noexcept override {
    if (process_) {
      kill_and_reap(*process_);
      process_.reset();
    } else if (is_our_qemu(pid_, config_.directory)) {
      ::kill(pid_, SIGKILL);
      wait_for_exit(milliseconds(5000));
    }
  }

  InstanceState state() override {
    if (!alive()) return InstanceState::Stopped;
    QmpClient client = QmpClient::try_connect(path(kQmpSocket), milliseconds(5000));
    if (!client.connected()) return alive() ? InstanceState::Running : InstanceState::Stopped;
    std::string status = client.execute("query-status").value("status", "");
    if (status == "running") return InstanceState::Running;
    if (status == "shutdown" || status == "guest-panicked" || status == "internal-error") {
      return InstanceState::Stopped;
    }
    return InstanceState::Paused;
  }

  void remove() override {}

  [[nodiscard]] ssh::Endpoint ssh_endpoint() const override {
    return ssh::Endpoint{"127.0.0.1", port_, config_.model.ssh_user};
  }
  [[nodiscard]] fs::path console_log() const override { return path(kSerialLog); }
  [[nodiscard]] std::string accelerator() const override { return accelerator_; }
  [[nodiscard]] nlohmann::json saved_state() const override {
    return {{"port", port_}, {"pid", pid_}, {"accelerator", accelerator_}};
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

  std::vector<std::string> arguments() const {
    const Model& model = config_.model;
    std::vector<std::string> args = {
        "-name", config_.instance_name,
        "-machine", "pc", "-accel", accelerator_,
        "-m", std::to_string(config_.profile.memory_mib),
        "-smp", std::to_string(config_.profile.cpus),
        "-nodefaults", "-no-user-config", "-display", "none"};
    if (model.boot.kind == BootSpec::Kind::Kernel) {
      args.insert(args.end(), {"-kernel", model.boot.kernel.string()});
      if (!model.boot.initrd.empty()) args.insert(args.end(), {"-initrd", model.boot.initrd.string()});
      args.insert(args.end(), {"-append", model.boot.cmdline});
    }
    args.insert(args.end(),
                {"-drive", fmt::format("file={},if=none,id=disk0,format=qcow2", kDisk),
                 "-device", "virtio-blk-pci,drive=disk0,id=vblk0",
                 "-drive",
                 fmt::format("file={},if=none,id=seed0,format=raw,readonly=on",
                             config_.seed_image.string()),
                 "-device", "virtio-blk-pci,drive=seed0,id=vblk1",
                 "-netdev",
                 fmt::format("user,id=net0,hostfwd=tcp:127.0.0.1:{}-:{}", port_, model.ssh_port),
                 "-device", "virtio-net-pci,netdev=net0,id=vnet0",
                 "-device", "virtio-rng-pci,id=rng0",
                 "-serial", fmt::format("file:{}", kSerialLog),
                 "-qmp", fmt::format("unix:{},server=on,wait=off", kQmpSocket),
                 "-pidfile", kPidFile});
    if (config_.private_nic) {
      const PrivateNic& nic = *config_.private_nic;
      args.insert(args.end(),
                  {"-netdev",
                   fmt::format("dgram,id=net1,local.type=unix,local.path={},remote.type=unix,"
                               "remote.path={}",
                               nic.port_socket.string(), nic.hub_socket.string()),
                   "-device", fmt::format("virtio-net-pci,netdev=net1,id=vnet1,mac={}", nic.mac)});
    }
    return args;
  }

  // Starts qemu; true once its QMP socket answers, false when the SSH port was taken meanwhile.
  bool spawn() {
    fs::remove(path(kQmpSocket));
    // QEMU binds the private card's port socket and leaves it behind when it exits.
    if (config_.private_nic) fs::remove(config_.private_nic->port_socket);
    FILE* log = std::fopen(path(kQemuLog).c_str(), "w");
    if (log == nullptr) {
      throw BackendError(fmt::format("cannot write {}", path(kQemuLog).string()));
    }
    // Relative file names and the instance folder as working directory keep the QMP socket path
    // short (unix socket paths are limited to ~107 bytes) and mark the process as ours (/proc/cwd).
    process_.emplace(process_context(), qemu_binary().string(), arguments(),
                     bp::process_stdio{nullptr, log, log},
                     bp::process_start_dir{config_.directory.string()});
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

  QmpClient qmp() const { return QmpClient::connect(path(kQmpSocket), milliseconds(5000)); }

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
  std::optional<bp::process> process_;
  int port_ = 0;
  int pid_ = 0;
  std::string accelerator_;
};

class QemuBackend final : public Backend {
 public:
  [[nodiscard]] std::string name() const override { return "qemu"; }
  std::unique_ptr<Machine> machine(const MachineConfig& config,
                                   const nlohmann::json& saved) override {
    return std::make_unique<QemuMachine>(config, saved);
  }
};

}  // namespace

std::unique_ptr<Backend> make_qemu_backend() { return std::make_unique<QemuBackend>(); }

}  // namespace vmfest::detail::qemu
