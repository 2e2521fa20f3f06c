// A small HTTP service, installed and configured by provisioning steps like a Dockerfile's. The
// first test's instance runs the steps and saves the result as a layer; every test gets a fresh
// clone of that provisioned guest (service running, data loaded) in about a second.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdint>
#include <string>

#include <vmfest/gtest/fixture.h>

namespace {

using vmfest::ProvisionStep;

class InventoryServiceTest : public vmfest::testing::InstanceTest {
 protected:
  vmfest::testing::VmRequirements requirements() const override {
    vmfest::testing::VmRequirements wanted;
    wanted.provision = {
        ProvisionStep::run("mkdir -p /srv"),
        // The service's content, and a CGI script (site/cgi-bin/add) that changes it.
        ProvisionStep::upload(SAMPLE_SITE_DIR, "/srv/www"),
        // Started once here: each clone resumes it running.
        ProvisionStep::run("busybox httpd -p 8080 -h /srv/www"),
    };
    return wanted;
  }

  std::string get(const std::string& path) {
    return ssh().check("busybox wget -q -O - http://127.0.0.1:8080" + path).stdout_text;
  }
};

TEST_F(InventoryServiceTest, ServesItsFrontPage) { EXPECT_EQ(get("/"), "<h1>inventory</h1>\n"); }

TEST_F(InventoryServiceTest, ServesTheLoadedStock) {
  EXPECT_EQ(get("/stock.txt"), "apples 3\npears 5\n");
}

TEST_F(InventoryServiceTest, AddsAnItem) {
  EXPECT_EQ(get("/cgi-bin/add?plums=7"), "added\n");
  EXPECT_EQ(get("/stock.txt"), "apples 3\npears 5\nplums 7\n");
}

// Runs after AddsAnItem: a fresh clone, so the plums are gone.
TEST_F(InventoryServiceTest, StartsFromTheProvisionedStockEveryTime) {
  EXPECT_EQ(get("/stock.txt"), "apples 3\npears 5\n");
}

TEST_F(InventoryServiceTest, AnswersNotFoundForAMissingPage) {
  const auto result = ssh().run("busybox wget -q -O - http://127.0.0.1:8080/missing");
  EXPECT_NE(result.exit_status, 0);
}

// What a test on the host sees: a plain HTTP request through a forwarded port.
std::string http_get_from_host(int port, const std::string& path) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<std::uint16_t>(port));
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  std::string reply;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0) {
    const std::string request = "GET " + path + " HTTP/1.0\r\n\r\n";
    if (::write(fd, request.data(), request.size()) == static_cast<ssize_t>(request.size())) {
      char buffer[4096];
      for (ssize_t got; (got = ::read(fd, buffer, sizeof(buffer))) > 0;) reply.append(buffer, got);
    }
  }
  ::close(fd);
  return reply;
}

TEST_F(InventoryServiceTest, IsReachableFromTheHost) {
  auto forward = instance().ssh().forward_local(8080);
  const std::string reply = http_get_from_host(forward.port(), "/stock.txt");
  EXPECT_NE(reply.substr(0, reply.find("\r\n")).find(" 200 "), std::string::npos) << reply;
  EXPECT_TRUE(reply.ends_with("\r\n\r\napples 3\npears 5\n")) << reply;
}

TEST_F(InventoryServiceTest, KeepsServingAfterManyRequests) {
  for (int i = 0; i < 20; ++i) ASSERT_EQ(get("/"), "<h1>inventory</h1>\n");
}

TEST_F(InventoryServiceTest, RunsOnlyOneServer) {
  EXPECT_EQ(ssh().check("netstat -ltn 2>/dev/null | grep -c ':8080 '").stdout_text, "1\n");
}

TEST_F(InventoryServiceTest, HasItsOwnHostname) {
  EXPECT_EQ(ssh().check("hostname").stdout_text, instance().name() + "\n");
}

TEST_F(InventoryServiceTest, ServesAFileThisTestAdds) {
  ssh().check("echo 'kiwis 2' > /srv/www/new.txt");
  EXPECT_EQ(get("/new.txt"), "kiwis 2\n");
}

}  // namespace
