#include "remote_files.h"

#include <fmt/format.h>

namespace vmfest::ssh::detail {

std::unique_ptr<RemoteFiles> remote_files(Connection& connection, TransferMethod method) {
  switch (method) {
    case TransferMethod::exec:
      return exec_files(connection);
    case TransferMethod::sftp:
      return sftp_files(connection);
    case TransferMethod::automatic:
      break;
  }
  try {
    return sftp_files(connection);
  } catch (const SftpUnavailable&) {
    // Logged once by the SFTP files, and remembered for this connection.
    return exec_files(connection);
  }
}

std::string join_remote_path(const std::string& directory, const std::string& name) {
  if (directory.ends_with('/')) return directory + name;
  return directory + "/" + name;
}

bool size_matches(const RemoteEntry& file, std::uint64_t received) {
  return file.size == received || file.size == 0;
}

void throw_size_mismatch(const std::string& path, std::uint64_t expected, std::uint64_t actual,
                         const std::string& where) {
  throw SshError(
      fmt::format("size check failed for '{}' on {}: expected {} bytes, got {} (was the "
                  "file changed during the transfer, or is the guest's disk full?)",
                  path, where, expected, actual));
}

}  // namespace vmfest::ssh::detail
