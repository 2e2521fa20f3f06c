#include "vmfest_cli_progress.h"

#include <sys/ioctl.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include <fmt/format.h>

namespace vmfest::cli {
namespace {

// A console line may hold escape sequences of its own: keep only what prints.
std::string printable(const std::string& text) {
  std::string kept;
  for (char c : text) {
    if (static_cast<unsigned char>(c) >= 0x20 && c != 0x7f) kept += c;
  }
  return kept;
}

}  // namespace

TerminalProgress::TerminalProgress(Instance& instance) : instance_(instance) {
  const char* ci = std::getenv("CI");
  const char* term = std::getenv("TERM");
  if (::isatty(STDERR_FILENO) != 1 || (ci != nullptr && std::string_view(ci) == "true") ||
      (term != nullptr && std::string_view(term) == "dumb")) {
    return;
  }
  winsize size{};
  const std::size_t columns =
      ::ioctl(STDERR_FILENO, TIOCGWINSZ, &size) == 0 && size.ws_col > 20 ? size.ws_col : 80;
  instance.on_progress([this, columns](const StartProgress& progress) {
    std::string line = fmt::format("{} {:.0f} s", progress.phase, progress.elapsed_seconds);
    if (!progress.console_line.empty()) line += " | " + printable(progress.console_line);
    if (line.size() >= columns) line.resize(columns - 1);
    std::fprintf(stderr, "\r\033[K%s", line.c_str());
    std::fflush(stderr);
    shown_ = true;
  });
}

TerminalProgress::~TerminalProgress() {
  instance_.on_progress({});
  if (shown_) std::fputs("\r\033[K", stderr);  // the result or error gets a clean line
}

}  // namespace vmfest::cli
