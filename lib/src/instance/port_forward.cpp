// More host ports forwarded to a running guest (`vmfest port`), by backends that can.
#include <fmt/format.h>

#include "../driver/loopback_port.h"
#include "instance_impl.h"
#include "vmfest/instance.h"

namespace vmfest {

int Instance::forward_port(int guest_port, int host_port) {
  constexpr int kMaxPort = 65535;
  if (guest_port < 1 || guest_port > kMaxPort || host_port < 0 || host_port > kMaxPort) {
    throw InvalidArgument(fmt::format(
        "cannot forward host port {} to guest port {} of instance '{}': ports are 1-{} (host "
        "port 0: a free one)",
        host_port, guest_port, name(), kMaxPort));
  }
  detail::require_capability(*impl_->backend, detail::kPortForwards,
                             fmt::format("forward a port to instance '{}'", name()));
  impl_->require_state("forward a port to", {InstanceState::Running});
  if (host_port != 0 && !detail::loopback_port_is_free(host_port)) {
    throw StateError(fmt::format(
        "cannot forward host port {} to instance '{}': port {} on 127.0.0.1 is already taken; "
        "choose another host port, or 0 for a free one",
        host_port, name(), host_port));
  }
  const int port = host_port != 0 ? host_port : detail::free_loopback_port();
  impl_->machine->add_port_forward(port, guest_port);
  return port;
}

void Instance::remove_port_forward(int host_port) {
  detail::require_capability(*impl_->backend, detail::kPortForwards,
                             fmt::format("remove a port forward of instance '{}'", name()));
  impl_->machine->remove_port_forward(host_port);
}

}  // namespace vmfest
