// Warm instances: resumed from a saved booted guest, each with its own identity.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <spdlog/sinks/ringbuffer_sink.h>
#include <spdlog/spdlog.h>
#include <nlohmann/json.hpp>

#include "vmfest/error.h"
#include "vmfest/gtest/environment.h"
#include "vmfest/instance.h"
#include "vmfest/internal/base.h"
#include "vmfest/internal/image_store.h"
#include "vmfest/internal/registry.h"

namespace {
using vmfest::Instance;
using vmfest::InstanceState;

namespace fs = std::filesystem;

Instance start_warm(const vmfest::Profile& profile = vmfest::Profile::named("micro")) {
  vmfest::InstanceRequest request;
  request.model = vmfest::testing::test_model();
  request.profile = profile;
  Instance instance = Instance::create(request);
  instance.start();
  return instance;
}

fs::path warm_image_of(const Instance& instance) {
  auto record = vmfest::detail::read_instance_record(instance.directory());
  return record ? fs::path(record->warm_image) : fs::path();
}

// Removes the warm image that instances of `profile` would resume, so that the next one builds it
// afresh: a test about building one must not find the image an earlier run in this build tree
// left (the broken-KVM run follows the first one in the same tree).
void remove_warm_image(const vmfest::Profile& profile) {
  vmfest::InstanceRequest request;
  request.model = vmfest::testing::test_model();
  request.profile = profile;
  const fs::path image = warm_image_of(Instance::create(request));
  if (!image.empty()) fs::remove_all(image);
}

// How many processes have `folder` as their working directory (QEMU runs in its instance's).
std::size_t processes_working_in(const fs::path& folder) {
  std::size_t count = 0;
  std::error_code error;
  for (const auto& entry : fs::directory_iterator("/proc", error)) {
    std::error_code unreadable;
    if (fs::read_symlink(entry.path() / "cwd", unreadable) == folder) ++count;
  }
  return count;
}

// Sets or clears the immutable attribute of `folder` (chattr +i), which stops even root from
// removing it or anything in it. False where the file system or the process cannot.
bool set_immutable(const fs::path& folder, bool immutable) {
  const int fd = ::open(folder.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return false;
  int flags = 0;
  bool done = ::ioctl(fd, FS_IOC_GETFLAGS, &flags) == 0;
  if (done) {
    flags = immutable ? (flags | FS_IMMUTABLE_FL) : (flags & ~FS_IMMUTABLE_FL);
    done = ::ioctl(fd, FS_IOC_SETFLAGS, &flags) == 0;
  }
  ::close(fd);
  return done;
}

// The sha256 of every file of a warm image but its manifest.
std::map<std::string, std::string> image_hashes(const fs::path& image) {
  std::map<std::string, std::string> hashes;
  for (const auto& entry : fs::directory_iterator(image)) {
    if (entry.path().filename() == "manifest.json") continue;
    hashes[entry.path().filename().string()] = vmfest::detail::sha256_file(entry.path());
  }
  return hashes;
}

TEST(Warm, ClonesResumeWithTheirOwnIdentity) {
  Instance a = start_warm();
  Instance b = start_warm();
  ASSERT_TRUE(a.resumed_warm()) << "expected a resumed warm image; console:\n" << a.console_tail();
  ASSERT_TRUE(b.resumed_warm());

  // Hostname and host key: each clone's own (the SSH handle pins the instance's key).
  EXPECT_EQ(a.ssh().check("hostname").stdout_text, a.name() + "\n");
  EXPECT_EQ(b.ssh().check("hostname").stdout_text, b.name() + "\n");
  const std::string key_a = vmfest::detail::read_text(a.directory() / "host_ed25519.pub");
  const std::string key_b = vmfest::detail::read_text(b.directory() / "host_ed25519.pub");
  EXPECT_NE(key_a, key_b);

  // Clock: the host's, not the time the image was saved.
  for (Instance* vm : {&a, &b}) {
    long guest = std::stol(vm->ssh().check("date +%s").stdout_text);
    EXPECT_NEAR(static_cast<double>(guest), static_cast<double>(std::time(nullptr)), 3.0);
  }

  // RNG: reseeded per clone, so the streams differ.
  const std::string read_random = "head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n'";
  EXPECT_NE(a.ssh().check(read_random).stdout_text, b.ssh().check(read_random).stdout_text);

  // Clones of one memory image stay independent on disk.
  a.ssh().check("echo only-a > mine && sync");
  EXPECT_NE(b.ssh().run("test -e mine").exit_status, 0);
}

// The NIS domain name lives in the kernel's static UTS data: the same guest-physical page in every
// clone of one image. Each clone's write to it must stay its own (the image's memory is mapped
// privately), and the image must not see it.
TEST(Warm, ClonesWritingTheSameGuestPageEachKeepTheirOwn) {
  std::string before;
  {
    Instance a = start_warm();
    Instance b = start_warm();
    ASSERT_TRUE(a.resumed_warm() && b.resumed_warm());
    before = a.ssh().check("cat /proc/sys/kernel/domainname").stdout_text;
    a.ssh().check("echo clone-a > /proc/sys/kernel/domainname");
    b.ssh().check("echo clone-b > /proc/sys/kernel/domainname");
    EXPECT_EQ(a.ssh().check("cat /proc/sys/kernel/domainname").stdout_text, "clone-a\n");
    EXPECT_EQ(b.ssh().check("cat /proc/sys/kernel/domainname").stdout_text, "clone-b\n");
  }
  Instance c = start_warm();
  ASSERT_TRUE(c.resumed_warm());
  EXPECT_EQ(c.ssh().check("cat /proc/sys/kernel/domainname").stdout_text, before);
}

// Ten clones that write to their memory and disk leave every file of the image as it was.
TEST(Warm, TheImageIsByteIdenticalAfterTenClonesRanFromIt) {
  const fs::path image = [] {
    Instance first = start_warm();
    EXPECT_TRUE(first.resumed_warm());
    return warm_image_of(first);
  }();
  ASSERT_FALSE(image.empty());
  const auto before = image_hashes(image);
  ASSERT_TRUE(before.contains("base.qcow2"));
  for (int clone = 0; clone < 10; ++clone) {
    Instance vm = start_warm();
    ASSERT_EQ(warm_image_of(vm), image);
    // Fresh data through the page cache onto the disk, and the kernel's own pages.
    vm.ssh().check(
        "head -c 2097152 /dev/urandom > /root/noise && sync && "
        "echo 1 > /proc/sys/vm/drop_caches && hostname clone-$$");
  }
  EXPECT_EQ(image_hashes(image), before);
  EXPECT_EQ(vmfest::detail::check_warm_image(image), vmfest::detail::WarmStatus::Ready);
}

// A changed byte in any file of an image (here the memory its clones map) makes it invalid: the
// next instance rebuilds it rather than resume a guest whose memory is not what was saved. A
// profile of its own keeps this test's image apart from the other tests'.
TEST(Warm, AnImageWhoseMemoryWasAlteredIsRebuilt) {
  const vmfest::Profile profile = vmfest::Profile::custom(320, 1);
  const fs::path image = [&] {
    Instance first = start_warm(profile);
    EXPECT_TRUE(first.resumed_warm());
    return warm_image_of(first);
  }();
  ASSERT_FALSE(image.empty());
  fs::path altered = image / "memory";
  if (!fs::exists(altered)) altered = image / "state";  // a QEMU that cannot map warm memory
  {
    std::fstream file(altered, std::ios::in | std::ios::out | std::ios::binary);
    file.seekp(4096 * 10 + 7);
    file.put('\x5a');
  }
  const std::string altered_hash = vmfest::detail::sha256_file(altered);
  EXPECT_EQ(vmfest::detail::check_warm_image(image), vmfest::detail::WarmStatus::Missing);

  Instance next = start_warm(profile);
  const auto& phases = next.start_phases();
  EXPECT_TRUE(std::any_of(phases.begin(), phases.end(), [](const vmfest::StartPhase& phase) {
    return phase.name == "warm image";
  })) << "the altered image was not rebuilt";
  EXPECT_EQ(vmfest::detail::check_warm_image(image), vmfest::detail::WarmStatus::Ready);
  EXPECT_NE(vmfest::detail::sha256_file(altered), altered_hash);
  EXPECT_EQ(next.ssh().check("hostname").stdout_text, next.name() + "\n");
}

// A warm image QEMU refuses at the resume (here its state cut in half, the manifest rewritten to
// match: what a disk fault or another QEMU build can leave behind) costs the instance a cold boot,
// not its start. The log says why, the image goes, and the next instance builds it afresh. A
// profile of its own keeps this test's image apart from the other tests'.
TEST(Warm, AnImageQemuCannotResumeFallsBackToAColdBootAndIsRebuilt) {
  const vmfest::Profile profile = vmfest::Profile::custom(368, 1);
  remove_warm_image(profile);
  const fs::path image = warm_image_of(start_warm(profile));
  ASSERT_FALSE(image.empty());
  const fs::path state = image / "state";
  fs::permissions(state, fs::perms::owner_read | fs::perms::owner_write);
  fs::resize_file(state, fs::file_size(state) / 2);
  const auto manifest = nlohmann::json::parse(vmfest::detail::read_text(image / "manifest.json"));
  fs::remove(image / "last-used");  // files of the image, as a fresh save leaves them
  fs::remove(image / "manifest.json");
  vmfest::detail::write_warm_manifest(image, manifest["fingerprint"], manifest["backend"],
                                      manifest["save_seconds"]);
  ASSERT_EQ(vmfest::detail::check_warm_image(image), vmfest::detail::WarmStatus::Ready);

  auto warnings = std::make_shared<spdlog::sinks::ringbuffer_sink_mt>(16);
  warnings->set_level(spdlog::level::warn);
  spdlog::default_logger()->sinks().push_back(warnings);
  std::optional<Instance> fallen;
  EXPECT_NO_THROW(fallen.emplace(start_warm(profile)));
  spdlog::default_logger()->sinks().pop_back();
  ASSERT_TRUE(fallen);
  EXPECT_FALSE(fallen->resumed_warm());
  EXPECT_EQ(fallen->ssh().check("hostname").stdout_text, fallen->name() + "\n");
  const std::vector<std::string> seen = warnings->last_formatted();
  EXPECT_TRUE(std::any_of(seen.begin(), seen.end(), [&](const std::string& line) {
    return line.find(fallen->name()) != std::string::npos &&
           line.find(vmfest::testing::test_model()) != std::string::npos &&
           line.find("cold boot") != std::string::npos;
  })) << "no warning names the instance, its model and the fall-back";
  EXPECT_NE(vmfest::detail::check_warm_image(image), vmfest::detail::WarmStatus::Ready)
      << "the image QEMU refused is still there";
  EXPECT_FALSE(fs::exists(vmfest::detail::warm_build_folder(image)));
  EXPECT_EQ(processes_working_in(fallen->directory()), 1U)
      << "the QEMU that failed to resume is still there beside the cold boot's";
  fallen.reset();  // its VM slot, for the next one

  Instance next = start_warm(profile);
  const auto& phases = next.start_phases();
  EXPECT_TRUE(std::any_of(phases.begin(), phases.end(), [](const vmfest::StartPhase& phase) {
    return phase.name == "warm image";
  })) << "the refused image was not rebuilt";
  EXPECT_TRUE(next.resumed_warm());
}

// Whatever stops the save of a warm image, a file system error included (here its staging folder
// cannot be removed: it is immutable), costs the instance only its warm image: it runs on cold, and
// the log says why. A profile of its own keeps this test's image apart from the other tests'.
TEST(Warm, AFileSystemErrorWhileSavingTheImageLetsTheInstanceRunOnCold) {
  const vmfest::Profile profile = vmfest::Profile::custom(384, 1);
  remove_warm_image(profile);
  vmfest::InstanceRequest request;
  request.model = vmfest::testing::test_model();
  request.profile = profile;
  Instance first = Instance::create(request);
  const fs::path image = vmfest::detail::read_instance_record(first.directory())->warm_build;
  ASSERT_FALSE(image.empty());
  const fs::path staging = vmfest::detail::warm_build_folder(image);
  bool blocked = false;
  first.on_progress([&](const vmfest::StartProgress& progress) {
    if (progress.phase != "warm image" || blocked) return;
    fs::create_directories(staging);
    blocked = set_immutable(staging, true);
  });
  auto warnings = std::make_shared<spdlog::sinks::ringbuffer_sink_mt>(16);
  warnings->set_level(spdlog::level::warn);
  spdlog::default_logger()->sinks().push_back(warnings);
  EXPECT_NO_THROW(first.start());
  spdlog::default_logger()->sinks().pop_back();
  set_immutable(staging, false);
  fs::remove_all(staging);
  if (!blocked) GTEST_SKIP() << "this file system or process cannot make a folder immutable";
  EXPECT_FALSE(first.resumed_warm());
  EXPECT_EQ(first.ssh().check("hostname").stdout_text, first.name() + "\n");
  EXPECT_NE(vmfest::detail::check_warm_image(image), vmfest::detail::WarmStatus::Ready);
  const std::vector<std::string> seen = warnings->last_formatted();
  EXPECT_TRUE(std::any_of(seen.begin(), seen.end(), [&](const std::string& line) {
    return line.find(first.name()) != std::string::npos &&
           line.find(staging.filename().string()) != std::string::npos;
  })) << "no warning names the instance and the folder that failed";
}

// A guest agent that does not answer once (here its channel's socket is hidden while the warm
// build pings it) says nothing about the model: the instance runs on cold, nothing is
// remembered, and the next instance builds the warm image. A profile of its own keeps this
// test's image apart from the other tests'.
TEST(Warm, AnAgentThatMissesOnePingIsAskedAgainByTheNextInstance) {
  const vmfest::Profile profile = vmfest::Profile::custom(336, 1);
  remove_warm_image(profile);
  vmfest::InstanceRequest request;
  request.model = vmfest::testing::test_model();
  request.profile = profile;
  Instance first = Instance::create(request);
  const fs::path channel = first.directory() / "agent.sock";
  const fs::path hidden = first.directory() / "agent.sock.hidden";
  first.on_progress([&](const vmfest::StartProgress& progress) {
    if (progress.phase == "warm image" && fs::exists(channel)) fs::rename(channel, hidden);
  });
  first.start();
  ASSERT_TRUE(fs::exists(hidden)) << "the warm build never reported its phase";
  fs::rename(hidden, channel);
  EXPECT_FALSE(first.resumed_warm());
  EXPECT_EQ(first.ssh().check("hostname").stdout_text, first.name() + "\n");

  Instance next = start_warm(profile);
  EXPECT_TRUE(next.resumed_warm()) << "one missed ping turned warm clones off for good";
  EXPECT_EQ(next.ssh().check("hostname").stdout_text, next.name() + "\n");
}

// A warm image is what its guest held in memory: no other user may read any of it, even where
// the home itself lets them in. Its own profile, its image made afresh.
TEST(Warm, AnImageIsItsOwnersAlone) {
  const vmfest::Profile profile = vmfest::Profile::custom(352, 1);
  remove_warm_image(profile);
  Instance vm = start_warm(profile);
  ASSERT_TRUE(vm.resumed_warm());
  const fs::path image = warm_image_of(vm);
  ASSERT_FALSE(image.empty());
  const auto others = fs::perms::group_all | fs::perms::others_all;
  std::vector<fs::path> files{image};
  for (const auto& entry : fs::directory_iterator(image)) files.push_back(entry.path());
  ASSERT_GT(files.size(), 3U);
  for (const fs::path& file : files) {
    EXPECT_EQ(fs::status(file).permissions() & others, fs::perms::none) << file;
  }
  if (::geteuid() != 0) GTEST_SKIP() << "reading as another user needs root (setpriv)";
  // As another user, with a way to each file that anyone may walk (a hard link in a folder of
  // /tmp): only the file's own mode stands in the way.
  const fs::path open_way = fs::temp_directory_path() / ("vmfest-open-way-" + vm.name());
  fs::remove_all(open_way);
  fs::create_directory(open_way);
  fs::permissions(open_way, fs::perms::owner_all | fs::perms::others_exec);
  const fs::path setpriv = vmfest::detail::find_program("setpriv", "util-linux");
  for (const fs::path& file : files) {
    if (fs::is_directory(file)) continue;
    std::error_code linked;
    fs::create_hard_link(file, open_way / file.filename(), linked);
    if (linked) {
      fs::remove_all(open_way);
      GTEST_SKIP() << "cannot link " << file << " into " << open_way << ": " << linked.message();
    }
    const auto read =
        vmfest::detail::run_tool(setpriv, {"--reuid=65534", "--regid=65534", "--clear-groups",
                                           "cat", (open_way / file.filename()).string()});
    EXPECT_NE(read.exit_code, 0) << file << ": " << read.output;
    EXPECT_NE(read.output.find("Permission denied"), std::string::npos) << file << read.output;
  }
  fs::remove_all(open_way);
}

TEST(Warm, LifecycleWorksAsOnColdInstances) {
  Instance vm = start_warm();
  ASSERT_TRUE(vm.resumed_warm());
  vm.pause();
  EXPECT_EQ(vm.state(), InstanceState::Paused);
  vm.resume();
  EXPECT_EQ(vm.ssh().check("echo alive").stdout_text, "alive\n");
  vm.power_down(std::chrono::seconds(20));
  EXPECT_EQ(vm.state(), InstanceState::Stopped);
  // A second start boots the clone's disk cold: its memory image is spent.
  vm.start();
  EXPECT_FALSE(vm.resumed_warm());
  EXPECT_EQ(vm.ssh().check("hostname").stdout_text, vm.name() + "\n");
  const auto directory = vm.directory();
  vm.destroy();
  EXPECT_FALSE(std::filesystem::exists(directory));
}

TEST(Warm, EightAtOnceAllBecomeReady) {
  constexpr int kCount = 8;
  // All eight at once is the point: lift the host-wide cap for this process.
  ::setenv("VMFEST_MAX_VMS", "8", 1);
  std::vector<std::optional<Instance>> vms(kCount);
  std::vector<std::string> errors(kCount);
  {
    std::vector<std::jthread> starters;
    for (int i = 0; i < kCount; ++i) {
      starters.emplace_back([&, i] {
        try {
          vms[i].emplace(start_warm());
        } catch (const std::exception& error) {
          errors[i] = error.what();
        }
      });
    }
  }
  for (int i = 0; i < kCount; ++i) {
    ASSERT_TRUE(errors[i].empty()) << errors[i];
    EXPECT_EQ(vms[i]->ssh().check("hostname").stdout_text, vms[i]->name() + "\n");
  }
}

}  // namespace
