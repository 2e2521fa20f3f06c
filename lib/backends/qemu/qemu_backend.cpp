#include "qemu_backend.h"

#include <fmt/format.h>

#include "host_checks.h"
#include "host_qemu.h"
#include "qemu_machine.h"
#include "vmfest/internal/base.h"
#include "vmfest/internal/driver.h"
#include "vmfest/model.h"

namespace vmfest::detail::qemu {
namespace {

class QemuBackend final : public Backend {
 public:
  [[nodiscard]] std::string name() const override { return "qemu"; }
  [[nodiscard]] Capabilities capabilities() const override {
    return {.warm_images = true,
            .export_disk = true,
            .private_segments = true,
            .private_nic_after_resume = true,
            .port_forwards = true,
            .how_port_forwards =
                "QEMU's user-mode network takes it at run time (QMP "
                "human-monitor-command hostfwd_add)",
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

  // Only for the backend that starts QEMU VMs here (another one may drive a QEMU elsewhere).
  std::vector<HostCheck> host_checks(const Home& home) override {
    if (default_backend_name() != name()) return {};
    return qemu_host_checks(home.root());
  }
};

}  // namespace

std::unique_ptr<Backend> make_qemu_backend() { return std::make_unique<QemuBackend>(); }

}  // namespace vmfest::detail::qemu

VMFEST_REGISTER_BACKEND(qemu, &vmfest::detail::qemu::make_qemu_backend);
