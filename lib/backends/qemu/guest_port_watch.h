// Watches a VM's forwarded SSH port for bytes from the guest: a sign of life that needs no
// console. QEMU accepts the host side of a connection at once, whatever the guest does; only what
// comes through it is the guest's.
#pragma once

#include <chrono>

namespace vmfest::detail::qemu {

class GuestPortWatch {
 public:
  explicit GuestPortWatch(int port) : port_(port) {}
  ~GuestPortWatch() { disconnect(); }
  GuestPortWatch(const GuestPortWatch&) = delete;
  GuestPortWatch& operator=(const GuestPortWatch&) = delete;

  // True once the guest sent a byte (its SSH banner). Never blocks.
  bool guest_spoke();

 private:
  bool connect();
  void disconnect() noexcept;

  int port_;
  int fd_ = -1;
  std::chrono::steady_clock::time_point next_connect_;
};

}  // namespace vmfest::detail::qemu
