// TCP ports on this machine for a backend's forwards (SSH, `vmfest port`).
#pragma once

namespace vmfest::detail {

// A port nobody listens on at 127.0.0.1 right now (the kernel's pick); BackendError if none.
int free_loopback_port();
// False when something already holds TCP `port` on 127.0.0.1 (or on every address).
bool loopback_port_is_free(int port);

}  // namespace vmfest::detail
