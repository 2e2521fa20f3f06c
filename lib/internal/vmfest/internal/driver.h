// The backend seam: the one interface a backend implements, the driver table it registers in,
// the host-wide VM slots and loopback ports. A backend includes this and base.h, nothing else of
// the core.
// Internal: vmfest::detail, not part of vmfest's API, changed without notice.
#pragma once

#include "../../../src/driver/backend.h"
#include "../../../src/driver/loopback_port.h"
#include "../../../src/driver/vm_slots.h"
