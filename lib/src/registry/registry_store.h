// The on-disk form of models in the registry (private): models/<name>/model.json beside its files.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "vmfest/home.h"
#include "vmfest/model.h"

namespace vmfest::detail {

constexpr const char* kModelFile = "model.json";              // in the registry
constexpr const char* kBundleManifest = "vmfest-model.json";  // in a bundle

// A model from its JSON description; relative file names resolve against `directory`.
Model model_from_json(const nlohmann::json& json, const std::filesystem::path& directory);
nlohmann::json model_to_json(const Model& model);

// Makes the home's folder where it is missing, readable by its owner alone: warm images hold what
// their guests held in memory, layers every file their steps uploaded. Says once per process, with
// the fix, when an existing home can be read by other users. Returns the home's root.
const std::filesystem::path& prepare_home(const Home& home);
// Why the home's files are not its user's alone, and the command that makes them so; both empty
// when they are (or the home does not exist yet). prepare_home() warns with it once.
struct HomeExposure {
  std::string problem;  // "can be read by other users (mode 0755): ..."
  std::string fix;      // "chmod 700 HOME"
};
HomeExposure home_exposure(const Home& home);

// Removes the staging folders of setups whose process died (the reaper's part for models).
void remove_interrupted_setups(const Home& home);

// Names of instances (any state) cloned from `model`.
std::vector<std::string> instances_of_model(const Home& home, const std::string& model);

}  // namespace vmfest::detail
