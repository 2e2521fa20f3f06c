// The one interface between vmfest's core and a hypervisor. The core (instances, registry, reaper,
// readiness, SSH) knows only this; each backend lives in lib/backends/<name>/.
#pragma once

#include <chrono>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "vm_slots.h"
#include "vmfest/error.h"
#include "vmfest/instance.h"
#include "vmfest/model.h"
#include "vmfest/ssh/session.h"

namespace vmfest::detail {

// Everything a backend needs to make one VM. The core owns `directory` (it creates it and removes
// it); the backend keeps its files for this VM inside it.
struct MachineConfig {
  std::string instance_name;
  std::filesystem::path directory;
  Model model;
  Profile profile;
  std::filesystem::path seed_image;  // cloud-init NoCloud ISO (label cidata), attached read-only
  bool full_copy = false;            // permanent VM: its own full copy of the model's disk
  // The home's root (vmfest/home.h): its cache for files the backend keeps across instances, its
  // registered models for a backend that probes the hypervisor with one.
  std::filesystem::path home;
  int ssh_host_port = 0;  // host port forwarded to the guest's SSH port; 0: the backend picks one
  // A second card on a private segment. A VM that resumes a warm image gets it after the resume
  // (Capabilities::private_nic_after_resume); a VM that saves one (saves_warm_image) never has
  // it, so no image depends on a segment.
  std::optional<PrivateNic> private_nic = std::nullopt;
  // A warm image (see warm.h) to clone: the disk is an overlay on its base and the first launch
  // resumes its saved memory state instead of booting. Empty: a cold clone of the model.
  std::filesystem::path warm_image;
  // This boot becomes a warm image (save_warm_image follows): a backend that keeps a warm image's
  // memory in a file of its own must give the guest that memory from the start.
  bool saves_warm_image = false;
  // Options that one backend defines and reads alone, set by a caller that drives that backend
  // directly (a test double standing in for another hypervisor); the core sets none.
  nlohmann::json backend_options = nlohmann::json::object();
  // The VM must outlive the process that starts it (a detached or permanent instance); a backend
  // may tie an owned instance's VM to its owner process, so a killed test leaks no VM.
  bool outlives_owner = false;
};

// A launch that could not resume its warm image (Machine::launch). `image_at_fault`: the hypervisor
// refused the image itself (its saved state does not load), so it must be rebuilt rather than
// resumed again; otherwise the moment failed (the VM would not start) and the image may be fine.
class WarmResumeError : public BackendError {
 public:
  WarmResumeError(const std::string& message, bool image_at_fault)
      : BackendError(message), image_at_fault_(image_at_fault) {}
  [[nodiscard]] bool image_at_fault() const noexcept { return image_at_fault_; }

 private:
  bool image_at_fault_;
};

// Calls `done` every `poll` until it returns true (then true) or `timeout` has passed (false).
bool poll_until(std::chrono::milliseconds timeout, std::chrono::milliseconds poll,
                const std::function<bool()>& done);
// Says that the guest of `instance` ignored the ACPI button for `grace` and is stopped hard.
void warn_power_button_ignored(const std::string& instance, std::chrono::milliseconds grace);

// One VM of a backend. Calls come from one thread at a time (the Instance serialises them).
class Machine {
 public:
  virtual ~Machine() = default;

  // Creates the VM's disk: a copy-on-write clone of the model (or a full copy for full_copy).
  virtual void create_disk() = 0;
  // Starts the VM and returns once its process runs; readiness is the core's business. `slot` is
  // the host-wide VM slot it runs in (null: uncounted, a test double's VM). A backend whose VM is
  // its own child process hands the slot's descriptor on to it, so the VM holds its slot for as
  // long as it runs, after the starting process is gone (a `vmfest start`), and frees it when it
  // exits or is killed. A backend whose VM runs in someone else's process (a hypervisor's service)
  // cannot: its VMs count against the cap only while a handle of theirs holds the slot.
  // A launch that was to resume MachineConfig::warm_image and could not throws WarmResumeError,
  // its VM stopped: the core boots the instance cold instead.
  virtual void launch(const VmSlot* slot) = 0;
  virtual void pause() = 0;
  virtual void resume() = 0;
  // ACPI power button, then a hard stop once `grace` has passed. Returns when the VM is off.
  virtual void power_down(std::chrono::milliseconds grace) = 0;
  // Hard stop now, whatever the state; never throws (used by destroy and the reaper).
  virtual void kill() noexcept = 0;
  // Asks the hypervisor, not a cache.
  virtual InstanceState state() = 0;
  // Releases hypervisor-side registrations (files in `directory` are removed by the core).
  virtual void remove() = 0;

  // Where SSH reaches the guest (user filled in by the core from the model).
  [[nodiscard]] virtual ssh::Endpoint ssh_endpoint() const = 0;
  [[nodiscard]] virtual std::filesystem::path console_log() const = 0;
  [[nodiscard]] virtual std::string accelerator() const = 0;
  // Backend-specific state to persist in the instance record, so another process can re-attach.
  [[nodiscard]] virtual nlohmann::json saved_state() const = 0;
  // Lets go of the VM without stopping it (its owner handle goes away, the VM keeps running).
  virtual void detach() noexcept = 0;

  // Writes the VM's disk as it is now to `destination` as one standalone qcow2 (no backing file),
  // for a new model (Instance::save_as_model). The VM is stopped or paused; the default says no.
  virtual void export_disk(const std::filesystem::path& destination);

  // Warm clones, for backends that can save and resume a running guest (the defaults say no).
  //
  // Stops the running VM and saves it into `image_directory` as a warm image: the memory and
  // device state, and the disk frozen at the same instant as a read-only base. The VM exits.
  // Returns backend facts to record in the image's manifest.
  virtual nlohmann::json save_warm_image(const std::filesystem::path& image_directory);
  // True when save_warm_image copies the guest's memory into the image (so the guest had better
  // drop its page cache first: a smaller image, a faster resume); false when clones map it, where
  // the guest's page cache costs nothing and spares each clone reading the same files again.
  [[nodiscard]] virtual bool warm_image_copies_memory() const { return true; }
  // Saves the paused VM's memory and device state into `image_directory` as a warm image of
  // `model`, a new model whose disk is this VM's disk exported (export_disk) at this very pause:
  // the image's base is an empty overlay on that disk. The VM stays paused, ready to resume.
  // Returns backend facts for the manifest. The default says no.
  virtual nlohmann::json save_warm_image_of(const Model& model,
                                            const std::filesystem::path& image_directory);
  // Sends one request line (plus payload) to the guest agent and returns its reply line.
  virtual std::string agent_exchange(const std::string& request, std::chrono::milliseconds timeout);
  // True when the last launch resumed a warm image rather than booting.
  [[nodiscard]] virtual bool resumed_warm() const { return false; }

  // Forwards TCP `host_port` on 127.0.0.1 to `guest_port` of the running guest, for as long as
  // the VM runs or until remove_port_forward (Capabilities::port_forwards; the defaults say no).
  virtual void add_port_forward(int host_port, int guest_port);
  virtual void remove_port_forward(int host_port);
};

// One line of `vmfest doctor`: whether this host can run vmfest's VMs, and how well.
struct HostCheck {
  enum class Verdict { Ok, Warn, Fail };  // Fail: no VM can run until it is fixed
  std::string name;                       // "home", "accelerator", ...
  Verdict verdict = Verdict::Ok;
  std::string detail;  // what was found
  std::string fix;     // what to do about a warning or a failure; empty for ok
};
const char* to_string(HostCheck::Verdict verdict);
// `check`'s result, or, when it throws a vmfest::Error, a failed check `name` saying why, with
// `fix`.
HostCheck run_host_check(const std::string& name, const std::string& fix,
                         const std::function<HostCheck()>& check);

// What a backend can do beyond the lifecycle every backend has. The core asks before it relies on
// one, and refuses or falls back in one place, so no backend repeats a refusal.
struct Capabilities {
  // Saves a booted guest as a warm image and resumes clones from it: Machine::save_warm_image,
  // agent_exchange and resumed_warm, Backend::warm_fingerprint.
  bool warm_images = false;
  // Writes an instance's disk as a standalone image (Machine::export_disk), and with warm_images
  // its paused memory as the new model's warm image (save_warm_image_of): Instance::save_as_model.
  bool export_disk = false;
  // Gives a VM a second card on a private segment (MachineConfig::private_nic).
  bool private_segments = false;
  // Plugs that card into a VM resumed from a warm image after the resume (the image was saved
  // without it), so members of a segment are warm clones too; without it they boot cold.
  bool private_nic_after_resume = false;
  // Forwards more host ports to a running guest (Machine::add_port_forward).
  bool port_forwards = false;
  // How, for the help of `vmfest port` ("the hypervisor's ... command").
  std::string how_port_forwards{};
  // Why no warm images, for the line that says once that the backend's instances boot cold.
  std::string why_no_warm_images;
  // Its VMs run on this machine and take slots of this machine's cap (acquire_vm_slot); a backend
  // whose VMs run on other hosts counts them there, and launch() gets no slot.
  bool runs_vms_here = true;
};
// A capability, with the words that say what it lets a backend do.
struct Capability {
  bool Capabilities::*flag;
  const char* ability;  // "join a private segment"
};
inline constexpr Capability kWarmImages{&Capabilities::warm_images, "make warm images"};
inline constexpr Capability kExportDisk{&Capabilities::export_disk, "export an instance's disk"};
inline constexpr Capability kPrivateSegments{&Capabilities::private_segments,
                                             "join a private segment"};
inline constexpr Capability kPortForwards{&Capabilities::port_forwards,
                                          "forward a host port to a running guest"};

class Backend {
 public:
  virtual ~Backend() = default;
  [[nodiscard]] virtual std::string name() const = 0;
  [[nodiscard]] virtual Capabilities capabilities() const = 0;
  // A machine for `config`; `saved` is what saved_state() returned earlier (null for a new one).
  virtual std::unique_ptr<Machine> machine(const MachineConfig& config,
                                           const nlohmann::json& saved) = 0;
  // Everything that makes a warm image of `config` valid (hypervisor version, machine type,
  // accelerator, the exact hardware); a different fingerprint needs a new image. Asked only of a
  // backend that can make warm images.
  virtual std::string warm_fingerprint(const MachineConfig& config);
  // Removes what the backend keeps outside instance folders for instances of `home` whose folders
  // are gone (a process killed before it recorded its VM, a home emptied by hand), on the
  // hypervisors it is configured for, and returns one line per thing removed. Called by the
  // reaper; the default keeps nothing outside the folders.
  virtual std::vector<std::string> remove_orphans(const Home& home);
  // What this host needs for this backend's VMs, checked now (`vmfest doctor`): its hypervisor
  // found, reachable and how fast it runs guests. A backend this host is not configured for
  // (neither the default nor given a server to use) returns none; so does the default.
  virtual std::vector<HostCheck> host_checks(const Home& home);
};

// The driver table. Each backend folder registers its factory with VMFEST_REGISTER_BACKEND; the
// core names no backend. A backend is a component that a program links (vmfest::vmfest carries the
// default one, each optional backend is a target of its own), so the table holds what this
// program linked.
using BackendFactory = std::unique_ptr<Backend> (*)();
struct BackendRegistration {
  BackendRegistration(const char* name, BackendFactory factory);
};

// The backend called `name`, or InvalidArgument naming the linked ones and how to get another.
std::unique_ptr<Backend> make_backend(const std::string& name);
// The registered backends' names, sorted.
std::vector<std::string> backend_names();
// Throws BackendError, saying what `action` needed and which of this program's backends have it,
// when `backend` lacks `capability`.
void require_capability(const Backend& backend, const Capability& capability,
                        const std::string& action);
// $VMFEST_BACKEND, or else the build's default (CMake's VMFEST_DEFAULT_BACKEND).
std::string default_backend_name();

}  // namespace vmfest::detail

// Registers `factory` as backend `name`. The registration is an unmangled global,
// vmfest_backend_<name>: the backend's CMake target asks the linker for it (--undefined), which
// pulls the registering object file out of its static library, so the table fills itself.
#define VMFEST_REGISTER_BACKEND(name, factory)                            \
  extern "C" ::vmfest::detail::BackendRegistration vmfest_backend_##name; \
  ::vmfest::detail::BackendRegistration vmfest_backend_##name { #name, factory }
