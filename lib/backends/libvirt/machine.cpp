// The libvirt machine (machine.h): its disk and seed volumes, its launch (a cold boot or the host's
// warm image), its lifecycle, its console and its agent channel; its saves are machine_warm.cpp's.

#include "machine.h"

#include <unistd.h>

#include <exception>
#include <future>
#include <mutex>
#include <optional>
#include <random>
#include <string_view>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "accelerator.h"
#include "agent_channel.h"
#include "console_log.h"
#include "domain_xml.h"
#include "hosts.h"
#include "leases.h"
#include "libvirt_api.h"
#include "naming.h"
#include "placement.h"
#include "ssh_multiplexer.h"
#include "storage.h"
#include "vmfest/error.h"
#include "vmfest/home.h"
#include "vmfest/internal/base.h"
#include "warm.h"

namespace vmfest::detail::libvirt {
namespace fs = std::filesystem;
using std::chrono::milliseconds;

// TCG's translation cache per VM: VMFEST_TCG_TB_SIZE, else the QEMU backend's 256 MiB (QEMU's
// own default is 1 GiB per VM).
int tb_size_mib() {
  return static_cast<int>(
      whole_number_setting("VMFEST_TCG_TB_SIZE", 1, 65536, "of MiB").value_or(256));
}

// The model's own kernel, else the default model's: what a host's KVM is tested with.
fs::path probe_kernel(const Model& model) {
  return model.boot.kind == BootSpec::Kind::Kernel ? model.boot.kernel : default_probe_kernel();
}

namespace {

constexpr int kLaunchAttempts = 5;  // each with another forward port, should one be taken
constexpr milliseconds kStatePoll{100};

// A remote host's ports cannot be probed from here: a random one, retried if QEMU finds it taken.
int random_remote_port() {
  static std::mt19937 random{std::random_device{}()};
  return std::uniform_int_distribution<int>(20000, 60999)(random);
}

InstanceState to_instance_state(int state) {
  switch (state) {
    case VIR_DOMAIN_PAUSED:
    case VIR_DOMAIN_PMSUSPENDED:
      return InstanceState::Paused;
    case VIR_DOMAIN_SHUTOFF:
    case VIR_DOMAIN_CRASHED:
      return InstanceState::Stopped;
    default:
      return InstanceState::Running;
  }
}

}  // namespace

LibvirtMachine::LibvirtMachine(MachineConfig config, const nlohmann::json& saved)
    : config_(std::move(config)) {
  if (saved.is_object() && saved.contains("domain")) {
    domain_ = saved.value("domain", "");
  } else {
    domain_ =
        home_prefix(Home(config_.directory.parent_path().parent_path())) + config_.instance_name;
  }
  if (saved.is_object() && saved.contains("uri")) {
    host_ = parse_host_uri(saved.value("uri", ""));
    port_ = saved.value("port", 0);
    domain_type_ = saved.value("domain_type", domain_type_);
    outlives_owner_ = saved.value("outlives_owner", false);
    warm_restored_ = saved.value("warm_restored", false);
    remember_instance(config_, host_);  // its warm key names this host (warm_image_host)
  }
}

void LibvirtMachine::create_disk() {
  outlives_owner_ = config_.outlives_owner;
  const Model& model = config_.model;
  // A warm clone runs where its image is; another instance where there is room.
  const std::optional<WarmVolumes> image =
      config_.warm_image.empty() ? std::nullopt
                                 : std::optional(read_warm_volumes(config_.warm_image));
  host_ = image ? parse_host_uri(image->uri) : place_instance(config_);
  remember_instance(config_, host_);
  ssh_multiplexer(host_);  // it logs in while the domain starts
  const StoragePool& pool = storage();
  domain_type_ = host_accelerator(connection(), pool, host_, probe_kernel(model)).domain_type;
  // First, so that no volume of it is ever without a live lease or this home's record.
  if (!outlives_owner_ && !lease_) lease_.emplace(pool, host_.uri, domain_);
  if (image) {
    // A pool emptied since (a host's libvirtd set up afresh): launch says the image is gone.
    image_gone_ = !pool.contains(image->base) || !pool.contains(image->state);
    if (image_gone_) return;
    // The clone's copy of the state is made on the host meanwhile (launch waits for it).
    state_copy_ = std::async(std::launch::async, [&pool, volumes = *image, this] {
      return std::make_unique<StateCopy>(pool, volumes, domain_ + kStateSuffix);
    });
    pool.remove(disk_volume());  // this instance's cold disk, made before its image was ready
    pool.create_overlay(disk_volume(), image->base, "qcow2");
    pool.remove(seed_volume());
    pool.upload(seed_volume(), config_.seed_image);
    return;
  }
  const std::string base = pool.upload_cached(model_disk_volume_name(model), model.disk);
  pool.remove(disk_volume());  // a warm clone's, booted afresh after its resume failed
  if (config_.full_copy) {
    pool.create_copy(disk_volume(), base);
  } else {
    pool.create_overlay(disk_volume(), base, model.format);
  }
  pool.remove(seed_volume());  // left by an earlier create of the same name that died
  pool.upload(seed_volume(), config_.seed_image);
}

void LibvirtMachine::launch(const VmSlot* /*slot*/) {
  DomainSpec spec = domain_spec();
  // The image is resumed once: a later start boots the clone's disk.
  if (!config_.warm_image.empty() && !warm_restored_) {
    if (image_gone_) {
      throw WarmResumeError(
          fmt::format("instance '{}': the volumes of warm image {} are gone "
                      "from {}",
                      config_.instance_name, config_.warm_image.string(), host_.uri),
          true);
    }
    resume_warm_image(spec);
    return;
  }
  resumed_warm_ = false;
  // Owned instances die with this process's connection; detached and permanent ones live on.
  const unsigned flags =
      VIR_DOMAIN_START_PAUSED | (outlives_owner_ ? 0U : unsigned{VIR_DOMAIN_START_AUTODESTROY});
  Domain domain;
  start_within_cap(connection(), storage(), host_, [&] {
    domain = start_with_a_free_port(
        spec, [&] { return virDomainCreateXML(connection(), domain_xml(spec).c_str(), flags); });
  });
  // The readiness check reads this log: a previous boot's lines must not satisfy it.
  console_.reset();
  console_ = std::make_unique<ConsoleLog>(connection(), domain.get(), console_log(), host_.uri);
  if (virDomainResume(domain.get()) < 0) {
    std::string why = last_error();
    close_console();
    try {
      destroy_domain(domain.get(), host_.uri);
    } catch (const BackendError& error) {
      why += fmt::format(" (and it still runs: {})", error.what());
    }
    throw BackendError(
        fmt::format("libvirt: could not run domain '{}' on {}: {}", domain_, host_.uri, why));
  }
  started_here_ = true;
  spdlog::info("vmfest: instance '{}' runs as libvirt domain '{}' on {} ({})",
               config_.instance_name, domain_, host_.uri, accelerator());
}

DomainSpec LibvirtMachine::domain_spec() {
  const StoragePool& pool = storage();
  DomainSpec spec;
  spec.name = domain_;
  spec.domain_type = domain_type_;
  spec.emulator = emulator_setting();
  spec.memory_mib = config_.profile.memory_mib;
  spec.cpus = config_.profile.cpus;
  spec.tb_size_mib = tb_size_mib();
  spec.pool = pool.name();
  spec.disk_volume = disk_volume();
  spec.seed_volume = seed_volume();
  const Model& model = config_.model;
  // Uploaded (or found) now: only a running domain keeps them from collection.
  auto boot_file = [&](const fs::path& file, const std::string& part) {
    return pool.path_of(pool.upload_cached(boot_file_volume_name(file, part), file));
  };
  if (model.boot.kind == BootSpec::Kind::Kernel) {
    spec.kernel = boot_file(model.boot.kernel, "kernel");
    if (!model.boot.initrd.empty()) spec.initrd = boot_file(model.boot.initrd, "initrd");
    spec.cmdline = model.boot.cmdline;
  }
  spec.guest_ssh_port = model.ssh_port;
  spec.vmfest_home = config_.directory.parent_path().parent_path().string();
  spec.instance_name = config_.instance_name;
  spec.owner = fmt::format("{}:{}", host_name(), ::getpid());
  spec.uri = host_.uri;
  return spec;
}

Domain LibvirtMachine::start_with_a_free_port(DomainSpec& spec,
                                              const std::function<virDomainPtr()>& start) {
  for (int attempt = 1;; ++attempt) {
    port_ = config_.ssh_host_port != 0 ? config_.ssh_host_port
            : host_.local()            ? free_loopback_port()
                                       : random_remote_port();
    spec.ssh_forward_port = port_;
    Domain domain(start());
    if (domain) return domain;
    const std::string why = last_error();
    const bool port_taken = why.find("host forwarding") != std::string::npos;
    if (!port_taken || attempt == kLaunchAttempts || config_.ssh_host_port != 0) {
      fail(fmt::format("libvirt: could not start domain '{}' of instance '{}'", domain_,
                       config_.instance_name),
           host_.uri);
    }
    spdlog::debug("vmfest: instance '{}': port {} is taken on {}; trying another",
                  config_.instance_name, port_, host_.uri);
  }
}

void LibvirtMachine::expect_ok(const std::string& reply, const char* request) const {
  if (reply != "ok") {
    throw BackendError(fmt::format("instance '{}': the guest agent answered '{}' to '{}'",
                                   config_.instance_name, reply, request));
  }
}

void LibvirtMachine::power_down(milliseconds grace) {
  auto domain = find();
  if (!domain || state_of(domain->get()) == InstanceState::Stopped) return;
  close_console();  // the guest ends the domain itself now
  agent_.reset();
  // A paused guest cannot see the power button.
  if (state_of(domain->get()) == InstanceState::Paused) virDomainResume(domain->get());
  if (virDomainShutdown(domain->get()) == 0) {
    if (poll_until(grace, kStatePoll, [&] { return state() == InstanceState::Stopped; })) return;
    warn_power_button_ignored(config_.instance_name, grace);
  }
  kill();
}

void LibvirtMachine::kill() noexcept {
  close_console();
  agent_.reset();
  if (host_.uri.empty()) return;  // never created: no domain anywhere
  try {
    if (auto domain = find()) destroy_domain(domain->get(), host_.uri);
  } catch (const std::exception& error) {
    spdlog::warn("vmfest: could not stop libvirt domain '{}' of instance '{}': {}", domain_,
                 config_.instance_name, error.what());
  }
}

InstanceState LibvirtMachine::state() {
  if (host_.uri.empty()) return InstanceState::Stopped;  // never created
  auto domain = find();
  return domain ? state_of(domain->get()) : InstanceState::Stopped;
}

void LibvirtMachine::remove() {
  forget_instance(config_);
  if (host_.uri.empty()) return;  // never created
  kill();
  const StoragePool& pool = storage();
  for (const std::string& volume :
       {disk_volume(), seed_volume(), domain_ + kStateSuffix, domain_ + kExportSuffix}) {
    remove_once_allocated(pool, volume);
  }
  if (lease_) {
    lease_.reset();
  } else {
    remove_lease_markers(pool, pool.volume_names(), domain_);  // its owner's, who died
  }
}

std::string LibvirtMachine::agent_exchange(const std::string& request, milliseconds timeout) {
  if (!agent_) {
    auto domain = find();
    if (!domain) {
      throw StateError(fmt::format("instance '{}': libvirt domain '{}' on {} is not running",
                                   config_.instance_name, domain_, host_.uri));
    }
    agent_ = std::make_unique<AgentChannel>(connection(), domain->get(), host_.uri,
                                            config_.instance_name);
  }
  return agent_->exchange(request, timeout);
}

[[nodiscard]] ssh::Endpoint LibvirtMachine::ssh_endpoint() const {
  if (host_.local()) return ssh::Endpoint{"127.0.0.1", port_, config_.model.ssh_user, ""};
  return ssh::Endpoint{host_.host, port_, config_.model.ssh_user,
                       host_.jump_command(port_, ssh_multiplexer(host_))};
}

[[nodiscard]] std::string LibvirtMachine::accelerator() const {
  return domain_type_ == "kvm" ? "kvm" : "tcg";
}

[[nodiscard]] nlohmann::json LibvirtMachine::saved_state() const {
  return {{"uri", host_.uri},
          {"domain", domain_},
          {"port", port_},
          {"domain_type", domain_type_},
          {"outlives_owner", outlives_owner_},
          {"warm_restored", warm_restored_}};
}

void LibvirtMachine::detach() noexcept {
  close_console();
  if (outlives_owner_) agent_.reset();  // its guard is off
  if (started_here_ && !outlives_owner_ && find_or_null()) {
    // The domain dies with the connection that started it: keep that open for as long as this
    // process lives, so the VM outlives its handle as detach promises, though not the process.
    spdlog::warn(
        "vmfest: instance '{}' (libvirt) lives only as long as this process: libvirt "
        "stops a test's VMs when it exits; create it detached to keep it",
        config_.instance_name);
    static_cast<void>(connection_.release());
    if (lease_) lease_->keep_until_exit();
    static_cast<void>(agent_.release());  // a warm clone lives as long as its channel
  }
}

std::string LibvirtMachine::host_name() {
  std::array<char, 256> name{};
  return ::gethostname(name.data(), name.size() - 1) == 0 ? name.data() : "?";
}

virConnectPtr LibvirtMachine::connection() {
  if (host_.uri.empty()) {
    throw StateError(
        fmt::format("instance '{}' has no libvirt host recorded (its disk was "
                    "never created); `vmfest destroy {}` removes it",
                    config_.instance_name, config_.instance_name));
  }
  if (!connection_) connection_ = connect(host_.uri);
  return connection_.get();
}

const StoragePool& LibvirtMachine::storage() {
  if (!pool_) pool_.emplace(connection(), host_.uri);
  return *pool_;
}

bool LibvirtMachine::find_or_null() noexcept {
  try {
    return find().has_value();
  } catch (const std::exception&) {
    return false;
  }
}

InstanceState LibvirtMachine::state_of(virDomainPtr domain) {
  int state = 0;
  int reason = 0;
  if (virDomainGetState(domain, &state, &reason, 0) < 0) {
    if (last_error_code() == VIR_ERR_NO_DOMAIN) return InstanceState::Stopped;
    fail(fmt::format("libvirt: could not read the state of domain '{}'", domain_), host_.uri);
  }
  return to_instance_state(state);
}

void LibvirtMachine::act(const char* what, int (*call)(virDomainPtr)) {
  auto domain = find();
  if (!domain) {
    throw StateError(
        fmt::format("instance '{}': cannot {} it, libvirt domain '{}' on {} is not "
                    "running",
                    config_.instance_name, what, domain_, host_.uri));
  }
  if (call(domain->get()) < 0) {
    fail(fmt::format("libvirt: could not {} domain '{}'", what, domain_), host_.uri);
  }
}

std::unique_ptr<Machine> make_machine(const MachineConfig& config, const nlohmann::json& saved) {
  return std::make_unique<LibvirtMachine>(config, saved);
}

}  // namespace vmfest::detail::libvirt
