#include "layers.h"

#include <sys/stat.h>

#include <algorithm>
#include <vector>

#include <fmt/format.h>

#include "../base/files.h"
#include "../base/sha256.h"
#include "vmfest/error.h"
#include "warm.h"

namespace vmfest {
namespace fs = std::filesystem;

ProvisionStep ProvisionStep::run(std::string command) {
  ProvisionStep step;
  step.kind = Kind::Run;
  step.command = std::move(command);
  return step;
}

ProvisionStep ProvisionStep::upload(fs::path local, std::string remote) {
  ProvisionStep step;
  step.kind = Kind::Upload;
  step.local = std::move(local);
  step.remote = std::move(remote);
  return step;
}

ProvisionStep ProvisionStep::reboot() {
  ProvisionStep step;
  step.kind = Kind::Reboot;
  return step;
}

std::string ProvisionStep::describe() const {
  switch (kind) {
    case Kind::Run:
      return "run: " + command;
    case Kind::Upload:
      return fmt::format("upload: {} -> {}", local.string(), remote);
    case Kind::Reboot:
      return "reboot";
  }
  return "unknown step";
}

namespace detail {
namespace {

// One line per file or folder: its path below the upload's root, its type, its permission bits,
// and a file's sha256.
std::string upload_content_key(const ProvisionStep& step, std::size_t number) {
  auto refuse = [&](const fs::path& path, const std::string& why) {
    return InvalidArgument(
        fmt::format("provisioning step {} ({}): {} {}; uploads copy regular files and folders only",
                    number, step.describe(), path.string(), why));
  };
  auto entry_line = [&](const fs::path& path, const std::string& relative) {
    const fs::file_status status = fs::symlink_status(path);
    const auto mode = static_cast<unsigned>(status.permissions()) & 07777U;
    switch (status.type()) {
      case fs::file_type::regular:
        return fmt::format("file {} {:o} {}\n", relative, mode, sha256_file(path));
      case fs::file_type::directory:
        return fmt::format("folder {} {:o}\n", relative, mode);
      case fs::file_type::not_found:
        throw refuse(path, "does not exist");
      case fs::file_type::symlink:
        throw refuse(path, "is a symbolic link");
      default:
        throw refuse(path, "is neither a file nor a folder");
    }
  };
  try {
    std::string key = entry_line(step.local, ".");
    if (!fs::is_directory(fs::symlink_status(step.local))) return key;
    std::vector<fs::path> entries;
    for (const auto& entry : fs::recursive_directory_iterator(step.local)) {
      entries.push_back(entry.path());
    }
    std::sort(entries.begin(), entries.end());
    for (const fs::path& entry : entries) {
      key += entry_line(entry, entry.lexically_relative(step.local).string());
    }
    return key;
  } catch (const fs::filesystem_error& error) {
    throw InvalidArgument(fmt::format("provisioning step {} ({}): cannot read what it uploads: {}",
                                      number, step.describe(), error.what()));
  } catch (const InvalidArgument&) {
    throw;
  } catch (const Error& error) {  // a file that cannot be read to hash it
    throw InvalidArgument(
        fmt::format("provisioning step {} ({}): {}", number, step.describe(), error.what()));
  }
}

}  // namespace

std::string provision_step_key(const ProvisionStep& step, std::size_t number) {
  switch (step.kind) {
    case ProvisionStep::Kind::Run:
      return "run\n" + step.command;
    case ProvisionStep::Kind::Upload:
      if (step.remote.empty()) {
        throw InvalidArgument(
            fmt::format("provisioning step {} ({}): the guest path to upload to is empty", number,
                        step.describe()));
      }
      return fmt::format("upload {}\n{}", step.remote, upload_content_key(step, number));
    case ProvisionStep::Kind::Reboot:
      return "reboot";
  }
  throw InvalidArgument(fmt::format("provisioning step {} has an unknown kind", number));
}

fs::path layer_directory(const fs::path& parent, const std::string& step_key) {
  const std::string key = sha256_text(parent.filename().string() + "\n" + step_key);
  return parent.parent_path() / ("layer-" + key.substr(0, 16));
}

LayerPlan plan_layers(const fs::path& base, const ProvisionSteps& steps) {
  std::vector<fs::path> chain{base};  // chain[k]: the image of the first k steps
  for (std::size_t i = 0; i < steps.size(); ++i) {
    chain.push_back(layer_directory(chain.back(), provision_step_key(steps[i], i + 1)));
  }
  LayerPlan plan;
  plan.layer = chain.back();
  plan.parent = base;
  for (std::size_t done = steps.size(); done > 0; --done) {
    if (check_warm_image(chain[done]) != WarmStatus::Ready) continue;
    if (done == steps.size()) {
      plan.ready = true;
    } else {
      plan.parent = chain[done];
      plan.steps_done = done;
    }
    break;
  }
  return plan;
}

nlohmann::json layer_manifest(const fs::path& parent, const ProvisionSteps& steps,
                              std::size_t steps_done, double provision_seconds) {
  nlohmann::json described = nlohmann::json::array();
  for (const ProvisionStep& step : steps) described.push_back(step.describe());
  return {{"parent", parent.string()},
          {"parent_manifest_sha256", warm_manifest_sha256(parent)},
          {"steps", described},
          {"steps_inherited", steps_done},
          {"provision_seconds", provision_seconds}};
}

}  // namespace detail
}  // namespace vmfest
