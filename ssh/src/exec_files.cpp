// RemoteFiles over exec channels (cat, stat, mkdir, chmod), for guests without an SFTP server.
#include <charconv>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "remote_files.h"
#include "shell.h"

namespace vmfest::ssh::detail {
namespace {

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
  const EntryKind kind = type == 0100000U   ? EntryKind::file
                         : type == 0040000U ? EntryKind::directory
                                            : EntryKind::other;
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

}  // namespace

std::unique_ptr<RemoteFiles> exec_files(Connection& connection) {
  return std::make_unique<ExecFiles>(connection);
}

}  // namespace vmfest::ssh::detail
