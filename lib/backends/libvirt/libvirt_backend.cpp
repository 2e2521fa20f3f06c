// The libvirt backend: VMs on the hypervisor hosts of VMFEST_LIBVIRT_URI (this machine's libvirtd
// or remote ones). Everything goes through libvirt's API, so a remote host needs no shared file
// system: models, disks and seeds are volumes of a storage pool there, the console is a libvirt
// stream, and SSH reaches the guest through a forward on the host's 127.0.0.1 (through the host's
// own SSH account when it is remote). A domain of an owned instance dies with its connection
// (VIR_DOMAIN_START_AUTODESTROY); a warm clone, restored from a save image, cannot be started so
// and dies with the guest agent's channel that its owner holds instead (agent_channel.h): a test
// process killed at any moment leaks no VM, only volumes, which a reap deletes: that home's
// through the instance's record, any other runner's when the owner's lease runs out (leases.h,
// reap.h).

#include <array>
#include <cstdlib>

#include <fmt/format.h>

#include "accelerator.h"
#include "hosts.h"
#include "libvirt_api.h"
#include "machine.h"
#include "placement.h"
#include "reap.h"
#include "storage.h"
#include "vmfest/error.h"
#include "vmfest/home.h"
#include "vmfest/internal/base.h"
#include "vmfest/internal/driver.h"

namespace vmfest::detail::libvirt {
namespace {

class LibvirtBackend final : public Backend {
 public:
  // Each configured host answers, or why not (the connection's error says what to check).
  std::vector<HostCheck> host_checks(const Home& /*home*/) override {
    if (!in_use()) return {};
    std::vector<HostCheck> checks;
    for (const HostUri& host : configured_hosts()) {
      const std::string name = "libvirt " + host.uri;
      try {
        Connection connection = connect(host.uri);
        unsigned long version = 0;
        virConnectGetLibVersion(connection.get(), &version);
        checks.push_back({name, HostCheck::Verdict::Ok,
                          fmt::format("reachable (libvirt {}.{}.{})", version / 1000000,
                                      version / 1000 % 1000, version % 1000),
                          ""});
        const StoragePool pool(connection.get(), host.uri);
        const HostAccelerator accel =
            host_accelerator(connection.get(), pool, host, default_probe_kernel());
        const bool kvm = accel.domain_type == "kvm";
        checks.push_back(
            {name + " accelerator",
             kvm || accel.forced ? HostCheck::Verdict::Ok : HostCheck::Verdict::Warn,
             fmt::format("{}: {}", kvm ? "KVM" : "TCG", accel.reason),
             kvm || accel.forced ? "" : "give the host a working KVM for fast guests"});
      } catch (const Error& error) {
        checks.push_back({name, HostCheck::Verdict::Fail, error.what(),
                          fmt::format("`virsh -c '{}' version` shows the problem", host.uri)});
      }
    }
    return checks;
  }

  [[nodiscard]] std::string name() const override { return "libvirt"; }
  // The default backend, or given its hosts: otherwise this backend asks no libvirtd anything.
  [[nodiscard]] bool in_use() const {
    return default_backend_name() == name() || std::getenv("VMFEST_LIBVIRT_URI") != nullptr;
  }
  std::unique_ptr<Machine> machine(const MachineConfig& config,
                                   const nlohmann::json& saved) override {
    return make_machine(config, saved);
  }
  // Warm images are save images in the host's pool (warm.h); an instance's disk is exported through
  // a copy there. No private segments: vmfest's segment hub is a unix datagram socket on this
  // machine.
  [[nodiscard]] Capabilities capabilities() const override {
    Capabilities capabilities;
    capabilities.warm_images = true;
    capabilities.export_disk = true;
    capabilities.runs_vms_here = false;
    return capabilities;
  }

  // The host the image is made on and resumed on (each host its own: warm_image_host), what runs
  // guests there, the pool that holds the image (a pool defined afresh holds none), the domain's
  // hardware and the model's files.
  std::string warm_fingerprint(const MachineConfig& config) override {
    const HostUri host = warm_image_host(config);
    Connection connection = connect(host.uri);
    unsigned long hypervisor = 0;
    unsigned long library = 0;
    if (virConnectGetVersion(connection.get(), &hypervisor) < 0 ||
        virConnectGetLibVersion(connection.get(), &library) < 0) {
      fail("libvirt: could not read the host's versions", host.uri);
    }
    const StoragePool pool(connection.get(), host.uri);
    std::array<char, VIR_UUID_STRING_BUFLEN> pool_uuid{};
    if (virStoragePoolGetUUIDString(pool.handle(), pool_uuid.data()) < 0) {
      fail(fmt::format("libvirt: could not read the UUID of pool '{}'", pool.name()), host.uri);
    }
    const Model& model = config.model;
    const std::string accelerator =
        host_accelerator(connection.get(), pool, host, probe_kernel(model)).domain_type;
    std::string fingerprint = fmt::format(
        "libvirt host {}\nqemu {}\nlibvirt {}\npool {}\nmachine pc\naccelerator {}\ntb-size "
        "{}\nmodel "
        "{}\n",
        host.uri, hypervisor, library, pool_uuid.data(), accelerator, tb_size_mib(), model.sha256);
    if (model.boot.kind == BootSpec::Kind::Kernel) {
      fingerprint += fmt::format(
          "kernel {}\ninitrd {}\ncmdline {}\n", boot_file_volume_name(model.boot.kernel, "kernel"),
          model.boot.initrd.empty() ? "" : boot_file_volume_name(model.boot.initrd, "initrd"),
          model.boot.cmdline);
    }
    return fingerprint;
  }

  // Only where the libvirt backend is in use: a reap must not knock on a libvirtd nobody asked for.
  std::vector<std::string> remove_orphans(const Home& home) override {
    if (!in_use()) return {};
    std::vector<std::string> removed;
    for (const HostUri& host : configured_hosts()) {
      for (std::string& what : reap_host(host, home)) removed.push_back(std::move(what));
    }
    return removed;
  }
};

std::unique_ptr<Backend> make_libvirt_backend() { return std::make_unique<LibvirtBackend>(); }

}  // namespace
}  // namespace vmfest::detail::libvirt

VMFEST_REGISTER_BACKEND(libvirt, &vmfest::detail::libvirt::make_libvirt_backend);
