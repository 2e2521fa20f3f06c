// The `vmfest` command-line tool: each subcommand registers itself on the CLI11 app and, once its
// command line has parsed, leaves the work to do in a Command that main() runs.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "vmfest/ssh/session.h"

namespace vmfest::cli {

// Exit statuses (also listed in `vmfest --help`).
inline constexpr int kExitFailure = 1;  // vmfest could not do it; the message says why
inline constexpr int kExitUsage = 2;    // a malformed command line or an unusable argument
// `vmfest ssh NAME -- CMD` exits with CMD's status, so its own failures use ssh(1)'s 255.
inline constexpr int kExitSshFailure = 255;

struct Command {
  std::function<int()> run;           // returns the exit status
  int failure_status = kExitFailure;  // when run() throws a vmfest::Error
  int usage_status = kExitUsage;      // when it throws an InvalidArgument
};

// setup-model, models, rm-model.
void add_model_commands(CLI::App& app, Command& command);
// create, start, pause, resume, power-down, destroy, reap, commit.
void add_instance_commands(CLI::App& app, Command& command);
// images, prune.
void add_image_commands(CLI::App& app, Command& command);
// ls.
void add_list_command(CLI::App& app, Command& command);
// report.
void add_report_command(CLI::App& app, Command& command);
// doctor.
void add_doctor_command(CLI::App& app, Command& command);
// console, port.
void add_console_commands(CLI::App& app, Command& command);
// ssh; `remote_command` is what followed `--` on the command line.
void add_ssh_command(CLI::App& app, Command& command,
                     const std::vector<std::string>& remote_command);
// run: a command in a fresh instance, destroyed afterwards; `remote_command` as for ssh.
void add_run_command(CLI::App& app, Command& command,
                     const std::vector<std::string>& remote_command);
// cp.
void add_copy_command(CLI::App& app, Command& command);

// The words after `--` as the guest's shell command line: one word is a command line, as with
// ssh(1); several are a program and its arguments, quoted so they arrive exactly.
std::string remote_command_line(const std::vector<std::string>& words);
// A remote command's exit status, or 128 + its signal's number as a shell reports it.
int remote_exit_status(const ssh::CommandResult& result);

}  // namespace vmfest::cli
