// Test support: runs the built `vmfest` executable (VMFEST_CLI) as a child process, in this
// process's environment (so with its VMFEST_HOME), and collects what it wrote.
#pragma once

#include <chrono>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace vmfest::testing {

// The CLI's exit statuses (`vmfest --help`): its own failure, a usage error, and the failure of
// `vmfest ssh` and `vmfest run`, whose other statuses are the guest command's.
inline constexpr int kExitFailure = 1;
inline constexpr int kExitUsage = 2;
inline constexpr int kExitSshFailure = 255;

struct CliResult {
  int exit_code = -1;
  std::string out;  // stdout
  std::string err;  // stderr

  // For assertion messages: the exit code and both streams.
  [[nodiscard]] std::string describe() const;
};

// `vmfest ARGS...` with `input` on its standard input; waits for it to exit.
CliResult run_cli(const std::vector<std::string>& args, const std::string& input = "");

// `vmfest ARGS...` running in the background (e.g. `console -f`, `port`), its output going to
// temporary files. Killed (SIGKILL, by its pid) if it still runs when this goes away.
class BackgroundCli {
 public:
  explicit BackgroundCli(const std::vector<std::string>& args);
  BackgroundCli(const BackgroundCli&) = delete;
  BackgroundCli& operator=(const BackgroundCli&) = delete;
  ~BackgroundCli();

  // What it wrote so far.
  [[nodiscard]] std::string out() const;
  [[nodiscard]] std::string err() const;
  // Sends it `signal`.
  void signal(int signal);
  // Its exit status once it has exited within `timeout` (128 + N for signal N), else nullopt.
  std::optional<int> wait_for_exit(std::chrono::milliseconds timeout);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Whether `text` (an output) holds `part`.
bool contains(const std::string& text, const std::string& part);

// "`prefix`-PID": a name unique to this test process (ctest runs the tests of a binary in parallel
// processes that share one VMFEST_HOME).
std::string unique(const std::string& prefix);

// The entry of `vmfest ls --json` named `name`; nullopt when not listed.
std::optional<nlohmann::json> listed_instance(const std::string& name);

// Whether something accepts TCP connections on 127.0.0.1:port.
bool port_is_listening(int port);

// The live (not zombie) processes whose working directory is `directory`: a QEMU started by
// vmfest runs in its instance folder.
std::vector<int> processes_working_in(const std::filesystem::path& directory);

}  // namespace vmfest::testing
