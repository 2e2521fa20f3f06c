#include "subprocess.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <boost/asio/read.hpp>
#include <boost/asio/readable_pipe.hpp>
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

ToolResult run_tool(const std::filesystem::path& program, const std::vector<std::string>& args) {
  asio::io_context context;
  asio::readable_pipe output(context);
  bp::process child(context, program.string(), args, bp::process_stdio{nullptr, output, output},
                    CloseInheritedFds{});
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
