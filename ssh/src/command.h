// Running one command on a channel: stdin from the host, output to sinks while it runs, a
// deadline that kills it (private to the ssh component).
#pragma once

#include <chrono>
#include <functional>
#include <optional>
#include <stop_token>
#include <string>
#include <string_view>

#include "connection.h"
#include "vmfest/ssh/session.h"

namespace vmfest::ssh::detail {

using ChunkSink = std::function<void(std::string_view chunk)>;

struct ExecRequest {
  std::string_view display;  // the command as the user wrote it, for messages
  std::string command_line;  // what the guest's shell runs: wrap_command() of it, or a raw one
  bool wrapped = true;       // the first stdout line is the pid (see wrap_command)
  std::optional<std::chrono::milliseconds> timeout;
  std::string_view input;
  InputSource input_source;  // when set, `input` is ignored
  ChunkSink on_stdout;       // raw output, called without the connection lock
  ChunkSink on_stderr;
  std::stop_token stop;  // a stop request kills the command and throws SshError
};

struct ExecOutcome {
  int exit_status = -1;
  std::optional<std::string> signal;
};

// Runs the request to completion. Throws SshTimeoutError after killing the command when its
// timeout passes, SshError when the connection fails or a stop is requested; exceptions from the
// sinks or the input source kill the command and propagate.
ExecOutcome execute(Connection& connection, const ExecRequest& request);

}  // namespace vmfest::ssh::detail
