// The SSH handle against OpenSSH's client tools, in one run against one instance of the default
// model:
//   commands per second: Session::run("true") on a warm connection, vs `ssh ... true` (a new
//     connection per command, as a test script would do), vs `ssh` through a ControlMaster
//   64 MiB upload and download: Session (SFTP, and the exec fallback) vs `scp` (SFTP protocol;
//     the guest has no scp binary for the legacy protocol)
// Rounds interleave the contenders so host load hits them alike; medians are reported. The ssh
// tools use the instance's own key files: id_ed25519 and a known_hosts line from host_ed25519.pub.
#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <string>
#include <string_view>
#include <vector>

#include <fmt/format.h>
#include <boost/asio/io_context.hpp>
#include <boost/process/v2/process.hpp>
#include <boost/process/v2/stdio.hpp>

#include "bench_usage.h"
#include "random_file.h"
#include "timing.h"
#include "vmfest/gtest/fixture.h"
#include "vmfest/instance.h"
#include "vmfest/internal/base.h"

namespace {
namespace fs = std::filesystem;
namespace bp = boost::process::v2;
using vmfest::testing::Clock;
using vmfest::testing::median;
using vmfest::testing::seconds_since;
using vmfest::testing::write_random_file;

constexpr int kRounds = 3;
constexpr int kOurCommands = 40;  // per round
constexpr int kSshCommands = 5;   // per round: each one is a full handshake
constexpr std::size_t kFileSize = 64u << 20;
constexpr double kMiB = 1024.0 * 1024.0;

double seconds(const std::function<void()>& work) {
  const auto start = Clock::now();
  work();
  return seconds_since(start);
}

// Runs a program (no shell), its output discarded; throws unless it exits 0.
void run_program(const std::string& program, const std::vector<std::string>& args) {
  boost::asio::io_context context;
  bp::process child(context, program, args, bp::process_stdio{nullptr, nullptr, nullptr},
                    vmfest::detail::CloseInheritedFds{});
  if (const int status = child.wait(); status != 0) {
    throw std::runtime_error(
        fmt::format("{} {} exited with {}", program, fmt::join(args, " "), status));
  }
}

// The OpenSSH client options for the instance: its key, its pinned host key, nothing else.
struct OpenSsh {
  std::vector<std::string> options;
  std::string port;
  std::string target;

  OpenSsh(const vmfest::Instance& instance, vmfest::ssh::Session& session, const fs::path& work) {
    const auto& endpoint = session.endpoint();
    port = std::to_string(endpoint.port);
    target = fmt::format("{}@{}", endpoint.user, endpoint.host);
    std::string host_key = vmfest::detail::read_text(instance.directory() / "host_ed25519.pub");
    const fs::path known_hosts = work / "known_hosts";
    std::ofstream(known_hosts) << fmt::format("[{}]:{} {}", endpoint.host, endpoint.port, host_key);
    options = {"-F", "/dev/null",
               "-o", "IdentitiesOnly=yes",
               "-o", "StrictHostKeyChecking=yes",
               "-o", "UserKnownHostsFile=" + known_hosts.string(),
               "-o", "BatchMode=yes",
               "-i", (instance.directory() / "id_ed25519").string()};
  }

  // Runs `command` (none: a control request such as -O exit).
  void ssh(const std::vector<std::string>& extra, const std::string& command) const {
    std::vector<std::string> args = options;
    args.insert(args.end(), extra.begin(), extra.end());
    args.insert(args.end(), {"-p", port, target});
    if (!command.empty()) args.push_back(command);
    run_program("/usr/bin/ssh", args);
  }

  void scp(const std::string& from, const std::string& to) const {
    std::vector<std::string> args = options;
    args.insert(args.end(), {"-q", "-P", port, from, to});
    run_program("/usr/bin/scp", args);
  }
};

// The bench's scratch folder, removed however the run ends.
struct WorkDirectory {
  fs::path path = fs::temp_directory_path() / fmt::format("vmfest-ssh-bench-{}", ::getpid());
  WorkDirectory() { fs::create_directories(path); }
  WorkDirectory(const WorkDirectory&) = delete;
  WorkDirectory& operator=(const WorkDirectory&) = delete;
  ~WorkDirectory() {
    std::error_code ignored;
    fs::remove_all(path, ignored);
  }
};

void print_row(const std::string& what, double value, const std::string& unit, double baseline) {
  std::cout << fmt::format("  {:<44} {:>9.2f} {:<7} {:>6.2f}x\n", what, value, unit,
                           value / baseline);
}

}  // namespace

constexpr std::string_view kUsage = R"(usage: vmfest_ssh_bench
The SSH handle against OpenSSH's tools on one instance of the default model: commands per second
(Session::run vs ssh vs ssh with a ControlMaster) and 64 MiB transfers (SFTP, exec vs scp).
)";

int main(int argc, char** argv) {
  vmfest::bench::answer_help(argc, argv, kUsage);
  try {
    vmfest::testing::ensure_default_model();
    const WorkDirectory scratch;
    const fs::path& work = scratch.path;
    vmfest::InstanceRequest request;
    request.model = vmfest::testing::kDefaultModel;
    vmfest::Instance instance = vmfest::Instance::create(request);
    instance.start();
    vmfest::ssh::Session& session = instance.ssh();
    const OpenSsh openssh(instance, session, work);
    const std::string control = (work / "control").string();
    const std::vector<std::string> multiplexed = {
        "-o", "ControlMaster=auto", "-o", "ControlPath=" + control, "-o", "ControlPersist=120"};
    openssh.ssh(multiplexed, "true");  // starts the master

    std::vector<double> ours;
    std::vector<double> fresh;
    std::vector<double> master;
    for (int round = 0; round < kRounds; ++round) {
      ours.push_back(kOurCommands / seconds([&] {
                       for (int i = 0; i < kOurCommands; ++i) session.check("true");
                     }));
      fresh.push_back(kSshCommands / seconds([&] {
                        for (int i = 0; i < kSshCommands; ++i) openssh.ssh({}, "true");
                      }));
      master.push_back(kSshCommands / seconds([&] {
                         for (int i = 0; i < kSshCommands; ++i) openssh.ssh(multiplexed, "true");
                       }));
    }
    std::vector<std::string> stop_master = multiplexed;
    stop_master.insert(stop_master.end(), {"-O", "exit"});
    openssh.ssh(stop_master, "");

    const fs::path original = work / "payload";
    write_random_file(original, kFileSize);
    const fs::path back = work / "back";
    const std::string remote = "/root/payload";
    const std::string remote_scp = fmt::format("{}:{}", openssh.target, remote);
    vmfest::ssh::TransferOptions sftp;
    sftp.method = vmfest::ssh::TransferMethod::sftp;
    vmfest::ssh::TransferOptions exec;
    exec.method = vmfest::ssh::TransferMethod::exec;
    std::vector<double> up_sftp, down_sftp, up_exec, down_exec, up_scp, down_scp;
    const double mib = static_cast<double>(kFileSize) / kMiB;
    for (int round = 0; round < kRounds; ++round) {
      up_sftp.push_back(mib / seconds([&] { session.upload(original, remote, sftp); }));
      down_sftp.push_back(mib / seconds([&] { session.download(remote, back, sftp); }));
      up_scp.push_back(mib / seconds([&] { openssh.scp(original.string(), remote_scp); }));
      down_scp.push_back(mib / seconds([&] { openssh.scp(remote_scp, back.string()); }));
      up_exec.push_back(mib / seconds([&] { session.upload(original, remote, exec); }));
      down_exec.push_back(mib / seconds([&] { session.download(remote, back, exec); }));
    }
    if (vmfest::detail::sha256_file(back) != vmfest::detail::sha256_file(original)) {
      throw std::runtime_error("the downloaded file differs from the original");
    }
    session.check("rm " + remote);

    std::cout << fmt::format("vmfest ssh bench: instance {} ({}), medians of {} rounds\n",
                             instance.name(), instance.accelerator(), kRounds);
    std::cout << "commands per second (`true`)                      value          vs ssh\n";
    print_row("ssh, new connection per command", median(fresh), "cmd/s", median(fresh));
    print_row("ssh, ControlMaster connection", median(master), "cmd/s", median(fresh));
    print_row("Session::run, warm connection", median(ours), "cmd/s", median(fresh));
    std::cout << "64 MiB upload                                                    vs scp\n";
    print_row("scp (SFTP protocol)", median(up_scp), "MiB/s", median(up_scp));
    print_row("Session::upload, SFTP", median(up_sftp), "MiB/s", median(up_scp));
    print_row("Session::upload, exec fallback", median(up_exec), "MiB/s", median(up_scp));
    std::cout << "64 MiB download                                                  vs scp\n";
    print_row("scp (SFTP protocol)", median(down_scp), "MiB/s", median(down_scp));
    print_row("Session::download, SFTP", median(down_sftp), "MiB/s", median(down_scp));
    print_row("Session::download, exec fallback", median(down_exec), "MiB/s", median(down_scp));
    std::cout << fmt::format(
        "commands_vs_ssh {:.2f}\nupload_vs_scp {:.2f}\ndownload_vs_scp {:.2f}\n",
        median(ours) / median(fresh), median(up_sftp) / median(up_scp),
        median(down_sftp) / median(down_scp));
  } catch (const std::exception& error) {
    std::cerr << "ssh_bench: " << error.what() << "\n";
    return 1;
  }
  return 0;
}
