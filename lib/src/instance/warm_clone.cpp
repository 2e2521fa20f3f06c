// Instance::Impl's warm images: building one from the first instance's own boot (so a model that
// cannot be made warm costs no extra boot), resuming it with the clone's own identity, and falling
// back to a cold boot whenever that fails.
#include <time.h>

#include <fmt/format.h>
#include <openssl/rand.h>
#include <spdlog/spdlog.h>

#include "../image_store/warm.h"
#include "instance_impl.h"

namespace vmfest {
namespace fs = std::filesystem;
using detail::Clock;
using std::chrono::milliseconds;
using std::chrono::seconds;

namespace detail {
namespace {

// Up to 10 s for the agent to run: a cloud image starts it from its seed's runcmd, late in the
// boot and without waiting for it. Exit 1 when it never does.
constexpr const char* kAwaitAgent =
    "i=0; while [ $i -lt 50 ]; do pidof vmfest-agent >/dev/null 2>&1 && exit 0; sleep 0.2; "
    "i=$((i+1)); done; exit 1";

}  // namespace
}  // namespace detail

void Instance::Impl::use_warm_image(const fs::path& image) {
  record.warm_image = image.string();
  record.first_login_done = true;  // the saved guest had it; the agent gives this clone its key
  detail::mark_warm_image_used(image);
  renew_machine();
  machine->create_disk();
  save_record();
}

void Instance::Impl::renew_machine() {
  machine = backend->machine(detail::machine_config(home, record, model), nlohmann::json());
}

void Instance::Impl::prepare_warm_start() {
  if (record.warm_build.empty()) return;
  const fs::path image = record.warm_build;
  record.warm_build.clear();  // one try: a later start of this instance boots as it is
  save_record();
  // True when the image is decided: ready (and now used) or known not to be possible.
  auto decided = [&] {
    switch (detail::check_warm_image(image)) {
      case detail::WarmStatus::Ready:
        use_warm_image(image);
        return true;
      case detail::WarmStatus::Unsupported:
        renew_machine();  // a plain boot after all
        return true;
      case detail::WarmStatus::Missing:
        break;
    }
    return false;
  };
  if (decided()) return;
  if (!lock_image_build(build.warm_lock, image, decided,
                        "building the warm image of model '" + model.name + "'", "warm image")) {
    return;
  }
  record.warm_build = image.string();  // what finish_warm_build() saves
  spdlog::info(
      "vmfest: instance '{}' boots model '{}' ({} MiB, {} CPUs) cold and then saves it as the "
      "warm image every later clone resumes",
      record.name, model.name, record.profile.memory_mib, record.profile.cpus);
}

bool Instance::Impl::lock_image_build(std::optional<detail::FileLock>& lock, const fs::path& image,
                                      const std::function<bool()>& decided,
                                      const std::string& building, const char* phase) {
  return detail::lock_image_build(lock, image, decided, [&] {
    spdlog::info("vmfest: instance '{}': another process is {}; waiting for it", record.name,
                 building);
    report_progress(phase);
  });
}

std::string Instance::Impl::fingerprint_still_of(const fs::path& model_warm_image) const {
  const std::string fingerprint =
      backend->warm_fingerprint(detail::machine_config(home, record, model));
  if (detail::warm_image_directory(model, record.profile, fingerprint) != model_warm_image) {
    return {};
  }
  return fingerprint;
}

Instance::Impl::AgentCheck Instance::Impl::prepare_agent() {
  try {
    if (!session->run(detail::kAwaitAgent).ok()) {
      return {model.published_login.empty()
                  ? "no vmfest-agent process runs in the guest (the image has neither cloud-init "
                    "to start it from the seed nor an agent of its own)"
                  : "no vmfest-agent process runs in the guest (its first login could not install "
                    "and start it)",
              true};
    }
    const std::string reply = machine->agent_exchange("ping\n", seconds(5));
    if (reply != "pong") return {"the guest agent answered '" + reply + "' to a ping", true};
    // A clone's host key must go where its SSH server reads it, and no server state may carry
    // into clones: the agent knows how for the servers cloud images run (ssh_server.h).
    const std::string server = machine->agent_exchange("ssh-server\n", seconds(5));
    if (server.rfind("ok ", 0) != 0) {
      return {"its SSH server is none vmfest can hand a clone's host key to (" +
                  (server.rfind("unknown ", 0) == 0 ? server.substr(8) : server) +
                  "); vmfest knows OpenSSH's sshd and dropbear, as daemons or started by a "
                  "systemd socket",
              true};
    }
    spdlog::debug("vmfest: instance '{}': the guest's SSH server is {}", record.name,
                  server.substr(3));
  } catch (const Error& error) {
    // An SSH hiccup or a ping that timed out on a loaded host says nothing about the guest.
    return {std::string("no vmfest guest agent answered on the agent port: ") + error.what(),
            false};
  }
  return {};
}

void Instance::Impl::save_warm_image(const fs::path& image, const std::string& fingerprint,
                                     const nlohmann::json& layer) {
  // A state that holds the memory is smaller and resumes faster without the guest's page cache.
  const bool copies_memory = machine->warm_image_copies_memory();
  if (const std::string quiet = machine->agent_exchange(
          copies_memory ? "quiesce\n" : "quiesce keep-cache\n", seconds(30));
      quiet != "ok") {
    spdlog::warn(
        "vmfest: the guest agent of model '{}' could not quiesce the guest before the warm image "
        "was saved ({}); the image is valid, only {}",
        model.name, quiet, copies_memory ? "larger" : "its SSH server may start later");
  }
  session.reset();
  const fs::path staging = detail::warm_build_folder(image);
  fs::remove_all(staging);
  fs::create_directories(staging);
  fs::permissions(staging, fs::perms::owner_all);  // what the guest held: its owner's alone
  try {
    const auto begin = Clock::now();
    nlohmann::json facts = machine->save_warm_image(staging);
    const double took = std::chrono::duration<double>(Clock::now() - begin).count();
    detail::write_warm_manifest(staging, fingerprint, facts, took, layer);
    fs::remove_all(image);  // an image that failed its check
    fs::rename(staging, image);
    spdlog::info("vmfest: {} of model '{}' saved in {:.2f} s: {}",
                 layer.is_null() ? "warm image" : "provisioned layer", model.name, took,
                 image.string());
  } catch (...) {
    std::error_code ignored;
    fs::remove_all(staging, ignored);
    throw;
  }
}

void Instance::Impl::finish_warm_build() {
  const fs::path image = record.warm_build;
  record.warm_build.clear();
  struct Release {
    std::optional<detail::FileLock>& lock;
    ~Release() { lock.reset(); }
  } release{build.warm_lock};
  report_progress("warm image");
  // Never fails the start, whatever stops the save (a file system error included): the instance
  // runs on cold, or boots cold again if the save stopped its VM.
  try {
    // This boot can change what the image depends on (a backend falls back from a KVM that cannot
    // run the guest to TCG): then its state is not the image's.
    const std::string fingerprint = fingerprint_still_of(image);
    if (fingerprint.empty()) {
      spdlog::warn(
          "vmfest: the hypervisor setup changed while instance '{}' booted (accelerator now {}); "
          "it runs on cold, and the next instance builds the warm image of model '{}'",
          record.name, machine->accelerator(), model.name);
      return;
    }
    if (const AgentCheck agent = prepare_agent(); !agent.ok()) {
      if (!agent.definite) {
        spdlog::warn(
            "vmfest: the warm image of model '{}' is not saved from instance '{}', which runs on "
            "cold: {}; the next instance tries again",
            model.name, record.name, agent.problem);
        return;
      }
      spdlog::warn("vmfest: model '{}' cannot have warm clones: {}; its instances boot cold",
                   model.name, agent.problem);
      detail::write_unsupported_manifest(image, fingerprint, agent.problem);
      return;
    }
    save_warm_image(image, fingerprint);
  } catch (const std::exception& error) {
    spdlog::warn(
        "vmfest: could not save the warm image of model '{}' from instance '{}': {}; the next "
        "instance tries again",
        model.name, record.name, error.what());
    if (machine->state() == InstanceState::Running) return;
    fall_back_to_cold_boot(std::string("saving its warm image stopped it: ") + error.what());
    return;
  }
  clock.phase_done("warm image");
  // The image is complete: waiters may take it, and a relaunch the hypervisor refuses may discard
  // it.
  build.warm_lock.reset();
  use_warm_image(image);
  if (launch_or_boot_cold()) complete_warm_resume();
}

bool Instance::Impl::launch_or_boot_cold() {
  try {
    machine->launch(slot ? &*slot : nullptr);
  } catch (const detail::WarmResumeError& error) {
    const fs::path image = record.warm_image;
    const bool discarded = error.image_at_fault() && detail::discard_warm_image(image);
    fall_back_to_cold_boot(
        fmt::format("resuming a warm image of model '{}' failed: {}{}", model.name, error.what(),
                    discarded ? "; the image is removed, and the next instance rebuilds it" : ""));
    return false;
  }
  clock.phase_done("launch");
  record.started = true;
  save_record();
  return true;
}

void Instance::Impl::complete_warm_resume() {
  try {
    deliver_identity();
    clock.phase_done("identity");
    wait_until_ready(false);
    resumed_warm = true;
  } catch (const std::exception& error) {
    fall_back_to_cold_boot(fmt::format("resuming the warm image {} of model '{}' failed: {}",
                                       record.warm_image, model.name, error.what()));
  }
}

// Hands a resumed warm clone its own identity through the guest agent, in one exchange: the
// host's clock, fresh entropy, its hostname, the login's authorized key and the host key (see
// vmfest-agent.c). As long as readiness may take: on a loaded host a distro guest's sshd reload
// after the resume can take many seconds, and falling back to a cold boot would cost minutes.
void Instance::Impl::deliver_identity() {
  const std::string authorized_keys =
      detail::read_text(directory() / (std::string(detail::kClientKey) + ".pub"));
  const std::string dropbear_key = detail::read_text(directory() / detail::kHostKeyDropbear);
  const std::string openssh_key = detail::read_text(directory() / detail::kHostKeyOpenssh);
  const std::string openssh_public = detail::read_text(directory() / detail::kHostPublicKey);
  timespec now{};
  ::clock_gettime(CLOCK_REALTIME, &now);
  unsigned char entropy[32];
  if (RAND_bytes(entropy, sizeof(entropy)) != 1) {
    throw Error("OpenSSL could not produce random bytes to reseed the guest");
  }
  std::string hex;
  for (unsigned char byte : entropy) hex += fmt::format("{:02x}", byte);
  const std::string reply = machine->agent_exchange(
      fmt::format("identity {} {} {} {} {} {} {} {} {}\n{}{}{}{}", now.tv_sec, now.tv_nsec, hex,
                  record.name, model.ssh_user, authorized_keys.size(), dropbear_key.size(),
                  openssh_key.size(), openssh_public.size(), authorized_keys, dropbear_key,
                  openssh_key, openssh_public),
      readiness().timeout());
  if (reply != "ok") {
    throw BackendError(fmt::format("the guest agent of instance '{}' refused its identity: {}",
                                   record.name, reply));
  }
}

// Boots the instance's disk afresh from the model when its warm start failed.
void Instance::Impl::fall_back_to_cold_boot(const std::string& why) {
  spdlog::warn("vmfest: instance '{}': {}; falling back to a cold boot", record.name, why);
  session.reset();
  machine->kill();
  record.warm_image.clear();
  record.layer_build.clear();       // a layer is built on a warm image, not on this boot
  record.first_login_done = false;  // a fresh disk from the model
  build.layer_lock.reset();
  build.steps_inherited = 0;
  machine = backend->machine(detail::machine_config(home, record, model), nlohmann::json());
  machine->create_disk();
  machine->launch(slot ? &*slot : nullptr);
  record.started = true;
  save_record();
  wait_until_ready(true);
  // The model's own disk: every step the warm image held runs again.
  run_provision_steps(0);
}

}  // namespace vmfest
