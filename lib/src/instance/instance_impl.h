// Instance::Impl and what the parts of the instance implementation share (private to the library).
// Impl holds an instance's record, VM and SSH session and runs its lifecycle; its collaborators
// own the rest: StartClock (start_clock.h) the phases and progress of a start, ReadinessWaiter
// (readiness.h) the wait until a guest answers, WarmBuild (warm_build.h) the images a start builds
// and the steps it runs. Impl's methods live in instance.cpp (creation and lifecycle),
// warm_clone.cpp (warm images: building, resuming, identity), provisioning.cpp (running steps,
// saving layers), segment.cpp (joining a private segment) and save_as_model.cpp; all_instances.cpp
// holds the operations on all instances of a home (listing, reaping). What an instance starts from
// is the image store's plan (base_plan.h).
#pragma once

#include <chrono>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "../base/files.h"
#include "../driver/backend.h"
#include "../driver/vm_slots.h"
#include "../registry/instance_record.h"
#include "readiness.h"
#include "start_clock.h"
#include "vmfest/error.h"
#include "vmfest/instance.h"
#include "vmfest/model.h"
#include "warm_build.h"

namespace vmfest {
namespace detail {

std::string random_suffix();
// The folder a new instance `name` is built in before it is renamed into place. It names the
// creating process: the folder has no owner lock for a moment after its birth, and the reaper
// must not take that moment for a killed creation.
std::string new_instance_folder_name(const std::string& name);
// False when `folder_name` is such a folder whose creating process has exited.
bool instance_creation_under_way(const std::string& folder_name);
MachineConfig machine_config(const Home& home, const InstanceRecord& record, const Model& model);
// The model, or a placeholder when the model of a leaked instance is gone: enough to stop and
// remove it.
Model model_or_stub(const Home& home, const std::string& name);

struct RecordedMachine {
  std::unique_ptr<Backend> backend;
  std::unique_ptr<Machine> machine;
};
// The backend and machine of the instance recorded in `directory`. A backend name or saved machine
// state of the wrong shape is the record's fault, and reported as such.
RecordedMachine recorded_machine(const Home& home, const InstanceRecord& record, const Model& model,
                                 const std::filesystem::path& directory);

StateError no_such_instance(const Home& home, const std::string& name);

// InvalidArgument, naming instance `instance`, for a card whose address, prefix length or names
// are none (segment.cpp).
void validate_private_nic(const PrivateNic& nic, const std::string& instance);
// Whether `backend` resumes warm clones onto a private segment; says once per backend that its
// members boot cold when it cannot (segment.cpp).
bool warm_clones_join_segments(const Backend& backend);

}  // namespace detail

struct Instance::Impl {
  Home home;
  detail::InstanceRecord record;
  Model model;
  std::unique_ptr<detail::Backend> backend;
  std::unique_ptr<detail::Machine> machine;
  std::optional<detail::FileLock> owner_lock;
  std::optional<detail::VmSlot> slot;  // held while the VM runs
  ssh::Credentials credentials;
  std::optional<ssh::Session> session;
  bool owned = false;  // created by this handle: destroyed with it
  bool kept = false;
  bool destroyed = false;
  bool resumed_warm = false;
  std::chrono::seconds ready_timeout{0};  // the request's; 0: fitted to the model's recorded boots
  detail::StartClock clock;
  detail::WarmBuild build;

  explicit Impl(Home h) : home(std::move(h)) {}

  // ---- instance.cpp ----
  [[nodiscard]] std::filesystem::path directory() const;
  void save_record();
  void require_alive_handle(const char* action) const;
  void require_state(const char* action, std::initializer_list<InstanceState> allowed);
  InstanceState current_state();
  [[nodiscard]] InstanceInfo info(InstanceState state) const;
  [[nodiscard]] ssh::Endpoint endpoint() const;
  void destroy();
  // A waiter on this instance's guest as it is now.
  detail::ReadinessWaiter readiness();
  // Waits until the guest answers (see ReadinessWaiter::wait) and keeps the session; a cold boot of
  // a disk that has not had its model's first login has it first (first_login.cpp).
  void wait_until_ready(bool cold);
  void report_progress(const char* phase);

  // ---- warm_clone.cpp ----
  // Before a launch: resumes the warm image that has meanwhile become ready, or takes the lock to
  // build it from this very boot.
  void prepare_warm_start();
  // After this instance's cold boot: saves it as the warm image (when its guest agent answers) and
  // resumes it from there; never fails the start (a guest that cannot be saved runs on cold).
  void finish_warm_build();
  // Launches the VM (a start's, or a relaunch on the image the start just saved). False when it
  // was to resume a warm image and could not: the instance has then booted cold instead, its
  // steps run, and the image is gone if it was at fault.
  bool launch_or_boot_cold();
  // After a launch that resumed a warm image: identity, then ready; a cold boot if that fails.
  void complete_warm_resume();

  // ---- first_login.cpp ----
  // Logs in with the model's published login once the booted guest answers, installs the
  // instance's identity (and the agent, when this boot builds the warm image) and pins the host
  // key to use from then on. SshAuthError when the guest refuses the published login.
  void first_login();

  // ---- segment.cpp ----
  // Once ready: gives the private segment's card its address and the guest the segment's
  // /etc/hosts names (PrivateNic::address, hosts), waiting for a hot-plugged card to appear.
  void join_segment();

  // ---- save_as_model.cpp ----
  Model save_as_model(const std::string& model_name);

  // ---- provisioning.cpp ----
  // Before a launch: resumes the layer that has meanwhile become ready, or takes the lock to build
  // it in this start.
  void prepare_layer_start();
  // Once ready: runs the steps this instance's image lacks, then saves the result as the layer
  // and resumes it with this instance's own identity. A failing step throws ProvisionError; a
  // layer that cannot be saved never fails the start (the instance runs on unsaved).
  void finish_layer_build();
  // Runs steps [first, end) of the request in the guest; ProvisionError for the first that fails.
  void run_provision_steps(std::size_t first);

 private:
  void use_warm_image(const std::filesystem::path& image);
  // Installs and starts the guest agent over a first login (first_login.cpp).
  void deliver_agent(ssh::Session& first);
  // A new machine object for the record as it is now (before a launch: what it boots changed).
  void renew_machine();
  void deliver_identity();
  void fall_back_to_cold_boot(const std::string& why);
  // Whether the guest agent answers; a `definite` problem is the guest's for good (no agent runs,
  // or it answers nonsense), any other may pass (an SSH hiccup, a ping lost on a loaded host).
  struct AgentCheck {
    std::string problem;  // empty: it answers
    bool definite = false;
    [[nodiscard]] bool ok() const noexcept { return problem.empty(); }
  };
  AgentCheck prepare_agent();
  // lock_image_build() for this instance, which says in the log and its progress (`phase`) that
  // another process is `building` the image when it waits for it.
  bool lock_image_build(std::optional<detail::FileLock>& lock, const std::filesystem::path& image,
                        const std::function<bool()>& decided, const std::string& building,
                        const char* phase);
  // This VM's warm fingerprint when the model's warm image it was keyed by is still
  // `model_warm_image` (a boot can change the setup: a KVM that cannot run the guest falls back
  // to TCG); empty when it is not.
  [[nodiscard]] std::string fingerprint_still_of(
      const std::filesystem::path& model_warm_image) const;
  std::string quiesce_for_memory_save();
  void save_memory_as_warm_image(const Model& saved);
  void save_warm_image(const std::filesystem::path& image, const std::string& fingerprint,
                       const nlohmann::json& layer = nullptr);
};

}  // namespace vmfest
