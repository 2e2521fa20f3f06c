// Listing and pruning warm images and layers (vmfest/images.h).
#include "vmfest/images.h"

#include <sys/stat.h>

#include <algorithm>
#include <map>
#include <set>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "../base/files.h"
#include "../base/json_file.h"
#include "../registry/instance_record.h"
#include "warm.h"

namespace vmfest {
namespace fs = std::filesystem;

namespace {

std::uintmax_t allocated_bytes(const fs::path& directory) {
  std::uintmax_t total = 0;
  std::error_code error;
  for (fs::directory_iterator entry(directory, error), end; !error && entry != end;
       entry.increment(error)) {
    struct stat info {};
    if (::lstat(entry->path().c_str(), &info) == 0) {
      total += static_cast<std::uintmax_t>(info.st_blocks) * 512;
    }
  }
  return total;
}

std::chrono::system_clock::time_point modified(const fs::path& path) {
  struct stat info {};
  if (::stat(path.c_str(), &info) != 0) return {};
  return std::chrono::system_clock::time_point(
      std::chrono::duration_cast<std::chrono::system_clock::duration>(
          std::chrono::seconds(info.st_mtim.tv_sec) +
          std::chrono::nanoseconds(info.st_mtim.tv_nsec)));
}

WarmImageInfo describe(const std::string& model, const fs::path& directory) {
  WarmImageInfo info;
  info.model = model;
  info.name = directory.filename().string();
  info.directory = directory;
  info.size_bytes = allocated_bytes(directory);
  info.last_used =
      std::max(modified(directory / "last-used"), modified(directory / "manifest.json"));
  switch (detail::check_warm_image(directory)) {
    case detail::WarmStatus::Ready:
      info.status = "ready";
      break;
    case detail::WarmStatus::Unsupported:
      info.status = "unsupported";
      break;
    case detail::WarmStatus::Missing:
      info.status = "invalid";
      break;
  }
  try {
    detail::read_json_file(
        directory / "manifest.json",
        [&](const nlohmann::json& manifest) {
          const nlohmann::json layer = manifest.value("layer", nlohmann::json::object());
          info.parent = fs::path(layer.value("parent", "")).filename().string();
          for (const auto& step : layer.value("steps", nlohmann::json::array())) {
            if (step.is_string()) info.steps.push_back(step.get<std::string>());
          }
          return 0;
        },
        [&](std::string_view why) {
          return Error(fmt::format("{}: not a valid manifest ({})", directory.string(), why));
        });
  } catch (const Error& error) {
    spdlog::debug("vmfest: {}", error.what());
  }
  return info;
}

}  // namespace

std::vector<WarmImageInfo> list_warm_images(const Home& home) {
  std::vector<WarmImageInfo> images;
  std::error_code error;
  for (fs::directory_iterator model(home.models(), error), end; !error && model != end;
       model.increment(error)) {
    const fs::path warm = model->path() / "warm";
    std::error_code inner;
    for (fs::directory_iterator entry(warm, inner), last; !inner && entry != last;
         entry.increment(inner)) {
      const std::string name = entry->path().filename().string();
      if (name.starts_with(".") || !entry->is_directory()) continue;  // staging folders, locks
      images.push_back(describe(model->path().filename().string(), entry->path()));
    }
  }
  // Instances count against the image they were cloned from and every image below it.
  std::map<std::string, WarmImageInfo*> by_directory;
  for (WarmImageInfo& image : images) by_directory[image.directory.string()] = &image;
  for (fs::directory_iterator entry(home.instances(), error), end; !error && entry != end;
       entry.increment(error)) {
    std::optional<detail::InstanceRecord> record;
    try {
      record = detail::read_instance_record(entry->path());
    } catch (const Error&) {
      continue;  // `vmfest ls` reports those
    }
    if (!record) continue;
    std::set<std::string> seen;
    for (auto it = by_directory.find(record->warm_image); it != by_directory.end();) {
      WarmImageInfo& image = *it->second;
      if (!seen.insert(image.name).second) break;
      ++image.instances;
      it = image.parent.empty()
               ? by_directory.end()
               : by_directory.find((image.directory.parent_path() / image.parent).string());
    }
  }
  std::sort(images.begin(), images.end(), [](const WarmImageInfo& a, const WarmImageInfo& b) {
    return a.last_used < b.last_used;
  });
  return images;
}

std::vector<WarmImageInfo> prune_warm_images(std::chrono::seconds unused_for, const Home& home) {
  const auto cutoff = std::chrono::system_clock::now() - unused_for;
  std::vector<WarmImageInfo> removed;
  // Leaves first: an image whose layers are kept stays, so repeat until nothing more goes.
  for (bool progress = true; progress;) {
    progress = false;
    const std::vector<WarmImageInfo> images = list_warm_images(home);
    std::set<std::string> parents;
    for (const WarmImageInfo& image : images) {
      if (!image.parent.empty()) {
        parents.insert((image.directory.parent_path() / image.parent).string());
      }
    }
    for (const WarmImageInfo& image : images) {
      if (image.last_used > cutoff || image.instances > 0 ||
          parents.contains(image.directory.string())) {
        continue;
      }
      // A build of this very image holds its lock: leave it to finish.
      detail::FileLock lock(detail::warm_build_lock(image.directory),
                            detail::FileLock::Mode::TryOnce);
      if (!lock.held()) continue;
      std::error_code error;
      fs::remove_all(image.directory, error);
      if (error) {
        spdlog::warn("vmfest: cannot remove warm image {}: {}", image.directory.string(),
                     error.message());
        continue;
      }
      lock.remove_file();
      removed.push_back(image);
      progress = true;
    }
  }
  return removed;
}

}  // namespace vmfest
