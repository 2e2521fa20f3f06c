#include "shell.h"

#include <cctype>

#include <fmt/format.h>

#include "vmfest/error.h"

namespace vmfest::ssh {

std::string shell_quote(std::string_view text) {
  std::string quoted = "'";
  for (char c : text) {
    if (c == '\'') {
      quoted += "'\\''";
    } else {
      quoted += c;
    }
  }
  quoted += '\'';
  return quoted;
}

namespace detail {
namespace {

bool is_variable_name(std::string_view name) {
  if (name.empty() || (std::isdigit(static_cast<unsigned char>(name.front())) != 0)) return false;
  for (char c : name) {
    if (std::isalnum(static_cast<unsigned char>(c)) == 0 && c != '_') return false;
  }
  return true;
}

}  // namespace

std::string shell_path(std::string_view path) {
  if (path.starts_with('-')) return shell_quote("./" + std::string(path));
  return shell_quote(path);
}

std::string wrap_command(std::string_view command, const std::string& working_directory,
                         const std::vector<std::pair<std::string, std::string>>& environment) {
  std::string line = fmt::format("echo {}$$\n", kPidPrefix);
  if (!working_directory.empty()) {
    line += fmt::format("cd {} || exit 1\n", shell_path(working_directory));
  }
  for (const auto& [name, value] : environment) {
    if (!is_variable_name(name)) {
      throw InvalidArgument(
          fmt::format("'{}' is not a valid environment variable name (letters, "
                      "digits and _, not starting with a digit)",
                      name));
    }
    line += fmt::format("export {}={}\n", name, shell_quote(value));
  }
  line += command;
  return line;
}

std::string kill_command(long pid) {
  // The parent pid is the word after the ")" that ends the command name in /proc/PID/stat.
  return fmt::format(
      "k() {{ local d s p; kill -STOP \"$1\" 2>/dev/null; "
      "for d in /proc/[0-9]*; do read -r s 2>/dev/null <\"$d/stat\" || continue; "
      "s=${{s##*) }}; p=${{s#* }}; p=${{p%% *}}; [ \"$p\" = \"$1\" ] && k \"${{d#/proc/}}\"; done; "
      "kill -KILL \"$1\" 2>/dev/null; }}; k {}",
      pid);
}

}  // namespace detail
}  // namespace vmfest::ssh
