// Many runners on one libvirt host: a runner's reap removes what a dead runner left (by its lease)
// and never what a live one holds; models nothing uses are collected by age; concurrent uploads of
// one content make one volume. Registered on both URIs by tests/libvirt/CMakeLists.txt.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <filesystem>
#include <future>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include "backends/libvirt/libvirt_api.h"
#include "backends/libvirt/storage.h"
#include "child_process.h"
#include "libvirt_test_support.h"
#include "random_file.h"
#include "vmfest/home.h"
#include "vmfest/instance.h"

namespace {
namespace fs = std::filesystem;
namespace lv = vmfest::detail::libvirt;
using namespace std::chrono_literals;
using vmfest::Instance;
using namespace vmfest::testing::libvirt_support;

// Run as a child by the next test, in a home of its own: creates an instance (its volumes and its
// lease on the host), says its name, and waits to be killed.
TEST(LibvirtChild, CreateAndWaitToBeKilled) {
  if (std::getenv("VMFEST_LIBVIRT_CHILD_CREATE") == nullptr) GTEST_SKIP() << "run by another test";
  vmfest::InstanceRequest request;
  request.model = vmfest::testing::test_model();
  Instance instance = Instance::create(request);
  std::printf("\ninstance %s\n", instance.name().c_str());
  std::fflush(stdout);
  std::this_thread::sleep_for(600s);
}

// Another runner (a child with a home of its own and a 3 s lease) creates an instance. While it
// lives, this runner's reaps leave its volumes alone for twice its lease's term; once it is
// killed and its lease ran out, this runner's reap removes them, lease markers included.
TEST(Libvirt, AnyRunnerReapsADeadRunnersVolumesAndNoLiveOnes) {
  const PrivateHome home;
  const fs::path other = fs::temp_directory_path() / fmt::format("vmfest-runner-b-{}", ::getpid());
  fs::remove_all(other);
  const fs::path output = other.string() + ".out";
  vmfest::testing::ChildProcess child(
      {"/usr/bin/env", "-u", "GTEST_SHARD_INDEX", "-u", "GTEST_TOTAL_SHARDS",
       fs::read_symlink("/proc/self/exe").string(),
       "--gtest_filter=LibvirtChild.CreateAndWaitToBeKilled"},
      output,
      {"VMFEST_LIBVIRT_CHILD_CREATE=1", "VMFEST_HOME=" + other.string(), "VMFEST_LIBVIRT_LEASE=3"});
  const std::string name = announced_instance(child);
  ASSERT_FALSE(name.empty()) << child.output();
  const std::string domain = fmt::format("vmfest-{}-{}", vmfest::Home(other).id(), name);
  ASSERT_EQ(disk_and_seed(volumes_with(first_uri(), domain)), 2U) << child.output();

  for (int reap = 0; reap < 3; ++reap) {
    std::this_thread::sleep_for(2500ms);
    vmfest::reap_leaked_instances();
    const auto volumes = volumes_with(first_uri(), domain);
    EXPECT_EQ(disk_and_seed(volumes), 2U) << "a live runner's instance lost a volume";
    EXPECT_GE(lease_markers(volumes), 1U) << "the live runner's lease is gone";
  }

  child.kill();
  EXPECT_EQ(child.wait(), 128 + SIGKILL);
  fs::remove(output);
  std::this_thread::sleep_for(4s);  // the 3 s lease runs out
  vmfest::reap_leaked_instances();
  EXPECT_TRUE(volumes_with(first_uri(), domain).empty()) << "the dead runner's volumes stay";
  fs::remove_all(other);
}

// Run as a child by Libvirt.TwoRunnersOfOneHomePath*: creates and starts an instance, reaps, checks
// that the reaps (its own, and the other runner's) left its VM and volumes, round after round until
// it is killed. Says "round N" after each, "LOST <domain>" when something was taken.
TEST(LibvirtChild, CreateStartAndReapUntilKilled) {
  if (std::getenv("VMFEST_LIBVIRT_CHILD_ROUNDS") == nullptr) GTEST_SKIP() << "run by another test";
  vmfest::testing::ensure_default_model();
  const std::string prefix = fmt::format("vmfest-{}-", vmfest::Home::from_environment().id());
  for (int round = 1;; ++round) {
    Instance instance = start_instance();
    vmfest::reap_leaked_instances();
    const std::string domain = prefix + instance.name();
    if (!domain_exists(first_uri(), domain) ||
        disk_and_seed(volumes_with(first_uri(), domain)) != 2 ||
        instance.ssh().check("echo up").stdout_text != "up\n") {
      std::printf("\nLOST %s\n", domain.c_str());
      std::fflush(stdout);
      FAIL() << "a reap took a live instance's VM or volumes: " << domain;
    }
    std::printf("\nround %d\n", round);
    std::fflush(stdout);
  }
}

// CI runners of one image share a libvirt host with one home path. Two runners (children, each in a
// mount namespace of its own with its own folder bind-mounted at one path) create, start and reap
// side by side (VMFEST_TWO_RUNNERS_SECONDS, default 120): neither ever loses a VM or a volume.
// After both are killed and their 5 s leases ran out, a reap by a third runner leaves nothing of
// theirs.
TEST(Libvirt, TwoRunnersOfOneHomePathShareAHostAndNeitherLosesAnything) {
  const PrivateHome third;
  const auto seconds =
      std::chrono::seconds(std::getenv("VMFEST_TWO_RUNNERS_SECONDS") != nullptr
                               ? std::stol(std::getenv("VMFEST_TWO_RUNNERS_SECONDS"))
                               : 120);
  const fs::path shared = fs::temp_directory_path() / fmt::format("vmfest-ci-home-{}", ::getpid());
  fs::create_directories(shared);
  std::vector<fs::path> folders;
  std::vector<fs::path> outputs;
  std::vector<std::unique_ptr<vmfest::testing::ChildProcess>> runners;
  for (const char* runner : {"a", "b"}) {
    folders.push_back(shared.string() + "-" + runner);
    outputs.push_back(shared.string() + "-" + runner + ".out");
    fs::create_directories(folders.back());
    fs::permissions(folders.back(), fs::perms::owner_all);
    runners.push_back(std::make_unique<vmfest::testing::ChildProcess>(
        std::vector<std::string>{
            "/usr/bin/unshare", "--mount", "--propagation", "private", "/bin/sh", "-c",
            R"(mount --bind "$1" "$2" && exec "$3" --gtest_filter=LibvirtChild.CreateStartAndReapUntilKilled)",
            "sh", folders.back().string(), shared.string(),
            fs::read_symlink("/proc/self/exe").string()},
        outputs.back(),
        std::vector<std::string>{"VMFEST_LIBVIRT_CHILD_ROUNDS=1", "VMFEST_HOME=" + shared.string(),
                                 "VMFEST_LIBVIRT_LEASE=5", "VMFEST_LIBVIRT_MAX_VMS=4",
                                 "GTEST_SHARD_INDEX=0", "GTEST_TOTAL_SHARDS=1"}));
  }
  const auto end = std::chrono::steady_clock::now() + seconds;
  while (std::chrono::steady_clock::now() < end) {
    for (const auto& runner : runners) {
      ASSERT_FALSE(runner->output().find("\nLOST ") != std::string::npos) << runner->output();
    }
    std::this_thread::sleep_for(1s);
  }
  std::vector<std::string> said;
  for (const auto& runner : runners) {
    runner->kill();
    EXPECT_EQ(runner->wait(), 128 + SIGKILL) << "a runner stopped early:\n" << runner->output();
    said.push_back(runner->output());
  }
  for (const std::string& output : said) {
    EXPECT_EQ(output.find("\nLOST "), std::string::npos) << output;
    EXPECT_NE(output.find("\nround 2\n"), std::string::npos) << "fewer than 2 rounds:\n" << output;
  }

  std::this_thread::sleep_for(6s);  // their leases run out
  vmfest::reap_leaked_instances();
  for (const fs::path& folder : folders) {
    const std::string id = vmfest::Home(folder).id();
    EXPECT_FALSE(domain_exists(first_uri(), "vmfest-" + id)) << "a killed runner's VM runs on";
    EXPECT_TRUE(volumes_with(first_uri(), "vmfest-" + id).empty()) << "a killed runner's volumes";
    fs::remove_all(folder);
  }
  for (const fs::path& output : outputs) fs::remove(output);
  fs::remove_all(shared);
}

// A storage pool of the test's own, so that a collection with a short time to live touches no other
// test's models; deleted with what is left in it.
class OwnPool {
 public:
  OwnPool() : name_(fmt::format("vmfest-test-{}", ::getpid())) {
    ::setenv("VMFEST_LIBVIRT_POOL", name_.c_str(), 1);
    ::setenv("VMFEST_LIBVIRT_POOL_PATH", fmt::format("/var/lib/vmfest-pool/{}", name_).c_str(), 1);
  }
  OwnPool(const OwnPool&) = delete;
  OwnPool& operator=(const OwnPool&) = delete;
  ~OwnPool() {
    const lv::Connection connection = lv::connect(first_uri());
    if (virStoragePoolPtr pool = virStoragePoolLookupByName(connection.get(), name_.c_str())) {
      const lv::StoragePool volumes(connection.get(), first_uri());
      for (const std::string& volume : volumes.volume_names()) volumes.remove(volume);
      virStoragePoolDestroy(pool);
      virStoragePoolDelete(pool, 0);
      virStoragePoolUndefine(pool);
      virStoragePoolFree(pool);
    }
    ::unsetenv("VMFEST_LIBVIRT_POOL");
    ::unsetenv("VMFEST_LIBVIRT_POOL_PATH");
  }

  // The names of its volumes that start with `prefix`.
  [[nodiscard]] std::set<std::string> volumes(const std::string& prefix) const {
    const lv::Connection connection = lv::connect(first_uri());
    std::set<std::string> names;
    for (const std::string& volume :
         lv::StoragePool(connection.get(), first_uri()).volume_names()) {
      if (volume.starts_with(prefix)) names.insert(volume);
    }
    return names;
  }

 private:
  std::string name_;
};

// A model's uploads (disk, kernel, initrd) stay while an instance uses them, whatever their time to
// live; once nothing does, a reap marks them and a reap after the time to live deletes them.
TEST(Libvirt, ModelsNothingUsesAreCollectedByAge) {
  const PrivateHome home;
  const OwnPool pool;
  std::set<std::string> uploads;
  {
    Instance instance = start_instance(false);  // its disk is backed by the model's upload
    uploads = pool.volumes("model-");
    ASSERT_GE(uploads.size(), 4U) << "a disk, a kernel and their completion markers";
    ::setenv("VMFEST_LIBVIRT_MODEL_TTL", "1", 1);
    vmfest::reap_leaked_instances();
    std::this_thread::sleep_for(2s);
    vmfest::reap_leaked_instances();
    EXPECT_EQ(pool.volumes("model-"), uploads) << "a running instance's model was collected";
    EXPECT_EQ(instance.ssh().check("echo up").stdout_text, "up\n");
  }
  vmfest::reap_leaked_instances();
  EXPECT_TRUE(std::ranges::includes(pool.volumes("model-"), uploads)) << "collected at once";
  std::this_thread::sleep_for(2s);
  vmfest::reap_leaked_instances();
  ::unsetenv("VMFEST_LIBVIRT_MODEL_TTL");
  EXPECT_TRUE(pool.volumes("model-").empty()) << "unused models stay";
}

// Four uploaders of one content at once (other runners, other homes) make one volume: the others
// wait for the first and get its name.
TEST(Libvirt, ConcurrentUploadsOfOneContentMakeOneVolume) {
  const OwnPool pool;
  const fs::path file = fs::temp_directory_path() / fmt::format("vmfest-upload-{}", ::getpid());
  vmfest::testing::write_random_file(file, 32U << 20);
  const std::string name = fmt::format("model-{}-disk.raw", lv::random_token());
  std::vector<std::future<std::string>> uploads;
  for (int i = 0; i < 4; ++i) {
    uploads.push_back(std::async(std::launch::async, [&] {
      const lv::Connection connection = lv::connect(first_uri());
      return lv::StoragePool(connection.get(), first_uri()).upload_cached(name, file);
    }));
  }
  std::set<std::string> volumes;
  for (auto& upload : uploads) volumes.insert(upload.get());
  fs::remove(file);
  ASSERT_EQ(volumes.size(), 1U) << "the uploaders got different volumes";
  EXPECT_EQ(pool.volumes(name),
            (std::set<std::string>{*volumes.begin(), *volumes.begin() + ".done"}));
}

// Runners starting at once on one host never run more of its VMs than its cap: with a cap of 1, two
// instances started from two threads (two connections, as two runners have) run one after the
// other.
TEST(Libvirt, AHostsCapHoldsUnderConcurrentStarts) {
  const PrivateHome home;
  ::setenv("VMFEST_LIBVIRT_MAX_VMS", "1", 1);
  const std::string prefix = fmt::format("vmfest-{}-", vmfest::Home::from_environment().id());
  std::atomic<bool> done{false};
  std::atomic<int> most{0};
  std::jthread watcher([&] {
    const lv::Connection connection = lv::connect(first_uri());
    while (!done) {
      const auto running =
          lv::list_domains(connection.get(), first_uri(), VIR_CONNECT_LIST_DOMAINS_ACTIVE);
      const int ours = static_cast<int>(std::ranges::count_if(running, [&](const lv::Domain& d) {
        return std::string(virDomainGetName(d.get())).starts_with(prefix);
      }));
      most = std::max(most.load(), ours);
      std::this_thread::sleep_for(50ms);
    }
  });
  auto run = [] {
    try {
      Instance instance = start_instance();
      EXPECT_EQ(instance.ssh().check("echo up").stdout_text, "up\n");
      std::this_thread::sleep_for(2s);
    } catch (const std::exception& error) {
      ADD_FAILURE() << error.what();
    }
  };
  {
    const std::jthread first(run);
    const std::jthread second(run);
  }
  done = true;
  watcher.join();
  ::unsetenv("VMFEST_LIBVIRT_MAX_VMS");
  EXPECT_EQ(most, 1) << "at most one of the two may run at a time, and one did";
}

}  // namespace
