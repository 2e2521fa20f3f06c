#include "vmfest/instance.h"

#include <signal.h>
#include <unistd.h>

#include <cerrno>

#include <cstdlib>
#include <mutex>
#include <random>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "../base/json_file.h"
#include "../guest/seed.h"
#include "../image_store/base_plan.h"
#include "../image_store/warm.h"
#include "../registry/registry_store.h"
#include "instance_impl.h"
#include "vmfest/ssh/keys.h"

namespace vmfest {
namespace fs = std::filesystem;
using detail::model_or_stub;
using detail::no_such_instance;
using detail::random_suffix;
using detail::recorded_machine;
using detail::RecordedMachine;
using detail::slot_timeout;
using std::chrono::milliseconds;

namespace detail {

std::string random_suffix() {
  thread_local std::mt19937_64 generator{std::random_device{}()};
  return fmt::format("{:08x}", static_cast<std::uint32_t>(generator()));
}

std::string new_instance_folder_name(const std::string& name) {
  return fmt::format(".new-{}-{}-{}", name, ::getpid(), random_suffix());
}

bool instance_creation_under_way(const std::string& folder_name) {
  if (!folder_name.starts_with(".new-")) return false;
  // .new-NAME-PID-SUFFIX, where NAME may hold dashes itself.
  const auto suffix_dash = folder_name.rfind('-');
  const auto pid_dash = folder_name.rfind('-', suffix_dash - 1);
  if (suffix_dash == std::string::npos || pid_dash == std::string::npos) return false;
  const std::string pid = folder_name.substr(pid_dash + 1, suffix_dash - pid_dash - 1);
  if (pid.empty() || pid.find_first_not_of("0123456789") != std::string::npos) return false;
  return ::kill(std::stoi(pid), 0) == 0 || errno == EPERM;
}

MachineConfig machine_config(const Home& home, const InstanceRecord& record, const Model& model) {
  MachineConfig config;
  config.instance_name = record.name;
  config.directory = home.instances() / record.name;
  config.model = model;
  config.profile = record.profile;
  config.seed_image = config.directory / "seed.iso";
  config.full_copy = record.permanent;
  config.home = home.root();
  config.warm_image = record.warm_image;
  config.saves_warm_image = !record.warm_build.empty() || !record.layer_build.empty();
  config.outlives_owner = record.detached || record.permanent;
  config.private_nic = record.private_nic;
  return config;
}

Model model_or_stub(const Home& home, const std::string& name) {
  try {
    if (auto model = ModelRegistry(home).find(name)) return *model;
  } catch (const Error&) {
  }
  Model stub;
  stub.name = name;
  return stub;
}

RecordedMachine recorded_machine(const Home& home, const InstanceRecord& record, const Model& model,
                                 const fs::path& directory) {
  RecordedMachine recorded;
  try {
    recorded.backend =
        make_backend(record.backend.empty() ? default_backend_name() : record.backend);
  } catch (const InvalidArgument& error) {
    throw invalid_record(directory, error.what());
  }
  MachineConfig config = machine_config(home, record, model);
  config.directory = directory;
  try {
    recorded.machine = recorded.backend->machine(config, record.machine);
  } catch (const nlohmann::json::exception& error) {
    throw invalid_record(directory, "its machine state: " + json_problem(error));
  }
  return recorded;
}

StateError no_such_instance(const Home& home, const std::string& name) {
  return StateError(fmt::format("no instance named '{}' in {}; `vmfest ls` lists them", name,
                                home.instances().string()));
}

}  // namespace detail

// ---- profiles ---------------------------------------------------------------------------------

Profile Profile::named(std::string_view name) {
  if (name == "micro") return {"micro", 256, 1};
  if (name == "small") return {"small", 512, 1};
  if (name == "medium") return {"medium", 1024, 2};
  if (name == "large") return {"large", 2048, 2};
  throw InvalidArgument(fmt::format(
      "unknown hardware profile '{}'; use micro (256 MiB, 1 CPU), small (512 MiB, 1 CPU), "
      "medium (1024 MiB, 2 CPUs), large (2048 MiB, 2 CPUs) or Profile::custom(memory, cpus)",
      name));
}

Profile Profile::custom(int memory_mib, int cpus) {
  if (memory_mib < 64 || memory_mib > 65536 || cpus < 1 || cpus > 64) {
    throw InvalidArgument(fmt::format(
        "invalid hardware profile: {} MiB, {} CPUs; memory must be 64-65536 MiB and CPUs 1-64",
        memory_mib, cpus));
  }
  return {fmt::format("custom-{}m-{}c", memory_mib, cpus), memory_mib, cpus};
}

std::string_view to_string(InstanceState state) {
  switch (state) {
    case InstanceState::Created:
      return "created";
    case InstanceState::Running:
      return "running";
    case InstanceState::Paused:
      return "paused";
    case InstanceState::Stopped:
      return "stopped";
    case InstanceState::Unknown:
      return "unknown";
  }
  return "unknown";
}

// ---- instance ---------------------------------------------------------------------------------

namespace {

std::string generated_name(const std::string& model) {
  constexpr std::size_t kMaxPrefix = 64 - 9;
  return fmt::format("{}-{}", model.substr(0, kMaxPrefix), detail::random_suffix());
}

void reap_once_per_process(const Home& home) {
  static std::once_flag once;
  std::call_once(once, [&] {
    for (const auto& name : reap_leaked_instances(home)) {
      spdlog::info("vmfest: reaped leaked instance '{}' (its owner process had died)", name);
    }
  });
}

}  // namespace

fs::path Instance::Impl::directory() const { return home.instances() / record.name; }

void Instance::Impl::save_record() {
  record.machine = machine->saved_state();
  detail::write_instance_record(directory(), record);
}

void Instance::Impl::require_alive_handle(const char* action) const {
  if (destroyed) {
    throw StateError(fmt::format("cannot {} instance '{}': it was destroyed", action, record.name));
  }
}

void Instance::Impl::require_state(const char* action,
                                   std::initializer_list<InstanceState> allowed) {
  require_alive_handle(action);
  InstanceState now = current_state();
  for (InstanceState state : allowed) {
    if (state == now) return;
  }
  throw StateError(
      fmt::format("cannot {} instance '{}': it is {}", action, record.name, to_string(now)));
}

InstanceState Instance::Impl::current_state() {
  InstanceState state = machine->state();
  if (state == InstanceState::Stopped && !record.started) return InstanceState::Created;
  return state;
}

InstanceInfo Instance::Impl::info(InstanceState state) const {
  return {record.name,
          record.model,
          record.backend,
          record.profile,
          state,
          record.permanent,
          record.detached,
          record.detached ? 0 : record.owner_pid,
          endpoint(),
          directory(),
          directory() / detail::kClientKey,
          directory() / detail::kHostPublicKey,
          {}};
}

ssh::Endpoint Instance::Impl::endpoint() const {
  ssh::Endpoint endpoint = machine->ssh_endpoint();
  endpoint.user = model.ssh_user;
  return endpoint;
}

detail::ReadinessWaiter Instance::Impl::readiness() {
  return {{home, model, record.name, *machine, endpoint(), credentials}, ready_timeout, clock};
}

void Instance::Impl::wait_until_ready(bool cold) {
  if (cold && !model.published_login.empty() && !record.first_login_done) {
    first_login();
    cold = false;  // booted and answering: what is left is to log in with the instance's key
  }
  session.emplace(readiness().wait(cold));
}

void Instance::Impl::report_progress(const char* phase) {
  clock.report_progress(phase, machine->console_log());
}

void Instance::Impl::destroy() {
  session.reset();
  machine->kill();
  machine->remove();
  slot.reset();
  build.release_locks();
  // The owner lock is held until the folder is gone, so a reaper never races this removal.
  fs::remove_all(directory());
  owner_lock.reset();
  destroyed = true;
}

Instance::Instance(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Instance::Instance(Instance&&) noexcept = default;
Instance& Instance::operator=(Instance&&) noexcept = default;

Instance::~Instance() {
  if (!impl_ || impl_->destroyed) return;
  try {
    if (!impl_->owned || impl_->kept || impl_->record.detached) {
      impl_->machine->detach();
    } else if (impl_->record.permanent) {
      if (impl_->current_state() != InstanceState::Created &&
          impl_->current_state() != InstanceState::Stopped) {
        impl_->session.reset();
        impl_->machine->power_down(std::chrono::seconds(30));
      }
    } else {
      impl_->destroy();
    }
  } catch (const std::exception& error) {
    spdlog::error(
        "vmfest: could not clean up instance '{}': {}; `vmfest reap` or "
        "`vmfest destroy {}` removes it",
        impl_->record.name, error.what(), impl_->record.name);
  }
}

Instance Instance::create(const InstanceRequest& request, const Home& home) {
  validate_name(request.model, "model");
  const std::string name = request.name.empty() ? generated_name(request.model) : request.name;
  validate_name(name, "instance");
  detail::prepare_home(home);
  fs::create_directories(home.instances());
  reap_once_per_process(home);

  auto impl = std::make_unique<Impl>(home);
  impl->model = ModelRegistry(home).get(request.model);
  impl->record.name = name;
  impl->record.model = request.model;
  impl->record.backend = detail::default_backend_name();
  impl->record.profile = request.profile;
  impl->record.permanent = request.permanent;
  impl->record.detached = request.detached;
  impl->record.owner_pid = static_cast<int>(::getpid());
  impl->backend = detail::make_backend(impl->record.backend);
  if (request.private_nic) {
    detail::require_capability(*impl->backend, detail::kPrivateSegments,
                               fmt::format("instance '{}'", name));
    detail::validate_private_nic(*request.private_nic, name);
    impl->record.private_nic = request.private_nic;
  }
  impl->owned = true;
  // What it starts from, as the image store plans it (the first start builds what is missing).
  const detail::BasePlan plan = detail::plan_base(
      home, impl->model, request.profile, *impl->backend, request.provision,
      request.warm && !request.permanent && detail::warm_enabled() &&
          (!request.private_nic || detail::warm_clones_join_segments(*impl->backend)));
  impl->record.warm_image = plan.resume.string();
  impl->record.warm_build = plan.build_warm.string();
  impl->record.layer_build = plan.build_layer.string();
  impl->build.steps = request.provision;
  impl->build.steps_inherited = plan.steps_inherited;
  impl->build.layer_base = plan.layer_base;
  impl->build.steps_pending_after_boot = plan.steps_after_boot;
  if (!plan.resume.empty()) detail::mark_warm_image_used(plan.resume);
  impl->ready_timeout = request.ready_timeout;
  impl->clock.on_progress(request.on_progress);

  // Reserve the name atomically across processes: build a private folder, hold its owner lock,
  // then rename it into place (rename fails when the name exists).
  const fs::path staging = home.instances() / detail::new_instance_folder_name(name);
  fs::create_directory(staging);
  fs::permissions(staging, fs::perms::owner_all);
  impl->owner_lock.emplace(staging / detail::kOwnerLock);
  detail::write_instance_record(staging, impl->record);
  std::error_code rename_error;
  fs::rename(staging, impl->directory(), rename_error);
  if (rename_error) {
    fs::remove_all(staging);
    throw StateError(
        fmt::format("an instance named '{}' already exists; choose another name, or "
                    "`vmfest destroy {}` first",
                    name, name));
  }

  try {
    const fs::path directory = impl->directory();
    ssh::KeyPair client = ssh::KeyPair::generate("vmfest-client@" + name);
    ssh::KeyPair host = ssh::KeyPair::generate("vmfest-host@" + name);
    client.save(directory / detail::kClientKey);
    detail::write_text_atomically(directory / detail::kHostPublicKey, host.public_openssh + "\n");
    detail::SeedIdentity identity{name, client.public_openssh, host.private_openssh,
                                  host.public_openssh};
    identity.ssh_user = impl->model.ssh_user;
    // The first start builds the warm image from this boot: a stock image needs the agent.
    // (An image with a published login has no cloud-init: its first login delivers the agent.)
    identity.include_agent = !impl->record.warm_build.empty() && !impl->model.guest_agent &&
                             impl->model.published_login.empty();
    detail::write_seed_image(directory, identity);
    // A warm clone hands its host key to the guest agent after resuming, in the server's format.
    detail::write_text_atomically(directory / detail::kHostKeyDropbear, host.private_dropbear(),
                                  0600);
    detail::write_text_atomically(directory / detail::kHostKeyOpenssh, host.private_openssh, 0600);
    impl->credentials.client_private_key = client.private_openssh;
    impl->credentials.pinned_host_key = host.public_openssh;
    impl->machine =
        impl->backend->machine(machine_config(home, impl->record, impl->model), nlohmann::json());
    impl->machine->create_disk();
    impl->save_record();
  } catch (...) {
    std::error_code ignored;
    fs::remove_all(impl->directory(), ignored);
    throw;
  }
  return Instance(std::move(impl));
}

Instance Instance::open(const std::string& name, const Home& home) {
  validate_name(name, "instance");
  const fs::path directory = home.instances() / name;
  auto record = detail::read_instance_record(directory);
  if (!record) throw no_such_instance(home, name);
  if (record->name != name) {
    // Everything else goes by the record's name: it must not lead to another instance's folder.
    throw detail::invalid_record(
        directory, fmt::format("it names instance '{}', not '{}'", record->name, name));
  }
  auto impl = std::make_unique<Impl>(home);
  impl->record = *record;
  impl->model = model_or_stub(home, record->model);
  RecordedMachine recorded = recorded_machine(home, *record, impl->model, directory);
  impl->backend = std::move(recorded.backend);
  impl->record.backend = impl->backend->name();
  impl->machine = std::move(recorded.machine);
  ssh::KeyPair client = ssh::KeyPair::load(directory / detail::kClientKey);
  std::string host = detail::read_text(directory / detail::kHostPublicKey);
  while (!host.empty() && host.back() == '\n') host.pop_back();
  impl->credentials.client_private_key = client.private_openssh;
  impl->credentials.pinned_host_key = host;
  return Instance(std::move(impl));
}

void Instance::start() {
  impl_->require_state("start", {InstanceState::Created, InstanceState::Stopped});
  impl_->session.reset();
  impl_->clock.begin(impl_->record.name);
  if (!impl_->slot && impl_->backend->capabilities().runs_vms_here)
    impl_->slot.emplace(detail::acquire_vm_slot(impl_->record.name, slot_timeout()));
  impl_->clock.phase_done("slot");
  impl_->resumed_warm = false;
  try {
    impl_->prepare_layer_start();
    impl_->prepare_warm_start();
    if (impl_->launch_or_boot_cold()) {
      if (impl_->machine->resumed_warm()) {
        impl_->complete_warm_resume();
      } else {
        impl_->wait_until_ready(true);
        if (impl_->build.warm_lock) impl_->finish_warm_build();
      }
      if (impl_->build.layer_lock) {
        impl_->finish_layer_build();
      } else if (impl_->build.steps_pending_after_boot) {
        impl_->run_provision_steps(0);
      }
    }
    impl_->build.steps_pending_after_boot = false;
    impl_->join_segment();
    if (impl_->slot) impl_->slot->settle();
  } catch (...) {
    // A start that failed stops what it started: the VM of a detached instance (`vmfest start`)
    // would otherwise run on, unwatched, holding its VM slot.
    impl_->session.reset();
    impl_->machine->kill();
    impl_->slot.reset();
    impl_->build.release_locks();
    throw;
  }
  impl_->clock.finish();
}

void Instance::pause() {
  impl_->require_state("pause", {InstanceState::Running});
  impl_->machine->pause();
}

void Instance::resume() {
  impl_->require_state("resume", {InstanceState::Paused});
  impl_->machine->resume();
}

void Instance::power_down(milliseconds grace) {
  impl_->require_state("power down", {InstanceState::Running, InstanceState::Paused});
  impl_->session.reset();
  impl_->machine->power_down(grace);
  impl_->slot.reset();
}

void Instance::destroy() {
  impl_->require_alive_handle("destroy");
  try {
    impl_->destroy();
  } catch (const BackendError& error) {
    throw BackendError(fmt::format(
        "cannot destroy instance '{}': {}; if its hypervisor is gone for good, `vmfest destroy "
        "--force {}` removes its files",
        impl_->record.name, error.what(), impl_->record.name));
  }
}

InstanceState Instance::state() const {
  if (impl_->destroyed) {
    throw StateError(fmt::format("instance '{}' was destroyed", impl_->record.name));
  }
  return impl_->current_state();
}

ssh::Session& Instance::ssh() {
  if (!impl_->session) {
    impl_->require_state("open SSH to", {InstanceState::Running});
    impl_->session.emplace(ssh::Session::connect(impl_->endpoint(), impl_->credentials));
  }
  return *impl_->session;
}

void Instance::keep() noexcept {
  if (!impl_ || impl_->kept || impl_->destroyed) return;
  impl_->kept = true;
  // A kept instance outlives its owner: mark it detached so the reaper leaves it alone.
  impl_->record.detached = true;
  try {
    impl_->save_record();
  } catch (const std::exception& error) {
    spdlog::error("vmfest: could not mark instance '{}' as kept: {}", impl_->record.name,
                  error.what());
  }
}

void Instance::on_progress(StartProgressCallback callback) {
  impl_->clock.on_progress(std::move(callback));
}

const std::string& Instance::name() const noexcept { return impl_->record.name; }
const std::string& Instance::model_name() const noexcept { return impl_->record.model; }
fs::path Instance::directory() const { return impl_->directory(); }
fs::path Instance::console_log() const { return impl_->machine->console_log(); }
std::string Instance::console_tail(std::size_t lines) const {
  return detail::tail_lines(impl_->machine->console_log(), lines);
}
double Instance::boot_seconds() const noexcept { return impl_->clock.boot_seconds(); }
bool Instance::resumed_warm() const noexcept { return impl_->resumed_warm; }
const std::vector<StartPhase>& Instance::start_phases() const noexcept {
  return impl_->clock.phases();
}
std::string Instance::accelerator() const { return impl_->machine->accelerator(); }

InstanceInfo Instance::info() const { return impl_->info(state()); }

}  // namespace vmfest
