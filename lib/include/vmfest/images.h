// The image store: the warm images and provisioned layers that instances resume, kept beside their
// models (`vmfest images`, `vmfest prune`).
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "vmfest/home.h"

namespace vmfest {

struct WarmImageInfo {
  std::string model;
  std::string name;  // its folder: a key for a model's plain warm image, "layer-KEY" for a layer
  std::filesystem::path directory;
  std::string parent;              // the image a layer builds on (its name); empty otherwise
  std::vector<std::string> steps;  // a layer's provisioning steps, described
  std::string status;              // "ready", "unsupported" (cannot be made) or "invalid"
  std::uintmax_t size_bytes = 0;   // what its files take on disk
  std::chrono::system_clock::time_point last_used;  // last clone made from it (else its save)
  int instances = 0;  // existing instances cloned from it or from a layer on it
};

// Every warm image and layer of every model, oldest use first.
std::vector<WarmImageInfo> list_warm_images(const Home& home = Home::from_environment());

// Removes the images not used for `unused_for`, except those an existing instance still runs on
// (its disk is an overlay on the image and its ancestors), those a kept image builds on, and
// those being built right now. Returns what it removed.
std::vector<WarmImageInfo> prune_warm_images(std::chrono::seconds unused_for,
                                             const Home& home = Home::from_environment());

}  // namespace vmfest
