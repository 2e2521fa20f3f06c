// The image store's answer to a new instance: what it starts from. Decided at create() from the
// model's warm image (warm.h) and the layers of the request's provisioning steps (layers.h); the
// instance's first start builds what the plan says is missing.
#pragma once

#include <cstddef>
#include <filesystem>
#include <string>

#include "../driver/backend.h"
#include "vmfest/home.h"
#include "vmfest/instance.h"
#include "vmfest/model.h"

namespace vmfest::detail {

struct BasePlan {
  std::filesystem::path resume;       // a ready warm image or layer to resume; empty: boot cold
  std::filesystem::path build_warm;   // the model's warm image, missing: the first start builds it
  std::filesystem::path build_layer;  // the layer of all the steps, missing: built after it
  std::filesystem::path layer_base;   // the model's warm image that the layers chain from
  std::size_t steps_inherited = 0;    // how many of the steps `resume` holds already
  bool steps_after_boot = false;      // no image can keep the steps: each instance runs them
};

// `warm`: the request allows warm clones (VMFEST_WARM, a transient VM without a private network).
// InvalidArgument for a step that cannot be keyed (an upload of a missing file, a link).
BasePlan plan_base(const Home& home, const Model& model, const Profile& profile, Backend& backend,
                   const ProvisionSteps& steps, bool warm);

// Where the warm image of `model` and `profile` lives, and the fingerprint it is keyed by, on a
// backend that can make warm images.
struct WarmLocation {
  std::filesystem::path directory;
  std::string fingerprint;
};
WarmLocation warm_image_location(const Home& home, const Model& model, const Profile& profile,
                                 Backend& backend);

}  // namespace vmfest::detail
