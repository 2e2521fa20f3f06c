// Provisioned layers: a warm image of a guest that ran a request's provisioning steps, saved in
// the model's warm folder beside the warm image it was built on (its parent: the model's plain
// warm image or the layer of a shorter list of steps). A layer's key chains its parent's key with
// the content of one step, so a list that extends another list reuses that list's layer.
#pragma once

#include <filesystem>
#include <string>

#include <nlohmann/json.hpp>

#include "vmfest/provision.h"

namespace vmfest::detail {

// What a step's layer depends on: its kind and text, and for an upload the names, modes and bytes
// of every file it copies. InvalidArgument (naming the step) for an upload that cannot be made.
std::string provision_step_key(const ProvisionStep& step, std::size_t number);

// The layer `step` makes on top of the warm image (or layer) in `parent`.
std::filesystem::path layer_directory(const std::filesystem::path& parent,
                                      const std::string& step_key);

// How a new instance gets to the layer of all its steps.
struct LayerPlan {
  std::filesystem::path layer;   // the layer of all the steps
  std::filesystem::path parent;  // the closest ready ancestor, or `base` when none is
  std::size_t steps_done = 0;    // how many of the steps `parent` holds already
  bool ready = false;            // `layer` exists: resume it
};
// `base`: the model's plain warm image (ready or about to be built).
LayerPlan plan_layers(const std::filesystem::path& base, const ProvisionSteps& steps);

// The manifest part of a layer (see write_warm_manifest): its parent, its steps, and the parent's
// manifest hash (a rebuilt parent invalidates the layers on it).
nlohmann::json layer_manifest(const std::filesystem::path& parent, const ProvisionSteps& steps,
                              std::size_t steps_done, double provision_seconds);

}  // namespace vmfest::detail
