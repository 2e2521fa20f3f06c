// `vmfest doctor`: on this machine it says vmfest can run, with the accelerator an instance start
// chooses; without QEMU it fails and names the package; --json is a list of checks; a home others
// can read is a warning with its fix.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <optional>
#include <set>
#include <string>

#include <nlohmann/json.hpp>

#include "backends/qemu/qemu_machine.h"
#include "cli_runner.h"
#include "vmfest/home.h"

namespace {
namespace fs = std::filesystem;
using vmfest::testing::CliResult;
using vmfest::testing::run_cli;

// Sets an environment variable (for this process and the CLI it runs) until the end of the scope.
class ScopedVariable {
 public:
  ScopedVariable(const char* name, const std::string& value) : name_(name) {
    if (const char* old = std::getenv(name)) original_ = old;
    ::setenv(name, value.c_str(), 1);
  }
  ScopedVariable(const ScopedVariable&) = delete;
  ScopedVariable& operator=(const ScopedVariable&) = delete;
  ~ScopedVariable() {
    if (original_) {
      ::setenv(name_, original_->c_str(), 1);
    } else {
      ::unsetenv(name_);
    }
  }

 private:
  const char* name_;
  std::optional<std::string> original_;
};

nlohmann::json doctor_json(int expected_exit) {
  CliResult result = run_cli({"doctor", "--json"});
  EXPECT_EQ(result.exit_code, expected_exit) << result.describe();
  return nlohmann::json::parse(result.out);
}

nlohmann::json check_named(const nlohmann::json& checks, const std::string& name) {
  for (const auto& check : checks) {
    if (check.at("name") == name) return check;
  }
  ADD_FAILURE() << "no check '" << name << "' in " << checks.dump(2);
  return nlohmann::json::object();
}

TEST(Doctor, SaysThisMachineCanRunVmsWithTheAcceleratorAStartChooses) {
  CliResult text = run_cli({"doctor"});
  ASSERT_EQ(text.exit_code, 0) << text.describe();
  EXPECT_NE(text.out.find("vmfest can run here"), std::string::npos) << text.out;

  const nlohmann::json accelerator = check_named(doctor_json(0), "accelerator");
  // What an instance start of this home chooses: the same call, the same host cache.
  const std::string chosen =
      vmfest::detail::qemu::accelerator_choice(vmfest::Home::from_environment().root(), {}).name;
  const std::string detail = accelerator.value("detail", "");
  EXPECT_TRUE(detail.starts_with(chosen + " ")) << "start chooses " << chosen << "; " << detail;
  EXPECT_EQ(accelerator.value("verdict", ""), chosen == "kvm" ? "ok" : "warn");
}

TEST(Doctor, JsonListsEveryCheckWithVerdictDetailAndFix) {
  const nlohmann::json checks = doctor_json(0);
  ASSERT_TRUE(checks.is_array()) << checks.dump(2);
  std::set<std::string> names;
  for (const auto& check : checks) {
    names.insert(check.at("name").get<std::string>());
    EXPECT_TRUE(std::set<std::string>({"ok", "warn", "fail"}).contains(check.at("verdict")))
        << check.dump();
    EXPECT_FALSE(check.at("detail").get<std::string>().empty()) << check.dump();
    EXPECT_EQ(check.at("fix").get<std::string>().empty(), check.at("verdict") == "ok")
        << "a warning or failure says what to do, an ok check does not: " << check.dump();
  }
  for (const char* name : {"backend", "qemu", "warm memory", "accelerator", "kvm access", "home",
                           "vm slots", "disk", "default model", "memory"}) {
    EXPECT_TRUE(names.contains(name)) << name << " missing from " << checks.dump(2);
  }
  const std::string memory = check_named(checks, "memory").value("detail", "");
  for (const char* profile : {"micro", "small", "medium", "large"}) {
    EXPECT_NE(memory.find(profile), std::string::npos) << memory;
  }
}

TEST(Doctor, WithoutQemuFailsAndNamesThePackage) {
  const fs::path empty =
      fs::temp_directory_path() / ("vmfest-doctor-path-" + std::to_string(::getpid()));
  fs::create_directories(empty);
  {
    const ScopedVariable path("PATH", empty.string());
    const ScopedVariable backend("VMFEST_BACKEND", "qemu");
    ::unsetenv("VMFEST_QEMU");
    CliResult result = run_cli({"doctor"});
    EXPECT_EQ(result.exit_code, 1) << result.describe();
    EXPECT_NE(result.out.find("fail  qemu"), std::string::npos) << result.out;
    EXPECT_NE(result.out.find("qemu-system-x86"), std::string::npos) << result.out;
    EXPECT_NE(result.out.find("vmfest cannot run here"), std::string::npos) << result.out;

    const nlohmann::json qemu = check_named(doctor_json(1), "qemu");
    EXPECT_EQ(qemu.value("verdict", ""), "fail");
    EXPECT_NE(qemu.value("fix", "").find("apt-get install qemu-system-x86"), std::string::npos)
        << qemu.dump();
  }
  fs::remove_all(empty);
}

TEST(Doctor, AHomeOthersCanReadIsAWarningWithTheChmodFix) {
  const fs::path home =
      fs::temp_directory_path() / ("vmfest-doctor-home-" + std::to_string(::getpid()));
  fs::create_directories(home);
  fs::permissions(home, fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec |
                            fs::perms::others_read | fs::perms::others_exec);
  {
    const ScopedVariable variable("VMFEST_HOME", home.string());
    const nlohmann::json check = check_named(doctor_json(0), "home");
    EXPECT_EQ(check.value("verdict", ""), "warn") << check.dump();
    EXPECT_NE(check.value("detail", "").find("can be read by other users (mode 0755)"),
              std::string::npos)
        << check.dump();
    EXPECT_EQ(check.value("fix", ""), "chmod 700 " + vmfest::Home(home).root().string());

    fs::permissions(home, fs::perms::owner_all);
    EXPECT_EQ(check_named(doctor_json(0), "home").value("verdict", ""), "ok");
  }
  fs::remove_all(home);
}

#ifdef VMFEST_CLI_HAS_VIRTUALBOX
TEST(Doctor, AnUnreachableVboxwebsrvFailsWithTheUrl) {
  const ScopedVariable url("VMFEST_VBOX_URL", "http://127.0.0.1:1/");
  const nlohmann::json check = check_named(doctor_json(1), "vboxwebsrv http://127.0.0.1:1/");
  EXPECT_EQ(check.value("verdict", ""), "fail") << check.dump();
  EXPECT_NE(check.value("detail", "").find("cannot reach vboxwebsrv at http://127.0.0.1:1/"),
            std::string::npos)
      << check.dump();
}
#endif

}  // namespace
