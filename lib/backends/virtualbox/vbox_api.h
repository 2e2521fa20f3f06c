// The VirtualBox API calls the backend makes, typed, over one websession: the only place that knows
// the generated gSOAP names and the shapes that differ between API versions.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "websession.h"

namespace vmfest::detail::virtualbox {

// The machine is locked by another session (a VirtualBox Manager window, VBoxManage, another
// process driving it).
class MachineLockedError : public BackendError {
 public:
  using BackendError::BackendError;
};

class VirtualBoxApi {
 public:
  explicit VirtualBoxApi(Websession& session) : session_(session) {}

  // IVirtualBox
  [[nodiscard]] std::optional<std::string> find_machine(const std::string& name_or_id);
  // An unregistered, mutable machine whose settings file will be `settings_file`.
  std::string create_machine(const std::string& settings_file, const std::string& name,
                             const std::string& group);
  void register_machine(const std::string& machine);
  std::string open_medium(const std::string& location, vbox__DeviceType type,
                          vbox__AccessMode access);

  // IMedium
  vbox__MediumType medium_type(const std::string& medium);
  void set_medium_type(const std::string& medium, vbox__MediumType type);
  void set_medium_description(const std::string& medium, const std::string& description);
  void close_medium(const std::string& medium);

  // IMachine
  std::string machine_id(const std::string& machine);
  vbox__MachineState machine_state(const std::string& machine);
  void set_memory_mib(const std::string& machine, int memory_mib);
  void set_cpus(const std::string& machine, int cpus);
  void save_settings(const std::string& machine);
  void add_storage_controller(const std::string& machine, const std::string& name,
                              vbox__StorageBus bus);
  void attach_device(const std::string& machine, const std::string& controller, int port,
                     vbox__DeviceType type, const std::string& medium);
  std::string network_adapter(const std::string& machine, unsigned slot);
  std::string serial_port(const std::string& machine, unsigned slot);
  // Starts the VM headless and waits for VirtualBox to report it started.
  void launch_headless(const std::string& machine, const std::string& session,
                       std::chrono::milliseconds timeout);
  // Unregisters the machine; returns its hard disks (to delete with delete_config).
  std::vector<std::string> unregister(const std::string& machine);
  // Deletes the machine's settings and logs, and closes and deletes `media`.
  void delete_config(const std::string& machine, const std::vector<std::string>& media,
                     std::chrono::milliseconds timeout);

  // INetworkAdapter, INATEngine, ISerialPort
  void use_nat(const std::string& adapter, vbox__NetworkAdapterType type);
  // Replaces the TCP rule `name` by one from host_ip:host_port to the guest's guest_port.
  void forward_tcp(const std::string& adapter, const std::string& name, const std::string& host_ip,
                   int host_port, int guest_port);
  void log_serial_to_file(const std::string& port, const std::string& path);

  // ISession, IConsole
  std::string new_session();
  void lock(const std::string& machine, const std::string& session, vbox__LockType type);
  void unlock(const std::string& session);
  std::string session_machine(const std::string& session);
  std::string session_console(const std::string& session);
  void pause(const std::string& console);
  void resume(const std::string& console);
  void press_power_button(const std::string& console);
  void power_off(const std::string& console, std::chrono::milliseconds timeout);

  [[nodiscard]] Websession& session() noexcept { return session_; }

 private:
  // Waits for an IProgress; throws BackendError with VirtualBox's error text when it failed.
  void wait_for(const std::string& progress, const char* what, std::chrono::milliseconds timeout);

  Websession& session_;
};

// A lock on a machine through a fresh ISession, unlocked when it goes out of scope.
class MachineLock {
 public:
  MachineLock(VirtualBoxApi& api, const std::string& machine, vbox__LockType type,
              const std::string& instance);
  ~MachineLock();
  MachineLock(const MachineLock&) = delete;
  MachineLock& operator=(const MachineLock&) = delete;

  // The session's view of the machine: mutable under a write lock.
  [[nodiscard]] std::string machine() { return api_.session_machine(session_); }
  // The running VM's console (shared lock on a running machine).
  [[nodiscard]] std::string console();

 private:
  VirtualBoxApi& api_;
  std::string session_;
  std::string instance_;
};

}  // namespace vmfest::detail::virtualbox
