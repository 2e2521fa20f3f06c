#include "vmfest/instance.h"

#include <time.h>
#include <unistd.h>

#include <cstdlib>
#include <exception>
#include <mutex>
#include <random>
#include <thread>

#include <fmt/format.h>
#include <openssl/rand.h>
#include <spdlog/spdlog.h>

#include "backend.h"
#include "files.h"
#include "instance_record.h"
#include "json_file.h"
#include "registry_store.h"
#include "seed.h"
#include "vm_slots.h"
#include "vmfest/error.h"
#include "vmfest/model.h"
#include "vmfest/ssh/keys.h"
#include "warm.h"

namespace vmfest {
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

namespace {

// How long start() waits for a free VM slot before it gives up: $VMFEST_SLOT_WAIT seconds, else
// 10 minutes. vmfest_add_tests() sets it below the test's timeout, so a test starved of slots
// fails with the holders named instead of being killed by ctest.
milliseconds slot_timeout() {
  const char* configured = std::getenv("VMFEST_SLOT_WAIT");
  if (configured == nullptr || *configured == '\0') return std::chrono::minutes(10);
  char* end = nullptr;
  const long seconds = std::strtol(configured, &end, 10);
  if (*end != '\0' || seconds < 1) {
    throw InvalidArgument(fmt::format(
        "VMFEST_SLOT_WAIT={} is not valid: use a whole number of seconds, at least 1", configured));
  }
  return std::chrono::seconds(seconds);
}

}  // namespace

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

std::string random_suffix() {
  thread_local std::mt19937_64 generator{std::random_device{}()};
  return fmt::format("{:08x}", static_cast<std::uint32_t>(generator()));
}

std::string generated_name(const std::string& model) {
  constexpr std::size_t kMaxPrefix = 64 - 9;
  return fmt::format("{}-{}", model.substr(0, kMaxPrefix), random_suffix());
}

fs::path registered_kernel(const Home& home) {
  try {
    for (const Model& model : ModelRegistry(home).list()) {
      if (model.boot.kind == BootSpec::Kind::Kernel) return model.boot.kernel;
    }
  } catch (const Error& error) {
    spdlog::debug("vmfest: no kernel-boot model found in {}: {}", home.models().string(),
                  error.what());
  }
  return {};
}

detail::MachineConfig machine_config(const Home& home, const detail::InstanceRecord& record,
                                     const Model& model) {
  detail::MachineConfig config;
  config.instance_name = record.name;
  config.directory = home.instances() / record.name;
  config.model = model;
  config.profile = record.profile;
  config.seed_image = config.directory / "seed.iso";
  config.full_copy = record.permanent;
  config.cache_directory = home.cache();
  config.registered_kernel = registered_kernel(home);
  config.warm_image = record.warm_image;
  return config;
}
// A placeholder when the model of a leaked instance is gone: enough to stop and remove it.
Model model_or_stub(const Home& home, const std::string& name) {
  try {
    if (auto model = ModelRegistry(home).find(name)) return *model;
  } catch (const Error&) {
  }
  Model stub;
  stub.name = name;
  return stub;
}

struct RecordedMachine {
  std::unique_ptr<detail::Backend> backend;
  std::unique_ptr<detail::Machine> machine;
};

// The backend and machine of the instance recorded in `directory`. A backend name or saved machine
// state of the wrong shape is the record's fault, and reported as such.
RecordedMachine recorded_machine(const Home& home, const detail::InstanceRecord& record,
                                 const Model& model, const fs::path& directory) {
  RecordedMachine recorded;
  try {
    recorded.backend = detail::make_backend(record.backend);
  } catch (const InvalidArgument& error) {
    throw detail::invalid_record(directory, error.what());
  }
  detail::MachineConfig config = machine_config(home, record, model);
  config.directory = directory;
  try {
    recorded.machine = recorded.backend->machine(config, record.machine);
  } catch (const nlohmann::json::exception& error) {
    throw detail::invalid_record(directory, "its machine state: " + detail::json_problem(error));
  }
  return recorded;
}

StateError no_such_instance(const Home& home, const std::string& name) {
  return StateError(fmt::format("no instance named '{}' in {}; `vmfest ls` lists them", name,
                                home.instances().string()));
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
  double boot_seconds = 0;
  std::vector<StartPhase> start_phases;
  Clock::time_point phase_begin;
  std::chrono::seconds ready_timeout{120};
  bool resumed_warm = false;

  explicit Impl(Home h) : home(std::move(h)) {}

  // Ends the current start() phase under `name` and begins the next.
  void phase_done(const char* name) {
    const auto now = Clock::now();
    start_phases.push_back({name, std::chrono::duration<double>(now - phase_begin).count()});
    phase_begin = now;
    spdlog::debug("instance {}: start phase '{}' took {:.3f} s", record.name, name,
                  start_phases.back().seconds);
  }

  [[nodiscard]] fs::path directory() const { return home.instances() / record.name; }

  void save_record() {
    record.machine = machine->saved_state();
    detail::write_instance_record(directory(), record);
  }

  void require_alive_handle(const char* action) const {
    if (destroyed) {
      throw StateError(
          fmt::format("cannot {} instance '{}': it was destroyed", action, record.name));
    }
  }

  void require_state(const char* action, std::initializer_list<InstanceState> allowed) {
    require_alive_handle(action);
    InstanceState now = current_state();
    for (InstanceState state : allowed) {
      if (state == now) return;
    }
    throw StateError(
        fmt::format("cannot {} instance '{}': it is {}", action, record.name, to_string(now)));
  }

  InstanceState current_state() {
    InstanceState state = machine->state();
    if (state == InstanceState::Stopped && !record.started) return InstanceState::Created;
    return state;
  }

  [[nodiscard]] InstanceInfo info(InstanceState state) const {
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
            {}};
  }

  ssh::Endpoint endpoint() const {
    ssh::Endpoint endpoint = machine->ssh_endpoint();
    endpoint.user = model.ssh_user;
    return endpoint;
  }

  std::string console_tail(std::size_t lines) const {
    return detail::tail_lines(machine->console_log(), lines);
  }

  [[noreturn]] void fail_not_ready(const std::string& why) const {
    throw NotReadyError(
        fmt::format("instance '{}' (model '{}', accelerator {}) did not become ready: {}. "
                    "Console log: {}",
                    record.name, model.name, machine->accelerator(), why,
                    machine->console_log().string()) +
            (machine->accelerator() == "kvm"
                 ? ". If this host's KVM cannot run the guest, VMFEST_ACCEL=tcg avoids it"
                 : ""),
        console_tail(40));
  }

  // The guest prints the model's marker once sshd listens: no SSH attempt is wasted before it.
  void wait_for_marker(Clock::time_point deadline, std::chrono::seconds timeout) {
    int checks = 0;
    while (true) {
      std::string console = detail::read_text_if_exists(machine->console_log());
      if (console.find(model.ready_marker) != std::string::npos) return;
      if (Clock::now() >= deadline) {
        fail_not_ready(fmt::format("the guest did not print its ready marker '{}' within {} s",
                                   model.ready_marker, timeout.count()));
      }
      if (++checks % 25 == 0 && machine->state() == InstanceState::Stopped) {
        fail_not_ready("the VM stopped while booting");
      }
      std::this_thread::sleep_for(milliseconds(10));
    }
  }

  // `use_marker`: wait for the model's console marker first (a booting guest); a resumed warm
  // clone is past that point already.
  void wait_until_ready(std::chrono::seconds timeout, bool use_marker) {
    const auto deadline = Clock::now() + timeout;
    const bool has_marker = use_marker && !model.ready_marker.empty();
    if (has_marker) {
      wait_for_marker(deadline, timeout);
      phase_done("console");
    }
    std::string last_error = "no SSH attempt finished";
    while (Clock::now() < deadline) {
      auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now());
      try {
        ssh::Session attempt = ssh::Session::connect(
            endpoint(), credentials, std::min(left, milliseconds(has_marker ? 10000 : 3000)));
        attempt.check("true");
        session.emplace(std::move(attempt));
        phase_done("ssh");
        return;
      } catch (const SshAuthError& error) {
        // After the marker the keys are in place: a refusal will not go away by waiting.
        if (has_marker) throw;
        last_error = error.what();
      } catch (const HostKeyMismatchError& error) {
        if (has_marker) throw;
        last_error = error.what();
      } catch (const SshError& error) {
        last_error = error.what();
      }
      if (machine->state() == InstanceState::Stopped) {
        fail_not_ready("the VM stopped while booting");
      }
      std::this_thread::sleep_for(milliseconds(100));
    }
    fail_not_ready(fmt::format("no SSH command succeeded within {} s; last error: {}",
                               timeout.count(), last_error));
  }

  // Hands a resumed warm clone its own identity through the guest agent, in one exchange: the
  // host's clock, fresh entropy, its hostname, client key and host key (see vmfest-agent.c).
  void deliver_identity() {
    const std::string authorized_keys =
        detail::read_text(directory() / (std::string(detail::kClientKey) + ".pub"));
    const std::string host_key = detail::read_text(directory() / detail::kHostKeyDropbear);
    timespec now{};
    ::clock_gettime(CLOCK_REALTIME, &now);
    unsigned char entropy[32];
    if (RAND_bytes(entropy, sizeof(entropy)) != 1) {
      throw Error("OpenSSL could not produce random bytes to reseed the guest");
    }
    std::string hex;
    for (unsigned char byte : entropy) hex += fmt::format("{:02x}", byte);
    const std::string reply = machine->agent_exchange(
        fmt::format("identity {} {} {} {} {} {}\n{}{}", now.tv_sec, now.tv_nsec, hex, record.name,
                    authorized_keys.size(), host_key.size(), authorized_keys, host_key),
        std::chrono::seconds(20));
    if (reply != "ok") {
      throw BackendError(fmt::format("the guest agent of instance '{}' refused its identity: {}",
                                     record.name, reply));
    }
  }

  // Boots the instance's disk afresh from the model when resuming its warm image failed.
  void fall_back_to_cold_boot(const std::string& why) {
    spdlog::warn(
        "vmfest: instance '{}': resuming the warm image failed ({}); falling back to a "
        "cold boot",
        record.name, why);
    machine->kill();
    record.warm_image.clear();
    machine = backend->machine(machine_config(home, record, model), nlohmann::json());
    machine->create_disk();
    machine->launch(&slot.value());
    save_record();
    wait_until_ready(ready_timeout, true);
  }

  void destroy() {
    session.reset();
    machine->kill();
    machine->remove();
    slot.reset();
    // The owner lock is held until the folder is gone, so a reaper never races this removal.
    fs::remove_all(directory());
    owner_lock.reset();
    destroyed = true;
  }
};

namespace detail {

// Builds and finds warm images; a friend of Instance because it drives one instance's machine
// past what the public API offers (saving its state).
struct InstanceAccess {
  // What describe_instances() lists for an instance whose hypervisor cannot be asked.
  static InstanceInfo unknown_state(const Instance& instance, std::string problem) {
    InstanceInfo info = instance.impl_->info(InstanceState::Unknown);
    info.problem = std::move(problem);
    return info;
  }

  static void take_slots(const std::vector<Instance*>& instances) {
    std::vector<Instance*> waiting;
    std::vector<std::string> names;
    for (Instance* instance : instances) {
      if (instance->impl_->slot) continue;
      waiting.push_back(instance);
      names.push_back(instance->impl_->record.name);
    }
    if (names.empty()) return;
    std::vector<VmSlot> slots = acquire_vm_slots(names, slot_timeout());
    for (std::size_t index = 0; index < waiting.size(); ++index) {
      waiting[index]->impl_->slot.emplace(std::move(slots[index]));
    }
  }

  // The warm image for `model` and `profile`, built on first use (one cold boot, then a save)
  // under a lock so that concurrent processes build it once. Empty when the backend or the
  // model cannot have warm clones.
  static fs::path warm_image_for(const Home& home, const Model& model, const Profile& profile,
                                 Backend& backend) {
    MachineConfig probe;
    probe.instance_name = "warm-fingerprint";
    probe.directory = home.cache();
    probe.model = model;
    probe.profile = profile;
    probe.seed_image = home.cache() / "seed.iso";
    probe.cache_directory = home.cache();
    probe.registered_kernel = registered_kernel(home);
    const std::string fingerprint = backend.warm_fingerprint(probe);
    if (fingerprint.empty()) return {};
    const fs::path image = warm_image_directory(model, profile, fingerprint);
    if (auto status = check_warm_image(image); status != WarmStatus::Missing) {
      return status == WarmStatus::Ready ? image : fs::path();
    }
    fs::create_directories(image.parent_path());
    FileLock lock(warm_build_lock(image));
    if (auto status = check_warm_image(image); status != WarmStatus::Missing) {
      return status == WarmStatus::Ready ? image : fs::path();
    }
    remove_stale_warm_builds(image);
    return build(home, model, profile, backend, probe, fingerprint, image);
  }

 private:
  static fs::path build(const Home& home, const Model& model, const Profile& profile,
                        Backend& backend, const MachineConfig& probe,
                        const std::string& fingerprint, const fs::path& image) {
    spdlog::info(
        "vmfest: building a warm image of model '{}' ({} MiB, {} CPUs): one cold boot, "
        "then its state is saved for every later clone",
        model.name, profile.memory_mib, profile.cpus);
    InstanceRequest request;
    request.model = model.name;
    request.profile = profile;
    request.warm = false;
    request.name =
        fmt::format("warm-{}-{}", image.filename().string().substr(0, 8), random_suffix());
    Instance builder = Instance::create(request, home);
    builder.start();
    // The builder's start can change what the image depends on (the QEMU backend falls back
    // from a KVM that cannot run the guest to TCG): its state is not this fingerprint's.
    if (backend.warm_fingerprint(probe) != fingerprint) {
      spdlog::warn(
          "vmfest: the hypervisor setup changed while building the warm image of model '{}' "
          "(accelerator now {}); this instance boots cold, the next one builds a new image",
          model.name, builder.accelerator());
      return {};
    }
    Instance::Impl& impl = *builder.impl_;
    std::string reply;
    try {
      reply = impl.machine->agent_exchange("ping\n", std::chrono::seconds(5));
    } catch (const Error& error) {
      reply = error.what();
    }
    if (reply != "pong") {
      const std::string reason = "no vmfest guest agent answered on the agent port (" + reply + ")";
      spdlog::warn("vmfest: model '{}' cannot have warm clones: {}; its instances boot cold",
                   model.name, reason);
      write_unsupported_manifest(image, fingerprint, reason);
      return {};
    }
    // Smaller state, faster resumes: the agent drops the guest's page cache first.
    if (const std::string quiet =
            impl.machine->agent_exchange("quiesce\n", std::chrono::seconds(30));
        quiet != "ok") {
      spdlog::warn(
          "vmfest: the guest agent of model '{}' could not drop its page cache before the "
          "warm image was saved ({}); the image is valid, only larger",
          model.name, quiet);
    }
    impl.session.reset();
    const fs::path staging = warm_build_folder(image);
    fs::remove_all(staging);
    fs::create_directories(staging);
    try {
      const auto begin = Clock::now();
      nlohmann::json facts = impl.machine->save_warm_image(staging);
      const double seconds = std::chrono::duration<double>(Clock::now() - begin).count();
      write_warm_manifest(staging, fingerprint, facts, seconds);
      fs::remove_all(image);  // an image that failed its check
      fs::rename(staging, image);
      spdlog::info("vmfest: warm image of model '{}' saved in {:.2f} s: {}", model.name, seconds,
                   image.string());
    } catch (...) {
      std::error_code ignored;
      fs::remove_all(staging, ignored);
      throw;
    }
    return image;
  }
};

}  // namespace detail

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
  impl->owned = true;
  if (request.warm && !request.permanent && !request.private_nic && detail::warm_enabled()) {
    impl->record.warm_image =
        detail::InstanceAccess::warm_image_for(home, impl->model, request.profile, *impl->backend)
            .string();
  }
  impl->ready_timeout = request.ready_timeout;

  // Reserve the name atomically across processes: build a private folder, hold its owner lock,
  // then rename it into place (rename fails when the name exists).
  const fs::path staging = home.instances() / fmt::format(".new-{}-{}", name, random_suffix());
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
    const detail::SeedIdentity identity{name, client.public_openssh, host.private_openssh,
                                        host.public_openssh};
    detail::write_seed_image(directory, identity);
    detail::write_text_atomically(directory / detail::kHostKeyDropbear, host.private_dropbear());
    fs::permissions(directory / detail::kHostKeyDropbear,
                    fs::perms::owner_read | fs::perms::owner_write);
    impl->credentials = {client.private_openssh, host.public_openssh};
    detail::MachineConfig config = machine_config(home, impl->record, impl->model);
    config.private_nic = request.private_nic;
    impl->machine = impl->backend->machine(config, nlohmann::json());
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
  impl->machine = std::move(recorded.machine);
  ssh::KeyPair client = ssh::KeyPair::load(directory / detail::kClientKey);
  std::string host = detail::read_text(directory / detail::kHostPublicKey);
  while (!host.empty() && host.back() == '\n') host.pop_back();
  impl->credentials = {client.private_openssh, host};
  return Instance(std::move(impl));
}

void Instance::start() {
  impl_->require_state("start", {InstanceState::Created, InstanceState::Stopped});
  impl_->session.reset();
  const auto begin = Clock::now();
  impl_->start_phases.clear();
  impl_->phase_begin = begin;
  if (!impl_->slot)
    impl_->slot.emplace(detail::acquire_vm_slot(impl_->record.name, slot_timeout()));
  impl_->phase_done("slot");
  impl_->resumed_warm = false;
  impl_->machine->launch(&impl_->slot.value());
  impl_->phase_done("launch");
  try {
    impl_->record.started = true;
    impl_->save_record();
    if (impl_->machine->resumed_warm()) {
      try {
        impl_->deliver_identity();
        impl_->phase_done("identity");
        impl_->wait_until_ready(impl_->ready_timeout, false);
        impl_->resumed_warm = true;
      } catch (const Error& error) {
        impl_->fall_back_to_cold_boot(error.what());
      }
    } else {
      impl_->wait_until_ready(impl_->ready_timeout, true);
    }
  } catch (...) {
    // A start that failed stops what it started: the VM of a detached instance (`vmfest start`)
    // would otherwise run on, unwatched, holding its VM slot.
    impl_->machine->kill();
    impl_->slot.reset();
    throw;
  }
  impl_->boot_seconds = std::chrono::duration<double>(Clock::now() - begin).count();
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

const std::string& Instance::name() const noexcept { return impl_->record.name; }
const std::string& Instance::model_name() const noexcept { return impl_->record.model; }
fs::path Instance::directory() const { return impl_->directory(); }
fs::path Instance::console_log() const { return impl_->machine->console_log(); }
std::string Instance::console_tail(std::size_t lines) const { return impl_->console_tail(lines); }
double Instance::boot_seconds() const noexcept { return impl_->boot_seconds; }
bool Instance::resumed_warm() const noexcept { return impl_->resumed_warm; }
const std::vector<StartPhase>& Instance::start_phases() const noexcept {
  return impl_->start_phases;
}
std::string Instance::accelerator() const { return impl_->machine->accelerator(); }

InstanceInfo Instance::info() const { return impl_->info(state()); }

// ---- registry-wide operations -----------------------------------------------------------------

void start_all(const std::vector<Instance*>& instances) {
  detail::InstanceAccess::take_slots(instances);
  std::vector<std::exception_ptr> errors(instances.size());
  {
    std::vector<std::jthread> starts;
    for (std::size_t index = 0; index < instances.size(); ++index) {
      starts.emplace_back([&instances, &errors, index] {
        try {
          instances[index]->start();
        } catch (...) {
          errors[index] = std::current_exception();
        }
      });
    }
  }
  for (const std::exception_ptr& error : errors) {
    if (error) std::rethrow_exception(error);
  }
}

std::vector<std::string> list_instances(const Home& home) {
  std::vector<std::string> names;
  if (!fs::exists(home.instances())) return names;
  for (const auto& entry : fs::directory_iterator(home.instances())) {
    std::string name = entry.path().filename().string();
    if (entry.is_directory() && !name.starts_with(".")) names.push_back(name);
  }
  std::sort(names.begin(), names.end());
  return names;
}

std::vector<InstanceInfo> describe_instances(const Home& home) {
  std::vector<InstanceInfo> infos;
  for (const auto& name : list_instances(home)) {
    try {
      Instance instance = Instance::open(name, home);
      try {
        infos.push_back(instance.info());
      } catch (const BackendError& error) {
        // One hypervisor out of reach must not hide the other instances.
        infos.push_back(detail::InstanceAccess::unknown_state(instance, error.what()));
        spdlog::warn("vmfest: the state of instance '{}' is unknown: {}", name, error.what());
      }
    } catch (const StateError&) {
      // Removed between listing and opening: no longer there to describe.
    } catch (const Error& error) {
      // An unreadable record, a key file missing: the others are listed all the same.
      spdlog::warn("vmfest: {} (left out of the list)", error.what());
    }
  }
  return infos;
}

namespace {

// Stops the VM of the instance in `directory`, as `record` describes it (none: no readable
// record), and removes the folder. Without `force`, a hypervisor that cannot be reached or a
// machine state that cannot be read throws and the files stay; with it, that is logged and the
// files go anyway (a VM that hypervisor still runs is left to it).
void remove_instance_folder(const Home& home, const fs::path& directory,
                            const std::optional<detail::InstanceRecord>& record, bool force) {
  if (record) {
    try {
      RecordedMachine recorded =
          recorded_machine(home, *record, model_or_stub(home, record->model), directory);
      recorded.machine->kill();
      recorded.machine->remove();
    } catch (const Error& error) {
      if (!force) throw;
      spdlog::warn("vmfest: {}; removing its files anyway (--force)", error.what());
    }
  }
  fs::remove_all(directory);
}

}  // namespace

void force_destroy_instance(const std::string& name, const Home& home) {
  validate_name(name, "instance");
  const fs::path directory = home.instances() / name;
  if (!fs::is_directory(directory)) throw no_such_instance(home, name);
  std::optional<detail::InstanceRecord> record;
  try {
    record = detail::read_instance_record(directory);
  } catch (const InstanceRecordError& error) {
    spdlog::warn("vmfest: {}; removing its files anyway (--force)", error.what());
  }
  remove_instance_folder(home, directory, record, true);
}

std::vector<std::string> reap_leaked_instances(const Home& home, const ReapOptions& options) {
  std::vector<std::string> reaped;
  if (!fs::exists(home.instances())) return reaped;
  for (const auto& entry : fs::directory_iterator(home.instances())) {
    const fs::path directory = entry.path();
    if (!entry.is_directory()) continue;
    try {
      if (!fs::exists(directory / detail::kOwnerLock)) {
        // Every instance folder has its lock from birth (see create): without it, this is what
        // a destroy killed halfway left, its VM already killed.
        spdlog::info("vmfest: removing {}, left by an interrupted destroy", directory.string());
        std::error_code ignored;  // a destroy that is still under way removes it too
        fs::remove_all(directory, ignored);
        reaped.push_back(directory.filename().string());
        continue;
      }
      std::optional<detail::InstanceRecord> record;
      std::string unreadable;
      try {
        record = detail::read_instance_record(directory);
      } catch (const InstanceRecordError& error) {
        if (!options.force) throw;
        unreadable = error.what();
      }
      if (record && !options.force && (record->detached || record->permanent)) continue;
      detail::FileLock owner(directory / detail::kOwnerLock, detail::FileLock::Mode::TryExisting);
      if (!owner.held()) continue;  // the owner is alive (or the folder is being removed)
      if (!unreadable.empty()) spdlog::warn("vmfest: {}; reaping it anyway (--force)", unreadable);
      remove_instance_folder(home, directory, record, options.force);
      reaped.push_back(directory.filename().string());
    } catch (const InstanceRecordError& error) {
      spdlog::warn("vmfest: not reaping {}: {}", directory.string(), error.what());
    } catch (const Error& error) {
      spdlog::warn("vmfest: not reaping {}: {}; `vmfest reap --force` removes its files",
                   directory.string(), error.what());
    } catch (const std::exception& error) {
      spdlog::warn("vmfest: could not reap {}: {}", directory.string(), error.what());
    }
  }
  // What killed processes left beside the models: setups' staging and warm builds' folders.
  try {
    detail::remove_interrupted_setups(home);
    detail::remove_interrupted_warm_builds(home.models());
  } catch (const std::exception& error) {
    spdlog::warn("vmfest: could not remove what interrupted setups left in {}: {}",
                 home.models().string(), error.what());
  }
  return reaped;
}

}  // namespace vmfest
