// The libvirt backend's own tests, beside the conformance suite that runs the QEMU backend's VM
// tests through it: URIs, what a killed test process leaves, that nothing of the pool is read
// through a path, and instances spread over two hosts. Run with VMFEST_BACKEND=libvirt and
// VMFEST_LIBVIRT_URI set by tests/libvirt/CMakeLists.txt.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <spdlog/sinks/ringbuffer_sink.h>
#include <spdlog/spdlog.h>
#include <nlohmann/json.hpp>

#include "backends/libvirt/hosts.h"
#include "backends/libvirt/libvirt_api.h"
#include "backends/libvirt/machine.h"
#include "backends/libvirt/storage.h"
#include "child_process.h"
#include "libvirt_test_support.h"
#include "vmfest/error.h"
#include "vmfest/gtest/fixture.h"
#include "vmfest/instance.h"
#include "vmfest/internal/base.h"

namespace {
namespace fs = std::filesystem;
namespace lv = vmfest::detail::libvirt;
using namespace std::chrono_literals;
using vmfest::Instance;
using namespace vmfest::testing::libvirt_support;

// A host that takes the connection but never answers (hung, or stopped) fails the connect within
// VMFEST_LIBVIRT_TIMEOUT, naming the URI; one that refuses it fails at once.
TEST(LibvirtHosts, AHostThatDoesNotAnswerFailsWithinItsTimeout) {
  const fs::path folder = fs::temp_directory_path() / fmt::format("vmfest-silent-{}", ::getpid());
  fs::create_directories(folder);
  const fs::path socket_path = folder / "libvirt-sock";
  const int listener = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  std::strncpy(address.sun_path, socket_path.c_str(), sizeof(address.sun_path) - 1);
  ASSERT_EQ(::bind(listener, reinterpret_cast<const sockaddr*>(&address), sizeof(address)), 0);
  ASSERT_EQ(::listen(listener, 4), 0);  // never accepted: connects queue and wait
  ::setenv("VMFEST_LIBVIRT_TIMEOUT", "2", 1);
  const std::string uri = "qemu+unix:///system?socket=" + socket_path.string();

  const auto start = std::chrono::steady_clock::now();
  try {
    lv::connect(uri);
    ADD_FAILURE() << "a host that never answers was connected to";
  } catch (const vmfest::BackendError& error) {
    EXPECT_NE(std::string(error.what()).find(uri + " did not answer within 2 s"), std::string::npos)
        << error.what();
  }
  EXPECT_LT(std::chrono::steady_clock::now() - start, 10s);

  ::close(listener);  // the attempt left behind ends with it
  fs::remove(socket_path);
  try {
    lv::connect(uri);
    ADD_FAILURE() << "a socket that is gone was connected to";
  } catch (const vmfest::BackendError& error) {
    EXPECT_NE(std::string(error.what()).find("could not connect on " + uri), std::string::npos)
        << error.what();
  }
  ::unsetenv("VMFEST_LIBVIRT_TIMEOUT");
  fs::remove_all(folder);
}

// The volumes of the pool on `uri` whose names hold `part`, with their paths there.
// What the backend recorded for an instance: its host's URI among it.
nlohmann::json machine_state(const Instance& instance) {
  return nlohmann::json::parse(vmfest::detail::read_text(instance.directory() / "instance.json"))
      .at("machine");
}

TEST(LibvirtHosts, AUriNamesItsHostAndTheWayToItsGuests) {
  const lv::HostUri local = lv::parse_host_uri("qemu:///system");
  EXPECT_TRUE(local.local());
  const lv::HostUri remote = lv::parse_host_uri(
      "qemu+ssh://ci@hv1:2222/system?keyfile=/keys/my%20key&no_verify=1&command=/bin/my-ssh");
  EXPECT_FALSE(remote.local());
  EXPECT_EQ(remote.user, "ci");
  EXPECT_EQ(remote.host, "hv1");
  EXPECT_EQ(remote.port, 2222);
  EXPECT_EQ(remote.keyfile, "/keys/my key");
  EXPECT_EQ(remote.jump_command(40022),
            "'/bin/my-ssh' -W 127.0.0.1:40022 -o BatchMode=yes -T -p 2222 -l 'ci' -i "
            "'/keys/my key' -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null "
            "-o LogLevel=ERROR 'hv1'");
  // Through the process's master connection to the host, which ends with the process.
  EXPECT_EQ(remote.jump_command(40022, "/tmp/vmfest-ssh-1-a/1"),
            "'/bin/my-ssh' -W 127.0.0.1:40022 -o ControlPath='/tmp/vmfest-ssh-1-a/1' -o "
            "BatchMode=yes -T -p 2222 -l 'ci' -i '/keys/my key' -o StrictHostKeyChecking=no -o "
            "UserKnownHostsFile=/dev/null -o LogLevel=ERROR 'hv1'");
  EXPECT_EQ(remote.master_command("/tmp/vmfest-ssh-1-a/1"),
            "'/bin/my-ssh' -M -N -o ControlPersist=no -o ControlPath='/tmp/vmfest-ssh-1-a/1' -o "
            "BatchMode=yes -T -p 2222 -l 'ci' -i '/keys/my key' -o StrictHostKeyChecking=no -o "
            "UserKnownHostsFile=/dev/null -o LogLevel=ERROR 'hv1'");
  // A remote host without an SSH account is refused as it is read, before any domain runs.
  for (const char* no_ssh :
       {"qemu+tcp://hv1/system", "qemu+tls://hv1/system", "qemu://hv1/system"}) {
    try {
      (void)lv::parse_host_uri(no_ssh);
      ADD_FAILURE() << no_ssh << " was accepted";
    } catch (const vmfest::InvalidArgument& error) {
      EXPECT_NE(std::string(error.what()).find("use qemu+ssh://user@hv1/system"), std::string::npos)
          << error.what();
    }
  }
  EXPECT_THROW(lv::parse_host_uri("hv1"), vmfest::InvalidArgument);
  EXPECT_THROW(lv::parse_host_uri("qemu+ssh:///system"), vmfest::InvalidArgument);
}

// An instance whose owner died after recording it and before its disk went to a host (no URI in
// its record): no domain of it runs anywhere, so it is stopped, and killing and removing it, as a
// reap does, needs no host and warns of nothing.
TEST(LibvirtHosts, AnInstanceNeverPlacedOnAHostIsStoppedAndGoesQuietly) {
  vmfest::detail::MachineConfig config;
  config.instance_name = "never-placed";
  const fs::path home =
      fs::temp_directory_path() / fmt::format("vmfest-never-placed-{}", ::getpid());
  config.directory = home / "instances" / config.instance_name;
  const auto warnings = std::make_shared<spdlog::sinks::ringbuffer_sink_mt>(8);
  warnings->set_level(spdlog::level::warn);
  spdlog::default_logger()->sinks().push_back(warnings);
  {
    const std::unique_ptr<vmfest::detail::Machine> machine =
        lv::make_machine(config, nlohmann::json::object());
    EXPECT_EQ(machine->state(), vmfest::InstanceState::Stopped);
    machine->kill();
    EXPECT_NO_THROW(machine->remove());
  }
  spdlog::default_logger()->sinks().pop_back();
  EXPECT_EQ(warnings->last_formatted(), std::vector<std::string>{});
  fs::remove_all(home);
}

// The services script (tools/libvirt-services.sh) runs libvirtd with the pool folder on a tmpfs
// only it sees: an instance that boots and answers proves its disk, seed, kernel and console
// reached the host through libvirt alone.
TEST(Libvirt, NothingOfThePoolIsReadThroughAPath) {
  Instance instance = start_instance(false);  // a boot, for its console
  EXPECT_EQ(instance.ssh().check("echo up").stdout_text, "up\n");
  const auto volumes = volumes_with(first_uri(), instance.name());
  ASSERT_EQ(disk_and_seed(volumes), 2U) << "the instance's disk and seed";
  for (const auto& [name, path] : volumes) {
    EXPECT_FALSE(fs::exists(path)) << "volume " << name << " is visible here at " << path
                                   << ": the pool is shared with the test's file system";
  }
  EXPECT_NE(vmfest::detail::read_text(instance.console_log()).find("VMFEST-READY"),
            std::string::npos)
      << "the console, read through libvirt, shows the boot";
}

// The size of the kernel volume an instance's domain boots, as libvirt states it.
std::uint64_t booted_kernel_size(const std::string& uri, const Instance& instance) {
  lv::Connection connection = lv::connect(uri);
  for (const std::string& name : lv::domain_names(connection.get(), uri)) {
    if (!name.ends_with("-" + instance.name())) continue;
    const std::optional<lv::Domain> domain = lv::find_domain(connection.get(), name, uri);
    if (!domain) break;
    char* xml = virDomainGetXMLDesc(domain->get(), 0);
    const std::string text = xml != nullptr ? xml : "";
    std::free(xml);  // NOLINT(cppcoreguidelines-no-malloc): libvirt's string
    const auto begin = text.find("<kernel>");
    const auto end = text.find("</kernel>");
    if (begin == std::string::npos || end == std::string::npos) break;
    const std::string path = text.substr(begin + 8, end - begin - 8);
    virStorageVolPtr volume = virStorageVolLookupByPath(connection.get(), path.c_str());
    if (volume == nullptr) break;
    virStorageVolInfo info{};
    const int status = virStorageVolGetInfo(volume, &info);
    virStorageVolFree(volume);
    if (status == 0) return info.capacity;
    break;
  }
  ADD_FAILURE() << "no kernel volume found for the domain of " << instance.name();
  return 0;
}

// Two models with one disk and two kernels (the second is the first with a page of zeros appended,
// which the boot loader ignores) each boot their own kernel, not the one uploaded first.
TEST(Libvirt, ModelsSharingADiskBootTheirOwnKernels) {
  vmfest::ModelRegistry registry;
  const vmfest::Model first = registry.get(vmfest::testing::kDefaultModel);
  ASSERT_EQ(first.boot.kind, vmfest::BootSpec::Kind::Kernel);
  const fs::path bundle =
      fs::temp_directory_path() / fmt::format("vmfest-other-kernel-{}", ::getpid());
  fs::remove_all(bundle);
  fs::copy(first.source, bundle, fs::copy_options::recursive);
  for (const fs::directory_entry& entry : fs::directory_iterator(bundle)) {
    fs::permissions(entry.path(), fs::perms::owner_write, fs::perm_options::add);
  }
  const fs::path kernel = bundle / first.boot.kernel.filename();
  ASSERT_TRUE(fs::exists(kernel)) << kernel;
  std::ofstream(kernel, std::ios::binary | std::ios::app) << std::string(4096, '\0');
  const std::string second_name = fmt::format("other-kernel-{}", ::getpid());
  vmfest::SetupOptions options;
  options.name = second_name;
  const vmfest::Model second = vmfest::setup_model(bundle.string(), options);
  fs::remove_all(bundle);
  ASSERT_EQ(second.sha256, first.sha256) << "the two models share one disk";

  for (const vmfest::Model& model : {first, second}) {
    vmfest::InstanceRequest request;
    request.model = model.name;
    Instance instance = Instance::create(request);
    instance.start();
    EXPECT_EQ(instance.ssh().check("echo up").stdout_text, "up\n") << model.name;
    EXPECT_EQ(booted_kernel_size(first_uri(), instance), fs::file_size(model.boot.kernel))
        << model.name << " boots another model's kernel";
  }
  registry.remove(second_name);
}

// Run as a child by the next test: starts an instance, says its name, and waits to be killed.
TEST(LibvirtChild, StartAndWaitToBeKilled) {
  if (std::getenv("VMFEST_LIBVIRT_CHILD") == nullptr) GTEST_SKIP() << "run by Libvirt.AKilled*";
  Instance instance = start_instance();
  std::printf("\ninstance %s\n", instance.name().c_str());
  std::fflush(stdout);
  std::this_thread::sleep_for(600s);
}

// Run as a child by Libvirt.AKilledOwnerOfASaved*: starts an instance, saves it as the model
// $VMFEST_LIBVIRT_CHILD_SAVE_AS, says its name, and waits to be killed.
TEST(LibvirtChild, StartSaveAndWaitToBeKilled) {
  const char* model = std::getenv("VMFEST_LIBVIRT_CHILD_SAVE_AS");
  if (model == nullptr) GTEST_SKIP() << "run by Libvirt.AKilledOwnerOfASaved*";
  Instance instance = start_instance(false);  // booted: its agent is not guarded until the save
  instance.save_as_model(model);
  std::printf("\ninstance %s\n", instance.name().c_str());
  std::fflush(stdout);
  std::this_thread::sleep_for(600s);
}

// Run as a child by Libvirt.AnotherRunnersHome*: a reap of its (empty) home, which removes what
// that home left on the host.
TEST(LibvirtChild, ReapItsHome) {
  if (std::getenv("VMFEST_LIBVIRT_CHILD_REAP") == nullptr) GTEST_SKIP() << "run by another test";
  const vmfest::Home home = vmfest::Home::from_environment();
  EXPECT_FALSE(fs::exists(home.instances()) && !fs::is_empty(home.instances()))
      << "another runner's home is its own";
  for (const std::string& reaped : vmfest::reap_leaked_instances(home)) {
    std::printf("reaped %s\n", reaped.c_str());
  }
}

// CI runners of one image have one home path and may share a libvirt host: a runner's reap, whose
// home has none of this one's instance folders, must not take this home's VMs for orphans. The
// other runner is a child in a mount namespace of its own with another folder at this home's path.
TEST(Libvirt, AnotherRunnersHomeAtTheSamePathLeavesThisHomesVmsAlone) {
  const PrivateHome private_home;
  Instance instance = start_instance();
  const vmfest::Home home = vmfest::Home::from_environment();
  const fs::path other = home.root().string() + "-other-runner";
  fs::create_directories(other);
  fs::permissions(other, fs::perms::owner_all);
  const fs::path output = fs::temp_directory_path() / fmt::format("vmfest-runner-{}", ::getpid());
  vmfest::testing::ChildProcess child(
      {"/usr/bin/unshare", "--mount", "--propagation", "private", "/bin/sh", "-c",
       R"(mount --bind "$1" "$2" && exec "$3" --gtest_filter=LibvirtChild.ReapItsHome)", "sh",
       other.string(), home.root().string(), fs::read_symlink("/proc/self/exe").string()},
      output, {"VMFEST_LIBVIRT_CHILD_REAP=1", "GTEST_SHARD_INDEX=0", "GTEST_TOTAL_SHARDS=1"});
  EXPECT_EQ(child.wait(), 0) << child.output();
  const std::string said = child.output();
  fs::remove(output);

  EXPECT_TRUE(domain_exists(first_uri(), "-" + instance.name())) << said;
  EXPECT_EQ(disk_and_seed(volumes_with(first_uri(), "-" + instance.name())), 2U) << said;
  EXPECT_EQ(instance.ssh().check("echo alive").stdout_text, "alive\n") << said;
  const vmfest::Home other_home(other);
  EXPECT_NE(other_home.id(), home.id()) << "two homes of one path share an id";
  fs::remove_all(other);
}

TEST(Libvirt, AKilledTestProcessLeavesNoDomainAndReapLeavesNoVolume) {
  const PrivateHome home;
  const fs::path output = fs::temp_directory_path() / fmt::format("vmfest-libvirt-{}", ::getpid());
  vmfest::testing::ChildProcess child(
      {"/usr/bin/env", "-u", "GTEST_SHARD_INDEX", "-u", "GTEST_TOTAL_SHARDS",
       "VMFEST_LIBVIRT_CHILD=1", fs::read_symlink("/proc/self/exe").string(),
       "--gtest_filter=LibvirtChild.StartAndWaitToBeKilled"},
      output);
  const std::string name = announced_instance(child);
  ASSERT_FALSE(name.empty()) << child.output();
  ASSERT_TRUE(domain_exists(first_uri(), "-" + name));
  child.kill();
  EXPECT_EQ(child.wait(), 128 + SIGKILL);
  fs::remove(output);

  // libvirt itself destroys the domain of the connection that died.
  EXPECT_TRUE(domains_gone_within(first_uri(), "-" + name, 30s))
      << "the killed process's VM runs on";
  EXPECT_EQ(disk_and_seed(volumes_with(first_uri(), "-" + name)), 2U)
      << "its disk and seed wait for reap";

  const auto reaped = vmfest::reap_leaked_instances();
  EXPECT_NE(std::find(reaped.begin(), reaped.end(), name), reaped.end());
  EXPECT_TRUE(volumes_with(first_uri(), "-" + name).empty());
  EXPECT_FALSE(fs::exists(vmfest::Home::from_environment().instances() / name));
}

// libvirt saves a domain only by ending it: an instance saved as a model runs on restored from
// that save, which libvirt cannot tie to its owner's connection. Like a warm clone, it dies with
// its owner all the same (its guest agent, guarded, powers it off), and leaves no copy of its disk.
TEST(Libvirt, AKilledOwnerOfASavedInstanceLeavesNoDomain) {
  const PrivateHome home;
  const std::string model = fmt::format("saved-{}", ::getpid());
  const fs::path output =
      fs::temp_directory_path() / fmt::format("vmfest-libvirt-save-{}", ::getpid());
  vmfest::testing::ChildProcess child(
      {"/usr/bin/env", "-u", "GTEST_SHARD_INDEX", "-u", "GTEST_TOTAL_SHARDS",
       "VMFEST_LIBVIRT_CHILD_SAVE_AS=" + model, fs::read_symlink("/proc/self/exe").string(),
       "--gtest_filter=LibvirtChild.StartSaveAndWaitToBeKilled"},
      output);
  const std::string name = announced_instance(child);
  ASSERT_FALSE(name.empty()) << child.output();
  ASSERT_TRUE(domain_exists(first_uri(), "-" + name));
  EXPECT_TRUE(volumes_with(first_uri(), "-" + name + ".export").empty())
      << "the copy of its disk stays on the host";
  child.kill();
  EXPECT_EQ(child.wait(), 128 + SIGKILL);
  fs::remove(output);

  EXPECT_TRUE(domains_gone_within(first_uri(), "-" + name, 30s))
      << "the saved instance outlives its owner";
  vmfest::ModelRegistry().remove(model);
  vmfest::reap_leaked_instances();
  EXPECT_TRUE(volumes_with(first_uri(), "-" + name).empty());
}

// The ssh processes of process `owner` to a remote host (lib/backends/libvirt/ssh_multiplexer.h):
// its master connection (`masters`), else also the `ssh -W` jumps to its guests, whose command
// lines name the master's socket, "vmfest-ssh-<pid>-...".
std::vector<std::string> ssh_processes_of(pid_t owner, bool masters) {
  const std::string mark = fmt::format("vmfest-ssh-{}-", owner);
  std::vector<std::string> found;
  for (const auto& entry : fs::directory_iterator("/proc")) {
    // Tolerates a process that ends while it is read (ESRCH), as the library's own scans do.
    std::string command = vmfest::detail::read_text_if_exists(entry.path() / "cmdline");
    std::replace(command.begin(), command.end(), '\0', ' ');
    if (command.find(mark) != std::string::npos &&
        (!masters || command.find(" -M ") != std::string::npos)) {
      found.push_back(command);
    }
  }
  return found;
}

// Waits up to `timeout` for what ssh_processes_of finds to end; returns what still runs.
std::vector<std::string> ssh_processes_after(pid_t owner, bool masters,
                                             std::chrono::seconds timeout) {
  vmfest::detail::poll_until(timeout, 100ms,
                             [&] { return ssh_processes_of(owner, masters).empty(); });
  return ssh_processes_of(owner, masters);
}

// A warm clone is restored, and libvirt cannot tie a restored domain to its owner's connection:
// its guest agent powers it off once the owner's channel closes. An owner of three warm clones
// (vmfest_own_three) is SIGKILLed at a random moment of its life (copying the state, restoring,
// handing over identities, running); within 30 s no domain of it runs, and a reap leaves no volume.
TEST(Libvirt, AKilledOwnerOfWarmClonesLeavesNoDomainWithin30Seconds) {
  const PrivateHome home;
  {
    Instance first = start_instance();  // builds the warm image the owners' instances resume
    ASSERT_TRUE(first.resumed_warm()) << first.console_tail();
  }
  const int rounds = std::getenv("VMFEST_KILL_ROUNDS") != nullptr
                         ? std::atoi(std::getenv("VMFEST_KILL_ROUNDS"))
                         : 10;
  std::mt19937 random(static_cast<unsigned>(::getpid()));
  std::chrono::milliseconds slowest{0};
  for (int round = 0; round < rounds; ++round) {
    const std::string prefix = fmt::format("warmkill-{}-{}", ::getpid(), round);
    // Up to 6 s: three warm starts take about 2 s, then the clones run.
    const auto kill_after = std::chrono::milliseconds(random() % 6000);
    SCOPED_TRACE(fmt::format("round {}: SIGKILL after {} ms", round, kill_after.count()));
    const fs::path output = fs::temp_directory_path() / (prefix + ".log");
    pid_t owner_pid = 0;
    {
      vmfest::testing::ChildProcess owner({VMFEST_OWN_THREE, prefix}, output);
      std::this_thread::sleep_for(kill_after);
      owner.kill();
      EXPECT_EQ(owner.wait(), 128 + SIGKILL) << owner.output();
      // A remote host's SSH master connection ends with its process (its parent-death signal).
      EXPECT_EQ(ssh_processes_after(owner.pid(), true, 5s), std::vector<std::string>{})
          << "the killed owner's SSH master connection outlives it";
      owner_pid = owner.pid();
    }
    const auto killed = std::chrono::steady_clock::now();
    EXPECT_TRUE(domains_gone_within(first_uri(), "-" + prefix + "-", 30s))
        << "a domain of the killed owner still runs 30 s later";
    // A jump to a guest ends with the guest (it may have logged in on its own before the master
    // listened, and then waits for the guest's end of the connection).
    EXPECT_EQ(ssh_processes_after(owner_pid, false, 5s), std::vector<std::string>{})
        << "an SSH jump of the killed owner outlives its guest";
    slowest = std::max(slowest, std::chrono::duration_cast<std::chrono::milliseconds>(
                                    std::chrono::steady_clock::now() - killed));
    vmfest::reap_leaked_instances();
    EXPECT_EQ(volumes_with(first_uri(), "-" + prefix + "-"),
              (std::map<std::string, std::string>{}));
    fs::remove(output);
  }
  std::printf("the slowest killed owner's domains were gone %.1f s after the kill\n",
              static_cast<double>(slowest.count()) / 1000);

  // The image's volumes stay while its folder names them, and go with it.
  const vmfest::Home this_home = vmfest::Home::from_environment();
  const std::string warm_prefix = "vmfest-warm-" + this_home.id() + "-";
  auto warm_volumes = [&] {
    std::vector<std::string> names;
    for (const auto& [name, path] : volumes_with(first_uri(), warm_prefix)) {
      if (name.starts_with(warm_prefix)) names.push_back(name);  // not a collection's mark
    }
    return names;
  };
  EXPECT_EQ(warm_volumes().size(), 2U);
  fs::remove_all(this_home.models() / vmfest::testing::kDefaultModel / "warm");
  vmfest::reap_leaked_instances();
  EXPECT_EQ(warm_volumes(), std::vector<std::string>{});
  EXPECT_TRUE(volumes_with(first_uri(), warm_prefix).empty()) << "a collection's mark stays";
}

// A VM and volumes whose instance folder is gone (a home emptied by hand; a process killed between
// creating the disk and recording it) are found by their names' home prefix and removed.
TEST(Libvirt, ReapRemovesWhatAnInstanceWithoutAFolderLeftOnTheHost) {
  std::string name;
  {
    vmfest::InstanceRequest request;
    request.model = vmfest::testing::test_model();
    request.detached = true;  // no AUTODESTROY: the domain runs on without its owner
    Instance instance = Instance::create(request);
    instance.start();
    name = instance.name();
    fs::remove_all(instance.directory());
  }  // the owner lets go, as a process that died would (its console closes)
  ASSERT_TRUE(domain_exists(first_uri(), "-" + name));

  vmfest::reap_leaked_instances();
  EXPECT_FALSE(domain_exists(first_uri(), "-" + name));
  EXPECT_TRUE(volumes_with(first_uri(), "-" + name).empty());
}

// A domain that will not stop is an error naming it and libvirt's reason, not a stop taken for
// done: here through a read-only connection, which libvirt refuses to let stop anything. A domain
// that is already gone is stopped.
TEST(Libvirt, ADomainThatCannotBeStoppedIsAnErrorWithItsCause) {
  vmfest::InstanceRequest request;
  request.model = vmfest::testing::test_model();
  Instance instance = Instance::create(request);
  instance.start();
  const lv::Connection read_only(virConnectOpenReadOnly(first_uri().c_str()));
  ASSERT_TRUE(read_only) << lv::last_error();
  std::optional<lv::Domain> domain;
  for (lv::Domain& candidate : lv::list_domains(read_only.get(), first_uri())) {
    if (std::string(virDomainGetName(candidate.get())).ends_with("-" + instance.name()))
      domain = std::move(candidate);
  }
  ASSERT_TRUE(domain) << "no domain of instance " << instance.name();
  const lv::Connection connection = lv::connect(first_uri());
  const std::optional<lv::Domain> writable =
      lv::find_domain(connection.get(), virDomainGetName(domain->get()), first_uri());
  ASSERT_TRUE(writable);
  try {
    lv::destroy_domain(domain->get(), first_uri());
    ADD_FAILURE() << "a read-only connection stopped a domain";
  } catch (const vmfest::BackendError& error) {
    const std::string message = error.what();
    EXPECT_NE(message.find("could not stop domain"), std::string::npos) << message;
    EXPECT_NE(message.find(instance.name()), std::string::npos) << message;
    EXPECT_NE(message.find("read only"), std::string::npos) << "libvirt's reason: " << message;
  }
  EXPECT_EQ(instance.state(), vmfest::InstanceState::Running);
  instance.destroy();
  EXPECT_NO_THROW(lv::destroy_domain(writable->get(), first_uri()));
}

// Both URIs of VMFEST_LIBVIRT_URI (the registration gives two) take instances, least loaded first,
// each up to its cap.
// Warm clones too: each host gets its own warm image when it is first the least loaded, and every
// instance (the two that made an image included) resumes one.
TEST(Libvirt, TwoHostsShareSixWarmInstances) {
  const PrivateHome home;  // no warm image yet: each host's is made by this test
  const auto hosts = lv::configured_hosts();
  ASSERT_EQ(hosts.size(), 2U) << "VMFEST_LIBVIRT_URI should name two hosts for this test";
  std::vector<Instance> instances;
  std::map<std::string, int> per_host;
  for (int i = 0; i < 6; ++i) {
    instances.push_back(start_instance());
    ++per_host[machine_state(instances.back()).at("uri").get<std::string>()];
  }
  for (auto& instance : instances) {
    EXPECT_TRUE(instance.resumed_warm()) << instance.name() << " booted cold";
    EXPECT_EQ(instance.ssh().check("echo up").stdout_text, "up\n") << instance.name();
  }
  EXPECT_EQ(per_host[hosts[0].uri], 3);
  EXPECT_EQ(per_host[hosts[1].uri], 3);

  // Each host takes 3 (VMFEST_LIBVIRT_MAX_VMS): a seventh waits, then says which hosts are full.
  ::setenv("VMFEST_SLOT_WAIT", "2", 1);
  vmfest::InstanceRequest request;
  request.model = vmfest::testing::test_model();
  try {
    // Refused at create (no host has room), or at start (the host of its image has none).
    Instance seventh = Instance::create(request);
    seventh.start();
    FAIL() << "a seventh instance went to a full host";
  } catch (const vmfest::BackendError& error) {
    const std::string message = error.what();
    EXPECT_NE(message.find("is full"), std::string::npos) << message;
    EXPECT_NE(message.find("3 of 3"), std::string::npos) << message;
  }
}

}  // namespace
