// Provisioning steps from a text file (see read_step_file in vmfest/provision.h).
#include <cerrno>
#include <cstring>
#include <fstream>
#include <string>
#include <string_view>
#include <vector>

#include <fmt/format.h>

#include "vmfest/error.h"
#include "vmfest/provision.h"

namespace vmfest {
namespace {
namespace fs = std::filesystem;

constexpr std::string_view kBlanks = " \t\r";
constexpr std::string_view kAllowed =
    "a line is `run CMD...`, `upload SRC DST` or `reboot`; blank lines and lines starting with # "
    "are skipped";

std::string_view trimmed(std::string_view text) {
  const auto first = text.find_first_not_of(kBlanks);
  if (first == std::string_view::npos) return {};
  return text.substr(first, text.find_last_not_of(kBlanks) - first + 1);
}

// The words of `text` split at blanks.
std::vector<std::string> words(std::string_view text) {
  std::vector<std::string> result;
  for (std::size_t start = text.find_first_not_of(kBlanks); start != std::string_view::npos;) {
    const std::size_t end = text.find_first_of(kBlanks, start);
    result.emplace_back(text.substr(start, end - start));
    start = end == std::string_view::npos ? end : text.find_first_not_of(kBlanks, end);
  }
  return result;
}

class LineReader {
 public:
  LineReader(const fs::path& file, std::size_t number) : file_(file), number_(number) {}

  [[nodiscard]] InvalidArgument malformed(const std::string& problem) const {
    return InvalidArgument(
        fmt::format("{}:{}: {}; {}", file_.string(), number_, problem, kAllowed));
  }

  ProvisionStep step(std::string_view line) const {
    const auto verb_end = line.find_first_of(kBlanks);
    const std::string_view verb = line.substr(0, verb_end);
    const std::string_view rest =
        verb_end == std::string_view::npos ? std::string_view() : trimmed(line.substr(verb_end));
    if (verb == "run") {
      if (rest.empty()) throw malformed("`run` needs a command");
      return ProvisionStep::run(std::string(rest));
    }
    if (verb == "upload") return upload(rest);
    if (verb == "reboot") {
      if (!rest.empty()) throw malformed(fmt::format("`reboot` takes no argument, got '{}'", rest));
      return ProvisionStep::reboot();
    }
    throw malformed(fmt::format("unknown step '{}'", verb));
  }

 private:
  ProvisionStep upload(std::string_view arguments) const {
    const std::vector<std::string> paths = words(arguments);
    if (paths.size() != 2) {
      throw malformed(fmt::format(
          "`upload` takes a source and a destination (no blanks in either), got {} word{}",
          paths.size(), paths.size() == 1 ? "" : "s"));
    }
    const fs::path source = (fs::absolute(file_).parent_path() / paths[0]).lexically_normal();
    std::error_code error;
    const fs::file_status status = fs::status(source, error);
    if (!fs::exists(status)) {
      throw InvalidArgument(
          fmt::format("{}:{}: the upload source '{}' ({}) does not exist{}", file_.string(),
                      number_, paths[0], source.string(),
                      error && error != std::errc::no_such_file_or_directory
                          ? fmt::format(" or cannot be reached: {}", error.message())
                          : ""));
    }
    return ProvisionStep::upload(source, paths[1]);
  }

  const fs::path& file_;
  std::size_t number_;
};

}  // namespace

ProvisionSteps read_step_file(const fs::path& file) {
  std::ifstream in(file);
  if (!in) {
    throw InvalidArgument(
        fmt::format("cannot read the step file {}: {}", file.string(), std::strerror(errno)));
  }
  ProvisionSteps steps;
  std::string line;
  for (std::size_t number = 1; std::getline(in, line); ++number) {
    const std::string_view content = trimmed(line);
    if (content.empty() || content.front() == '#') continue;
    steps.push_back(LineReader(file, number).step(content));
  }
  if (in.bad()) {
    throw InvalidArgument(fmt::format("reading the step file {} failed", file.string()));
  }
  return steps;
}

}  // namespace vmfest
