#include "warm_build.h"

#include "../image_store/warm.h"

namespace vmfest::detail {

bool lock_image_build(std::optional<FileLock>& lock, const std::filesystem::path& image,
                      const std::function<bool()>& decided, const std::function<void()>& waiting) {
  std::filesystem::create_directories(image.parent_path());
  // Taken after the VM slot, as every builder and waiter does: whoever holds it can always run.
  lock.emplace(warm_build_lock(image), FileLock::Mode::TryOnce);
  if (!lock->held()) {
    waiting();
    lock.reset();
    lock.emplace(warm_build_lock(image));
  }
  if (decided()) {
    lock.reset();
    return false;
  }
  remove_stale_warm_builds(image);
  return true;
}

}  // namespace vmfest::detail
