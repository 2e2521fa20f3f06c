// The base room: files, locks, host programs, SHA-256 and settings, for every part of vmfest
// (backends, fixtures, tools, benchmarks and tests) that needs them.
// Internal: vmfest::detail, not part of vmfest's API, changed without notice.
#pragma once

#include "../../../src/base/files.h"
#include "../../../src/base/settings.h"
#include "../../../src/base/sha256.h"
#include "../../../src/base/subprocess.h"
