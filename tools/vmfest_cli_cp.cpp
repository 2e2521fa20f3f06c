// `vmfest cp SRC DST`: files and folders between the host and a running instance, one side
// written NAME:/path, like `docker cp` and scp. The copy keeps permission bits; a destination
// that is an existing folder receives the copy under the source's name.
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "vmfest/error.h"
#include "vmfest/home.h"
#include "vmfest/instance.h"
#include "vmfest/ssh/shell_quote.h"
#include "vmfest_cli.h"

namespace vmfest::cli {
namespace {
namespace fs = std::filesystem;

constexpr const char* kUsage = "vmfest cp SRC NAME:/path or vmfest cp NAME:/path DST";

struct GuestPath {
  std::string instance;
  std::string path;  // absolute and normal: no ".", "..", or repeated '/'
};

// "NAME:/path" names a path in instance NAME; an argument without a ':' before its first '/' is a
// host path (write a host file named a:b as ./a:b).
bool names_guest(const std::string& argument) {
  const auto colon = argument.find(':');
  return colon != std::string::npos && argument.find('/') > colon;
}

GuestPath guest_path(const std::string& argument) {
  const auto colon = argument.find(':');
  GuestPath guest{argument.substr(0, colon), {}};
  validate_name(guest.instance, "instance");
  const std::string path = argument.substr(colon + 1);
  if (path.empty() || path.front() != '/') {
    throw InvalidArgument(
        fmt::format("the guest path in '{}' is not absolute: write {}:/path (e.g. {}:/root/{})",
                    argument, guest.instance, guest.instance, path.empty() ? "file" : path));
  }
  std::vector<std::string> parts;
  for (std::size_t start = 1; start <= path.size();) {
    const std::size_t end = std::min(path.find('/', start), path.size());
    const std::string part = path.substr(start, end - start);
    start = end + 1;
    if (part.empty() || part == ".") continue;
    if (part != "..") {
      parts.push_back(part);
    } else if (parts.empty()) {
      throw InvalidArgument(fmt::format(
          "the guest path in '{}' leaves the guest's root folder (a '..' above /)", argument));
    } else {
      parts.pop_back();
    }
  }
  for (const auto& part : parts) guest.path += "/" + part;
  if (guest.path.empty()) guest.path = "/";
  return guest;
}

// The name a copy of `path` takes inside a destination folder (a trailing '/' or "." aside).
std::string host_base_name(const fs::path& path) {
  fs::path normal = fs::absolute(path).lexically_normal();
  if (!normal.has_filename()) normal = normal.parent_path();
  return normal.filename().string();
}

std::string guest_base_name(const std::string& path) { return path.substr(path.rfind('/') + 1); }

bool guest_directory_exists(ssh::Session& ssh, const std::string& path) {
  return ssh.run("test -d " + ssh::shell_quote(path)).ok();
}

std::string upload(const fs::path& source, const GuestPath& destination) {
  std::error_code error;
  if (!fs::exists(fs::status(source, error))) {
    throw Error(fmt::format("cannot copy {}: no such file or folder on the host{}", source.string(),
                            error && error != std::errc::no_such_file_or_directory
                                ? " (" + error.message() + ")"
                                : ""));
  }
  Instance instance = Instance::open(destination.instance);
  ssh::Session& ssh = instance.ssh();
  std::string target = destination.path;
  if (const std::string name = host_base_name(source);
      !name.empty() && guest_directory_exists(ssh, target)) {
    target = (target == "/" ? "" : target) + "/" + name;
  }
  ssh.upload(source, target);
  return fmt::format("{}:{}", destination.instance, target);
}

std::string download(const GuestPath& source, const fs::path& destination) {
  Instance instance = Instance::open(source.instance);
  fs::path target = destination;
  if (const std::string name = guest_base_name(source.path);
      !name.empty() && fs::is_directory(destination)) {
    target /= name;
  }
  instance.ssh().download(source.path, target);
  return target.string();
}

int copy(const std::string& source, const std::string& destination) {
  const bool from_guest = names_guest(source);
  const bool to_guest = names_guest(destination);
  if (from_guest == to_guest) {
    throw InvalidArgument(
        fmt::format("{}: exactly one of SRC and DST must be NAME:/path ({}){}",
                    from_guest ? "both sides name an instance" : "neither side names an instance",
                    kUsage, from_guest ? "; copy between instances through the host" : ""));
  }
  const GuestPath guest = guest_path(to_guest ? destination : source);
  try {
    const std::string copied = to_guest ? upload(source, guest) : download(guest, destination);
    fmt::print("copied {} to {}\n", source, copied);
    return 0;
  } catch (const SshError& error) {
    throw SshError(fmt::format("cannot copy {} to {}: {}", source, destination, error.what()));
  }
}

}  // namespace

void add_copy_command(CLI::App& app, Command& command) {
  auto source = std::make_shared<std::string>();
  auto destination = std::make_shared<std::string>();
  CLI::App* sub = app.add_subcommand(
      "cp",
      "Copy a file or folder (recursively, with permission bits) between the host and a running "
      "instance: one side is NAME:/absolute/path");
  sub->add_option("source", *source, "SRC: a host path or NAME:/path")->required();
  sub->add_option("destination", *destination, "DST: a host path or NAME:/path")->required();
  sub->footer(fmt::format(
      "Usage: {}\n"
      "A DST that is an existing folder receives the copy under SRC's name; otherwise DST names\n"
      "the copy. A host path with ':' before any '/' is written ./a:b.",
      kUsage));
  sub->callback([&command, source, destination] {
    command.run = [source, destination] { return copy(*source, *destination); };
  });
}

}  // namespace vmfest::cli
