// The guest room: the cloud-init seed an instance boots with and the guest agent it carries, for
// the tests and benchmarks that build one by hand.
// Internal: vmfest::detail, not part of vmfest's API, changed without notice.
#pragma once

#include "../../../src/guest/guest_agent.h"
#include "../../../src/guest/seed.h"
