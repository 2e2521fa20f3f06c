// A launched VirtualBox machine of the test double, run as a real QEMU guest by vmfest's own QEMU
// backend: the machine's disk (a copy-on-write image of the VDI medium), its DVD (the NoCloud
// seed), its memory and CPUs, its NAT rule as the SSH port forward, its serial port's raw file.
#pragma once

#include <filesystem>
#include <memory>
#include <string>

#include "backends/qemu/qemu_backend.h"
#include "vmfest/internal/driver.h"

namespace vmfest::vbox_double {

struct GuestSpec {
  std::string name;
  std::filesystem::path storage;  // the disk's folder (create_disk made it)
  std::filesystem::path base;     // the medium the disk is a copy-on-write image of
  std::filesystem::path dvd;
  detail::qemu::StorageBus bus = detail::qemu::StorageBus::Ide;  // of the disk's controller
  unsigned memory_mib = 128;
  unsigned cpus = 1;
  int host_port = 0;  // of the NAT rule to the guest's SSH port (0: none)
  int guest_port = 22;
  std::filesystem::path serial_file;  // the serial port's raw file (empty: none)
};

class Guest {
 public:
  // Makes the copy-on-write disk of an attachment: `storage`, backed by the medium at `base`.
  static void create_disk(const std::filesystem::path& storage, const std::filesystem::path& base);

  explicit Guest(const GuestSpec& spec);
  ~Guest();  // stops the guest
  Guest(const Guest&) = delete;
  Guest& operator=(const Guest&) = delete;

  void start();
  void pause() { qemu_->pause(); }
  void resume() { qemu_->resume(); }
  void press_power_button();
  void kill() noexcept { qemu_->kill(); }
  [[nodiscard]] bool stopped() { return qemu_->state() == InstanceState::Stopped; }

 private:
  GuestSpec spec_;
  std::unique_ptr<detail::Machine> qemu_;
};

}  // namespace vmfest::vbox_double
