// RemoteFiles over SFTP: one SFTP session per connection, opened on first use.
#include <fcntl.h>

#include <chrono>
#include <memory>
#include <span>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "remote_files.h"

namespace vmfest::ssh::detail {
namespace {

// OpenSSH's sftp-server takes messages up to 256 KiB; a write request adds a few dozen bytes.
constexpr std::size_t kSftpChunk = 255u << 10;
// How long a guest whose SFTP server could not start takes to close that channel.
constexpr std::chrono::seconds kGuestClose{5};

// Fills `buffer` from `source` as far as it goes; returns the bytes read (0: the end).
std::size_t fill(const InputSource& source, std::string& buffer) {
  std::size_t filled = 0;
  while (filled < buffer.size()) {
    const std::size_t n = source(std::span<char>(buffer.data() + filled, buffer.size() - filled));
    if (n == 0) break;
    filled += n;
  }
  return filled;
}

struct AttributesDeleter {
  void operator()(sftp_attributes attributes) const noexcept { sftp_attributes_free(attributes); }
};
using AttributesPtr = std::unique_ptr<std::remove_pointer_t<sftp_attributes>, AttributesDeleter>;

std::string sftp_status_text(int code) {
  switch (code) {
    case SSH_FX_EOF:
      return "end of file";
    case SSH_FX_NO_SUCH_FILE:
      return "no such file";
    case SSH_FX_PERMISSION_DENIED:
      return "permission denied";
    case SSH_FX_FAILURE:
      return "failure";
    case SSH_FX_BAD_MESSAGE:
      return "bad message";
    case SSH_FX_NO_CONNECTION:
    case SSH_FX_CONNECTION_LOST:
      return "connection lost";
    case SSH_FX_OP_UNSUPPORTED:
      return "operation unsupported";
    case SSH_FX_FILE_ALREADY_EXISTS:
      return "file already exists";
    case SSH_FX_WRITE_PROTECT:
      return "write-protected";
    default:
      return fmt::format("status {}", code);
  }
}

EntryKind kind_of(const sftp_attributes_struct& attributes) {
  if (attributes.type == SSH_FILEXFER_TYPE_REGULAR) return EntryKind::file;
  if (attributes.type == SSH_FILEXFER_TYPE_DIRECTORY) return EntryKind::directory;
  return EntryKind::other;
}

RemoteEntry entry_from(const sftp_attributes_struct& attributes, std::string path) {
  return {std::move(path), kind_of(attributes),
          static_cast<int>(attributes.permissions) & kModeBits, attributes.size};
}

class SftpFiles final : public RemoteFiles {
 public:
  explicit SftpFiles(Connection& connection) : connection_(connection) {
    auto lock = connection_.lock();
    link(lock);
  }

  RemoteEntry stat(const std::string& path) override {
    return call([&](sftp_session sftp) {
      AttributesPtr attributes(sftp_stat(sftp, path.c_str()));
      if (!attributes) throw failure(sftp, "stat", path);
      return entry_from(*attributes, path);
    });
  }

  std::vector<RemoteEntry> list_tree(const std::string& root) override {
    std::vector<RemoteEntry> entries;
    list_into(root, "", entries);
    return entries;
  }

  void make_directory(const std::string& path) override {
    call([&](sftp_session sftp) {
      if (sftp_mkdir(sftp, path.c_str(), 0700) == 0) return 0;
      // SFTP v3 has no "already exists" status for directories: look.
      const int code = sftp_get_error(sftp);
      AttributesPtr existing(sftp_stat(sftp, path.c_str()));
      if (existing && kind_of(*existing) == EntryKind::directory) return 0;
      throw failure(code, "mkdir", path);
    });
  }

  void set_mode(const std::string& path, int mode) override {
    call([&](sftp_session sftp) {
      if (sftp_chmod(sftp, path.c_str(), static_cast<mode_t>(mode)) != 0) {
        throw failure(sftp, "chmod", path);
      }
      return 0;
    });
  }

  void write(const std::string& path, int mode, std::uint64_t size,
             const InputSource& source) override {
    File file(*this, path, O_WRONLY | O_CREAT | O_TRUNC, mode);
    std::string buffer(kSftpChunk, '\0');
    std::uint64_t sent = 0;
    while (const std::size_t n = fill(source, buffer)) {
      call([&](sftp_session sftp) {
        if (sftp_write(file.get(), buffer.data(), n) != static_cast<ssize_t>(n)) {
          throw failure(sftp, "write", path);
        }
        return 0;
      });
      sent += n;
    }
    file.close();
    // The creation mode passed the guest's umask; this sets it exactly.
    set_mode(path, mode);
    const std::uint64_t stored = stat(path).size;
    if (sent != size || stored != size) {
      throw_size_mismatch(path, size, sent != size ? sent : stored, connection_.describe());
    }
  }

  void read(const RemoteEntry& entry, const ChunkSink& sink) override {
    File file(*this, entry.path, O_RDONLY, 0);
    std::string buffer(kSftpChunk, '\0');
    std::uint64_t received = 0;
    while (true) {
      const ssize_t n = call([&](sftp_session sftp) {
        const ssize_t got = sftp_read(file.get(), buffer.data(), buffer.size());
        if (got < 0) throw failure(sftp, "read", entry.path);
        return got;
      });
      if (n == 0) break;
      sink(std::string_view(buffer.data(), static_cast<std::size_t>(n)));
      received += static_cast<std::uint64_t>(n);
    }
    file.close();
    if (!size_matches(entry, received)) {
      throw_size_mismatch(entry.path, entry.size, received, connection_.describe());
    }
  }

 private:
  // An open remote file, closed (with the lock) when it goes away.
  class File {
   public:
    File(SftpFiles& files, const std::string& path, int flags, int mode)
        : files_(files), path_(path) {
      file_ = files_.call([&](sftp_session sftp) {
        sftp_file file = sftp_open(sftp, path.c_str(), flags, static_cast<mode_t>(mode));
        if (file == nullptr) throw files_.failure(sftp, "open", path);
        return file;
      });
    }
    File(const File&) = delete;
    File& operator=(const File&) = delete;
    ~File() {
      if (file_ == nullptr) return;
      try {
        close();
      } catch (const std::exception& error) {
        spdlog::warn("vmfest: could not close '{}' over SFTP: {}", path_, error.what());
      }
    }
    [[nodiscard]] sftp_file get() const noexcept { return file_; }
    void close() {
      files_.call([&](sftp_session sftp) {
        const int rc = sftp_close(std::exchange(file_, nullptr));
        if (rc != 0) throw files_.failure(sftp, "close", path_);
        return 0;
      });
    }

   private:
    SftpFiles& files_;
    std::string path_;
    sftp_file file_ = nullptr;
  };

  // One SFTP request (or a few), with the lock held and libssh in blocking mode.
  template <class Request>
  auto call(Request&& request) -> std::invoke_result_t<Request&, sftp_session> {
    auto lock = connection_.lock();
    SftpLink& sftp = link(lock);
    return connection_.blocking(lock, connection_.io_deadline(),
                                [&] { return request(sftp.sftp); });
  }

  SftpLink& link(Connection::Lock& lock) {
    auto& link = connection_.sftp_link();
    if (link) return *link;
    if (auto& why = connection_.sftp_unavailable()) throw SftpUnavailable(*why);
    auto opened = std::make_unique<SftpLink>();
    // stdout stays in libssh for the SFTP reader; stderr goes to our callback, which also keeps
    // libssh 0.10's sftp_init() from spinning forever when the server cannot start.
    opened->channel = connection_.open_session_channel(lock, connection_.io_deadline(), 0);
    try {
      connection_.request_subsystem(lock, *opened->channel, "sftp", connection_.io_deadline());
    } catch (const SshTimeoutError&) {
      throw;
    } catch (const SshError& error) {
      throw unavailable(error.what());
    }
    opened->sftp = sftp_new_channel(connection_.session(), opened->channel.raw());
    if (opened->sftp == nullptr) {
      throw SshError(fmt::format("libssh could not start an SFTP client for {}: {}",
                                 connection_.describe(), ssh_get_error(connection_.session())));
    }
    const int rc = connection_.blocking(lock, connection_.io_deadline(),
                                        [&] { return sftp_init(opened->sftp); });
    if (rc != SSH_OK) {
      std::string reason = ssh_get_error(connection_.session());
      if (!opened->channel->err.empty()) reason += "; the guest said: " + opened->channel->err;
      // The guest closes this channel itself (its SFTP server could not start). Closing it from
      // here as well races that: dropbear 2022.83 then dies on a failed assertion
      // (`!channel->sent_close`) and takes the connection along, or libssh refuses the next
      // channel. So the channel is let go once the guest has closed it.
      connection_.wait_until(lock, std::min(connection_.io_deadline(), Clock::now() + kGuestClose),
                             [&] { return opened->channel->closed; });
      throw unavailable(reason);
    }
    link = std::move(opened);
    return *link;
  }

  SftpUnavailable unavailable(const std::string& reason) {
    auto& why = connection_.sftp_unavailable();
    why = fmt::format("{} offers no SFTP server ({})", connection_.describe(), reason);
    spdlog::info("vmfest: {}; file transfers use commands over exec channels instead", *why);
    return SftpUnavailable(*why);
  }

  SshError failure(sftp_session sftp, const char* what, const std::string& path) {
    return failure(sftp_get_error(sftp), what, path);
  }

  SshError failure(int code, const char* what, const std::string& path) {
    connection_.throw_if_broken();  // a dropped connection explains itself better
    return SshError(fmt::format("SFTP {} of '{}' on {} failed: {} ({})", what, path,
                                connection_.describe(), sftp_status_text(code),
                                ssh_get_error(connection_.session())));
  }

  void list_into(const std::string& root, const std::string& relative,
                 std::vector<RemoteEntry>& entries) {
    const std::string directory = relative.empty() ? root : join_remote_path(root, relative);
    std::vector<RemoteEntry> found = call([&](sftp_session sftp) {
      sftp_dir dir = sftp_opendir(sftp, directory.c_str());
      if (dir == nullptr) throw failure(sftp, "opendir", directory);
      std::vector<RemoteEntry> children;
      while (AttributesPtr attributes{sftp_readdir(sftp, dir)}) {
        const std::string name = attributes->name != nullptr ? attributes->name : "";
        if (name == "." || name == ".." || name.empty()) continue;
        children.push_back(
            entry_from(*attributes, relative.empty() ? name : relative + "/" + name));
      }
      const bool complete = sftp_dir_eof(dir) != 0;
      const int code = sftp_get_error(sftp);
      sftp_closedir(dir);
      if (!complete) throw failure(code, "readdir", directory);
      return children;
    });
    for (RemoteEntry& child : found) {
      const bool is_directory = child.kind == EntryKind::directory;
      const std::string path = child.path;
      entries.push_back(std::move(child));
      if (is_directory) list_into(root, path, entries);
    }
  }

  Connection& connection_;
};

}  // namespace

std::unique_ptr<RemoteFiles> sftp_files(Connection& connection) {
  return std::make_unique<SftpFiles>(connection);
}

}  // namespace vmfest::ssh::detail
