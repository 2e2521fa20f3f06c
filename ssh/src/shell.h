// Building the command lines sent to the guest's shell (private to the ssh component).
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "vmfest/ssh/shell_quote.h"

namespace vmfest::ssh::detail {

// A path that cannot be mistaken for an option, quoted.
std::string shell_path(std::string_view path);

// The line the wrapped command's shell prints first on stdout: kPidPrefix, its pid, a newline.
inline constexpr std::string_view kPidPrefix = "vmfest-pid ";

// The command line for `command`: the user's shell prints its pid as the first line of stdout
// (so a timed-out command can be killed; see kPidPrefix), enters `working_directory` (status 1 if
// it cannot), exports `environment`, then runs `command` itself. No extra process: spawning one
// costs tens of milliseconds in an emulated guest. (dropbear may refuse env requests; a prefix
// works with every sshd.)
std::string wrap_command(std::string_view command, const std::string& working_directory,
                         const std::vector<std::pair<std::string, std::string>>& environment);

// Kills process `pid` and all its descendants, stopping each before looking for its children so
// none can fork away meanwhile.
std::string kill_command(long pid);

}  // namespace vmfest::ssh::detail
