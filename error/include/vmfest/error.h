// vmfest's exception hierarchy: every error the library raises derives from vmfest::Error,
// and its message says what failed, for which model or instance, and what to do next.
#pragma once

#include <stdexcept>
#include <string>

namespace vmfest {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A name, profile, URL or other argument that cannot be used as given.
class InvalidArgument : public Error {
 public:
  using Error::Error;
};

// The named model is not registered, or its files are unusable.
class ModelError : public Error {
 public:
  using Error::Error;
};

// A download, decompression, checksum or conversion step of setup_model failed.
class SetupError : public Error {
 public:
  using Error::Error;
};

// An operation that makes no sense in the instance's current state (pause a stopped VM, ...).
class StateError : public Error {
 public:
  using Error::Error;
};

// An instance whose record (instances/<name>/instance.json) cannot be read: it cannot be driven,
// only removed (force_destroy_instance(), `vmfest destroy --force NAME`).
class InstanceRecordError : public Error {
 public:
  using Error::Error;
};

// The hypervisor backend failed (its hypervisor would not start, or cannot be reached, ...).
class BackendError : public Error {
 public:
  using Error::Error;
};

// A guest that did not become ready in time. The message carries the tail of its console log.
class NotReadyError : public Error {
 public:
  NotReadyError(const std::string& message, std::string console_tail)
      : Error(message + "\n--- last lines of the console log ---\n" + console_tail),
        console_tail_(std::move(console_tail)) {}
  [[nodiscard]] const std::string& console_tail() const noexcept { return console_tail_; }

 private:
  std::string console_tail_;
};

// SSH failures. Authentication and host-key mismatch are distinct so tests can tell them apart.
class SshError : public Error {
 public:
  using Error::Error;
};

class SshAuthError : public SshError {
 public:
  using SshError::SshError;
};

class HostKeyMismatchError : public SshError {
 public:
  using SshError::SshError;
};

class SshTimeoutError : public SshError {
 public:
  using SshError::SshError;
};

// A remote command run with check() that exited non-zero.
class CommandFailedError : public SshError {
 public:
  CommandFailedError(const std::string& message, int exit_status)
      : SshError(message), exit_status_(exit_status) {}
  [[nodiscard]] int exit_status() const noexcept { return exit_status_; }

 private:
  int exit_status_;
};

// A provisioning step that failed (see provision.h): which one, and the tail of what it printed.
// Nothing of the failed provisioning is kept.
class ProvisionError : public Error {
 public:
  ProvisionError(const std::string& message, int step_number, int exit_status)
      : Error(message), step_number_(step_number), exit_status_(exit_status) {}
  // 1-based, in the request's list.
  [[nodiscard]] int step_number() const noexcept { return step_number_; }
  // The command's exit status; -1 for a step that is not a command or died of a signal.
  [[nodiscard]] int exit_status() const noexcept { return exit_status_; }

 private:
  int step_number_;
  int exit_status_;
};

}  // namespace vmfest
