#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>

#include "backends/qemu/accelerator.h"
#include "vmfest/error.h"
#include "vmfest/internal/base.h"

namespace {
namespace fs = std::filesystem;
namespace accel = vmfest::detail::qemu;

TEST(Accelerator, EnvironmentOverrideWins) {
  ::setenv("VMFEST_ACCEL", "tcg", 1);
  auto choice = vmfest::detail::qemu::choose_accelerator("/bin/false", fs::temp_directory_path(),
                                                         {}, std::chrono::seconds(1));
  EXPECT_EQ(choice.name, "tcg");
  ::setenv("VMFEST_ACCEL", "warp", 1);
  EXPECT_THROW(vmfest::detail::qemu::choose_accelerator("/bin/false", fs::temp_directory_path(), {},
                                                        std::chrono::seconds(1)),
               vmfest::InvalidArgument);
  ::unsetenv("VMFEST_ACCEL");
}

TEST(Accelerator, ProbeChoosesAWorkingAcceleratorAndSaysWhy) {
  ::unsetenv("VMFEST_ACCEL");
  auto qemu = vmfest::detail::find_program("qemu-system-x86_64", "qemu-system-x86");
  fs::path cache = fs::temp_directory_path() / ("vmfest-accel-" + std::to_string(::getpid()));
  auto choice = vmfest::detail::qemu::choose_accelerator(qemu, cache, {}, std::chrono::seconds(5));
  EXPECT_TRUE(choice.name == "tcg" || choice.name == "kvm");
  EXPECT_FALSE(choice.reason.empty());
  fs::remove_all(cache);
}

}  // namespace

namespace {

// A stand-in `qemu-system-x86_64` script: the probe's logic (bounded wait, marker detection,
// error reporting) is tested against programs that behave like a hanging, a working and a
// failing KVM.
class FakeQemu : public ::testing::Test {
 protected:
  void SetUp() override {
    work_ = fs::temp_directory_path() / ("vmfest-fake-qemu-" + std::to_string(::getpid()));
    fs::create_directories(work_);
  }
  void TearDown() override { fs::remove_all(work_); }
  fs::path script(const std::string& name, const std::string& body) {
    fs::path path = work_ / name;
    std::ofstream(path) << "#!/bin/bash\n" << body << "\n";
    fs::permissions(path, fs::perms::owner_all);
    return path;
  }
  fs::path work_;
};

TEST_F(FakeQemu, AHangingGuestIsDetectedWithinTheTimeout) {
  fs::path qemu = script("hang", "exec sleep 60");
  std::string why;
  auto begin = std::chrono::steady_clock::now();
  EXPECT_FALSE(
      vmfest::detail::qemu::kvm_runs_guest(qemu, work_, {}, std::chrono::milliseconds(800), why));
  EXPECT_LT(std::chrono::steady_clock::now() - begin, std::chrono::seconds(5));
  EXPECT_NE(why.find("no sign of life on its console within 800 ms"), std::string::npos) << why;
}

TEST_F(FakeQemu, AGuestThatPrintsTheMarkerPasses) {
  // Writes the marker to the file named by "-serial file:PATH", then idles like a halted guest.
  fs::path qemu = script("works", R"(while [ $# -gt 0 ]; do
  if [ "$1" = -serial ]; then printf 'VMFEST-PROBE-OK\n' > "${2#file:}"; fi; shift
done
exec sleep 60)");
  std::string why;
  EXPECT_TRUE(vmfest::detail::qemu::kvm_runs_guest(qemu, work_, {}, std::chrono::seconds(5), why))
      << why;
}

TEST_F(FakeQemu, AQemuThatFailsReportsItsError) {
  fs::path qemu = script("fails", "echo 'Could not access KVM kernel module' >&2; exit 1");
  std::string why;
  EXPECT_FALSE(vmfest::detail::qemu::kvm_runs_guest(qemu, work_, {}, std::chrono::seconds(5), why));
  EXPECT_NE(why.find("Could not access KVM kernel module"), std::string::npos) << why;
}

}  // namespace

namespace {

// The QEMU warning a broken KVM host prints for every run is not why a guest fails.
TEST_F(FakeQemu, QemuWarningsAreNotQuotedAsTheReason) {
  fs::path qemu = script("warns", R"(echo "qemu-system-x86_64: warning: host doesn't support \
requested feature: CPUID.01H:ECX.pni [bit 0]" >&2
exec sleep 60)");
  std::string why;
  EXPECT_FALSE(accel::kvm_runs_guest(qemu, work_, work_ / "vmlinuz", std::chrono::seconds(1), why));
  EXPECT_EQ(why.find("CPUID"), std::string::npos) << why;
  EXPECT_NE(why.find("a Linux kernel"), std::string::npos) << why;
  EXPECT_NE(why.find("no sign of life"), std::string::npos) << why;
}

// Like a host whose KVM runs a boot sector but hangs 64-bit Linux: marker for a disk, silence for
// -kernel. choose_accelerator() only probes where /dev/kvm can be opened.
class BrokenKvmDecision : public FakeQemu {
 protected:
  void SetUp() override {
    FakeQemu::SetUp();
    if (::access("/dev/kvm", R_OK | W_OK) != 0) {
      if (std::getenv("VMFEST_BROKEN_KVM_RUN") != nullptr) FAIL() << "/dev/kvm is not usable";
      GTEST_SKIP() << "needs a usable /dev/kvm (tools/run-tests.sh --broken-kvm makes one)";
    }
    ::unsetenv("VMFEST_ACCEL");
    qemu_ = script("qemu-system-x86_64",
                   R"([ "$1" = --version ] && { echo "QEMU emulator version 0"; exit 0; }
serial=; kernel=false
while [ $# -gt 0 ]; do
  case $1 in -serial) serial=${2#file:}; shift ;; -kernel) kernel=true ;; esac; shift
done
[ "$kernel" = true ] || printf 'VMFEST-PROBE-OK\n' > "$serial"
exec sleep 60)");
    kernel_ = work_ / "vmlinuz";
    std::ofstream(kernel_) << "not really a kernel";
  }
  fs::path qemu_;
  fs::path kernel_;
};

TEST_F(BrokenKvmDecision, AKernelProbeSeesThroughABootSectorAndWinsOverIt) {
  const fs::path cache = work_ / "accelerator";
  auto weak = accel::choose_accelerator(qemu_, cache, {}, std::chrono::seconds(5));
  EXPECT_EQ(weak.name, "kvm");
  EXPECT_NE(weak.reason.find("weak probe"), std::string::npos) << weak.reason;

  // A kernel is found: the boot sector's "kvm" is probed again, with the kernel.
  auto strong = accel::choose_accelerator(qemu_, cache, kernel_, std::chrono::seconds(1));
  EXPECT_EQ(strong.name, "tcg");
  EXPECT_NE(strong.reason.find("a Linux kernel (" + kernel_.string() + ") showed no sign of life"),
            std::string::npos)
      << strong.reason;
  EXPECT_NE(strong.reason.find("VMFEST_ACCEL=tcg"), std::string::npos) << strong.reason;

  // One decision per host: a caller without a kernel gets the kernel's, not a boot sector's.
  auto later = accel::choose_accelerator(qemu_, cache, {}, std::chrono::seconds(5));
  EXPECT_EQ(later.name, "tcg");
  EXPECT_NE(later.reason.find("decided earlier for this host"), std::string::npos) << later.reason;
}

TEST_F(BrokenKvmDecision, ARecordedDecisionIsFollowedWithoutAProbe) {
  const fs::path cache = work_ / "accelerator";
  accel::record_decision(qemu_, cache, {"tcg", "KVM showed no sign of life: test"});
  auto choice = accel::choose_accelerator(qemu_, cache, kernel_, std::chrono::seconds(5));
  EXPECT_EQ(choice.name, "tcg");
  EXPECT_NE(choice.reason.find("KVM showed no sign of life: test"), std::string::npos);
  EXPECT_FALSE(fs::exists(work_ / "accelerator" / "probe-serial.log"));
}

TEST(Accelerator, DecisionsLiveInTheUsersCacheNotInAHome) {
  ::setenv("VMFEST_CACHE_DIR", "/somewhere/cache", 1);
  ::setenv("VMFEST_HOME", "/somewhere/else", 1);
  EXPECT_EQ(accel::accelerator_cache_directory(), fs::path("/somewhere/cache/accelerator"));
  ::unsetenv("VMFEST_CACHE_DIR");
  ::setenv("XDG_CACHE_HOME", "/xdg", 1);
  EXPECT_EQ(accel::accelerator_cache_directory(), fs::path("/xdg/vmfest/accelerator"));
  ::unsetenv("XDG_CACHE_HOME");
}

TEST(Accelerator, ProbeKernelFromTheEnvironment) {
  ::setenv("VMFEST_PROBE_KERNEL", "/proc/version", 1);
  EXPECT_EQ(accel::find_probe_kernel({}), fs::path("/proc/version"));
  ::setenv("VMFEST_PROBE_KERNEL", "/no/such/vmlinuz", 1);
  EXPECT_THROW((void)accel::find_probe_kernel({}), vmfest::InvalidArgument);
  ::unsetenv("VMFEST_PROBE_KERNEL");
}

TEST(Accelerator, BootloaderOutputIsNoSignOfLife) {
  const std::string syslinux =
      "\r\nSYSLINUX 6.04 20210613 Copyright (C) 1994-2015 H. Peter Anvin\r\n";
  EXPECT_FALSE(accel::console_past_bootloader(""));
  EXPECT_FALSE(accel::console_past_bootloader(syslinux));
  EXPECT_FALSE(accel::console_past_bootloader("Welcome to GRUB!\n\nBooting `Debian'\nvmfest: up"));
  EXPECT_TRUE(accel::console_past_bootloader(syslinux + "vmfest: up after 1.2s\r\n"));
  EXPECT_TRUE(accel::console_past_bootloader("[    0.000000] Linux version 6.1.0\n"));
}

}  // namespace
