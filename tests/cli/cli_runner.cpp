#include "cli_runner.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <memory>
#include <stdexcept>
#include <thread>

#include <fmt/format.h>
#include <boost/asio/io_context.hpp>
#include <boost/process/v2/process.hpp>
#include <boost/process/v2/stdio.hpp>

#include "vmfest/internal/base.h"

namespace vmfest::testing {
namespace fs = std::filesystem;
namespace bp = boost::process::v2;

namespace {

// An anonymous temporary file (gone when closed) for one of the child's standard streams.
class StreamFile {
 public:
  StreamFile() : file_(std::tmpfile(), &std::fclose) {
    if (!file_) throw std::runtime_error("cannot create a temporary file for the CLI's output");
  }
  [[nodiscard]] FILE* get() const noexcept { return file_.get(); }

  void write(const std::string& text) {
    std::fwrite(text.data(), 1, text.size(), get());
    std::fflush(get());
    std::rewind(get());
  }

  [[nodiscard]] std::string read() const {
    std::rewind(get());
    std::string text;
    char buffer[4096];
    std::size_t count = 0;
    while ((count = std::fread(buffer, 1, sizeof buffer, get())) > 0) text.append(buffer, count);
    return text;
  }

 private:
  std::unique_ptr<FILE, decltype(&std::fclose)> file_;
};

}  // namespace

std::string CliResult::describe() const {
  return fmt::format("exit code {}\n--- stdout ---\n{}--- stderr ---\n{}", exit_code, out, err);
}

CliResult run_cli(const std::vector<std::string>& args, const std::string& input) {
  StreamFile in;
  StreamFile out;
  StreamFile err;
  in.write(input);
  boost::asio::io_context context;
  bp::process child(context, VMFEST_CLI, args, bp::process_stdio{in.get(), out.get(), err.get()},
                    vmfest::detail::CloseInheritedFds{});
  CliResult result;
  result.exit_code = child.wait();
  result.out = out.read();
  result.err = err.read();
  return result;
}

struct BackgroundCli::Impl {
  StreamFile in;
  StreamFile out;
  StreamFile err;
  int pid = 0;
  std::optional<int> status;
};

BackgroundCli::BackgroundCli(const std::vector<std::string>& args)
    : impl_(std::make_unique<Impl>()) {
  boost::asio::io_context context;
  bp::process child(context, VMFEST_CLI, args,
                    bp::process_stdio{impl_->in.get(), impl_->out.get(), impl_->err.get()},
                    vmfest::detail::CloseInheritedFds{});
  impl_->pid = child.id();
  child.detach();  // waited for with waitpid below, not by Boost
}

BackgroundCli::~BackgroundCli() {
  if (impl_->status) return;
  ::kill(impl_->pid, SIGKILL);
  int status = 0;
  ::waitpid(impl_->pid, &status, 0);
}

std::string BackgroundCli::out() const { return impl_->out.read(); }
std::string BackgroundCli::err() const { return impl_->err.read(); }

void BackgroundCli::signal(int signal) {
  if (!impl_->status) ::kill(impl_->pid, signal);
}

std::optional<int> BackgroundCli::wait_for_exit(std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!impl_->status) {
    int status = 0;
    const pid_t done = ::waitpid(impl_->pid, &status, WNOHANG);
    if (done == impl_->pid) {
      impl_->status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    } else if (std::chrono::steady_clock::now() >= deadline) {
      return std::nullopt;
    } else {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  }
  return impl_->status;
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

std::string unique(const std::string& prefix) { return prefix + "-" + std::to_string(::getpid()); }

std::optional<nlohmann::json> listed_instance(const std::string& name) {
  CliResult listing = run_cli({"ls", "--json"});
  if (listing.exit_code != 0) {
    throw std::runtime_error("`vmfest ls --json` failed: " + listing.describe());
  }
  for (const auto& entry : nlohmann::json::parse(listing.out)) {
    if (entry.at("name") == name) return entry;
  }
  return std::nullopt;
}

bool port_is_listening(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw std::runtime_error("cannot create a socket");
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = htons(static_cast<std::uint16_t>(port));
  const bool connected =
      ::connect(fd, reinterpret_cast<const sockaddr*>(&address), sizeof address) == 0;
  ::close(fd);
  return connected;
}

std::vector<int> processes_working_in(const fs::path& directory) {
  std::vector<int> pids;
  for (const auto& entry : fs::directory_iterator("/proc")) {
    const std::string name = entry.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::error_code error;
    if (fs::read_symlink(entry.path() / "cwd", error) != directory || error) continue;
    const std::string stat = detail::read_text_if_exists(entry.path() / "stat");
    const auto state = stat.rfind(')');
    if (state != std::string::npos && state + 2 < stat.size() && stat[state + 2] != 'Z') {
      pids.push_back(std::stoi(name));
    }
  }
  return pids;
}

}  // namespace vmfest::testing
