// Which libvirt host a new instance goes to, when VMFEST_LIBVIRT_URI names several.
#pragma once

#include "hosts.h"

namespace vmfest::detail::libvirt {

// The one host, or of several the least loaded (the first of equals), waiting while every one is
// at its cap (as long as a start waits for a VM slot); BackendError when none frees up.
HostUri choose_host();

}  // namespace vmfest::detail::libvirt
