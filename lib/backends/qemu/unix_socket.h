// Connecting to QEMU's unix sockets (QMP, guest agent) inside an instance folder.
#pragma once

#include <chrono>
#include <filesystem>
#include <string>

namespace vmfest::detail::qemu {

// A connected stream socket (close-on-exec), or -1 with errno set. Paths longer than sun_path
// allows are reached through /proc/self/fd/N of their folder.
int connect_unix(const std::filesystem::path& socket_path);

// Milliseconds left until `deadline`, at least 0: a poll() timeout.
int remaining_millis(std::chrono::steady_clock::time_point deadline);

}  // namespace vmfest::detail::qemu
