// The QEMU backend: qcow2 overlays, qemu-system-x86_64 started with Boost.Process, QMP control,
// SSH through a user-mode network port forward on 127.0.0.1.
#pragma once

#include <memory>

#include "vmfest/internal/driver.h"

namespace vmfest::detail::qemu {

std::unique_ptr<Backend> make_qemu_backend();

}  // namespace vmfest::detail::qemu
