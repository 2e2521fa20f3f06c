// Groups of warm clones on private networks: every member resumes the model's (or its role's
// layer's) warm image, the one single instances resume, and joins its segment after the resume
// with its own MAC, address and hostname; /etc/hosts names the whole group.
#include <filesystem>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "vmfest/error.h"
#include "vmfest/gtest/fixture.h"

namespace {
using vmfest::Instance;
using vmfest::InstanceRequest;
using vmfest::PrivateNic;
using vmfest::ProvisionStep;
using vmfest::testing::InstanceSet;
using vmfest::testing::InstanceTest;
using vmfest::testing::PrivateNetwork;
using vmfest::testing::VmRequirements;

// True when the last start resumed a warm image (the agent's "identity") and never waited for a
// boot's console marker.
bool resumed_without_boot(const Instance& instance) {
  bool identity = false;
  for (const vmfest::StartPhase& phase : instance.start_phases()) {
    if (phase.name == "console") return false;
    identity = identity || phase.name == "identity";
  }
  return identity && instance.resumed_warm();
}

std::string phase_names(const Instance& instance) {
  std::string names;
  for (const vmfest::StartPhase& phase : instance.start_phases()) names += phase.name + " ";
  return names;
}

// The IPv4 addresses (ADDRESS/PREFIX) a guest has on cards other than loopback and SSH's (eth0).
std::string segment_addresses(vmfest::testing::RecordedSsh& ssh) {
  return ssh.check("ip -4 -o addr show | awk '$2 != \"lo\" && $2 != \"eth0\" {print $4}' | sort")
      .stdout_text;
}

// The MAC of the card that holds `address`.
std::string card_mac(vmfest::testing::RecordedSsh& ssh, const std::string& address) {
  return ssh
      .check(fmt::format("card=$(ip -4 -o addr show | awk '$4 ~ /^{}\\// {{print $2}}'); "
                         "cat /sys/class/net/$card/address",
                         address))
      .stdout_text;
}

// A request for the test model: named `name` (empty: generated), on `nic`'s segment if any.
InstanceRequest request(const std::string& name = "", std::optional<PrivateNic> nic = {}) {
  InstanceRequest wanted;
  wanted.model = vmfest::testing::test_model();
  wanted.name = name;
  wanted.private_nic = std::move(nic);
  return wanted;
}

// One plain instance first, so the model's warm image exists before any group asks for it: the
// groups then show that they resume the very image single instances use.
void ensure_warm_image() {
  Instance single = Instance::create(request());
  single.start();
}

class WarmGroup : public InstanceTest {
 public:
  static void SetUpTestSuite() { ensure_warm_image(); }

 protected:
  [[nodiscard]] VmRequirements requirements() const override {
    return {.instances = 3, .private_network = true};
  }
};

TEST_F(WarmGroup, ThreeMembersResumeWarmAndReachEachOtherByNameAndAddress) {
  for (std::size_t i = 0; i < 3; ++i) {
    Instance& member = instance(i);
    EXPECT_TRUE(resumed_without_boot(member)) << member.name() << ": " << phase_names(member);
    EXPECT_EQ(ssh(i).check("hostname").stdout_text, member.name() + "\n");
    // Its own segment only: one address, its own, on the card with its own MAC.
    const std::string address = instances().private_address(i);
    EXPECT_EQ(segment_addresses(ssh(i)), address + "/24\n");
    EXPECT_EQ(card_mac(ssh(i), address), PrivateNetwork::mac(i) + "\n");
    for (std::size_t j = 0; j < 3; ++j) {
      if (j == i) continue;
      const std::string peer = instances().private_address(j);
      ssh(i).check("ping -c 1 -W 5 " + peer);
      ssh(i).check(fmt::format("ping -c 1 -W 5 node{}", j));
      const auto by_name = ssh(i).check("ping -c 1 -W 5 " + instance(j).name());
      EXPECT_NE(by_name.stdout_text.find(peer), std::string::npos) << by_name.stdout_text;
    }
  }
}

TEST_F(WarmGroup, MembersAreByteIndependent) {
  ssh(0).check("echo written-on-0 > /root/mine && sync");
  EXPECT_EQ(ssh(0).check("cat /root/mine").stdout_text, "written-on-0\n");
  EXPECT_NE(ssh(1).run("cat /root/mine").exit_status, 0);
  EXPECT_NE(ssh(2).run("cat /root/mine").exit_status, 0);
  // The same block of the shared image, changed on one, is unchanged on the others.
  ssh(1).check("echo changed > /etc/motd && sync");
  EXPECT_NE(ssh(2).check("cat /etc/motd 2>/dev/null; true").stdout_text, "changed\n");
  EXPECT_NE(ssh(0).check("cat /etc/motd 2>/dev/null; true").stdout_text, "changed\n");
}

// Two segments side by side: each member reaches its own group and nothing of the other, even
// an address that other segment uses.
TEST(WarmGroups, TwoGroupsSideBySideDoNotSeeEachOther) {
  ensure_warm_image();
  PrivateNetwork first;
  PrivateNetwork second;
  const std::vector<std::string> first_group = {"left-" + first.id()};
  // The second group's only member is its node1: the address the first group does not use.
  const std::vector<std::string> second_group = {"right-" + second.id() + "-unused",
                                                 "right-" + second.id()};
  (void)second.attach();  // node0 of the second group, never started
  Instance left = Instance::create(request(first_group[0], first.attach(first_group)));
  Instance right = Instance::create(request(second_group[1], second.attach(second_group)));
  vmfest::start_all({&left, &right});
  EXPECT_TRUE(resumed_without_boot(left)) << phase_names(left);
  EXPECT_TRUE(resumed_without_boot(right)) << phase_names(right);
  // Each has its address; neither answers the other's ARP (a hub never relays across segments).
  EXPECT_NE(left.ssh().check("ip -4 -o addr").stdout_text.find(PrivateNetwork::address(0) + "/24"),
            std::string::npos);
  EXPECT_NE(right.ssh().check("ip -4 -o addr").stdout_text.find(PrivateNetwork::address(1) + "/24"),
            std::string::npos);
  EXPECT_NE(left.ssh().run("ping -c 2 -W 2 " + PrivateNetwork::address(1)).exit_status, 0);
  EXPECT_NE(right.ssh().run("ping -c 2 -W 2 " + PrivateNetwork::address(0)).exit_status, 0);
}

// Sixteen members of one segment, from the one warm image, two at a time under the VM cap: each
// its own MAC and address on the segment, and its own hostname.
TEST(WarmGroups, SixteenMembersOfOneWarmImageHaveUniqueMacsAndAddresses) {
  constexpr std::size_t kMembers = 16;
  ensure_warm_image();
  PrivateNetwork network;
  std::vector<std::string> group;
  for (std::size_t i = 0; i < kMembers; ++i)
    group.push_back(fmt::format("m{}-{}", i, network.id()));
  std::set<std::string> macs;
  std::set<std::string> addresses;
  std::set<std::string> hostnames;
  for (std::size_t batch = 0; batch < kMembers; batch += 2) {
    std::vector<Instance> members;
    for (std::size_t i = batch; i < batch + 2; ++i) {
      members.push_back(Instance::create(request(group[i], network.attach(group))));
    }
    vmfest::start_all({&members[0], &members[1]});
    for (std::size_t k = 0; k < 2; ++k) {
      Instance& member = members[k];
      EXPECT_TRUE(resumed_without_boot(member)) << member.name() << ": " << phase_names(member);
      const std::string facts =
          member.ssh()
              .check(
                  "for dev in /sys/class/net/*; do a=$(ip -4 -o addr show dev ${dev##*/} | "
                  "awk '{print $4}'); case $a in 192.168.77.*) echo $(cat $dev/address) $a;; "
                  "esac; done; hostname")
              .stdout_text;
      const auto first_break = facts.find('\n');
      ASSERT_NE(first_break, std::string::npos) << facts;
      const std::string card = facts.substr(0, first_break);
      const auto space = card.find(' ');
      ASSERT_NE(space, std::string::npos) << facts;
      macs.insert(card.substr(0, space));
      addresses.insert(card.substr(space + 1));
      hostnames.insert(facts.substr(first_break + 1));
      EXPECT_EQ(card.substr(space + 1), PrivateNetwork::address(batch + k) + "/24");
    }
    // Each pair reaches each other on the segment.
    members[0].ssh().check("ping -c 1 -W 5 " + group[batch + 1]);
  }
  EXPECT_EQ(macs.size(), kMembers);
  EXPECT_EQ(addresses.size(), kMembers);
  EXPECT_EQ(hostnames.size(), kMembers);
}

// Roles: a server whose steps install a service, clients whose steps install a tool. Each
// resumes its own layer (built once, on the model's warm image), and a client reaches the
// server's service by name on the segment.
class ServerAndClients : public InstanceTest {
 public:
  static void SetUpTestSuite() { ensure_warm_image(); }

 protected:
  [[nodiscard]] VmRequirements requirements() const override {
    const vmfest::ProvisionSteps server = {
        ProvisionStep::run("mkdir -p /srv/www && echo served-by-the-server-role > "
                           "/srv/www/index.html"),
        ProvisionStep::run("busybox httpd -p 8080 -h /srv/www"),
    };
    // busybox nc, not wget: the static busybox's wget crashes in glibc's resolver.
    const vmfest::ProvisionSteps client = {ProvisionStep::run(
        "mkdir -p /usr/local/bin && printf '#!/bin/sh\\nprintf \"GET /index.html "
        "HTTP/1.0\\\\r\\\\n\\\\r\\\\n\" | nc -w 10 "
        "\"$1\" 8080\\n' > /usr/local/bin/fetch && chmod +x /usr/local/bin/fetch")};
    return {.instances = 3, .private_network = true, .role_provision = {server, client, client}};
  }
};

TEST_F(ServerAndClients, ClientsReachTheServersServiceByName) {
  for (std::size_t i = 0; i < 3; ++i) {
    EXPECT_TRUE(resumed_without_boot(instance(i)))
        << instance(i).name() << ": " << phase_names(instance(i));
  }
  // The roles kept apart: only the server serves, only the clients have the tool.
  EXPECT_NE(ssh(0).run("test -x /usr/local/bin/fetch").exit_status, 0);
  EXPECT_NE(ssh(1).run("test -e /srv/www/index.html").exit_status, 0);
  for (std::size_t client : {1, 2}) {
    const auto reply = ssh(client).check("fetch " + instance(0).name());
    EXPECT_TRUE(reply.stdout_text.starts_with("HTTP/1.1 200 OK")) << reply.stdout_text;
    EXPECT_TRUE(reply.stdout_text.ends_with("served-by-the-server-role\n")) << reply.stdout_text;
  }
  EXPECT_TRUE(ssh(2).check("fetch node0").stdout_text.ends_with("served-by-the-server-role\n"));
}

// A member saved as a model: its disk is, its memory is not (it holds the segment's card, which no
// warm image may hold), so the new model's first clone boots it, with the member's files.
TEST(WarmGroups, AMemberSavedAsAModelLeavesItsMemoryOut) {
  ensure_warm_image();
  PrivateNetwork network;
  const std::string name = "saved-" + network.id();
  Instance member = Instance::create(request(name, network.attach({name})));
  member.start();
  member.ssh().check("echo from-the-member > /root/kept && sync");
  const std::string model = "group-member-" + network.id();
  const vmfest::Model saved = member.save_as_model(model);
  EXPECT_EQ(member.ssh().check("cat /root/kept").stdout_text, "from-the-member\n");
  member.destroy();
  // No warm image beside the new model's disk (the folder warm images of a model live in).
  const std::filesystem::path warm = saved.directory / "warm";
  EXPECT_TRUE(!std::filesystem::exists(warm) || std::filesystem::is_empty(warm));
  {
    InstanceRequest wanted;
    wanted.model = model;
    Instance clone = Instance::create(wanted);
    clone.start();
    EXPECT_FALSE(resumed_without_boot(clone)) << phase_names(clone);
    EXPECT_EQ(clone.ssh().check("cat /root/kept").stdout_text, "from-the-member\n");
  }
  vmfest::ModelRegistry().remove(model);
}

TEST(WarmGroups, ACardWithABadAddressOrNameIsRefusedAtCreate) {
  PrivateNetwork network;
  PrivateNic nic = network.attach({"good-name"});
  nic.address = "192.168.77.300";
  try {
    (void)Instance::create(request("", nic));
    ADD_FAILURE() << "an address that is none was taken";
  } catch (const vmfest::InvalidArgument& error) {
    EXPECT_NE(std::string(error.what()).find("'192.168.77.300' is no IPv4 address"),
              std::string::npos)
        << error.what();
  }
  nic = network.attach({"good-name", "bad_name"});
  try {
    (void)Instance::create(request("", nic));
    ADD_FAILURE() << "a host name with '_' was taken";
  } catch (const vmfest::InvalidArgument& error) {
    EXPECT_NE(std::string(error.what()).find("'bad_name' (for 192.168.77.2) is no host name"),
              std::string::npos)
        << error.what();
  }
  EXPECT_THROW(InstanceSet({.instances = 1, .role_provision = {{}, {}}}), vmfest::InvalidArgument);
}

}  // namespace
