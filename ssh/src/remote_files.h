// The file operations transfers are made of, over SFTP (sftp_files.cpp) or over exec channels
// for guests without an SFTP server (exec_files.cpp); private to the ssh component.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "command.h"
#include "connection.h"
#include "vmfest/error.h"
#include "vmfest/ssh/session.h"

namespace vmfest::ssh::detail {

// The permission bits of a mode (set-id and sticky bits included), the part transfers copy.
constexpr int kModeBits = 07777;

enum class EntryKind { file, directory, other };

struct RemoteEntry {
  std::string path;
  EntryKind kind = EntryKind::other;
  int mode = 0;
  std::uint64_t size = 0;
};

// The guest has no SFTP server (TransferMethod::automatic then falls back to exec).
class SftpUnavailable : public SshError {
 public:
  using SshError::SshError;
};

class RemoteFiles {
 public:
  RemoteFiles() = default;
  RemoteFiles(const RemoteFiles&) = delete;
  RemoteFiles& operator=(const RemoteFiles&) = delete;
  virtual ~RemoteFiles() = default;

  virtual RemoteEntry stat(const std::string& path) = 0;
  // Everything below `root` (paths relative to it), each directory before its contents.
  virtual std::vector<RemoteEntry> list_tree(const std::string& root) = 0;
  // Creates a directory; one that exists already is fine.
  virtual void make_directory(const std::string& path) = 0;
  virtual void set_mode(const std::string& path, int mode) = 0;
  // Creates or replaces `path` with the bytes of `source` (`size` of them) and mode `mode`,
  // then checks the size the guest reports.
  virtual void write(const std::string& path, int mode, std::uint64_t size,
                     const InputSource& source) = 0;
  // Streams the file into `sink` and checks that `file.size` bytes came.
  virtual void read(const RemoteEntry& file, const ChunkSink& sink) = 0;
};

// Over SFTP; throws SftpUnavailable when the guest has no SFTP server (remembered per connection).
std::unique_ptr<RemoteFiles> sftp_files(Connection& connection);
// Over exec channels: cat, stat, mkdir, chmod.
std::unique_ptr<RemoteFiles> exec_files(Connection& connection);
// The files `method` asks for; automatic: SFTP, or exec when the guest has no SFTP server.
std::unique_ptr<RemoteFiles> remote_files(Connection& connection, TransferMethod method);

// `name` below the guest's `directory`.
std::string join_remote_path(const std::string& directory, const std::string& name);

// Pseudo-files (/proc, /sys) report size 0 whatever they hold: their content is taken as it comes.
bool size_matches(const RemoteEntry& file, std::uint64_t received);

[[noreturn]] void throw_size_mismatch(const std::string& path, std::uint64_t expected,
                                      std::uint64_t actual, const std::string& where);

}  // namespace vmfest::ssh::detail
