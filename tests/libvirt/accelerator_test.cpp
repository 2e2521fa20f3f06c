// A libvirt host's accelerator: probed through that host's own libvirt (domain capabilities, then a
// test boot of a Linux kernel under KVM), never assumed, recorded per host and said with its
// reason. The tests' libvirtd is given no /dev/kvm (tools/libvirt-services.sh), like a host without
// KVM; the broken-KVM stand-in (tests/support/broken-kvm) plays a host whose KVM hangs Linux.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <string>

#include <fmt/format.h>

#include "backends/libvirt/accelerator.h"
#include "backends/libvirt/libvirt_api.h"
#include "backends/libvirt/storage.h"
#include "libvirt_test_support.h"
#include "vmfest/error.h"
#include "vmfest/internal/base.h"

namespace {
namespace fs = std::filesystem;
namespace lv = vmfest::detail::libvirt;
using namespace std::chrono_literals;
using namespace vmfest::testing::libvirt_support;

// Settings of the test's own: a fresh decision cache, the emulator asked for, no forced
// accelerator.
class ProbeSettings {
 public:
  explicit ProbeSettings(const std::string& emulator)
      : cache_(fs::temp_directory_path() / fmt::format("vmfest-accel-{}", ::getpid())) {
    fs::remove_all(cache_);
    ::setenv("VMFEST_CACHE_DIR", cache_.c_str(), 1);
    ::unsetenv("VMFEST_ACCEL");
    if (emulator.empty()) {
      ::unsetenv("VMFEST_LIBVIRT_EMULATOR");
    } else {
      ::setenv("VMFEST_LIBVIRT_EMULATOR", emulator.c_str(), 1);
    }
  }
  ProbeSettings(const ProbeSettings&) = delete;
  ProbeSettings& operator=(const ProbeSettings&) = delete;
  ~ProbeSettings() {
    ::unsetenv("VMFEST_CACHE_DIR");
    ::unsetenv("VMFEST_LIBVIRT_EMULATOR");
    fs::remove_all(cache_);
  }
  [[nodiscard]] const fs::path& cache() const { return cache_; }

 private:
  fs::path cache_;
};

lv::HostAccelerator probe_first_host(const fs::path& kernel) {
  const lv::HostUri host = lv::configured_hosts().front();
  const lv::Connection connection = lv::connect(host.uri);
  const lv::StoragePool pool(connection.get(), host.uri);
  return lv::host_accelerator(connection.get(), pool, host, kernel);
}

fs::path test_kernel() {
  const vmfest::Model model = vmfest::ModelRegistry().get(vmfest::testing::kDefaultModel);
  return model.boot.kernel;
}

TEST(LibvirtAccelerator, AHostWhoseKvmHangsLinuxGetsTcgAndSaysWhy) {
  vmfest::testing::ensure_default_model();
  const ProbeSettings settings(VMFEST_BROKEN_KVM_EMULATOR);
  const lv::HostAccelerator choice = probe_first_host(test_kernel());
  EXPECT_EQ(choice.domain_type, "qemu") << choice.reason;
  EXPECT_NE(choice.reason.find("TCG"), std::string::npos) << choice.reason;
  // Recorded for the host: a later process asks no probe again.
  ASSERT_TRUE(fs::exists(settings.cache() / "libvirt-accelerator"));
  bool recorded = false;
  for (const auto& entry : fs::directory_iterator(settings.cache() / "libvirt-accelerator")) {
    if (entry.path().extension() == ".json") {
      recorded = vmfest::detail::read_text(entry.path()).find(choice.reason) != std::string::npos;
    }
  }
  EXPECT_TRUE(recorded) << "no decision recorded with its reason";
}

TEST(LibvirtAccelerator, AHostWithAWorkingKvmGetsKvm) {
  vmfest::testing::ensure_default_model();
  const ProbeSettings settings("");
  const lv::HostAccelerator choice = probe_first_host(test_kernel());
  if (choice.domain_type != "kvm") {
    GTEST_SKIP() << "this host has no working KVM for libvirt: " << choice.reason;
  }
  EXPECT_NE(choice.reason.find("banner"), std::string::npos) << choice.reason;
}

TEST(LibvirtAccelerator, VmfestAccelForcesEither) {
  const ProbeSettings settings(VMFEST_BROKEN_KVM_EMULATOR);
  ::setenv("VMFEST_ACCEL", "kvm", 1);
  const lv::HostAccelerator kvm = probe_first_host({});
  ::setenv("VMFEST_ACCEL", "tcg", 1);
  const lv::HostAccelerator tcg = probe_first_host({});
  ::setenv("VMFEST_ACCEL", "xen", 1);
  EXPECT_THROW(probe_first_host({}), vmfest::InvalidArgument);
  ::unsetenv("VMFEST_ACCEL");
  EXPECT_EQ(kvm.domain_type, "kvm");
  EXPECT_TRUE(kvm.forced);
  EXPECT_EQ(tcg.domain_type, "qemu");
}

TEST(LibvirtAccelerator, TheTestBootSeesALinuxKernelsBanner) {
  vmfest::testing::ensure_default_model();
  const ProbeSettings settings("");
  const lv::HostUri host = lv::configured_hosts().front();
  const lv::Connection connection = lv::connect(host.uri);
  const lv::StoragePool pool(connection.get(), host.uri);
  std::string why;
  EXPECT_TRUE(lv::kernel_shows_life(connection.get(), pool, host, "qemu", test_kernel(), 60s, why))
      << why;
}

}  // namespace
