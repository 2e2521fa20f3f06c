// Model bundles packed as tar files: recognising them and unpacking them (libarchive), safely.
#pragma once

#include <filesystem>
#include <span>
#include <string>

namespace vmfest::detail {

// True when `head` (the first 512 bytes or more of a file) is a POSIX or GNU tar header.
bool is_tar(std::span<const unsigned char> head);

// Unpacks the tar file `archive` into the existing folder `into`. Only regular files and folders
// with relative names inside `into` are accepted: an absolute name, a `..` component, a link or a
// device is refused with SetupError naming the entry (`what` names the source), and so is a tar
// whose members declare more than max_model_size() in all. Sparse members stay sparse.
void extract_tar(const std::filesystem::path& archive, const std::filesystem::path& into,
                 const std::string& what);

}  // namespace vmfest::detail
