// A TCP port for a backend's SSH forward on this machine.
#pragma once

namespace vmfest::detail {

// A port nobody listens on at 127.0.0.1 right now (the kernel's pick); BackendError if none.
int free_loopback_port();

}  // namespace vmfest::detail
