// What an instance's starts build beyond its boot, and hold while they do: the model's warm image
// and the provisioned layer of its steps, each with the lock that makes this process their only
// builder, and the provisioning steps still to run.
#pragma once

#include <cstddef>
#include <filesystem>
#include <functional>
#include <optional>

#include "../base/files.h"
#include "vmfest/provision.h"

namespace vmfest::detail {

struct WarmBuild {
  // The request's provisioning steps, and how many of them the image this instance resumes holds
  // already (a layer of a shorter list).
  ProvisionSteps steps;
  std::size_t steps_inherited = 0;
  std::filesystem::path layer_base;  // the model's plain warm image that the layers chain from
  // The steps run once this instance's first boot is ready: no layer can hold them (no warm
  // images for this instance).
  bool steps_pending_after_boot = false;
  // Held from the start that builds the warm image (the layer) the record names until it is saved.
  std::optional<FileLock> warm_lock;
  std::optional<FileLock> layer_lock;

  void release_locks() noexcept {
    warm_lock.reset();
    layer_lock.reset();
  }
};

// Takes `lock`, the build lock of `image`, calling `waiting` first if another process holds it
// (it is building the image) and then waiting for it. False (and the lock let go) when `decided`
// then says no build is needed any more; true when this start builds the image.
bool lock_image_build(std::optional<FileLock>& lock, const std::filesystem::path& image,
                      const std::function<bool()>& decided, const std::function<void()>& waiting);

}  // namespace vmfest::detail
