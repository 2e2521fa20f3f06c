// Instance::Impl's provisioning: planning which layer a new instance resumes or builds, running
// the request's steps over SSH, and saving the provisioned guest as a layer (see layers.h).

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "../image_store/layers.h"
#include "../image_store/warm.h"
#include "instance_impl.h"

namespace vmfest {
namespace fs = std::filesystem;
using detail::Clock;

namespace {

constexpr std::size_t kOutputTailLines = 20;

std::string last_lines(const std::string& text, std::size_t count) {
  std::size_t start = text.size();
  if (start > 0 && text[start - 1] == '\n') --start;
  for (std::size_t lines = 0; start > 0; --start) {
    if (text[start - 1] == '\n' && ++lines == count) break;
  }
  return text.substr(start);
}

std::string output_tails(const ssh::CommandResult& result) {
  auto section = [](const char* name, const std::string& text) {
    if (text.empty()) return fmt::format("\n--- {}: (empty) ---", name);
    return fmt::format("\n--- last lines of {} ---\n{}", name, last_lines(text, kOutputTailLines));
  };
  return section("stdout", result.stdout_text) + section("stderr", result.stderr_text);
}

}  // namespace

void Instance::Impl::prepare_layer_start() {
  if (record.layer_build.empty()) return;
  const fs::path layer = record.layer_build;
  // True when the layer is ready (and now used).
  auto resumed_ready_layer = [&] {
    if (detail::check_warm_image(layer) != detail::WarmStatus::Ready) return false;
    record.layer_build.clear();
    record.warm_build.clear();
    build.steps_inherited = build.steps.size();
    use_warm_image(layer);
    return true;
  };
  if (resumed_ready_layer()) return;
  if (!lock_image_build(
          build.layer_lock, layer, resumed_ready_layer,
          "provisioning layer " + layer.filename().string() + " of model '" + model.name + "'",
          "provisioning")) {
    return;
  }
  spdlog::info(
      "vmfest: instance '{}' runs {} of its {} provisioning steps on model '{}' and saves the "
      "result as layer {}, which every later instance with these steps resumes",
      record.name, build.steps.size() - build.steps_inherited, build.steps.size(), model.name,
      layer.filename().string());
}

void Instance::Impl::run_provision_steps(std::size_t first) {
  const ProvisionSteps& steps = build.steps;
  if (first >= steps.size()) return;
  if (!session) session.emplace(ssh::Session::connect(endpoint(), credentials));
  for (std::size_t i = first; i < steps.size(); ++i) {
    const ProvisionStep& step = steps[i];
    const std::string which = fmt::format("provisioning step {} of {} ({}) of instance '{}'", i + 1,
                                          steps.size(), step.describe(), record.name);
    spdlog::info("vmfest: {}", which);
    report_progress("provisioning");
    try {
      switch (step.kind) {
        case ProvisionStep::Kind::Run: {
          ssh::RunOptions options;
          auto log_line = [&](std::string_view line) {
            spdlog::debug("vmfest: {} step {}: {}", record.name, i + 1, line);
          };
          options.on_stdout_line = log_line;
          options.on_stderr_line = log_line;
          const ssh::CommandResult result = session->run(step.command, options);
          if (!result.ok()) {
            throw ProvisionError(
                fmt::format("{} failed: {}; nothing of this provisioning was kept: fix the step "
                            "and run again{}",
                            which,
                            result.signal ? "killed by signal " + *result.signal
                                          : fmt::format("exit status {}", result.exit_status),
                            output_tails(result)),
                static_cast<int>(i + 1), result.exit_status);
          }
          break;
        }
        case ProvisionStep::Kind::Upload:
          session->upload(step.local, step.remote);
          break;
        case ProvisionStep::Kind::Reboot:
          session->reboot(readiness().timeout());
          break;
      }
    } catch (const ProvisionError&) {
      throw;
    } catch (const std::exception& error) {  // an upload's file system error too
      throw ProvisionError(
          fmt::format("{} failed: {}; nothing of this provisioning was kept", which, error.what()),
          static_cast<int>(i + 1), -1);
    }
  }
  clock.phase_done("provision");
}

void Instance::Impl::finish_layer_build() {
  const fs::path layer = record.layer_build;
  record.layer_build.clear();
  save_record();
  struct Release {
    std::optional<detail::FileLock>& lock;
    ~Release() { lock.reset(); }
  } release{build.layer_lock};
  const auto begin = Clock::now();
  run_provision_steps(build.steps_inherited);
  const double provision_seconds = std::chrono::duration<double>(Clock::now() - begin).count();
  auto keep_unsaved = [&](const std::string& why) {
    spdlog::warn(
        "vmfest: instance '{}' is provisioned, but its state is not saved as layer {} of model "
        "'{}': {}; the next instance with these steps provisions again",
        record.name, layer.filename().string(), model.name, why);
  };
  if (!resumed_warm) {
    keep_unsaved("it booted cold instead of resuming the image the layer builds on");
    return;
  }
  // Whatever stops the save (a file system error included) costs only the layer.
  try {
    const std::string fingerprint = fingerprint_still_of(build.layer_base);
    if (fingerprint.empty()) {
      keep_unsaved("the hypervisor setup changed while it ran (accelerator now " +
                   machine->accelerator() + ")");
      return;
    }
    if (const AgentCheck agent = prepare_agent(); !agent.ok()) {
      keep_unsaved("after the steps, " + agent.problem);
      return;
    }
    const fs::path parent = record.warm_image;
    save_warm_image(
        layer, fingerprint,
        detail::layer_manifest(parent, build.steps, build.steps_inherited, provision_seconds));
  } catch (const std::exception& error) {
    keep_unsaved(error.what());
    if (machine->state() == InstanceState::Running) return;
    fall_back_to_cold_boot(std::string("saving its layer stopped it: ") + error.what());
    return;
  }
  clock.phase_done("layer");
  build.layer_lock.reset();  // complete: as for a warm image (see finish_warm_build)
  build.steps_inherited = build.steps.size();
  resumed_warm = false;
  use_warm_image(layer);
  if (launch_or_boot_cold()) complete_warm_resume();
}

}  // namespace vmfest
