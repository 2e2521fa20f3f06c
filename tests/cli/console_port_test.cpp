// `vmfest console` and `vmfest port` on one instance the CLI created and started (cold, so that
// its console holds a whole boot): its boot and kernel lines, a guest web server reached through a
// forwarded port (detached, and for as long as the command runs), a taken port, unknown instances,
// and `console -f` ending by itself when the instance is destroyed.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <string>
#include <thread>

#include <fmt/format.h>

#include "cli_runner.h"
#include "vmfest/gtest/environment.h"
#include "vmfest/model.h"

namespace {
using std::chrono::seconds;
using vmfest::testing::BackgroundCli;
using vmfest::testing::CliResult;
using vmfest::testing::contains;
using vmfest::testing::run_cli;

constexpr int kGuestPort = 8080;
constexpr const char* kPage = "served by the guest through vmfest port";

// A socket listening on 127.0.0.1 at a port the kernel picks: a port that is taken.
class Listener {
 public:
  Listener() : fd_(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) {
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t length = sizeof address;
    auto* generic = reinterpret_cast<sockaddr*>(&address);
    if (fd_ < 0 || ::bind(fd_, generic, sizeof address) != 0 || ::listen(fd_, 1) != 0 ||
        ::getsockname(fd_, generic, &length) != 0) {
      throw std::runtime_error("cannot listen on 127.0.0.1");
    }
    port_ = ntohs(address.sin_port);
  }
  Listener(const Listener&) = delete;
  Listener& operator=(const Listener&) = delete;
  ~Listener() { ::close(fd_); }
  [[nodiscard]] int port() const noexcept { return port_; }

 private:
  int fd_;
  int port_ = 0;
};

// The answer to GET / on 127.0.0.1:port (HTTP/1.0: the server closes when done); "" if none.
std::string http_get(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = htons(static_cast<uint16_t>(port));
  std::string answer;
  timeval timeout{10, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0) {
    const std::string request = "GET / HTTP/1.0\r\n\r\n";
    if (::write(fd, request.data(), request.size()) == static_cast<ssize_t>(request.size())) {
      char buffer[4096];
      for (ssize_t count; (count = ::read(fd, buffer, sizeof buffer)) > 0;) {
        answer.append(buffer, static_cast<std::size_t>(count));
      }
    }
  }
  ::close(fd);
  return answer;
}

// The first line of what `command` printed, once it has printed one (within a minute).
std::string first_line(const BackgroundCli& command) {
  for (int attempt = 0; attempt < 600; ++attempt) {
    const std::string out = command.out();
    if (const auto end = out.find('\n'); end != std::string::npos) return out.substr(0, end);
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return "";
}

class ConsoleAndPort : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    name_ = fmt::format("console-port-{}", ::getpid());
    CliResult created = run_cli({"create", name_, "-m", vmfest::testing::test_model(), "--cold"});
    ASSERT_EQ(created.exit_code, 0) << created.describe();
    CliResult started = run_cli({"start", name_});
    ASSERT_EQ(started.exit_code, 0) << started.describe();
    CliResult server = run_cli(
        {"ssh", name_, "--",
         fmt::format("mkdir -p /tmp/www && echo '{}' > /tmp/www/index.html && httpd -p {} -h "
                     "/tmp/www",
                     kPage, kGuestPort)});
    ASSERT_EQ(server.exit_code, 0) << server.describe();
  }
  static void TearDownTestSuite() {
    if (vmfest::testing::listed_instance(name_)) run_cli({"destroy", name_});
  }
  static std::string name_;
};
std::string ConsoleAndPort::name_;

// The tiny model boots its kernel `quiet`: what reaches its console is its init's boot lines
// (the ready marker among them) and the kernel's messages of warning level and above.
TEST_F(ConsoleAndPort, ConsoleShowsTheGuestsBootAndKernelLines) {
  const std::string kernel_line = fmt::format("vmfest console test {}", ::getpid());
  CliResult logged =
      run_cli({"ssh", name_, "--", fmt::format("echo '<3>{}' > /dev/kmsg", kernel_line)});
  ASSERT_EQ(logged.exit_code, 0) << logged.describe();

  // The kernel's console output may trail its log by a moment.
  CliResult console;
  for (int attempt = 0; attempt < 20; ++attempt) {
    console = run_cli({"console", name_});
    ASSERT_EQ(console.exit_code, 0) << console.describe();
    if (contains(console.out, kernel_line)) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
  }
  EXPECT_TRUE(contains(console.out, kernel_line)) << console.out;
  const std::string marker =
      vmfest::ModelRegistry().get(vmfest::testing::test_model()).ready_marker;
  if (!marker.empty()) {
    EXPECT_TRUE(contains(console.out, marker)) << console.out;
  }
}

TEST(ConsoleAndPortErrors, UnknownInstanceIsAClearError) {
  for (const auto& args : {std::vector<std::string>{"console", "no-such-instance"},
                           std::vector<std::string>{"port", "no-such-instance", "80"}}) {
    CliResult result = run_cli(args);
    EXPECT_EQ(result.exit_code, 1) << result.describe();
    EXPECT_TRUE(contains(result.err, "no instance named 'no-such-instance'")) << result.describe();
  }
}

TEST_F(ConsoleAndPort, DetachedForwardReachesTheGuestsServer) {
  CliResult forwarded = run_cli({"port", name_, std::to_string(kGuestPort), "--detach"});
  ASSERT_EQ(forwarded.exit_code, 0) << forwarded.describe();
  const int port = std::stoi(forwarded.out);
  EXPECT_TRUE(contains(http_get(port), kPage)) << "through 127.0.0.1:" << port;
}

TEST_F(ConsoleAndPort, ForwardLastsWhileTheCommandRuns) {
  BackgroundCli command({"port", name_, std::to_string(kGuestPort)});
  const std::string line = first_line(command);
  ASSERT_FALSE(line.empty()) << command.err();
  const int port = std::stoi(line);
  EXPECT_TRUE(contains(http_get(port), kPage)) << "through 127.0.0.1:" << port;

  command.signal(SIGTERM);
  EXPECT_EQ(command.wait_for_exit(seconds(20)), 0) << command.err();
  EXPECT_FALSE(vmfest::testing::port_is_listening(port)) << "the forward outlived the command";
}

TEST_F(ConsoleAndPort, TakenHostPortIsAClearErrorNamingIt) {
  const Listener taken;
  CliResult result = run_cli(
      {"port", name_, std::to_string(kGuestPort), "--host-port", std::to_string(taken.port())});
  EXPECT_EQ(result.exit_code, 1) << result.describe();
  EXPECT_TRUE(
      contains(result.err, fmt::format("port {} on 127.0.0.1 is already taken", taken.port())))
      << result.describe();
}

// Destroys the suite's instance (ctest runs each test in a process, and suite, of its own).
TEST_F(ConsoleAndPort, FollowEndsWhenTheInstanceIsDestroyed) {
  BackgroundCli follow({"console", name_, "-f"});
  ASSERT_FALSE(first_line(follow).empty()) << follow.err();
  EXPECT_EQ(follow.wait_for_exit(seconds(2)), std::nullopt) << "-f returned while it runs";

  CliResult destroyed = run_cli({"destroy", name_});
  ASSERT_EQ(destroyed.exit_code, 0) << destroyed.describe();
  EXPECT_EQ(follow.wait_for_exit(seconds(20)), 0) << follow.err();
}

}  // namespace
