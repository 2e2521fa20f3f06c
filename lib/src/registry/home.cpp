#include "vmfest/home.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <set>
#include <string>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "registry_store.h"
#include "vmfest/error.h"

namespace vmfest {
namespace fs = std::filesystem;

namespace {

// Links resolved, once for every path derived from the home: the kernel names a VM process's
// working directory (/proc/PID/cwd) by its real path, and a backend that recognises its VMs by it
// would never find, nor stop, the VMs of a home reached through a link. weakly_canonical, since
// the home may not exist yet: the part that exists is resolved.
fs::path canonical_root(const fs::path& root) {
  const fs::path absolute = fs::absolute(root);
  std::error_code error;
  fs::path resolved = fs::weakly_canonical(absolute, error);
  return error ? absolute.lexically_normal() : resolved;
}

}  // namespace

Home::Home(fs::path root) : root_(canonical_root(root)) {}

Home Home::from_environment() {
  if (const char* home = std::getenv("VMFEST_HOME"); home != nullptr && *home != '\0') {
    return Home(home);
  }
  if (const char* data = std::getenv("XDG_DATA_HOME"); data != nullptr && *data != '\0') {
    return Home(fs::path(data) / "vmfest");
  }
  const char* user_home = std::getenv("HOME");
  if (user_home == nullptr || *user_home == '\0') {
    throw InvalidArgument("cannot find a place for vmfest's data: set VMFEST_HOME");
  }
  return Home(fs::path(user_home) / ".local/share/vmfest");
}

namespace detail {

HomeExposure home_exposure(const Home& home) {
  const fs::path& root = home.root();
  struct stat info {};
  if (::stat(root.c_str(), &info) != 0 || (info.st_mode & 0077) == 0) return {};
  return {fmt::format("can be read by other users (mode {:04o}): its warm images hold what their "
                      "guests held in memory and its layers what their steps uploaded",
                      info.st_mode & 07777),
          fmt::format("chmod 700 {}", root.string())};
}

const fs::path& prepare_home(const Home& home) {
  const fs::path& root = home.root();
  std::error_code error;
  if (!fs::exists(root, error)) {
    fs::create_directories(root.parent_path(), error);
    if (error) {
      throw Error(
          fmt::format("cannot make the folder {} for vmfest's home {}: {}; set "
                      "VMFEST_HOME to a folder you can write",
                      root.parent_path().string(), root.string(), error.message()));
    }
    // Owner only from its first instant: no window in which another user could open it.
    if (::mkdir(root.c_str(), 0700) != 0 && errno != EEXIST) {
      throw Error(
          fmt::format("cannot make vmfest's home {}: {}; set VMFEST_HOME to a folder you "
                      "can write",
                      root.string(), std::strerror(errno)));
    }
    return root;
  }
  const HomeExposure exposure = home_exposure(home);
  if (exposure.problem.empty()) return root;
  static std::mutex mutex;
  static std::set<fs::path> told;
  const std::lock_guard lock(mutex);
  if (told.insert(root).second) {
    spdlog::warn("vmfest: the home {} {}; `{}` keeps them yours", root.string(), exposure.problem,
                 exposure.fix);
  }
  return root;
}

}  // namespace detail

void validate_name(const std::string& name, const char* what) {
  constexpr std::size_t kMaxLength = 64;
  auto allowed = [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '_' || c == '-';
  };
  auto alnum = [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
  };
  std::string problem;
  if (name.empty()) {
    problem = "it is empty";
  } else if (name.size() > kMaxLength) {
    problem = fmt::format("it is {} characters long (at most {})", name.size(), kMaxLength);
  } else if (!alnum(name.front())) {
    problem = "it must start with a letter or digit";
  } else {
    for (char c : name) {
      if (!allowed(c)) {
        problem = fmt::format("it contains '{}'", c);
        break;
      }
    }
  }
  if (!problem.empty()) {
    throw InvalidArgument(fmt::format(
        "invalid {} name \"{}\": {}; use 1-{} characters of letters, digits, '.', '_' and '-', "
        "starting with a letter or digit",
        what, name, problem, kMaxLength));
  }
}

}  // namespace vmfest
