#include "transfer.h"

#include <fcntl.h>

#include <charconv>
#include <fstream>
#include <memory>
#include <type_traits>
#include <vector>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "command.h"
#include "shell.h"
#include "vmfest/error.h"

namespace vmfest::ssh::detail {
namespace {
namespace fs = std::filesystem;

// OpenSSH's sftp-server takes messages up to 256 KiB; a write request adds a few dozen bytes.
constexpr std::size_t kSftpChunk = 255u << 10;
constexpr int kModeBits = 07777;
// How long a guest whose SFTP server could not start takes to close that channel.
constexpr std::chrono::seconds kGuestClose{5};

enum class Kind { file, directory, other };

struct RemoteEntry {
  std::string path;
  Kind kind = Kind::other;
  int mode = 0;
  std::uint64_t size = 0;
};

// The guest has no SFTP server (TransferMethod::automatic then falls back to exec).
class SftpUnavailable : public SshError {
 public:
  using SshError::SshError;
};

// The file operations transfers are made of, over SFTP or over exec channels.
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

std::string join(const std::string& directory, const std::string& name) {
  if (directory.ends_with('/')) return directory + name;
  return directory + "/" + name;
}

[[noreturn]] void throw_size_mismatch(const std::string& path, std::uint64_t expected,
                                      std::uint64_t actual, const std::string& where) {
  throw SshError(
      fmt::format("size check failed for '{}' on {}: expected {} bytes, got {} (was the "
                  "file changed during the transfer, or is the guest's disk full?)",
                  path, where, expected, actual));
}

// Pseudo-files (/proc, /sys) report size 0 whatever they hold: their content is taken as it comes.
bool size_matches(const RemoteEntry& file, std::uint64_t received) {
  return file.size == received || file.size == 0;
}

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

// ---- SFTP -------------------------------------------------------------------------------------

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

Kind kind_of(const sftp_attributes_struct& attributes) {
  if (attributes.type == SSH_FILEXFER_TYPE_REGULAR) return Kind::file;
  if (attributes.type == SSH_FILEXFER_TYPE_DIRECTORY) return Kind::directory;
  return Kind::other;
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
      if (existing && kind_of(*existing) == Kind::directory) return 0;
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
    const std::string directory = relative.empty() ? root : join(root, relative);
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
      const bool is_directory = child.kind == Kind::directory;
      const std::string path = child.path;
      entries.push_back(std::move(child));
      if (is_directory) list_into(root, path, entries);
    }
  }

  Connection& connection_;
};

// ---- exec: cat, stat, mkdir, chmod ------------------------------------------------------------

// "81a4 1234" (stat -c '%f %s': raw mode in hex, size) to an entry.
RemoteEntry parse_stat(std::string_view text, std::string path) {
  unsigned mode = 0;
  std::uint64_t size = 0;
  const auto space = text.find(' ');
  if (space == std::string_view::npos ||
      std::from_chars(text.data(), text.data() + space, mode, 16).ec != std::errc() ||
      std::from_chars(text.data() + space + 1, text.data() + text.size(), size).ec != std::errc()) {
    throw SshError(fmt::format("cannot parse `stat` output '{}' for '{}'", text, path));
  }
  const unsigned type = mode & 0170000U;
  const Kind kind = type == 0100000U   ? Kind::file
                    : type == 0040000U ? Kind::directory
                                       : Kind::other;
  return {std::move(path), kind, static_cast<int>(mode) & kModeBits, size};
}

class ExecFiles final : public RemoteFiles {
 public:
  explicit ExecFiles(Connection& connection) : connection_(connection) {}

  RemoteEntry stat(const std::string& path) override {
    std::string out = run(fmt::format("stat -c '%f %s' {}", shell_path(path)), "stat", path);
    while (out.ends_with('\n')) out.pop_back();
    return parse_stat(out, path);
  }

  std::vector<RemoteEntry> list_tree(const std::string& root) override {
    const std::string out =
        run(fmt::format("cd {} && find . -exec stat -c '%f %s %n' {{}} +", shell_path(root)),
            "listing", root);
    std::vector<RemoteEntry> entries;
    std::string_view rest = out;
    while (!rest.empty()) {
      const auto newline = rest.find('\n');
      const std::string_view line = rest.substr(0, newline);
      rest.remove_prefix(newline == std::string_view::npos ? rest.size() : newline + 1);
      // "<mode> <size> ./path"; find prints "." itself first.
      const auto second_space = line.find(' ', line.find(' ') + 1);
      if (second_space == std::string_view::npos) continue;
      std::string_view name = line.substr(second_space + 1);
      if (name == ".") continue;
      if (name.starts_with("./")) name.remove_prefix(2);
      entries.push_back(parse_stat(line.substr(0, second_space), std::string(name)));
    }
    return entries;
  }

  void make_directory(const std::string& path) override {
    run(fmt::format("mkdir -p {}", shell_path(path)), "mkdir", path);
  }

  void set_mode(const std::string& path, int mode) override {
    run(fmt::format("chmod {:o} {}", mode, shell_path(path)), "chmod", path);
  }

  void write(const std::string& path, int mode, std::uint64_t size,
             const InputSource& source) override {
    const std::string quoted = shell_path(path);
    std::string out =
        run(fmt::format("cat > {0} && chmod {1:o} {0} && stat -c %s {0}", quoted, mode), "write",
            path, &source);
    std::uint64_t stored = 0;
    std::from_chars(out.data(), out.data() + out.size(), stored);
    if (stored != size) throw_size_mismatch(path, size, stored, connection_.describe());
  }

  void read(const RemoteEntry& entry, const ChunkSink& sink) override {
    std::uint64_t received = 0;
    const ChunkSink counting = [&](std::string_view chunk) {
      received += chunk.size();
      sink(chunk);
    };
    run(fmt::format("cat {}", shell_path(entry.path)), "read", entry.path, nullptr, &counting);
    if (!size_matches(entry, received)) {
      throw_size_mismatch(entry.path, entry.size, received, connection_.describe());
    }
  }

 private:
  // Runs `command`; returns its stdout (unless `sink` takes it), or throws with its stderr.
  std::string run(const std::string& command, const char* what, const std::string& path,
                  const InputSource* source = nullptr, const ChunkSink* sink = nullptr) {
    std::string out;
    std::string err;
    ExecRequest request;
    request.display = command;
    request.command_line = wrap_command(command, "", {});
    if (source != nullptr) request.input_source = *source;
    request.on_stdout = sink != nullptr ? *sink : [&out](std::string_view chunk) { out += chunk; };
    request.on_stderr = [&err](std::string_view chunk) { err += chunk; };
    const ExecOutcome outcome = execute(connection_, request);
    if (outcome.exit_status != 0) {
      throw SshError(fmt::format(
          "{} of '{}' on {} failed: `{}` exited with {}: {}", what, path, connection_.describe(),
          command,
          outcome.signal ? "signal " + *outcome.signal : std::to_string(outcome.exit_status), err));
    }
    return out;
  }

  Connection& connection_;
};

// ---- the transfers --------------------------------------------------------------------------

std::unique_ptr<RemoteFiles> remote_files(Connection& connection, TransferMethod method) {
  switch (method) {
    case TransferMethod::exec:
      return std::make_unique<ExecFiles>(connection);
    case TransferMethod::sftp:
      return std::make_unique<SftpFiles>(connection);
    case TransferMethod::automatic:
      break;
  }
  try {
    return std::make_unique<SftpFiles>(connection);
  } catch (const SftpUnavailable&) {
    // Logged once by SftpFiles, and remembered for this connection.
    return std::make_unique<ExecFiles>(connection);
  }
}

int local_mode(const fs::path& path) {
  return static_cast<int>(fs::status(path).permissions()) & kModeBits;
}

void upload_file(RemoteFiles& files, const fs::path& local, const std::string& remote) {
  std::ifstream in(local, std::ios::binary);
  if (!in) throw SshError(fmt::format("cannot read {} for upload", local.string()));
  const InputSource source = [&](std::span<char> buffer) -> std::size_t {
    in.read(buffer.data(), static_cast<std::streamsize>(buffer.size()));
    if (in.bad()) throw SshError(fmt::format("reading {} failed", local.string()));
    return static_cast<std::size_t>(in.gcount());
  };
  files.write(remote, local_mode(local), fs::file_size(local), source);
}

void download_file(RemoteFiles& files, const RemoteEntry& remote, const fs::path& local) {
  std::ofstream out(local, std::ios::binary | std::ios::trunc);
  if (!out) throw SshError(fmt::format("cannot write {}", local.string()));
  files.read(remote, [&](std::string_view chunk) {
    out.write(chunk.data(), static_cast<std::streamsize>(chunk.size()));
    if (!out) throw SshError(fmt::format("writing {} failed (disk full?)", local.string()));
  });
  out.close();
  if (!out) throw SshError(fmt::format("writing {} failed (disk full?)", local.string()));
  fs::permissions(local, static_cast<fs::perms>(remote.mode));
}

[[noreturn]] void throw_not_copied(const std::string& path, const std::string& where) {
  throw SshError(
      fmt::format("cannot copy '{}' ({}): only regular files and directories are "
                  "transferred",
                  path, where));
}

}  // namespace

void upload(Connection& connection, const fs::path& local, const std::string& remote,
            TransferMethod method) {
  auto files = remote_files(connection, method);
  const fs::file_status status = fs::status(local);  // a symlink named by the caller is followed
  if (fs::is_regular_file(status)) {
    upload_file(*files, local, remote);
    return;
  }
  if (!fs::is_directory(status)) throw_not_copied(local.string(), "on the host");
  files->make_directory(remote);
  std::vector<std::pair<std::string, int>> directories{{remote, local_mode(local)}};
  for (const fs::directory_entry& entry : fs::recursive_directory_iterator(local)) {
    const std::string target = join(remote, fs::relative(entry.path(), local).generic_string());
    if (entry.is_symlink()) throw_not_copied(entry.path().string(), "a symlink on the host");
    if (entry.is_directory()) {
      files->make_directory(target);
      directories.emplace_back(target, local_mode(entry.path()));
    } else if (entry.is_regular_file()) {
      upload_file(*files, entry.path(), target);
    } else {
      throw_not_copied(entry.path().string(), "on the host");
    }
  }
  // Directory modes last, deepest first: a read-only directory must take its files first.
  for (auto it = directories.rbegin(); it != directories.rend(); ++it) {
    files->set_mode(it->first, it->second);
  }
}

void download(Connection& connection, const std::string& remote, const fs::path& local,
              TransferMethod method) {
  auto files = remote_files(connection, method);
  const RemoteEntry top = files->stat(remote);
  if (top.kind == Kind::file) {
    download_file(*files, top, local);
    return;
  }
  if (top.kind != Kind::directory) throw_not_copied(remote, "on the guest");
  fs::create_directories(local);
  std::vector<std::pair<fs::path, int>> directories{{local, top.mode}};
  for (RemoteEntry& entry : files->list_tree(remote)) {
    const fs::path target = local / entry.path;
    entry.path = join(remote, entry.path);
    if (entry.kind == Kind::directory) {
      fs::create_directories(target);
      directories.emplace_back(target, entry.mode);
    } else if (entry.kind == Kind::file) {
      download_file(*files, entry, target);
    } else {
      throw_not_copied(entry.path, "on the guest");
    }
  }
  for (auto it = directories.rbegin(); it != directories.rend(); ++it) {
    fs::permissions(it->first, static_cast<fs::perms>(it->second));
  }
}

std::string read_remote_file(Connection& connection, const std::string& remote,
                             TransferMethod method) {
  auto files = remote_files(connection, method);
  const RemoteEntry entry = files->stat(remote);
  if (entry.kind != Kind::file) throw_not_copied(remote, "on the guest");
  std::string content;
  content.reserve(entry.size);
  files->read(entry, [&](std::string_view chunk) { content += chunk; });
  return content;
}

void write_remote_file(Connection& connection, const std::string& remote, std::string_view content,
                       int mode, TransferMethod method) {
  auto files = remote_files(connection, method);
  std::string_view rest = content;
  files->write(remote, mode & kModeBits, content.size(), [&](std::span<char> buffer) {
    const std::size_t n = std::min(buffer.size(), rest.size());
    std::copy_n(rest.data(), n, buffer.data());
    rest.remove_prefix(n);
    return n;
  });
}

}  // namespace vmfest::ssh::detail
