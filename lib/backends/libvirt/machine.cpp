// A libvirt domain as a vmfest Machine: its disk and seed volumes, its launch (a cold boot or the
// host's warm image), its lifecycle, its console and its agent channel (see libvirt_backend.cpp
// for what the backend guarantees).

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
#include "disk_copy.h"
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

constexpr const char* kConsoleLog = "serial.log";
constexpr int kLaunchAttempts = 5;  // each with another forward port, should one be taken
constexpr milliseconds kStatePoll{100};

constexpr std::chrono::seconds kAgentTimeout{10};

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

class LibvirtMachine final : public Machine {
 public:
  LibvirtMachine(MachineConfig config, const nlohmann::json& saved) : config_(std::move(config)) {
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

  void create_disk() override {
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

  // The VM runs on the libvirt host, not as our child: it takes room under that host's cap.
  void launch(const VmSlot* /*slot*/) override {
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

  DomainSpec domain_spec() {
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

  // Starts the domain through `start` (a create or a restore of `spec`), with another forward
  // port should QEMU find one taken. Throws, with libvirt's reason, when it does not start.
  Domain start_with_a_free_port(DomainSpec& spec, const std::function<virDomainPtr()>& start) {
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

  // Restores the warm image as this instance's domain, running at once: its agent is guarded from
  // the save on, so it waits for this process to take the channel (a few seconds of grace), and a
  // process killed at any moment from here leaves a guest that powers itself off.
  void resume_warm_image(DomainSpec& spec) {
    Domain domain;
    // A full host is no fault of the image: only what fails inside the room it got is.
    start_within_cap(connection(), storage(), host_, [&] {
      try {
        const WarmVolumes image = read_warm_volumes(config_.warm_image);
        // Made by create_disk, or now when another process created the instance; removed once
        // the domain runs, or its restore failed.
        const std::unique_ptr<StateCopy> state =
            state_copy_.valid()
                ? state_copy_.get()
                : std::make_unique<StateCopy>(storage(), image, domain_ + kStateSuffix);
        domain = start_with_a_free_port(spec, [&] {
          return restore_clone(connection(), storage(), image, *state, spec).release();
        });
        agent_ = std::make_unique<AgentChannel>(connection(), domain.get(), host_.uri,
                                                config_.instance_name);
        // A detached clone must outlive this process and so its channel.
        if (outlives_owner_) expect_ok(agent_exchange("guard off\n", kAgentTimeout), "guard off");
      } catch (const std::exception& error) {
        kill();
        throw WarmResumeError(
            fmt::format("instance '{}': libvirt could not restore warm image {} on {}: {}",
                        config_.instance_name, config_.warm_image.string(), host_.uri,
                        error.what()),
            true);
      }
    });
    console_.reset();
    console_ = std::make_unique<ConsoleLog>(connection(), domain.get(), console_log(), host_.uri);
    started_here_ = true;
    resumed_warm_ = true;
    warm_restored_ = true;
    spdlog::info(
        "vmfest: instance '{}' resumed warm as libvirt domain '{}' on {} ({}, memory streamed "
        "from the saved state)",
        config_.instance_name, domain_, host_.uri, accelerator());
  }

  void expect_ok(const std::string& reply, const char* request) const {
    if (reply != "ok") {
      throw BackendError(fmt::format("instance '{}': the guest agent answered '{}' to '{}'",
                                     config_.instance_name, reply, request));
    }
  }

  void pause() override { act("pause", virDomainSuspend); }
  void resume() override { act("resume", virDomainResume); }

  void power_down(milliseconds grace) override {
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

  void kill() noexcept override {
    close_console();
    agent_.reset();
    try {
      if (auto domain = find()) destroy_domain(domain->get(), host_.uri);
    } catch (const std::exception& error) {
      spdlog::warn("vmfest: could not stop libvirt domain '{}' of instance '{}': {}", domain_,
                   config_.instance_name, error.what());
    }
  }

  InstanceState state() override {
    auto domain = find();
    return domain ? state_of(domain->get()) : InstanceState::Stopped;
  }

  void remove() override {
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

  std::string agent_exchange(const std::string& request, milliseconds timeout) override {
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

  nlohmann::json save_warm_image(const fs::path& image_directory) override {
    auto domain = find();
    if (!domain) {
      throw StateError(fmt::format("instance '{}': libvirt domain '{}' on {} is not running",
                                   config_.instance_name, domain_, host_.uri));
    }
    // Every clone's agent is guarded from its first instant on: each dies with its owner.
    expect_ok(agent_exchange("guard on\n", kAgentTimeout), "guard on");
    const WarmVolumes volumes =
        plan_warm_volumes(image_directory, Home(config_.home).id(), host_.uri, domain_);
    close_console();
    try {
      save_domain(domain->get(), storage(), volumes, disk_volume());
    } catch (const std::exception&) {
      if (outlives_owner_ && find_or_null()) agent_exchange("guard off\n", kAgentTimeout);
      throw;
    }
    agent_.reset();
    spdlog::info(
        "vmfest: instance '{}': warm image saved on {} as volumes '{}' and '{}'; the guest's "
        "memory is streamed from the saved state (libvirt's save images hold it)",
        config_.instance_name, host_.uri, volumes.state, volumes.base);
    return warm_image_facts();
  }

  // The domain is paused (or gone): its disk, flattened, through a copy on the host (disk_copy.h).
  void export_disk(const fs::path& destination) override {
    const std::string copy = domain_ + kExportSuffix;
    try {
      auto domain = find();
      export_volume(storage(), domain ? domain->get() : nullptr, disk_volume(), copy, destination);
    } catch (const Error& error) {
      throw BackendError(fmt::format(
          "instance '{}': could not export its disk (volume '{}', through volume '{}') from {}: "
          "{}; check the free space of the pool on that host (virsh pool-info) and of {}",
          config_.instance_name, disk_volume(), copy, host_.uri, error.what(),
          destination.parent_path().string()));
    }
  }

  // libvirt saves a domain only by ending it: the paused domain is saved as the image's state, and
  // restored from that very state as this instance again, paused, ready to resume. The image's base
  // is a copy of the disk at the save, as for any warm image of this backend (warm.h), so the new
  // model's clones need nothing of the model's own upload.
  nlohmann::json save_warm_image_of(const Model& model, const fs::path& image_directory) override {
    auto domain = find();
    if (!domain) {
      throw StateError(fmt::format("instance '{}': libvirt domain '{}' on {} is not running",
                                   config_.instance_name, domain_, host_.uri));
    }
    // Every clone's agent is guarded from its first instant on: each dies with its owner. The guest
    // runs for that one exchange; what it writes meanwhile is in the base, copied after the save.
    tell_paused_agent(domain->get(), "guard on");
    const StoragePool& pool = storage();
    const WarmVolumes volumes =
        plan_warm_volumes(image_directory, Home(config_.home).id(), host_.uri, domain_);
    close_console();
    try {
      save_state(domain->get(), pool, volumes);
    } catch (const Error&) {
      if (!find_or_null()) {  // saved, or ended in the attempt: run on from the state if it can
        agent_.reset();
        restore_from(volumes);
        remove_warm_volumes(pool, volumes);
        throw;
      }
      remove_warm_volumes(pool, volumes);
      try {
        console_ =
            std::make_unique<ConsoleLog>(connection(), domain->get(), console_log(), host_.uri);
        if (outlives_owner_) tell_paused_agent(domain->get(), "guard off");
      } catch (const std::exception& also) {
        spdlog::warn("vmfest: instance '{}' after its failed save: {}", config_.instance_name,
                     also.what());
      }
      throw;
    }
    agent_.reset();
    // Before the restore: the restored domain's QEMU takes the disk's lock again.
    std::exception_ptr base_failed;
    try {
      pool.create_copy(volumes.base, disk_volume());
    } catch (const std::exception&) {
      base_failed = std::current_exception();
    }
    restore_from(volumes);
    if (base_failed) {
      remove_warm_volumes(pool, volumes);
      std::rethrow_exception(base_failed);
    }
    spdlog::info(
        "vmfest: instance '{}': its memory is saved on {} as the warm image of model '{}' "
        "(volumes '{}' and '{}'), streamed to its clones",
        config_.instance_name, host_.uri, model.name, volumes.state, volumes.base);
    return warm_image_facts();
  }

  [[nodiscard]] bool resumed_warm() const override { return resumed_warm_; }

  [[nodiscard]] ssh::Endpoint ssh_endpoint() const override {
    if (host_.local()) return ssh::Endpoint{"127.0.0.1", port_, config_.model.ssh_user, ""};
    return ssh::Endpoint{host_.host, port_, config_.model.ssh_user,
                         host_.jump_command(port_, ssh_multiplexer(host_))};
  }
  [[nodiscard]] fs::path console_log() const override { return config_.directory / kConsoleLog; }
  [[nodiscard]] std::string accelerator() const override {
    return domain_type_ == "kvm" ? "kvm" : "tcg";
  }
  [[nodiscard]] nlohmann::json saved_state() const override {
    return {{"uri", host_.uri},
            {"domain", domain_},
            {"port", port_},
            {"domain_type", domain_type_},
            {"outlives_owner", outlives_owner_},
            {"warm_restored", warm_restored_}};
  }

  void detach() noexcept override {
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

 private:
  [[nodiscard]] std::string disk_volume() const { return domain_ + kDiskSuffix; }
  [[nodiscard]] std::string seed_volume() const { return domain_ + kSeedSuffix; }

  // What a warm image's manifest records of how it was made.
  nlohmann::json warm_image_facts() {
    unsigned long version = 0;
    virConnectGetVersion(connection(), &version);
    return {{"qemu_version", version},
            {"machine_type", "pc"},
            {"accelerator", accelerator()},
            {"memory", "streamed"},
            {"uri", host_.uri}};
  }

  // Sends the paused guest's agent `request` ("guard on", "guard off"), the guest running for just
  // that exchange: paused again also when it fails.
  void tell_paused_agent(virDomainPtr domain, const char* request) {
    if (virDomainResume(domain) < 0) {
      fail(fmt::format("libvirt: could not resume domain '{}' of instance '{}' to tell its agent "
                       "'{}'",
                       domain_, config_.instance_name, request),
           host_.uri);
    }
    std::string reply;
    try {
      reply = agent_exchange(std::string(request) + "\n", kAgentTimeout);
    } catch (const std::exception&) {
      virDomainSuspend(domain);
      throw;
    }
    if (virDomainSuspend(domain) < 0) {
      fail(fmt::format("libvirt: could not pause domain '{}' of instance '{}' again", domain_,
                       config_.instance_name),
           host_.uri);
    }
    expect_ok(reply, request);
  }

  // Runs this instance's domain again from the state it was saved as (libvirt restores a save
  // image as the very domain it saved), and pauses it, ready to resume. Restored running, as a
  // clone is: its agent, guarded since before the save, powers it off should this process die
  // before it holds the agent's channel, which holds the domain's life from then on.
  void restore_from(const WarmVolumes& volumes) {
    const StoragePool& pool = storage();
    try {
      Domain domain;
      start_within_cap(connection(), pool, host_,
                       [&] { domain = restore_saved(connection(), pool, volumes); });
      agent_ = std::make_unique<AgentChannel>(connection(), domain.get(), host_.uri,
                                              config_.instance_name);
      started_here_ = true;  // its life is this process's channel now
      console_ = std::make_unique<ConsoleLog>(connection(), domain.get(), console_log(), host_.uri);
      if (outlives_owner_) expect_ok(agent_exchange("guard off\n", kAgentTimeout), "guard off");
      if (virDomainSuspend(domain.get()) < 0) {
        fail(fmt::format("libvirt: could not pause domain '{}'", domain_), host_.uri);
      }
    } catch (const Error& error) {
      kill();
      remove_warm_volumes(pool, volumes);
      throw BackendError(fmt::format(
          "instance '{}': libvirt saved its domain '{}' on {} but could not run it again: {}; "
          "`vmfest destroy {}` removes the instance",
          config_.instance_name, domain_, host_.uri, error.what(), config_.instance_name));
    }
  }

  static std::string host_name() {
    std::array<char, 256> name{};
    return ::gethostname(name.data(), name.size() - 1) == 0 ? name.data() : "?";
  }

  virConnectPtr connection() {
    if (host_.uri.empty()) {
      throw StateError(
          fmt::format("instance '{}' has no libvirt host recorded (its disk was "
                      "never created); `vmfest destroy {}` removes it",
                      config_.instance_name, config_.instance_name));
    }
    if (!connection_) connection_ = connect(host_.uri);
    return connection_.get();
  }

  const StoragePool& storage() {
    if (!pool_) pool_.emplace(connection(), host_.uri);
    return *pool_;
  }

  // Before anything that ends the domain. When a domain is freed while a console stream on it
  // closes, libvirtd 9 takes the domain's console-table lock and the stream's lock in opposite
  // orders (virChrdevFree against the stream's close callback): a narrow race that can deadlock
  // its event loop, and so every client. A stream closed first is out of that table.
  void close_console() noexcept { console_.reset(); }

  std::optional<Domain> find() { return find_domain(connection(), domain_, host_.uri); }

  bool find_or_null() noexcept {
    try {
      return find().has_value();
    } catch (const std::exception&) {
      return false;
    }
  }

  InstanceState state_of(virDomainPtr domain) {
    int state = 0;
    int reason = 0;
    if (virDomainGetState(domain, &state, &reason, 0) < 0) {
      if (last_error_code() == VIR_ERR_NO_DOMAIN) return InstanceState::Stopped;
      fail(fmt::format("libvirt: could not read the state of domain '{}'", domain_), host_.uri);
    }
    return to_instance_state(state);
  }

  void act(const char* what, int (*call)(virDomainPtr)) {
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

  MachineConfig config_;
  HostUri host_;
  std::string domain_;
  std::string domain_type_ = "qemu";
  bool outlives_owner_ = false;
  bool started_here_ = false;   // this connection started the domain (and, owned, it dies with it)
  bool resumed_warm_ = false;   // the last launch resumed the warm image
  bool warm_restored_ = false;  // a launch resumed it already: later ones boot the disk
  bool image_gone_ = false;     // the warm image's volumes are not on its host any more
  int port_ = 0;
  Connection connection_;
  std::optional<StoragePool> pool_;  // after connection_: it uses it
  std::optional<Lease> lease_;       // after pool_: it uses it; held while this process owns it
  std::unique_ptr<ConsoleLog> console_;
  std::unique_ptr<AgentChannel> agent_;                 // after connection_: its stream is of it
  std::future<std::unique_ptr<StateCopy>> state_copy_;  // last: it uses pool_
};

}  // namespace

std::unique_ptr<Machine> make_machine(const MachineConfig& config, const nlohmann::json& saved) {
  return std::make_unique<LibvirtMachine>(config, saved);
}

}  // namespace vmfest::detail::libvirt
