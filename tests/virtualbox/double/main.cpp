// vmfest_vbox_double: a stand-in for VirtualBox's web service (vboxwebsrv) of VirtualBox 6.1, 7.0
// or 7.1, speaking its wire format, for testing vmfest's VirtualBox backend without VirtualBox.
//
//   vmfest_vbox_double --api 7.1 [--port N] [--port-file FILE]     serve until SIGINT/SIGTERM
//   vmfest_vbox_double --api 7.1 -- COMMAND [ARGS...]               run COMMAND against it
//
// With a command, the double listens on a free port, runs the command with VMFEST_VBOX_URL set
// to its address (and VMFEST_BACKEND=virtualbox), and exits with the command's status once it
// ends, stopping every guest it started.
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <thread>

#include <fmt/format.h>
#include <CLI/CLI.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/process/v2/environment.hpp>
#include <boost/process/v2/process.hpp>

#include "fake_virtualbox.h"
#include "message_validator.h"
#include "server.h"

namespace bp = boost::process::v2;
namespace fs = std::filesystem;
using namespace vmfest::vbox_double;

int main(int argc, char** argv) {
  CLI::App app("A VirtualBox web service (vboxwebsrv) double for vmfest's tests");
  WorldOptions world_options;
  ServerOptions server_options;
  fs::path schema_directory = VMFEST_VBOX_SCHEMA_DIR;
  fs::path port_file;
  std::vector<std::string> command;
  app.add_option("--api", world_options.api, "VirtualBox API version to speak")
      ->required()
      ->check(CLI::IsMember({"6.1", "7.0", "7.1"}));
  app.add_option("--port", server_options.port, "TCP port on 127.0.0.1 (0: a free one)");
  app.add_option("--port-file", port_file, "write the port here once listening");
  app.add_option("--user", world_options.user, "accept only this logon (default: any)");
  app.add_option("--password", world_options.password, "the password of --user");
  app.add_option("--schema-dir", schema_directory, "folder of vbox-<api>.xsd");
  int session_timeout = 300;
  app.add_option("--session-timeout", session_timeout,
                 "seconds after which an idle websession is gone (vboxwebsrv's --timeout)");
  app.add_option("--drop-on", server_options.drop_on,
                 "close the connection without answering this operation (e.g. IMachine_getState)");
  app.add_option("--stall-on", server_options.stall_on, "never answer this operation");
  app.add_flag("--log-requests", server_options.log_requests, "print each request's operation");
  app.add_option("command", command, "command to run against the double (after --)");
  CLI11_PARSE(app, argc, argv);
  world_options.session_timeout = std::chrono::seconds(session_timeout);

  try {
    MessageValidator validator(schema_directory / fmt::format("vbox-{}.xsd", world_options.api));
    World world(world_options);
    Server server(world, validator, server_options);
    const std::string url = fmt::format("http://127.0.0.1:{}/", server.port());
    if (command.empty()) {
      fmt::print(stderr, "vbox-double: VirtualBox {} web service on {}\n", world_options.api, url);
    }
    if (!port_file.empty()) {
      fs::path partial = port_file;
      partial += ".partial";
      std::ofstream(partial) << server.port() << "\n";
      fs::rename(partial, port_file);
    }
    std::thread serving([&] { server.run(); });

    boost::asio::io_context context;
    boost::asio::signal_set signals(context, SIGINT, SIGTERM);
    std::optional<bp::process> child;
    int status = 0;
    if (!command.empty()) {
      ::setenv("VMFEST_VBOX_URL", url.c_str(), 1);
      ::setenv("VMFEST_BACKEND", "virtualbox", 1);
      if (!world_options.user.empty()) {
        ::setenv("VMFEST_VBOX_USER", world_options.user.c_str(), 1);
        ::setenv("VMFEST_VBOX_PASSWORD", world_options.password.c_str(), 1);
      }
      fs::path program = command.front();
      if (program.filename() == program) {
        program = bp::environment::find_executable(command.front()).string();
      }
      child.emplace(context, program.string(),
                    std::vector<std::string>(command.begin() + 1, command.end()));
      child->async_wait([&](boost::system::error_code, int exit_code) {
        status = exit_code;
        signals.cancel();
      });
    }
    signals.async_wait([&](boost::system::error_code error, int signal) {
      if (error) return;
      status = 128 + signal;
      if (child) {
        boost::system::error_code ignored;
        child->request_exit(ignored);
      } else {
        context.stop();
      }
    });
    context.run();
    server.stop();
    serving.join();
    return status;
  } catch (const std::exception& error) {
    fmt::print(stderr, "vbox-double: {}\n", error.what());
    return 2;
  }
}
