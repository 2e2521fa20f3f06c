// The VirtualBox backend: VMs of a VirtualBox host driven through its web service (vboxwebsrv,
// SOAP). Clones attach the model's disk, registered once as a MultiAttach medium, so each
// instance's disk is the differencing image VirtualBox makes; SSH goes through a NAT port-forward
// on 127.0.0.1; the serial console is logged to a file in the instance folder.
#pragma once

#include <memory>

#include "../../src/backend.h"

namespace vmfest::detail::virtualbox {

std::unique_ptr<Backend> make_virtualbox_backend();

}  // namespace vmfest::detail::virtualbox
