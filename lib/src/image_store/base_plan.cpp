#include "base_plan.h"

#include <atomic>
#include <mutex>
#include <set>

#include <spdlog/spdlog.h>

#include "layers.h"
#include "warm.h"

namespace vmfest::detail {
namespace fs = std::filesystem;

namespace {

// What the backend's fingerprint is computed from: the model and profile as any instance has them.
MachineConfig fingerprint_config(const Home& home, const Model& model, const Profile& profile) {
  MachineConfig probe;
  probe.instance_name = "warm-fingerprint";
  probe.directory = home.cache();
  probe.model = model;
  probe.profile = profile;
  probe.seed_image = home.cache() / "seed.iso";
  probe.home = home.root();
  return probe;
}

}  // namespace

WarmLocation warm_image_location(const Home& home, const Model& model, const Profile& profile,
                                 Backend& backend) {
  const std::string fingerprint =
      backend.warm_fingerprint(fingerprint_config(home, model, profile));
  return {warm_image_directory(model, profile, fingerprint), fingerprint};
}

namespace {

// Says once per backend that its instances boot cold, and why.
void tell_no_warm_images(const Backend& backend, const std::string& why) {
  static std::mutex mutex;
  static std::set<std::string> told;
  const std::lock_guard lock(mutex);
  if (!told.insert(backend.name()).second) return;
  spdlog::info("vmfest: backend '{}' makes no warm images ({}): its instances boot cold",
               backend.name(), why);
}

// The model's warm image in `plan` (ready to resume, or to build); nothing when it cannot have one.
void plan_warm_image(const Home& home, const Model& model, const Profile& profile, Backend& backend,
                     BasePlan& plan) {
  if (const Capabilities capabilities = backend.capabilities(); !capabilities.warm_images) {
    tell_no_warm_images(backend, capabilities.why_no_warm_images);
    return;
  }
  const fs::path image = warm_image_location(home, model, profile, backend).directory;
  switch (check_warm_image(image)) {
    case WarmStatus::Ready:
      plan.resume = image;
      break;
    case WarmStatus::Missing:
      plan.build_warm = image;
      break;
    case WarmStatus::Unsupported:
      break;
  }
}

}  // namespace

BasePlan plan_base(const Home& home, const Model& model, const Profile& profile, Backend& backend,
                   const ProvisionSteps& steps, bool warm) {
  BasePlan plan;
  if (warm) plan_warm_image(home, model, profile, backend, plan);
  if (steps.empty()) return plan;
  const fs::path base = !plan.resume.empty() ? plan.resume : plan.build_warm;
  if (base.empty()) {
    for (std::size_t i = 0; i < steps.size(); ++i) provision_step_key(steps[i], i + 1);
    plan.steps_after_boot = true;
    static std::atomic<bool> told{false};
    if (!told.exchange(true)) {
      spdlog::info(
          "vmfest: instances of model '{}' run their {} provisioning steps after their boot: no "
          "warm image can keep them (warm clones are off for them, or the model on backend '{}' "
          "cannot have them)",
          model.name, steps.size(), backend.name());
    }
    return plan;
  }
  plan.layer_base = base;
  const LayerPlan layers = plan_layers(base, steps);
  if (layers.ready) {
    plan.resume = layers.layer;
    plan.build_warm.clear();
    plan.steps_inherited = steps.size();
    return plan;
  }
  plan.build_layer = layers.layer;
  plan.steps_inherited = layers.steps_done;
  if (layers.steps_done > 0) {
    plan.resume = layers.parent;
    plan.build_warm.clear();
  }
  return plan;
}

}  // namespace vmfest::detail
