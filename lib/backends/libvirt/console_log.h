// A domain's serial console, read through libvirt (virDomainOpenConsole) into a local file: the
// readiness check looks for the model's marker there and errors quote its tail, whether the
// hypervisor is this machine or another.
#pragma once

#include <filesystem>
#include <memory>

#include "libvirt_api.h"

namespace vmfest::detail::libvirt {

class ConsoleLog {
 public:
  // Appends everything the console of `domain` prints from now on to `file`. Open it while the
  // domain is still paused, or its first lines are lost.
  ConsoleLog(virConnectPtr connection, virDomainPtr domain, const std::filesystem::path& file,
             const std::string& uri);
  ConsoleLog(const ConsoleLog&) = delete;
  ConsoleLog& operator=(const ConsoleLog&) = delete;
  // Stops reading (the domain runs on).
  ~ConsoleLog();

  struct State;  // shared with libvirt's event thread

 private:
  std::shared_ptr<State> state_;
  Stream stream_;
};

}  // namespace vmfest::detail::libvirt
