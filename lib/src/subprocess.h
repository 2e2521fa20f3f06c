// Running host tools (qemu-img, genisoimage, ...) with Boost.Process v2.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/process/v2/process.hpp>

namespace vmfest::detail {

struct ToolResult {
  int exit_code = -1;
  std::string output;  // stdout and stderr together
};

// The path of `program` on PATH, or BackendError saying which package provides it.
std::filesystem::path find_program(const std::string& program, const std::string& package);

// Runs a program to completion and collects its output.
ToolResult run_tool(const std::filesystem::path& program, const std::vector<std::string>& args);

// Like run_tool, but throws BackendError with `what`, the command and its output unless it exits 0.
std::string run_tool_checked(const std::filesystem::path& program,
                             const std::vector<std::string>& args, const std::string& what);

// Boost.Process's running() reaps an exited child, after which running() and wait() fail with
// ECHILD; these two treat that as "exited" and never throw.
bool is_running(boost::process::v2::process& child) noexcept;
// SIGKILL (if still running) and reap.
void kill_and_reap(boost::process::v2::process& child) noexcept;

// The io_context that owns long-lived child process handles (never run: waits are synchronous).
boost::asio::io_context& process_context();

}  // namespace vmfest::detail
