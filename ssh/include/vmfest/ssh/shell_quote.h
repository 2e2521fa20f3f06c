// Quoting for the command lines Session::run hands to the guest's POSIX shell.
#pragma once

#include <string>
#include <string_view>

namespace vmfest::ssh {

// `text` as one shell word, whatever it holds: it's -> 'it'\''s'.
std::string shell_quote(std::string_view text);

}  // namespace vmfest::ssh
