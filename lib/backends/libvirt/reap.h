// What a reap removes from a libvirt host: only what is provably dead. This home's instances whose
// folders are gone; another home's (another runner's) whose owner's lease ran out; models
// and warm images nothing used for VMFEST_LIBVIRT_MODEL_TTL. Never what is merely not on this
// machine's disk.
#pragma once

#include <string>
#include <vector>

#include "hosts.h"
#include "vmfest/home.h"

namespace vmfest::detail::libvirt {

// Destroys the dead domains on `host` and deletes their volumes and the unused models; returns what
// it removed.
std::vector<std::string> reap_host(const HostUri& host, const Home& home);

}  // namespace vmfest::detail::libvirt
