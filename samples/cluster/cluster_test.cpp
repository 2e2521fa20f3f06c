// A replicated key-value store on three nodes: node0 the primary, node1 and node2 its replicas, on
// a private network where each reaches the others by name. Every node runs the same store (shared
// steps: one layer), and each its own role (a layer per role, on that one); every test gets a
// fresh group of warm clones of those layers, its service running, in about the time of one.
#include <string>

#include <vmfest/gtest/fixture.h>

namespace {

using vmfest::ProvisionStep;

// Steps of node `index` in role `role`.
vmfest::ProvisionSteps role(const std::string& role, int index) {
  return {ProvisionStep::run("echo " + role + " > /etc/kv/role && echo node" +
                             std::to_string(index) + " > /etc/kv/self")};
}

class KeyValueCluster : public vmfest::testing::InstanceTest {
 protected:
  vmfest::testing::VmRequirements requirements() const override {
    vmfest::testing::VmRequirements wanted;
    wanted.instances = 3;
    wanted.private_network = true;  // node0, node1, node2 in every member's /etc/hosts
    wanted.provision = {
        ProvisionStep::upload(SAMPLE_KV_DIR, "/root/kv"),
        ProvisionStep::run("sh /root/kv/install.sh /root/kv"),  // starts the HTTP server
    };
    wanted.role_provision = {role("primary", 0), role("replica", 1), role("replica", 2)};
    return wanted;
  }

  // `kv ARGS` on node `node`: its output, and a failed test when it fails.
  std::string kv(std::size_t node, const std::string& args) {
    return ssh(node).check("kv " + args).stdout_text;
  }
};

TEST_F(KeyValueCluster, AWriteOnThePrimaryIsReadOnEveryReplica) {
  EXPECT_EQ(kv(0, "role"), "primary\n");
  EXPECT_EQ(kv(0, "put colour blue"), "ok 2\n");  // both replicas took it
  EXPECT_EQ(kv(1, "get colour"), "blue\n");
  EXPECT_EQ(kv(2, "get colour"), "blue\n");
}

TEST_F(KeyValueCluster, AWriteThroughAReplicaGoesToThePrimary) {
  EXPECT_EQ(kv(2, "put size large"), "ok 2\n");
  EXPECT_EQ(kv(0, "get size"), "large\n");
  // Straight to a replica, it is refused.
  const auto refused = ssh(2).run("kv put-to node1 size small");
  EXPECT_NE(refused.exit_status, 0);
  EXPECT_EQ(refused.stderr_text, "error: node1 is a replica: write to the primary\n");
  EXPECT_EQ(kv(1, "get size"), "large\n");
}

TEST_F(KeyValueCluster, APromotedReplicaTakesWritesWhenThePrimaryIsGone) {
  EXPECT_EQ(kv(0, "put before failover"), "ok 2\n");
  instance(0).pause();  // the primary stops answering, as a crashed host would
  EXPECT_EQ(kv(1, "promote"), "ok\n");
  EXPECT_EQ(kv(2, "put after failover"), "ok 1\n");  // node2 took it; node0 is gone
  EXPECT_EQ(kv(1, "get after"), "failover\n");
  EXPECT_EQ(kv(2, "get after"), "failover\n");
}

TEST_F(KeyValueCluster, DataWrittenBeforeAFailoverSurvivesIt) {
  EXPECT_EQ(kv(0, "put ledger 42"), "ok 2\n");
  instance(0).pause();
  EXPECT_EQ(kv(2, "promote"), "ok\n");
  EXPECT_EQ(kv(2, "get ledger"), "42\n");
  EXPECT_EQ(kv(1, "get ledger"), "42\n");
}

TEST_F(KeyValueCluster, AReplicaThatWasDownCatchesUpBySync) {
  instance(2).pause();
  EXPECT_EQ(kv(0, "put missed yes"), "ok 1\n");  // node1 only
  instance(2).resume();
  EXPECT_NE(ssh(2).run("kv get missed").exit_status, 0);
  ssh(2).check("kv sync");
  EXPECT_EQ(kv(2, "get missed"), "yes\n");
}

}  // namespace
