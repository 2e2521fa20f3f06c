// Several instances per test on a private network: a client VM reaches a server VM at its fixed
// address (InstanceGroupTest, two VMs per test).
#include <string>

#include "vmfest/gtest/fixture.h"

namespace {

class ClientServer : public vmfest::testing::InstanceGroupTest {};

TEST_F(ClientServer, ClientFetchesAPageFromTheServerAtItsPrivateAddress) {
  const std::string server = private_address(1);
  EXPECT_EQ(server, "192.168.77.2");
  EXPECT_NE(ssh(1).check("ip -4 addr").stdout_text.find("inet " + server + "/24"),
            std::string::npos);
  ssh(1).check("mkdir -p /srv && echo served-by-" + instance(1).name() +
               " > /srv/index.html && httpd -p 8080 -h /srv");
  // busybox nc, not wget: the static busybox's wget crashes in glibc's resolver.
  const auto reply =
      ssh(0).check("printf 'GET /index.html HTTP/1.0\\r\\n\\r\\n' | nc -w 10 " + server + " 8080");
  EXPECT_TRUE(reply.stdout_text.starts_with("HTTP/1.1 200 OK")) << reply.stdout_text;
  EXPECT_TRUE(reply.stdout_text.ends_with("\r\n\r\nserved-by-" + instance(1).name() + "\n"))
      << reply.stdout_text;
  // And back: the server reaches the client too.
  ssh(1).check("ping -c 1 -W 5 " + private_address(0));
}

}  // namespace
