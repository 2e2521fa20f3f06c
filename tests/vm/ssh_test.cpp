// Real-VM tests of the SSH handle: commands, streaming, timeouts, files, forwards, concurrency,
// key checks, a paused guest and a reboot. Two instances serve the whole file.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include "random_file.h"
#include "timing.h"
#include "vmfest/error.h"
#include "vmfest/gtest/fixture.h"
#include "vmfest/internal/base.h"
#include "vmfest/ssh/keys.h"

namespace {
namespace fs = std::filesystem;
using namespace std::chrono_literals;
using vmfest::ssh::RunOptions;
using vmfest::ssh::Session;
using vmfest::ssh::TransferMethod;
using vmfest::ssh::TransferOptions;
using vmfest::testing::Clock;
using vmfest::testing::seconds_since;
using vmfest::testing::write_random_file;

std::string trimmed(std::string text) {
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  return text;
}

// A private host directory, removed afterwards.
struct ScratchDirectory {
  fs::path path;
  ScratchDirectory()
      : path(fs::temp_directory_path() /
             fmt::format("vmfest-ssh-test-{}-{}", ::getpid(), std::random_device{}())) {
    fs::create_directories(path);
  }
  ~ScratchDirectory() {
    std::error_code ignored;
    fs::remove_all(path, ignored);
  }
};

void write_text(const fs::path& path, const std::string& text, int mode) {
  std::ofstream(path, std::ios::binary) << text;
  fs::permissions(path, static_cast<fs::perms>(mode));
}

int mode_of(const fs::path& path) {
  return static_cast<int>(fs::status(path).permissions()) & 07777;
}

// A TCP client on 127.0.0.1:port that sends `request` and reads until the server closes (or,
// without `until_closed`, what the first read brings).
std::optional<std::string> exchange(int port, const std::string& request,
                                    bool until_closed = true) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<uint16_t>(port));
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) {
    ::close(fd);
    return std::nullopt;
  }
  EXPECT_EQ(::write(fd, request.data(), request.size()), static_cast<ssize_t>(request.size()));
  std::string reply;
  char buffer[4096];
  for (ssize_t n; (n = ::read(fd, buffer, sizeof buffer)) > 0;) {
    reply.append(buffer, static_cast<std::size_t>(n));
    if (!until_closed) break;
  }
  ::close(fd);
  return reply;
}

// A one-connection TCP server on the host's 127.0.0.1 that answers "host saw: <what it read>".
class HostService {
 public:
  HostService() : fd_(::socket(AF_INET, SOCK_STREAM, 0)) {
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t length = sizeof address;
    EXPECT_EQ(::bind(fd_, reinterpret_cast<sockaddr*>(&address), sizeof address), 0);
    EXPECT_EQ(::listen(fd_, 4), 0);
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&address), &length);
    port_ = ntohs(address.sin_port);
    server_ = std::thread([this] {
      const int client = ::accept(fd_, nullptr, nullptr);
      if (client < 0) return;
      char buffer[256];
      const ssize_t n = ::read(client, buffer, sizeof buffer);
      const std::string reply =
          "host saw: " + std::string(buffer, static_cast<std::size_t>(std::max<ssize_t>(n, 0)));
      EXPECT_EQ(::write(client, reply.data(), reply.size()), static_cast<ssize_t>(reply.size()));
      ::close(client);
    });
  }
  ~HostService() {
    ::shutdown(fd_, SHUT_RDWR);
    server_.join();
    ::close(fd_);
  }
  [[nodiscard]] int port() const { return port_; }

 private:
  int fd_;
  int port_ = 0;
  std::thread server_;
};

vmfest::ssh::Credentials credentials_of(const vmfest::Instance& instance) {
  vmfest::ssh::Credentials credentials;
  credentials.client_private_key =
      vmfest::ssh::KeyPair::load(instance.directory() / "id_ed25519").private_openssh;
  credentials.pinned_host_key =
      trimmed(vmfest::detail::read_text(instance.directory() / "host_ed25519.pub"));
  return credentials;
}

// One instance for a whole suite: booting is the expensive part. (Run as one process per suite,
// e.g. gtest shards; one process per test would boot it for every test.)
class SharedGuest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    vmfest::InstanceRequest request;
    request.model = vmfest::testing::kDefaultModel;
    instance_.emplace(vmfest::Instance::create(request));
    instance_->start();
  }
  static void TearDownTestSuite() { instance_.reset(); }

  void TearDown() override {
    if (HasFailure() && instance_) {
      std::cerr << "[vmfest] console of " << instance_->name() << ":\n"
                << instance_->console_tail(30);
    }
  }

  static vmfest::Instance& instance() { return *instance_; }
  static Session& ssh() { return instance_->ssh(); }

 private:
  static inline std::optional<vmfest::Instance> instance_;
};

class SshGuest : public SharedGuest {};

// ---- commands -----------------------------------------------------------------------------------

TEST_F(SshGuest, ExitStatusesStderrAndSignals) {
  EXPECT_EQ(ssh().run("true").exit_status, 0);
  EXPECT_EQ(ssh().run("false").exit_status, 1);
  auto missing = ssh().run("no-such-command-here");
  EXPECT_EQ(missing.exit_status, 127);
  EXPECT_NE(missing.stderr_text.find("not found"), std::string::npos) << missing.stderr_text;

  auto both = ssh().run("echo to-stdout; echo to-stderr >&2; exit 3");
  EXPECT_EQ(both.stdout_text, "to-stdout\n");
  EXPECT_EQ(both.stderr_text, "to-stderr\n");
  EXPECT_EQ(both.exit_status, 3);
  EXPECT_FALSE(both.signal);

  auto killed = ssh().run("kill -9 $$");
  EXPECT_EQ(killed.signal, "KILL");
  EXPECT_EQ(killed.exit_status, -1);
  EXPECT_FALSE(killed.ok());
}

TEST_F(SshGuest, CheckReportsCommandStatusAndStderr) {
  try {
    ssh().check("echo partial; echo 'it broke' >&2; exit 4");
    FAIL() << "expected CommandFailedError";
  } catch (const vmfest::CommandFailedError& error) {
    EXPECT_EQ(error.exit_status(), 4);
    const std::string message = error.what();
    EXPECT_NE(message.find("exit 4"), std::string::npos) << message;
    EXPECT_NE(message.find("it broke"), std::string::npos) << message;
    EXPECT_NE(message.find("stdout: partial"), std::string::npos) << message;
  }
  EXPECT_THROW(ssh().check("kill -TERM $$"), vmfest::CommandFailedError);
}

// A forced command in authorized_keys (as cloud images set for root) runs instead of ours: its
// first line is the guest's message, not our pid line, and must reach the caller whole.
TEST_F(SshGuest, AForcedCommandsOutputIsNeverEaten) {
  const std::string keys = ssh().read_file("/root/.ssh/authorized_keys");
  struct Restore {
    Session& session;
    const std::string& keys;
    ~Restore() { session.write_file("/root/.ssh/authorized_keys", keys, 0600); }
  } restore{ssh(), keys};
  ssh().write_file(
      "/root/.ssh/authorized_keys",
      "command=\"echo Please login as the user debian; echo second; exit 142\" " + keys, 0600);
  Session forced = Session::connect(ssh().endpoint(), credentials_of(instance()));
  const vmfest::ssh::CommandResult result = forced.run("id");
  EXPECT_EQ(result.exit_status, 142);
  EXPECT_EQ(result.stdout_text, "Please login as the user debian\nsecond\n");
  try {
    forced.check("id");
    FAIL() << "expected CommandFailedError";
  } catch (const vmfest::CommandFailedError& error) {
    EXPECT_NE(std::string(error.what()).find("Please login as the user debian"), std::string::npos)
        << error.what();
  }
}

TEST_F(SshGuest, TimeoutKillsTheCommandAndItsChildren) {
  RunOptions options;
  options.timeout = 1s;
  const auto start = Clock::now();
  // A child that would outlive a plain kill of the shell, and a grandchild under it.
  EXPECT_THROW(ssh().run("sh -c 'sleep 31' & sleep 32", options), vmfest::SshTimeoutError);
  const double took = seconds_since(start);
  EXPECT_GE(took, 1.0);
  EXPECT_LT(took, 4.0) << "the timeout must not wait for the command";
  const auto left = ssh().run("ps | grep -E 'sleep 3[12]' | grep -v grep");
  EXPECT_EQ(left.stdout_text, "") << "killed command left processes behind";

  // A command that finishes within its timeout is unaffected.
  options.timeout = 20s;
  EXPECT_EQ(ssh().check("sleep 0.2; echo done", options).stdout_text, "done\n");
}

TEST_F(SshGuest, EnvironmentAndWorkingDirectory) {
  RunOptions options;
  options.working_directory = "/tmp";
  options.environment = {{"GREETING", "it's a \"quoted\" $value; `not run`"}, {"EMPTY", ""}};
  auto result = ssh().check("pwd; printf '%s|%s\\n' \"$GREETING\" \"$EMPTY\"", options);
  EXPECT_EQ(result.stdout_text, "/tmp\nit's a \"quoted\" $value; `not run`|\n");

  options.environment = {};
  options.working_directory = "/no/such/directory";
  auto failed = ssh().run("echo should-not-run", options);
  EXPECT_NE(failed.exit_status, 0);
  EXPECT_EQ(failed.stdout_text, "");

  options.working_directory = "";
  options.environment = {{"NOT-A-NAME", "x"}};
  EXPECT_THROW(ssh().run("true", options), vmfest::InvalidArgument);
}

TEST_F(SshGuest, StreamsOutputLinesWhileTheCommandRuns) {
  std::vector<std::pair<std::string, double>> lines;
  std::vector<std::string> errors;
  RunOptions options;
  options.capture_output = false;
  const auto start = Clock::now();
  options.on_stdout_line = [&](std::string_view line) {
    lines.emplace_back(std::string(line), seconds_since(start));
  };
  options.on_stderr_line = [&](std::string_view line) { errors.emplace_back(line); };
  auto result = ssh().check("echo first; echo warning >&2; sleep 1.5; printf 'last'", options);
  const double finished = seconds_since(start);
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[0].first, "first");
  EXPECT_EQ(lines[1].first, "last") << "a final line without newline is delivered too";
  EXPECT_LT(lines[0].second, finished - 1.0) << "the first line must arrive while the command runs";
  EXPECT_EQ(errors, std::vector<std::string>{"warning"});
  EXPECT_EQ(result.stdout_text, "") << "capture_output=false";
}

TEST_F(SshGuest, StandardInputFromAStringAndFromAStream) {
  RunOptions options;
  options.input = "alpha\nbeta\n";
  EXPECT_EQ(ssh().check("sort -r", options).stdout_text, "beta\nalpha\n");

  // 8 MiB pulled from the host chunk by chunk, as the guest consumes it.
  constexpr std::size_t kSize = 8u << 20;
  std::size_t produced = 0;
  std::mt19937 generator(7);
  std::string expected;
  options = {};
  options.input_source = [&](std::span<char> buffer) {
    const std::size_t n = std::min(buffer.size(), kSize - produced);
    for (std::size_t i = 0; i < n; ++i) buffer[i] = static_cast<char>('a' + generator() % 26);
    expected.append(buffer.data(), n);
    produced += n;
    return n;
  };
  auto counted = ssh().check(
      "cat > /root/stdin.bin && wc -c < /root/stdin.bin && "
      "sha256sum /root/stdin.bin && rm /root/stdin.bin",
      options);
  ScratchDirectory scratch;
  write_text(scratch.path / "expected", expected, 0600);
  const std::string size_and_hash =
      fmt::format("{}\n{}", kSize, vmfest::detail::sha256_file(scratch.path / "expected"));
  EXPECT_EQ(counted.stdout_text.substr(0, size_and_hash.size()), size_and_hash);

  // A command that ignores its input must not hang on it.
  options = {};
  options.input = std::string(1 << 20, 'x');
  EXPECT_EQ(ssh().run("true", options).exit_status, 0);
}

TEST_F(SshGuest, EightThreadsShareOneConnectionConcurrently) {
  std::vector<std::string> outputs(8);
  std::vector<std::thread> threads;
  const auto start = Clock::now();
  for (int i = 0; i < 8; ++i) {
    threads.emplace_back([&, i] {
      outputs[static_cast<std::size_t>(i)] =
          ssh().check(fmt::format("sleep 1; echo {}", i)).stdout_text;
    });
  }
  for (auto& thread : threads) thread.join();
  const double took = seconds_since(start);
  for (int i = 0; i < 8; ++i)
    EXPECT_EQ(outputs[static_cast<std::size_t>(i)], fmt::format("{}\n", i));
  // One after the other would take at least 8 s.
  EXPECT_LT(took, 4.5) << "commands on one session did not run concurrently";
}

// ---- files --------------------------------------------------------------------------------------

TEST_F(SshGuest, SixtyFourMebibytesUpAndDownOverSftpKeepTheirContent) {
  ScratchDirectory scratch;
  const fs::path original = scratch.path / "big.bin";
  write_random_file(original, 64u << 20);
  fs::permissions(original, static_cast<fs::perms>(0640));
  const std::string hash = vmfest::detail::sha256_file(original);

  // /tmp is a RAM disk in a 256 MiB guest: use the disk.
  TransferOptions sftp;
  sftp.method = TransferMethod::sftp;
  ssh().upload(original, "/root/big.bin", sftp);
  EXPECT_EQ(ssh().check("sha256sum /root/big.bin").stdout_text.substr(0, 64), hash);
  EXPECT_EQ(trimmed(ssh().check("stat -c %a /root/big.bin").stdout_text), "640");

  const fs::path back = scratch.path / "back.bin";
  ssh().download("/root/big.bin", back, sftp);
  EXPECT_EQ(vmfest::detail::sha256_file(back), hash);
  EXPECT_EQ(mode_of(back), 0640);
  ssh().check("rm /root/big.bin");
}

TEST_F(SshGuest, SmallFilesAsStringsOverBothMethods) {
  for (TransferMethod method : {TransferMethod::sftp, TransferMethod::exec}) {
    TransferOptions options;
    options.method = method;
    const std::string content =
        std::string("line one\nbinary \0 byte\n", 23) + std::string(70000, 'z');
    ssh().write_file("/root/note.txt", content, 0600, options);
    EXPECT_EQ(trimmed(ssh().check("stat -c %a /root/note.txt").stdout_text), "600");
    EXPECT_EQ(ssh().read_file("/root/note.txt", options), content);
    ssh().write_file("/root/note.txt", "", 0644, options);  // replaces, and may be empty
    EXPECT_EQ(ssh().read_file("/root/note.txt", options), "");
    EXPECT_THROW(ssh().read_file("/root/no-such-file", options), vmfest::SshError);
  }
  ssh().check("rm /root/note.txt");
}

TEST_F(SshGuest, DirectoryTreesKeepContentAndModesOverBothMethods) {
  ScratchDirectory scratch;
  const fs::path tree = scratch.path / "tree";
  fs::create_directories(tree / "bin");
  fs::create_directories(tree / "data/empty-dir");
  write_text(tree / "bin/run.sh", "#!/bin/sh\necho hi\n", 0755);
  write_text(tree / "data/secret", "s3cret\n", 0600);
  write_random_file(tree / "data/blob", 3u << 20);
  write_text(tree / "data/empty", "", 0644);
  fs::permissions(tree / "data", static_cast<fs::perms>(0750));

  for (TransferMethod method : {TransferMethod::sftp, TransferMethod::exec}) {
    SCOPED_TRACE(method == TransferMethod::sftp ? "sftp" : "exec");
    TransferOptions options;
    options.method = method;
    ssh().upload(tree, "/root/tree", options);
    EXPECT_EQ(ssh().check("/root/tree/bin/run.sh").stdout_text, "hi\n");
    EXPECT_EQ(ssh()
                  .check("cd /root/tree && stat -c '%a %s %n' bin/run.sh data data/secret "
                         "data/empty data/empty-dir data/blob")
                  .stdout_text,
              fmt::format("755 18 bin/run.sh\n750 4096 data\n600 7 data/secret\n644 0 data/empty\n"
                          "{:o} 4096 data/empty-dir\n644 3145728 data/blob\n",
                          mode_of(tree / "data/empty-dir")));

    const fs::path back = scratch.path / "back";
    ssh().download("/root/tree", back, options);
    for (const char* file : {"bin/run.sh", "data/secret", "data/blob", "data/empty"}) {
      EXPECT_EQ(vmfest::detail::sha256_file(back / file), vmfest::detail::sha256_file(tree / file))
          << file;
      EXPECT_EQ(mode_of(back / file), mode_of(tree / file)) << file;
    }
    EXPECT_EQ(mode_of(back / "data"), 0750);
    EXPECT_TRUE(fs::is_directory(back / "data/empty-dir"));
    fs::remove_all(back);
    ssh().check("rm -r /root/tree");
  }
}

TEST_F(SshGuest, AutomaticTransfersFallBackToExecWithoutAnSftpServer) {
  // Without the server, libssh 0.10's sftp_init() would spin forever unless guarded.
  ssh().check("mv /usr/lib/sftp-server /usr/lib/sftp-server.away");
  struct Restore {
    ~Restore() { ssh().run("mv /usr/lib/sftp-server.away /usr/lib/sftp-server"); }
  } restore;
  // A fresh connection: the instance's session has its SFTP client open already.
  Session fresh = Session::connect(ssh().endpoint(), credentials_of(instance()));
  const auto start = Clock::now();
  fresh.write_file("/root/fallback.txt", "via exec\n");
  EXPECT_EQ(fresh.read_file("/root/fallback.txt"), "via exec\n");
  EXPECT_LT(seconds_since(start), 10.0);
  TransferOptions sftp_only;
  sftp_only.method = TransferMethod::sftp;
  try {
    fresh.read_file("/root/fallback.txt", sftp_only);
    FAIL() << "SFTP-only transfer without an SFTP server";
  } catch (const vmfest::SshError& error) {
    EXPECT_NE(std::string(error.what()).find("no SFTP server"), std::string::npos) << error.what();
  }
  fresh.check("rm /root/fallback.txt");
}

// ---- forwarding and keys ------------------------------------------------------------------------

TEST_F(SshGuest, LocalForwardReachesAnHttpServerInTheGuest) {
  ssh().check(
      "mkdir -p /srv/www && echo 'hello from the guest' > /srv/www/index.html && "
      "httpd -p 127.0.0.1:8080 -h /srv/www");
  const std::string request = "GET /index.html HTTP/1.0\r\nHost: guest\r\n\r\n";
  int port = 0;
  {
    auto forward = ssh().forward_local(8080);
    port = forward.port();
    EXPECT_EQ(forward.guest_port(), 8080);
    auto reply = exchange(forward.port(), request);
    ASSERT_TRUE(reply);
    EXPECT_NE(reply->find("200 OK"), std::string::npos) << *reply;
    EXPECT_NE(reply->find("hello from the guest"), std::string::npos) << *reply;

    // Several clients at once, while commands keep running on the same session.
    std::atomic<int> good{0};
    std::vector<std::thread> clients;
    for (int i = 0; i < 6; ++i) {
      clients.emplace_back([&] {
        auto answer = exchange(forward.port(), request);
        if (answer && answer->find("hello from the guest") != std::string::npos) ++good;
      });
    }
    EXPECT_EQ(ssh().check("echo meanwhile").stdout_text, "meanwhile\n");
    for (auto& client : clients) client.join();
    EXPECT_EQ(good.load(), 6);
  }
  EXPECT_FALSE(exchange(port, request)) << "the host port stays open after the forward ended";
  ssh().check("killall httpd");
}

TEST_F(SshGuest, RemoteForwardLetsTheGuestReachAHostService) {
  HostService service;
  auto forward = ssh().forward_remote(0, "127.0.0.1", service.port());
  ASSERT_GT(forward.guest_port(), 0);
  auto result = ssh().check(fmt::format("echo ping | nc 127.0.0.1 {}", forward.guest_port()));
  EXPECT_EQ(result.stdout_text, "host saw: ping\n");
}

TEST_F(SshGuest, WrongHostKeyAndWrongClientKeyAreRefusedDistinctly) {
  const vmfest::ssh::Credentials good = credentials_of(instance());
  vmfest::ssh::Credentials wrong_host = good;
  wrong_host.pinned_host_key = vmfest::ssh::KeyPair::generate("impostor").public_openssh;
  EXPECT_THROW(Session::connect(ssh().endpoint(), wrong_host), vmfest::HostKeyMismatchError);

  vmfest::ssh::Credentials wrong_client = good;
  wrong_client.client_private_key = vmfest::ssh::KeyPair::generate("stranger").private_openssh;
  EXPECT_THROW(Session::connect(ssh().endpoint(), wrong_client), vmfest::SshAuthError);

  EXPECT_EQ(Session::connect(ssh().endpoint(), good).check("echo ok").stdout_text, "ok\n");
}

// ---- a guest that stops answering, and one that reboots (their own instance) ------------------

class SshDisruption : public SharedGuest {};

TEST_F(SshDisruption, CommandsOnAPausedGuestFailInTime) {
  ASSERT_EQ(ssh().check("echo before").stdout_text, "before\n");
  instance().pause();
  RunOptions options;
  options.timeout = 2s;
  auto start = Clock::now();
  EXPECT_THROW(ssh().run("echo paused", options), vmfest::SshTimeoutError);
  EXPECT_LT(seconds_since(start), 5.0);
  instance().resume();
  // The guest's late answers to the abandoned request do not upset the session.
  EXPECT_EQ(ssh().check("echo resumed").stdout_text, "resumed\n");

  // A command without its own timeout, running when the guest stops answering: the session's
  // I/O timeout notices the silence (keep-alive probes get no answer) and drops the connection.
  ssh().set_io_timeout(3s);
  std::optional<std::string> failure;
  std::optional<double> failed_after_pause;
  std::atomic<bool> paused{false};
  Clock::time_point paused_at;
  std::thread runner([&] {
    try {
      ssh().run("sleep 20");
    } catch (const vmfest::SshTimeoutError& error) {
      failure = error.what();
      if (paused) failed_after_pause = seconds_since(paused_at);
    }
  });
  std::this_thread::sleep_for(1s);
  paused_at = Clock::now();
  paused = true;
  instance().pause();
  runner.join();
  instance().resume();
  ASSERT_TRUE(failure) << "the command did not fail";
  ASSERT_TRUE(failed_after_pause) << *failure;
  EXPECT_GE(*failed_after_pause, 2.0) << *failure;
  EXPECT_LT(*failed_after_pause, 8.0) << *failure;
  EXPECT_NE(failure->find("paused"), std::string::npos) << *failure;

  ssh().set_io_timeout(30s);
  EXPECT_THROW(ssh().run("true"), vmfest::SshError) << "the dropped connection must say so";
  ssh().reconnect(30s);
  EXPECT_EQ(ssh().check("echo after").stdout_text, "after\n");
}

TEST_F(SshDisruption, RebootReconnectsWithThePinnedKey) {
  const std::string boot_id = ssh().read_file("/proc/sys/kernel/random/boot_id");
  ssh().check("echo persisted > /root/survives && sync");
  ssh().reboot(120s);
  EXPECT_NE(ssh().check("cat /proc/sys/kernel/random/boot_id").stdout_text, boot_id);
  EXPECT_EQ(ssh().check("cat /root/survives").stdout_text, "persisted\n");
  auto forward = ssh().forward_local(22);  // the new connection carries forwards again
  auto banner = exchange(forward.port(), "", false);
  EXPECT_TRUE(banner && banner->starts_with("SSH-2.0-")) << banner.value_or("(refused)");
}

}  // namespace
