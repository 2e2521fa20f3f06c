#include "vmfest/home.h"

#include <sys/stat.h>

#include <fcntl.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <random>
#include <set>
#include <sstream>
#include <string>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "../base/files.h"
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

// Which folder this is, beyond its path: its inode and birth time (the device where the file
// system cannot tell a birth time). A copy at the same path differs; a reboot does not.
std::string folder_identity(const fs::path& folder) {
  struct statx info {};
  if (::statx(AT_FDCWD, folder.c_str(), 0, STATX_INO | STATX_BTIME, &info) != 0) {
    throw Error(
        fmt::format("cannot read vmfest's home {}: {}; set VMFEST_HOME to a folder you can "
                    "write",
                    folder.string(), std::strerror(errno)));
  }
  if ((info.stx_mask & STATX_BTIME) != 0) {
    return fmt::format("ino-{}-born-{}.{:09}", info.stx_ino, info.stx_btime.tv_sec,
                       info.stx_btime.tv_nsec);
  }
  return fmt::format("ino-{}-dev-{}:{}", info.stx_ino, info.stx_dev_major, info.stx_dev_minor);
}

bool is_id(const std::string& text) {
  return text.size() == 16 && text.find_first_not_of("0123456789abcdef") == std::string::npos;
}

}  // namespace

Home::Home(fs::path root) : root_(canonical_root(root)) {}

std::string Home::id() const {
  const fs::path& root = detail::prepare_home(*this);
  const std::string folder = folder_identity(root);
  const fs::path file = root / "home-id";
  // One maker at a time, so processes sharing the home agree on one id.
  const detail::FileLock lock(root / "home-id.lock");
  std::istringstream recorded(detail::read_text_if_exists(file));
  std::string id;
  std::string recorded_folder;
  if (recorded >> id >> recorded_folder && is_id(id) && recorded_folder == folder) return id;
  std::random_device random;
  id = fmt::format("{:08x}{:08x}", random(), random());
  detail::write_text_atomically(file, fmt::format("{} {}\n", id, folder), 0600);
  return id;
}

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
