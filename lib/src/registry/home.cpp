#include "vmfest/home.h"

#include <cstdlib>
#include <string>

#include <fmt/format.h>

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
