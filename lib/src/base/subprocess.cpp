#include "subprocess.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <optional>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <boost/asio/read.hpp>
#include <boost/asio/readable_pipe.hpp>
#include <boost/asio/writable_pipe.hpp>
#include <boost/asio/write.hpp>
#include <boost/process/v2/environment.hpp>
#include <boost/process/v2/process.hpp>
#include <boost/process/v2/stdio.hpp>

#include "vmfest/error.h"

namespace vmfest::detail {
namespace bp = boost::process::v2;
namespace asio = boost::asio;

boost::asio::io_context& process_context() {
  static asio::io_context context;
  return context;
}

bool is_running(bp::process& child) noexcept {
  boost::system::error_code error;
  bool running = child.running(error);
  return running && !error;
}

void kill_and_reap(bp::process& child) noexcept {
  boost::system::error_code ignored;
  if (is_running(child)) child.terminate(ignored);
  child.wait(ignored);
}

std::filesystem::path find_program(const std::string& program, const std::string& package) {
  auto path = bp::environment::find_executable(program);
  if (path.empty()) {
    throw BackendError(
        fmt::format("`{}` is not installed: install the Debian package {} "
                    "(tools/install-deps.sh does)",
                    program, package));
  }
  return std::filesystem::path(path.string());
}

ToolResult run_tool(const std::filesystem::path& program, const std::vector<std::string>& args,
                    const std::string& input) {
  asio::io_context context;
  // One pipe for stdout and stderr, so the output keeps its order and neither is lost (handing
  // Boost the same readable_pipe twice makes two pipes and keeps only the last).
  int ends[2];
  if (::pipe2(ends, O_CLOEXEC) != 0) {
    throw BackendError(fmt::format("cannot run {}: no pipe for its output: {}", program.string(),
                                   std::strerror(errno)));
  }
  asio::readable_pipe output(context, ends[0]);
  std::optional<bp::process> started;
  try {
    if (input.empty()) {
      started.emplace(context, program.string(), args, bp::process_stdio{nullptr, ends[1], ends[1]},
                      CloseInheritedFds{});
    } else {
      asio::writable_pipe to_child(context);
      started.emplace(context, program.string(), args,
                      bp::process_stdio{to_child, ends[1], ends[1]}, CloseInheritedFds{});
      ::close(ends[1]);
      ends[1] = -1;
      boost::system::error_code ignored_closed;  // a child that exits early reads less: its
      asio::write(to_child, asio::buffer(input), ignored_closed);  // exit status says so
    }
  } catch (...) {
    if (ends[1] >= 0) ::close(ends[1]);
    throw;
  }
  if (ends[1] >= 0) ::close(ends[1]);  // the child's copy is the only writer left: EOF at its exit
  bp::process& child = *started;
  ToolResult result;
  boost::system::error_code ignored_eof;
  asio::read(output, asio::dynamic_buffer(result.output), ignored_eof);
  result.exit_code = child.wait();
  return result;
}

std::string run_tool_checked(const std::filesystem::path& program,
                             const std::vector<std::string>& args, const std::string& what) {
  ToolResult result = run_tool(program, args);
  if (result.exit_code != 0) {
    throw BackendError(fmt::format("{} failed: `{} {}` exited with {}: {}", what, program.string(),
                                   fmt::join(args, " "), result.exit_code, result.output));
  }
  return result.output;
}

}  // namespace vmfest::detail
