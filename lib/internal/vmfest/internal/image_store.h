// The image store: warm images and provisioned layers, for the tests that inspect them.
// Internal: vmfest::detail, not part of vmfest's API, changed without notice.
#pragma once

#include "../../../src/image_store/layers.h"
#include "../../../src/image_store/warm.h"
