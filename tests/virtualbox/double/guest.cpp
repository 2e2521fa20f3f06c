#include "guest.h"

#include "backends/qemu/qemu_backend.h"
#include "backends/qemu/qmp_client.h"
#include "vmfest/home.h"
#include "vmfest/model.h"

namespace vmfest::vbox_double {
namespace fs = std::filesystem;

namespace {

// File names inside the QEMU backend's machine folder.
constexpr const char* kQemuSerialLog = "serial.log";
constexpr const char* kQemuMonitor = "qmp.sock";

detail::MachineConfig qemu_config(const fs::path& storage, Model model) {
  detail::MachineConfig config;
  config.instance_name = storage.filename().string();
  config.directory = storage;
  config.model = std::move(model);
  config.home = Home::from_environment().root();
  return config;
}

}  // namespace

void Guest::create_disk(const fs::path& storage, const fs::path& base) {
  fs::create_directories(storage);
  Model model;
  model.name = base.filename().string();
  model.disk = base;
  model.format = "vdi";
  detail::qemu::make_qemu_backend()->machine(qemu_config(storage, model), {})->create_disk();
}

Guest::Guest(const GuestSpec& spec) : spec_(spec) {
  Model model;
  model.name = spec.base.filename().string();
  model.disk = spec.base;
  model.format = "vdi";
  model.ssh_port = spec.guest_port;
  detail::MachineConfig config = qemu_config(spec.storage, model);
  config.instance_name = spec.name;
  config.profile =
      Profile{"virtualbox", static_cast<int>(spec.memory_mib), static_cast<int>(spec.cpus)};
  config.seed_image = spec.dvd;
  // As VirtualBox does: the BIOS boots the disk on the controller it is attached to.
  detail::qemu::set_storage_bus(config, spec.bus);
  config.ssh_host_port = spec.host_port;
  qemu_ = detail::qemu::make_qemu_backend()->machine(config, {});
}

Guest::~Guest() { qemu_->kill(); }

void Guest::start() {
  // The serial port's raw file is where QEMU writes its console: the backend reads it there.
  const fs::path console = spec_.storage / kQemuSerialLog;
  fs::remove(console);
  if (!spec_.serial_file.empty()) fs::create_symlink(spec_.serial_file, console);
  qemu_->launch(nullptr);  // VirtualBox's VM, not vmfest's: outside the VM cap
}

void Guest::press_power_button() {
  detail::qemu::QmpClient::connect(spec_.storage / kQemuMonitor, std::chrono::seconds(5))
      .execute("system_powerdown");
}

}  // namespace vmfest::vbox_double
