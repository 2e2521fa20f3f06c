// Instances: transient copy-on-write clones of a model (or permanent VMs with their own copy),
// owned by an RAII handle that powers them down and destroys them.
#pragma once

#include <chrono>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "vmfest/home.h"
#include "vmfest/model.h"
#include "vmfest/provision.h"
#include "vmfest/ssh/session.h"

namespace vmfest {
namespace detail {
struct InstanceAccess;
}

struct Profile {
  std::string name;
  int memory_mib = 256;
  int cpus = 1;

  // "micro" (256 MiB, 1 CPU), "small" (512 MiB, 1), "medium" (1024 MiB, 2), "large" (2048 MiB, 2);
  // anything else is InvalidArgument listing these.
  static Profile named(std::string_view name);
  // A custom profile; InvalidArgument unless 64 <= memory_mib <= 65536 and 1 <= cpus <= 64.
  static Profile custom(int memory_mib, int cpus);
};

// Unknown: the hypervisor could not be asked (e.g. the remote server that made it is gone).
enum class InstanceState { Created, Running, Paused, Stopped, Unknown };
std::string_view to_string(InstanceState state);

// One name of the segment's /etc/hosts block: `names` (hostnames) resolve to `address`.
struct SegmentHost {
  std::string address;  // IPv4, dotted
  std::vector<std::string> names;
};

// A second network card on an Ethernet segment private to some instances of this host, so that
// e.g. a client VM reaches a server VM at a fixed address. The card's frames travel as datagrams
// from its port socket to the segment's hub socket; the hub (vmfest::testing::PrivateNetwork in the
// GoogleTest plugin) relays them to the other members. A warm clone resumes without the card and
// has it plugged in after the resume, so one warm image serves single and grouped instances.
struct PrivateNic {
  std::filesystem::path hub_socket;   // unix datagram socket the segment's hub listens on
  std::filesystem::path port_socket;  // this card's end; the backend creates it
  std::string mac;                    // fixed, so the guest can find the card by it
  // When set, start() gives the card this IPv4 address (`address`/`prefix_length`, found by its
  // MAC) and adds `hosts` to the guest's /etc/hosts before it returns, warm or cold. Empty: the
  // card is left unconfigured for the test to set up. InvalidArgument at create for an address or
  // name that is none.
  std::string address;
  int prefix_length = 24;
  std::vector<SegmentHost> hosts;  // typically every member of the segment, this one included
};

// What start() is waiting for, told about once a second (e.g. for a progress line on a terminal).
struct StartProgress {
  std::string phase;  // "boot", "ssh", "warm image", ...
  double elapsed_seconds = 0;
  std::string console_line;  // the guest's last console line; empty when there is none yet
};
using StartProgressCallback = std::function<void(const StartProgress&)>;

// What you want: which model, how big, how long it may take to become ready.
struct InstanceRequest {
  std::string model;
  std::string name;  // empty: a unique name is generated (unique across processes)
  Profile profile = Profile::named("micro");
  // 0: fitted to the model. Each cold boot's time is recorded per model and accelerator; the
  // timeout is 5 times the usual boot (at least 2 minutes, at most 15), or 5 minutes before the
  // first boot of a model.
  std::chrono::seconds ready_timeout{0};
  bool permanent = false;  // own full copy of the disk, kept across power cycles
  bool detached = false;   // no owner process: lives until destroyed (CLI instances)
  // Resume a warm image of the model (a booted guest saved once, built on first use) instead of
  // booting: a fraction of a boot. Falls back to a cold boot, with a log line, when the backend or
  // model cannot. VMFEST_WARM=0 turns it off everywhere.
  bool warm = true;
  std::optional<PrivateNic> private_nic;  // none: only the NIC that carries SSH
  // Run in the guest, in order, before start() returns. With warm images (above), the first
  // instance of this model, profile and steps saves the provisioned guest as a layer that later
  // instances resume; a list that starts with another list's steps builds on that list's layer.
  // Without them, every instance runs the steps after its boot. A failing step fails start() with
  // a ProvisionError and caches nothing.
  ProvisionSteps provision{};
  StartProgressCallback on_progress;  // none: start() reports nothing while it waits
};

// One step of the last start() and its seconds: where boot time goes ("slot", "launch",
// "identity" for a warm clone, "console" waiting for the ready marker, "ssh", "warm image" saving
// the warm image a first start builds, "provision" running the request's steps, "layer" saving
// them as a layer).
struct StartPhase {
  std::string name;
  double seconds = 0;
  // When it ended, by the wall clock: lines up the phases of several processes (a run's timeline).
  std::chrono::system_clock::time_point ended;
};

// What `vmfest ls` shows about one instance; the state is asked of the hypervisor.
struct InstanceInfo {
  std::string name;
  std::string model;
  std::string backend;
  Profile profile;
  InstanceState state = InstanceState::Created;
  bool permanent = false;
  bool detached = false;  // no owner process: lives until destroyed
  int owner_pid = 0;      // the owning process (0 when detached)
  ssh::Endpoint ssh;      // where SSH reaches it while running
  std::filesystem::path directory;
  std::filesystem::path client_key;       // the private key that logs in as ssh.user (OpenSSH)
  std::filesystem::path host_public_key;  // the guest's pinned host key: one OpenSSH public line
  std::string problem;                    // why the state is Unknown; empty otherwise
};

class Instance {
 public:
  // Clones the model into a new instance (not started). Throws ModelError for an unknown model,
  // InvalidArgument for a bad name, StateError when the name is taken.
  static Instance create(const InstanceRequest& request,
                         const Home& home = Home::from_environment());
  // Takes a handle on an existing instance (e.g. one the CLI created). The handle does not
  // destroy it on destruction.
  static Instance open(const std::string& name, const Home& home = Home::from_environment());

  Instance(Instance&&) noexcept;
  Instance& operator=(Instance&&) noexcept;
  // Destroys the instance, unless keep() was called, it is detached, or it was opened rather than
  // created; a permanent VM is powered down and kept.
  ~Instance();

  // Boots the VM and returns once an SSH command succeeds (NotReadyError with the console tail
  // otherwise).
  void start();
  void pause();
  void resume();
  // ACPI power button, then a hard stop after `grace`.
  void power_down(std::chrono::milliseconds grace = std::chrono::seconds(30));
  // Stops the VM if needed and removes every file of the instance.
  void destroy();
  [[nodiscard]] InstanceState state() const;

  // The SSH handle into the running guest (connected on first use after start()).
  ssh::Session& ssh();

  // Registers the instance as it is now as a new model `model_name` that can be cloned like any
  // other (like `docker commit`): its disk flattened into a standalone copy, with the model's boot
  // files, login and agent. A running guest is paused for the copy and its memory becomes the new
  // model's warm image (when the backend can save it and the guest agent answers; otherwise the
  // new model's first clone builds one, and a log line says why), then it runs on with its own
  // identity. InvalidArgument for a bad name, ModelError when the name is taken.
  Model save_as_model(const std::string& model_name);

  // Forwards TCP `host_port` on 127.0.0.1 (0: a free one) to `guest_port` of the running guest
  // and returns the host port. The forward lasts until remove_port_forward() or the VM stops,
  // whichever process made it. StateError unless running or when the host port is taken;
  // BackendError when the backend cannot forward ports.
  int forward_port(int guest_port, int host_port = 0);
  void remove_port_forward(int host_port);

  // Called while start() waits (see StartProgress); replaces the request's on_progress.
  void on_progress(StartProgressCallback callback);

  // Leave the instance (running or not) when this handle goes away.
  void keep() noexcept;

  [[nodiscard]] const std::string& name() const noexcept;
  [[nodiscard]] const std::string& model_name() const noexcept;
  [[nodiscard]] std::filesystem::path directory() const;
  [[nodiscard]] std::filesystem::path console_log() const;
  [[nodiscard]] std::string console_tail(std::size_t lines = 40) const;
  // Seconds from start() to ready, of the last start.
  [[nodiscard]] double boot_seconds() const noexcept;
  // The steps of the last start(), in order, with their seconds.
  [[nodiscard]] const std::vector<StartPhase>& start_phases() const noexcept;
  // True when the last start() resumed a warm image instead of booting.
  [[nodiscard]] bool resumed_warm() const noexcept;
  // The accelerator the VM runs under ("tcg", "kvm"; backend-specific otherwise).
  [[nodiscard]] std::string accelerator() const;
  // Name, model, state (asked of the hypervisor), ownership and SSH endpoint.
  [[nodiscard]] InstanceInfo info() const;

  struct Impl;

 private:
  friend struct detail::InstanceAccess;
  explicit Instance(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Starts instances that must run together (e.g. a client and a server) in parallel. Their VM
// slots are taken all at once, so waiting groups never hold part of the host's cap; the first
// error is rethrown once every start has ended.
void start_all(const std::vector<Instance*>& instances);

// Instance names present in the registry (all states, all owners).
std::vector<std::string> list_instances(const Home& home = Home::from_environment());

// Every instance, described. One whose hypervisor cannot be asked has state Unknown and says why
// in `problem`; one that cannot be opened (its record or keys unreadable) is left out. Both are
// logged as warnings.
std::vector<InstanceInfo> describe_instances(const Home& home = Home::from_environment());

// Removes instance `name` as Instance::open(name).destroy() does, and removes its files even when
// its record cannot be read or its hypervisor cannot be reached (each logged as a warning; a VM
// such a hypervisor still runs is left to it). StateError when there is no such instance.
void force_destroy_instance(const std::string& name, const Home& home = Home::from_environment());

struct ReapOptions {
  // Every instance no living process owns, detached and permanent ones too, also when its record
  // cannot be read or its hypervisor cannot be reached: a clean slate (test homes).
  bool force = false;
};
// Kills and removes every instance whose owner process has died (detached and permanent ones are
// left alone). One that cannot be reaped (an unreadable record, a hypervisor that cannot be
// reached) is left and logged as a warning. Returns the names reaped.
std::vector<std::string> reap_leaked_instances(const Home& home = Home::from_environment(),
                                               const ReapOptions& options = {});

}  // namespace vmfest
