// What `vmfest start` shows on a terminal while the guest boots.
#pragma once

#include "vmfest/instance.h"

namespace vmfest::cli {

// On a terminal, one line that start() keeps rewriting while it waits: the seconds so far and the
// guest's last console line. Nothing in CI or in a pipe (the log lines say enough there).
class TerminalProgress {
 public:
  explicit TerminalProgress(Instance& instance);
  TerminalProgress(const TerminalProgress&) = delete;
  TerminalProgress& operator=(const TerminalProgress&) = delete;
  ~TerminalProgress();

 private:
  Instance& instance_;
  bool shown_ = false;
};

}  // namespace vmfest::cli
