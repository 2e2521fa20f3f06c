// The VirtualBox client at the wire, against the double of each VirtualBox version: version
// detection, each version's request shapes (and the schema fault for another version's), the
// faults a client must tell apart, the wire log, and VirtualBox's rules as the double enforces
// them.
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "backends/virtualbox/result_codes.h"
#include "backends/virtualbox/vbox_api.h"
#include "double_process.h"
#include "vmfest/internal/base.h"

namespace {
namespace fs = std::filesystem;
namespace vb = vmfest::detail::virtualbox;
using vmfest::testing::DoubleProcess;
using P = vboxBindingProxy;

vb::ServerOptions options_for(const DoubleProcess& server) {
  vb::ServerOptions options;
  options.url = server.url();
  options.call_timeout = std::chrono::seconds(20);
  return options;
}

std::string read_file(const fs::path& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// A scratch folder removed with the test.
class Scratch {
 public:
  Scratch()
      : path_(fs::temp_directory_path() /
              ("vmfest-vbox-test-" + std::to_string(::getpid()) + "-" +
               ::testing::UnitTest::GetInstance()->current_test_info()->name())) {
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~Scratch() { fs::remove_all(path_); }
  [[nodiscard]] const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

// ---- versions -----------------------------------------------------------------------------------

struct VersionCase {
  std::string api;
  vb::ApiVersion version;
};

void PrintTo(const VersionCase& test, std::ostream* out) { *out << "VirtualBox " << test.api; }

class EachVersion : public ::testing::TestWithParam<VersionCase> {};

TEST_P(EachVersion, IsDetectedAndItsCreateMachineShapeIsAccepted) {
  DoubleProcess server(GetParam().api);
  Scratch scratch;
  vb::Websession session(options_for(server));
  EXPECT_EQ(session.version(), GetParam().version);
  vb::VirtualBoxApi api(session);
  const std::string machine =
      api.create_machine((scratch.path() / "m/m.vbox").string(), "m", "/vmfest");
  EXPECT_FALSE(machine.empty());
  api.set_memory_mib(machine, 256);
  api.register_machine(machine);
  EXPECT_EQ(api.find_machine("m"), machine);
}

INSTANTIATE_TEST_SUITE_P(VirtualBox, EachVersion,
                         ::testing::Values(VersionCase{"6.1", vb::ApiVersion::V6_1},
                                           VersionCase{"7.0", vb::ApiVersion::V7_0},
                                           VersionCase{"7.1", vb::ApiVersion::V7_1}),
                         [](const auto& test) {
                           std::string name = "v" + test.param.api;
                           name.erase(name.find('.'), 1);
                           return name;
                         });

struct WrongShapeCase {
  std::string server_api;
  vb::ApiVersion spoken;
  std::string offending;  // what the schema of the server's version objects to
};

void PrintTo(const WrongShapeCase& test, std::ostream* out) {
  *out << to_string(test.spoken) << " shapes to VirtualBox " << test.server_api;
}

class WrongVersionShape : public ::testing::TestWithParam<WrongShapeCase> {};

TEST_P(WrongVersionShape, CreateMachineGetsTheSchemaFault) {
  DoubleProcess server(GetParam().server_api);
  Scratch scratch;
  vb::ServerOptions options = options_for(server);
  options.assume_version = GetParam().spoken;
  vb::Websession session(options);
  vb::VirtualBoxApi api(session);
  try {
    api.create_machine((scratch.path() / "m/m.vbox").string(), "m", "/vmfest");
    FAIL() << "a createMachine of another version's shape was accepted";
  } catch (const vb::ProtocolError& error) {
    const std::string message = error.what();
    EXPECT_NE(message.find("IVirtualBox_createMachine does not match the schema of the "
                           "VirtualBox " +
                           GetParam().server_api),
              std::string::npos)
        << message;
    EXPECT_NE(message.find(GetParam().offending), std::string::npos) << message;
  }
}

INSTANTIATE_TEST_SUITE_P(VirtualBox, WrongVersionShape,
                         ::testing::Values(WrongShapeCase{"6.1", vb::ApiVersion::V7_0, "'cipher'"},
                                           WrongShapeCase{"7.0", vb::ApiVersion::V7_1,
                                                          "'platform'"},
                                           WrongShapeCase{"7.1", vb::ApiVersion::V6_1, "'groups'"}),
                         [](const auto& test) {
                           std::string name = "To" + test.param.server_api;
                           name.erase(name.find('.'), 1);
                           return name;
                         });

// ---- faults -------------------------------------------------------------------------------------

TEST(Faults, AnUnreachableServerSaysHowToStartVboxwebsrv) {
  vb::ServerOptions options;
  options.url = "http://127.0.0.1:" + std::to_string(vmfest::testing::closed_port()) + "/";
  try {
    vb::Websession session(options);
    FAIL() << "logon to a closed port succeeded";
  } catch (const vb::ServerUnreachableError& error) {
    const std::string message = error.what();
    EXPECT_NE(message.find(options.url), std::string::npos) << message;
    EXPECT_NE(message.find("vboxwebsrv --host"), std::string::npos) << message;
    EXPECT_NE(message.find("VMFEST_VBOX_URL"), std::string::npos) << message;
  }
}

TEST(Faults, ARefusedLogonNamesTheUserNeverThePassword) {
  DoubleProcess server("7.1", {"--user", "alice", "--password", "right-secret"});
  vb::ServerOptions options = options_for(server);
  options.user = "alice";
  options.password = "wrong-secret";
  try {
    vb::Websession session(options);
    FAIL() << "a wrong password was accepted";
  } catch (const vb::LogonError& error) {
    const std::string message = error.what();
    EXPECT_NE(message.find("'alice'"), std::string::npos) << message;
    EXPECT_NE(message.find("VMFEST_VBOX_PASSWORD"), std::string::npos) << message;
    EXPECT_EQ(message.find("secret"), std::string::npos) << message;
  }
  options.password = "right-secret";
  EXPECT_NO_THROW(vb::Websession{options});
}

TEST(Faults, AnUnknownObjectIsAnInvalidObjectFault) {
  DoubleProcess server("7.0");
  vb::Websession session(options_for(server));
  vb::VirtualBoxApi api(session);
  const std::string bogus = "00000000deadbeef-0000000000000001";
  try {
    api.machine_state(bogus);
    FAIL() << "an unknown reference was accepted";
  } catch (const vb::InvalidObjectError& error) {
    EXPECT_EQ(error.bad_object(), bogus);
    EXPECT_NE(std::string(error.what()).find("IMachine_getState"), std::string::npos);
  }
  // A released reference is gone too.
  const std::string machine = api.create_machine("/nonexistent/m/m.vbox", "m", "/vmfest");
  session.call_on(machine, "IManagedObjectRef_release", &P::IManagedObjectRef_USCORErelease);
  EXPECT_THROW(api.machine_id(machine), vb::InvalidObjectError);
}

TEST(Faults, ARuntimeFaultNamesItsResultCode) {
  DoubleProcess server("6.1");
  vb::Websession session(options_for(server));
  _vbox__IVirtualBox_USCOREfindMachine request;
  request._USCOREthis = session.virtualbox();
  request.nameOrId = "no-such-machine";
  try {
    session.call("IVirtualBox_findMachine", &P::IVirtualBox_USCOREfindMachine, request);
    FAIL() << "found a machine that does not exist";
  } catch (const vb::RuntimeFaultError& error) {
    EXPECT_EQ(error.result_code(), vb::result::kObjectNotFound);
    EXPECT_EQ(error.operation(), "IVirtualBox_findMachine");
    const std::string message = error.what();
    EXPECT_NE(message.find("VBOX_E_OBJECT_NOT_FOUND (0x80bb0001)"), std::string::npos) << message;
    EXPECT_NE(message.find("no-such-machine"), std::string::npos) << message;
  }
  EXPECT_EQ(vb::VirtualBoxApi(session).find_machine("no-such-machine"), std::nullopt);
}

TEST(Faults, AMachineLockedByAnotherSessionIsReportedAsSuch) {
  DoubleProcess server("7.1");
  Scratch scratch;
  vb::Websession owner(options_for(server));
  vb::VirtualBoxApi owner_api(owner);
  const std::string machine =
      owner_api.create_machine((scratch.path() / "m/m.vbox").string(), "m", "/vmfest");
  owner_api.register_machine(machine);
  vb::MachineLock held(owner_api, machine, vbox__LockType::Write, "held");

  vb::Websession other(options_for(server));  // another client process, as far as VirtualBox knows
  vb::VirtualBoxApi other_api(other);
  try {
    vb::MachineLock second(other_api, *other_api.find_machine("m"), vbox__LockType::Write, "demo");
    FAIL() << "two write locks on one machine";
  } catch (const vb::MachineLockedError& error) {
    const std::string message = error.what();
    EXPECT_NE(message.find("instance 'demo'"), std::string::npos) << message;
    EXPECT_NE(message.find("locked by another session"), std::string::npos) << message;
  }
}

TEST(Faults, AServerThatDropsTheConnectionMidCall) {
  DoubleProcess server("7.1", {"--drop-on", "IVirtualBox_getAPIVersion"});
  try {
    vb::Websession session(options_for(server));
    FAIL() << "a dropped call succeeded";
  } catch (const vb::ConnectionLostError& error) {
    EXPECT_FALSE(error.timed_out());
    EXPECT_NE(std::string(error.what())
                  .find("closed the connection during "
                        "IVirtualBox_getAPIVersion"),
              std::string::npos)
        << error.what();
  }
}

TEST(Faults, AServerThatNeverAnswersTimesOut) {
  DoubleProcess server("6.1", {"--stall-on", "IVirtualBox_getAPIVersion"});
  vb::ServerOptions options = options_for(server);
  options.call_timeout = std::chrono::seconds(2);
  const auto begin = std::chrono::steady_clock::now();
  try {
    vb::Websession session(options);
    FAIL() << "a call without an answer succeeded";
  } catch (const vb::ConnectionLostError& error) {
    EXPECT_TRUE(error.timed_out()) << error.what();
    EXPECT_NE(std::string(error.what()).find("within 2 s"), std::string::npos) << error.what();
  }
  EXPECT_LT(std::chrono::steady_clock::now() - begin, std::chrono::seconds(10));
}

// ---- wire log -----------------------------------------------------------------------------------

TEST(WireLog, HoldsEveryEnvelopeWithThePasswordMasked) {
  DoubleProcess server("7.1", {"--user", "alice", "--password", "s3cret-pa55"});
  Scratch scratch;
  vb::ServerOptions options = options_for(server);
  options.user = "alice";
  options.password = "s3cret-pa55";
  options.wire_log = scratch.path() / "wire.log";
  {
    vb::Websession session(options);
    EXPECT_EQ(vb::VirtualBoxApi(session).find_machine("none"), std::nullopt);
  }
  const std::string log = read_file(options.wire_log);
  EXPECT_EQ(log.find("s3cret-pa55"), std::string::npos) << log;
  for (const char* expected :
       {"<vbox:IWebsessionManager_logon>", "<username>alice</username>", "<password>***</password>",
        "<vbox:IVirtualBox_getAPIVersionResponse>", "<returnval>7_1</returnval>",
        "<resultCode>-2135228415</resultCode>", "<faultstring>Could not find",
        "<vbox:IWebsessionManager_logoff>"}) {
    EXPECT_NE(log.find(expected), std::string::npos) << expected << " missing from\n" << log;
  }
  EXPECT_EQ(log.find("HTTP/1.1"), std::string::npos) << "HTTP headers in the wire log";
}

// ---- VirtualBox's rules, as the double enforces them
// ---------------------------------------------

class Rules : public ::testing::Test {
 protected:
  void SetUp() override {
    // A small VDI image and an ISO image, what the backend hands VirtualBox.
    vmfest::detail::run_tool_checked(
        vmfest::detail::find_program("qemu-img", "qemu-utils"),
        {"create", "-q", "-f", "vdi", (scratch_.path() / "base.vdi").string(), "16M"},
        "making a VDI image");
    vmfest::detail::run_tool_checked(
        vmfest::detail::find_program("genisoimage", "genisoimage"),
        {"-quiet", "-V", "cidata", "-o", (scratch_.path() / "seed.iso").string(),
         scratch_.path().string()},
        "making an ISO image");
  }

  std::string machine(vb::VirtualBoxApi& api, const std::string& name) {
    std::string made =
        api.create_machine((scratch_.path() / name / (name + ".vbox")).string(), name, "/vmfest");
    api.register_machine(made);
    return made;
  }

  Scratch scratch_;
  DoubleProcess server_{"7.0"};
};

TEST_F(Rules, SettingsChangeOnlyThroughAWriteLock) {
  vb::Websession session(options_for(server_));
  vb::VirtualBoxApi api(session);
  const std::string registered = machine(api, "m");
  try {
    api.set_memory_mib(registered, 512);
    FAIL() << "changed a registered machine without a lock";
  } catch (const vb::RuntimeFaultError& error) {
    EXPECT_EQ(error.result_code(), vb::result::kInvalidVmState) << error.what();
  }
  {
    vb::MachineLock lock(api, registered, vbox__LockType::Write, "m");
    api.set_memory_mib(lock.machine(), 512);
    api.save_settings(lock.machine());
  }
  EXPECT_NE(read_file(scratch_.path() / "m/m.vbox").find("memoryMiB=\"512\""), std::string::npos);
}

TEST_F(Rules, AMultiAttachMediumGivesEachMachineItsOwnDifferencingImage) {
  vb::Websession session(options_for(server_));
  vb::VirtualBoxApi api(session);
  const std::string base = api.open_medium((scratch_.path() / "base.vdi").string(),
                                           vbox__DeviceType::HardDisk, vbox__AccessMode::ReadWrite);
  EXPECT_EQ(api.open_medium((scratch_.path() / "base.vdi").string(), vbox__DeviceType::HardDisk,
                            vbox__AccessMode::ReadWrite),
            base)
      << "opening an open medium again gives the same medium";
  api.set_medium_type(base, vbox__MediumType::MultiAttach);
  for (const char* name : {"a", "b"}) {
    const std::string made = machine(api, name);
    vb::MachineLock lock(api, made, vbox__LockType::Write, name);
    const std::string editable = lock.machine();
    api.add_storage_controller(editable, "SATA", vbox__StorageBus::SATA);
    api.attach_device(editable, "SATA", 0, vbox__DeviceType::HardDisk, base);
    api.save_settings(editable);
  }
  EXPECT_TRUE(fs::is_directory(scratch_.path() / "a/Snapshots"));
  EXPECT_TRUE(fs::is_directory(scratch_.path() / "b/Snapshots"));
  try {
    api.set_medium_type(base, vbox__MediumType::Normal);
    FAIL() << "changed the type of a medium in use";
  } catch (const vb::RuntimeFaultError& error) {
    EXPECT_EQ(error.result_code(), vb::result::kObjectInUse) << error.what();
  }
  const std::string a = *api.find_machine("a");
  const auto disks = api.unregister(a);
  ASSERT_EQ(disks.size(), 1u);
  api.delete_config(a, disks, std::chrono::seconds(10));
  EXPECT_FALSE(fs::exists(scratch_.path() / "a")) << "the machine's files were not deleted";
  EXPECT_TRUE(fs::exists(scratch_.path() / "b/Snapshots"));
  EXPECT_TRUE(fs::exists(scratch_.path() / "base.vdi")) << "the shared medium was deleted";
}

TEST_F(Rules, UnsavedChangesAreDiscardedWithTheLock) {
  vb::Websession session(options_for(server_));
  vb::VirtualBoxApi api(session);
  const std::string made = machine(api, "m");
  {
    vb::MachineLock lock(api, made, vbox__LockType::Write, "m");
    api.add_storage_controller(lock.machine(), "SATA", vbox__StorageBus::SATA);
  }
  vb::MachineLock lock(api, made, vbox__LockType::Write, "m");
  // The controller was never saved: adding it again works.
  EXPECT_NO_THROW(api.add_storage_controller(lock.machine(), "SATA", vbox__StorageBus::SATA));
  const std::string dvd = api.open_medium((scratch_.path() / "seed.iso").string(),
                                          vbox__DeviceType::DVD, vbox__AccessMode::ReadOnly);
  EXPECT_THROW(api.attach_device(lock.machine(), "IDE", 0, vbox__DeviceType::DVD, dvd),
               vb::RuntimeFaultError)
      << "attached to a controller that does not exist";
}

}  // namespace
