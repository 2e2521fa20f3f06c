#include "transfer.h"

#include <algorithm>
#include <fstream>
#include <span>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "remote_files.h"
#include "vmfest/error.h"

namespace vmfest::ssh::detail {
namespace {
namespace fs = std::filesystem;

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
    const std::string target =
        join_remote_path(remote, fs::relative(entry.path(), local).generic_string());
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
  if (top.kind == EntryKind::file) {
    download_file(*files, top, local);
    return;
  }
  if (top.kind != EntryKind::directory) throw_not_copied(remote, "on the guest");
  fs::create_directories(local);
  std::vector<std::pair<fs::path, int>> directories{{local, top.mode}};
  for (RemoteEntry& entry : files->list_tree(remote)) {
    const fs::path target = local / entry.path;
    entry.path = join_remote_path(remote, entry.path);
    if (entry.kind == EntryKind::directory) {
      fs::create_directories(target);
      directories.emplace_back(target, entry.mode);
    } else if (entry.kind == EntryKind::file) {
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
  if (entry.kind != EntryKind::file) throw_not_copied(remote, "on the guest");
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
