// A host whose /dev/kvm is there but cannot run 64-bit Linux (broken nested virtualisation on
// cloud CI runners), stood in for by tests/support/broken-kvm/qemu-system-x86_64 first on PATH: it
// runs KVM requests under TCG on a CPU without long mode, so a boot sector runs and a kernel
// does not. Needs a usable /dev/kvm node (tools/run-tests.sh --broken-kvm makes one).
#include <gtest/gtest.h>

#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <sstream>

#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>
#include <nlohmann/json.hpp>

#include "backends/qemu/accelerator.h"
#include "timing.h"
#include "vmfest/gtest/fixture.h"
#include "vmfest/instance.h"
#include "vmfest/internal/base.h"
#include "vmfest/model.h"

namespace {
namespace fs = std::filesystem;
namespace accel = vmfest::detail::qemu;

// Before anything looks for QEMU: the backend resolves it once per process.
const bool stand_in_first_on_path = [] {
  const char* path = std::getenv("PATH");
  const std::string value = std::string(VMFEST_BROKEN_KVM_DIR) + ":" + (path ? path : "/usr/bin");
  return ::setenv("PATH", value.c_str(), 1) == 0;
}();

class BrokenKvm : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(stand_in_first_on_path);
    if (::access("/dev/kvm", R_OK | W_OK) != 0) {
      if (std::getenv("VMFEST_BROKEN_KVM_RUN") != nullptr) FAIL() << "/dev/kvm is not usable";
      GTEST_SKIP() << "needs a usable /dev/kvm (tools/run-tests.sh --broken-kvm makes one)";
    }
    ::unsetenv("VMFEST_ACCEL");
    // Decisions of our own; the default model stays where the test environment set it up.
    cache_ = fs::temp_directory_path() / ("vmfest-broken-kvm-" + std::to_string(::getpid()));
    ::setenv("VMFEST_CACHE_DIR", cache_.c_str(), 1);
    qemu_ = vmfest::detail::find_program("qemu-system-x86_64", "qemu-system-x86");
    ASSERT_EQ(qemu_.parent_path(), fs::path(VMFEST_BROKEN_KVM_DIR));
    spdlog::default_logger()->sinks().push_back(sink_);
  }
  void TearDown() override {
    auto& sinks = spdlog::default_logger()->sinks();
    std::erase(sinks, sink_);
    ::unsetenv("VMFEST_CACHE_DIR");
    fs::remove_all(cache_);
  }

  // The one decision recorded for the stand-in.
  nlohmann::json decision() const {
    for (const auto& entry : fs::directory_iterator(cache_ / "accelerator")) {
      if (entry.path().extension() == ".json") {
        return nlohmann::json::parse(vmfest::detail::read_text(entry.path()));
      }
    }
    return {};
  }

  static vmfest::Instance started_instance() {
    vmfest::InstanceRequest request;
    request.model = vmfest::testing::kDefaultModel;
    request.warm = false;
    vmfest::Instance instance = vmfest::Instance::create(request);
    instance.start();
    return instance;
  }

  fs::path cache_;
  fs::path qemu_;
  std::ostringstream log_;
  std::shared_ptr<spdlog::sinks::ostream_sink_mt> sink_ =
      std::make_shared<spdlog::sinks::ostream_sink_mt>(log_);
};

TEST_F(BrokenKvm, ABootSectorIsFooledAndAKernelIsNot) {
  auto weak = accel::choose_accelerator(qemu_, cache_ / "accelerator", {}, std::chrono::seconds(8));
  EXPECT_EQ(weak.name, "kvm");
  EXPECT_NE(weak.reason.find("weak probe"), std::string::npos) << weak.reason;
  const fs::path kernel = vmfest::ModelRegistry().get(vmfest::testing::kDefaultModel).boot.kernel;
  auto strong =
      accel::choose_accelerator(qemu_, cache_ / "accelerator", kernel, std::chrono::seconds(8));
  EXPECT_EQ(strong.name, "tcg");
  EXPECT_NE(strong.reason.find("showed no sign of life"), std::string::npos) << strong.reason;
}

TEST_F(BrokenKvm, TheProbeBootsTheKernelAndChoosesTcg) {
  vmfest::Instance instance = started_instance();
  EXPECT_EQ(instance.accelerator(), "tcg");
  EXPECT_EQ(instance.ssh().check("uname -m").stdout_text, "x86_64\n");
  const nlohmann::json chosen = decision();
  EXPECT_EQ(chosen.value("name", ""), "tcg");
  EXPECT_EQ(chosen.value("probe", ""), "kernel");
  const std::string reason = chosen.value("reason", "");
  EXPECT_NE(reason.find("a Linux kernel ("), std::string::npos) << reason;
  EXPECT_NE(reason.find("showed no sign of life on its console"), std::string::npos) << reason;
  EXPECT_EQ(reason.find("CPUID"), std::string::npos) << reason;
}

// Belt and braces: a stale or fooled "kvm" for this host is caught when a guest stays silent.
TEST_F(BrokenKvm, AGuestSilentUnderKvmSwitchesTheHostToTcg) {
  accel::record_decision(qemu_, cache_ / "accelerator", {"kvm", "planted by the test"});
  const auto begin = vmfest::testing::Clock::now();
  vmfest::Instance instance = started_instance();
  const double seconds = vmfest::testing::seconds_since(begin);
  RecordProperty("start_seconds", std::to_string(seconds));
  EXPECT_EQ(instance.accelerator(), "tcg");
  EXPECT_EQ(instance.ssh().check("echo alive").stdout_text, "alive\n");
  const std::string log = log_.str();
  EXPECT_NE(log.find("KVM showed no sign of life: instance '" + instance.name() +
                     "' (model 'vmfest-tiny') printed nothing on its console within 20 s"),
            std::string::npos)
      << log;
  EXPECT_NE(log.find("switched this host to TCG"), std::string::npos) << log;
  EXPECT_NE(log.find("Set VMFEST_ACCEL=tcg to skip"), std::string::npos) << log;
  EXPECT_TRUE(fs::exists(instance.directory() / "qemu-kvm.log"));
  const nlohmann::json chosen = decision();
  EXPECT_EQ(chosen.value("name", ""), "tcg");
  EXPECT_NE(chosen.value("reason", "").find("KVM showed no sign of life"), std::string::npos);
  // Every later VM on this host gets TCG from the start.
  auto later =
      accel::choose_accelerator(qemu_, cache_ / "accelerator", {}, std::chrono::seconds(8));
  EXPECT_EQ(later.name, "tcg");
}

}  // namespace
