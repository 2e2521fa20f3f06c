// Where vmfest keeps its models, instances and caches on this host.
#pragma once

#include <filesystem>
#include <string>

namespace vmfest {

class Home {
 public:
  // $VMFEST_HOME, else $XDG_DATA_HOME/vmfest, else ~/.local/share/vmfest.
  static Home from_environment();
  // `root` made absolute, with its symbolic links resolved (as far as it exists yet).
  explicit Home(std::filesystem::path root);

  [[nodiscard]] const std::filesystem::path& root() const noexcept { return root_; }
  [[nodiscard]] std::filesystem::path models() const { return root_ / "models"; }
  [[nodiscard]] std::filesystem::path instances() const { return root_ / "instances"; }
  [[nodiscard]] std::filesystem::path cache() const { return root_ / "cache"; }

  // A random id (16 hex digits) made at the first call and kept in the home: it names what the home
  // leaves on hypervisor hosts that several homes share, where homes of one path meet (CI runners
  // of one image have one $HOME). A copy of the home (a restored CI cache) is another folder and
  // makes an id of its own. Makes the home where it is missing.
  [[nodiscard]] std::string id() const;

 private:
  std::filesystem::path root_;
};

// Checks that `name` is usable as a model or instance name: 1-64 characters of [A-Za-z0-9._-],
// starting with a letter or digit (so no "..", no "/", no hidden files). Throws InvalidArgument
// naming `what` ("model", "instance") otherwise.
void validate_name(const std::string& name, const char* what);

}  // namespace vmfest
