// The registry: instance records, the models' files and boot times kept in a home, for the tools
// and tests that read them.
// Internal: vmfest::detail, not part of vmfest's API, changed without notice.
#pragma once

#include "../../../src/registry/boot_times.h"
#include "../../../src/registry/instance_record.h"
#include "../../../src/registry/registry_store.h"
