// Connecting to QEMU's unix sockets (QMP, guest agent) inside an instance folder.
#pragma once

#include <chrono>
#include <filesystem>
#include <string>

namespace vmfest::detail::qemu {

// A connected stream socket (close-on-exec), or -1 with errno set. Paths longer than sun_path
// allows are reached through /proc/self/fd/N of their folder.
int connect_unix(const std::filesystem::path& socket_path);

// Sends `request` on the unix socket `socket_path` and returns the first line of the reply,
// without its newline. BackendError when the socket cannot be reached or closes early, or no
// whole line arrives within `timeout`.
std::string exchange_line(const std::filesystem::path& socket_path, const std::string& request,
                          std::chrono::milliseconds timeout);

// Milliseconds left until `deadline`, at least 0: a poll() timeout.
int remaining_millis(std::chrono::steady_clock::time_point deadline);

}  // namespace vmfest::detail::qemu
