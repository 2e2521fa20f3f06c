#include <gtest/gtest.h>
#include <spdlog/sinks/ringbuffer_sink.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>

#include "vmfest/error.h"
#include "vmfest/instance.h"
#include "vmfest/internal/base.h"
#include "vmfest/internal/registry.h"
#include "vmfest/model.h"

namespace {
namespace fs = std::filesystem;

class RegistryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() /
            ("vmfest-registry-" +
             std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()) + "-" +
             std::to_string(::getpid()));
    fs::remove_all(root_);
    fs::create_directories(root_);
  }
  void TearDown() override {
    for (auto& entry : fs::recursive_directory_iterator(root_)) {
      fs::permissions(entry.path(), fs::perms::owner_all, fs::perm_options::add);
    }
    fs::remove_all(root_);
  }
  fs::path make_qcow2(const std::string& file) {
    fs::path path = root_ / file;
    auto qemu_img = vmfest::detail::find_program("qemu-img", "qemu-utils");
    vmfest::detail::run_tool_checked(
        qemu_img, {"create", "-q", "-f", "qcow2", path.string(), "16M"}, "test image");
    return path;
  }
  vmfest::Home home() const { return vmfest::Home(root_ / "home"); }

  // Replaces a registry file (models' files are read-only; their folder is not).
  static void overwrite(const fs::path& file, const std::string& text) {
    fs::remove(file);
    std::ofstream(file) << text;
  }

  // A detached instance (it outlives its handle) of `model`, never started.
  vmfest::InstanceInfo detached_instance(const std::string& model, const std::string& name) {
    vmfest::InstanceRequest request;
    request.model = model;
    request.name = name;
    request.detached = true;
    request.warm = false;
    return vmfest::Instance::create(request, home()).info();
  }

  fs::path root_;
};

// The message of the error `action` throws, which must be an `Expected`.
template <class Expected, class Action>
std::string error_of(Action action) {
  try {
    action();
  } catch (const Expected& error) {
    return error.what();
  } catch (const std::exception& error) {
    ADD_FAILURE() << "the wrong kind of error: " << error.what();
    return error.what();
  }
  ADD_FAILURE() << "no error";
  return "";
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

TEST_F(RegistryTest, UnknownModelErrorListsWhatIsRegistered) {
  vmfest::ModelRegistry registry(home());
  try {
    (void)registry.get("nope");
    FAIL() << "expected ModelError";
  } catch (const vmfest::ModelError& error) {
    std::string message = error.what();
    EXPECT_NE(message.find("model 'nope' is not registered"), std::string::npos) << message;
    EXPECT_NE(message.find("vmfest setup-model"), std::string::npos) << message;
  }
}

TEST_F(RegistryTest, LocalImageIsRegisteredReadOnlyWithItsHash) {
  fs::path image = make_qcow2("small.qcow2");
  std::string hash = vmfest::detail::sha256_file(image);
  vmfest::Model model = vmfest::setup_model(image.string(), {}, home());
  EXPECT_EQ(model.name, "small");
  EXPECT_EQ(model.format, "qcow2");
  EXPECT_EQ(model.sha256, hash);
  EXPECT_EQ(fs::status(model.disk).permissions() & fs::perms::owner_write, fs::perms::none);
  auto listed = vmfest::ModelRegistry(home()).list();
  ASSERT_EQ(listed.size(), 1u);
  EXPECT_EQ(listed[0].name, "small");
}

TEST_F(RegistryTest, SameSourceTwiceIsANoOp) {
  fs::path image = make_qcow2("twice.qcow2");
  auto first = vmfest::setup_model(image.string(), {}, home());
  auto second = vmfest::setup_model(image.string(), {}, home());
  EXPECT_EQ(first.disk, second.disk);
  EXPECT_EQ(fs::last_write_time(first.disk), fs::last_write_time(second.disk));
}

TEST_F(RegistryTest, NonImageIsRefusedAndNothingIsRegistered) {
  fs::path junk = root_ / "junk.qcow2";
  std::ofstream(junk) << "QFI\xfb but not really a qcow2 image";
  EXPECT_THROW(vmfest::setup_model(junk.string(), {}, home()), vmfest::SetupError);
  EXPECT_TRUE(vmfest::ModelRegistry(home()).list().empty());
  for (auto& entry : fs::directory_iterator(home().models())) {
    EXPECT_TRUE(entry.path().filename().string().starts_with(".")) << entry.path();
    EXPECT_FALSE(entry.is_directory()) << "staging left behind: " << entry.path();
  }
}

TEST_F(RegistryTest, MissingSourceAndBadNamesAreClearErrors) {
  EXPECT_THROW(vmfest::setup_model((root_ / "absent.qcow2").string(), {}, home()),
               vmfest::SetupError);
  vmfest::SetupOptions options;
  options.name = "../escape";
  fs::path image = make_qcow2("ok.qcow2");
  EXPECT_THROW(vmfest::setup_model(image.string(), options, home()), vmfest::InvalidArgument);
  EXPECT_FALSE(fs::exists(root_ / "escape"));
}

TEST_F(RegistryTest, RemoveDeletesTheModel) {
  fs::path image = make_qcow2("gone.qcow2");
  vmfest::setup_model(image.string(), {}, home());
  vmfest::ModelRegistry registry(home());
  registry.remove("gone");
  EXPECT_FALSE(registry.find("gone").has_value());
  EXPECT_THROW(registry.remove("gone"), vmfest::ModelError);
}

TEST_F(RegistryTest, UnknownModelForAnInstanceIsAModelError) {
  vmfest::InstanceRequest request;
  request.model = "missing";
  EXPECT_THROW(vmfest::Instance::create(request, home()), vmfest::ModelError);
  EXPECT_TRUE(vmfest::list_instances(home()).empty());
}

TEST_F(RegistryTest, InstanceInfoNamesTheKeyFilesAnSshClientNeeds) {
  vmfest::setup_model(make_qcow2("base.qcow2").string(), {}, home());
  const vmfest::InstanceInfo info = detached_instance("base", "keyed");
  EXPECT_EQ(info.client_key.parent_path(), info.directory);
  EXPECT_NE(vmfest::detail::read_text(info.client_key).find("BEGIN OPENSSH PRIVATE KEY"),
            std::string::npos);
  EXPECT_TRUE(vmfest::detail::read_text(info.host_public_key).starts_with("ssh-ed25519 "));
  vmfest::force_destroy_instance("keyed", home());
}

TEST_F(RegistryTest, WrongShapedModelJsonIsAnErrorNamingTheFileAndForceRemoveTakesIt) {
  vmfest::setup_model(make_qcow2("good.qcow2").string(), {}, home());
  vmfest::setup_model(make_qcow2("shape.qcow2").string(), {}, home());
  const fs::path file = home().models() / "shape" / "model.json";
  overwrite(file, R"({"name": "shape", "format": "qcow2"})");  // valid JSON, no "disk"
  vmfest::ModelRegistry registry(home());

  const std::string message = error_of<vmfest::ModelError>([&] { (void)registry.find("shape"); });
  EXPECT_TRUE(contains(message, "model 'shape': " + file.string())) << message;
  EXPECT_TRUE(contains(message, "key 'disk' not found")) << message;
  EXPECT_TRUE(contains(message, "`vmfest rm-model --force shape`")) << message;
  EXPECT_FALSE(contains(message, "json.exception")) << message;
  overwrite(file, R"({"name": "shape", "disk": 7})");
  EXPECT_TRUE(
      contains(error_of<vmfest::ModelError>([&] { (void)registry.get("shape"); }), file.string()));
  overwrite(file, R"(["not", "an", "object"])");
  EXPECT_TRUE(contains(error_of<vmfest::ModelError>([&] { (void)registry.get("shape"); }),
                       "it is not a JSON object"));

  // The list skips it (with a warning); the checked remove refuses it, the forced one takes it.
  auto listed = registry.list();
  ASSERT_EQ(listed.size(), 1u);
  EXPECT_EQ(listed[0].name, "good");
  EXPECT_TRUE(contains(error_of<vmfest::ModelError>([&] { registry.remove("shape"); }),
                       "rm-model --force"));
  registry.force_remove("shape");
  EXPECT_FALSE(fs::exists(file.parent_path()));
  EXPECT_FALSE(registry.find("shape"));
  EXPECT_TRUE(contains(error_of<vmfest::ModelError>([&] { registry.force_remove("shape"); }),
                       "model 'shape' is not registered"));
}

TEST_F(RegistryTest, WrongShapedInstanceRecordIsAnErrorNamingTheFileAndForceTakesIt) {
  vmfest::setup_model(make_qcow2("base.qcow2").string(), {}, home());
  const fs::path typed = detached_instance("base", "typed").directory;
  const fs::path elsewhere = detached_instance("base", "elsewhere").directory;
  const fs::path good = detached_instance("base", "good").directory;
  overwrite(typed / "instance.json", R"({"name": "typed", "model": 42})");
  overwrite(elsewhere / "instance.json", R"({"name": "good", "model": "base", "detached": true})");

  const std::string message =
      error_of<vmfest::InstanceRecordError>([&] { vmfest::Instance::open("typed", home()); });
  EXPECT_TRUE(contains(message, "instance 'typed': " + (typed / "instance.json").string()))
      << message;
  EXPECT_TRUE(contains(message, "type must be string")) << message;
  EXPECT_TRUE(contains(message, "`vmfest destroy --force typed`")) << message;
  EXPECT_FALSE(contains(message, "json.exception")) << message;
  // A record that names another instance would lead destroy() to that one's folder.
  EXPECT_TRUE(contains(
      error_of<vmfest::InstanceRecordError>([&] { vmfest::Instance::open("elsewhere", home()); }),
      "it names instance 'good', not 'elsewhere'"));
  // A machine state of the wrong shape is the record's fault too.
  auto record = vmfest::detail::read_instance_record(good);
  ASSERT_TRUE(record);
  record->machine = {{"pid", "not a number"}};
  vmfest::detail::write_instance_record(good, *record);
  EXPECT_TRUE(contains(
      error_of<vmfest::InstanceRecordError>([&] { vmfest::Instance::open("good", home()); }),
      "its machine state"));
  record->machine = nlohmann::json::object();
  vmfest::detail::write_instance_record(good, *record);

  // Listing and reaping skip the broken ones (with warnings); nothing is removed.
  auto listed = vmfest::describe_instances(home());
  ASSERT_EQ(listed.size(), 1u);
  EXPECT_EQ(listed[0].name, "good");
  EXPECT_TRUE(vmfest::reap_leaked_instances(home()).empty());
  EXPECT_TRUE(fs::exists(typed));

  vmfest::force_destroy_instance("typed", home());
  EXPECT_FALSE(fs::exists(typed));
  EXPECT_THROW(vmfest::force_destroy_instance("typed", home()), vmfest::StateError);
  auto reaped = vmfest::reap_leaked_instances(home(), {.force = true});
  std::sort(reaped.begin(), reaped.end());
  EXPECT_EQ(reaped, (std::vector<std::string>{"elsewhere", "good"}));
  EXPECT_TRUE(vmfest::list_instances(home()).empty());
}

// Warm images hold what their guests held in memory, layers what their steps uploaded: a home
// vmfest makes is its owner's alone, and one that other users can read is named with the fix.
// A member of a private segment keeps its card, address and the segment's names in its record:
// every relaunch (a warm clone's fallback to a boot, a process that opens it) has them.
TEST_F(RegistryTest, APrivateCardIsKeptInTheRecordAndABadOneIsRefusedAtCreate) {
  vmfest::setup_model(make_qcow2("base.qcow2").string(), {}, home());
  vmfest::InstanceRequest request;
  request.model = "base";
  request.name = "member";
  request.detached = true;
  request.warm = false;
  request.private_nic =
      vmfest::PrivateNic{"/tmp/hub.sock",
                         "/tmp/port0.sock",
                         "52:54:00:77:00:01",
                         "10.0.0.1",
                         16,
                         {{"10.0.0.1", {"member", "node0"}}, {"10.0.0.2", {"peer", "node1"}}}};
  const fs::path directory = vmfest::Instance::create(request, home()).info().directory;
  const auto record = vmfest::detail::read_instance_record(directory);
  ASSERT_TRUE(record && record->private_nic);
  const vmfest::PrivateNic& kept = *record->private_nic;
  EXPECT_EQ(kept.port_socket, "/tmp/port0.sock");
  EXPECT_EQ(kept.mac, "52:54:00:77:00:01");
  EXPECT_EQ(kept.address, "10.0.0.1");
  EXPECT_EQ(kept.prefix_length, 16);
  ASSERT_EQ(kept.hosts.size(), 2u);
  EXPECT_EQ(kept.hosts[1].address, "10.0.0.2");
  EXPECT_EQ(kept.hosts[1].names, (std::vector<std::string>{"peer", "node1"}));

  request.name = "bad-prefix";
  request.private_nic->prefix_length = 33;
  EXPECT_TRUE(contains(
      error_of<vmfest::InvalidArgument>([&] { vmfest::Instance::create(request, home()); }),
      "the private card of instance 'bad-prefix': prefix length 33 is not 1-32"));
  request.name = "hosts-without-address";
  request.private_nic->prefix_length = 24;
  request.private_nic->address.clear();
  EXPECT_TRUE(contains(
      error_of<vmfest::InvalidArgument>([&] { vmfest::Instance::create(request, home()); }),
      "it lists /etc/hosts names but has no address of its own"));
  EXPECT_EQ(vmfest::list_instances(home()), (std::vector<std::string>{"member"}));
  vmfest::force_destroy_instance("member", home());
}

TEST_F(RegistryTest, ANewHomeIsItsOwnersAloneAndAReadableOneIsNamedOnce) {
  const auto others = fs::perms::group_all | fs::perms::others_all;
  vmfest::setup_model(make_qcow2("base.qcow2").string(), {}, home());
  EXPECT_EQ(fs::status(home().root()).permissions() & others, fs::perms::none);
  if (::geteuid() == 0) {
    // As another user: the home cannot even be listed.
    const auto nobody = vmfest::detail::run_tool(
        vmfest::detail::find_program("setpriv", "util-linux"),
        {"--reuid=65534", "--regid=65534", "--clear-groups", "ls", home().models().string()});
    EXPECT_NE(nobody.exit_code, 0) << nobody.output;
    EXPECT_NE(nobody.output.find("Permission denied"), std::string::npos) << nobody.output;
  }

  const vmfest::Home shared(root_ / "shared");
  fs::create_directories(shared.root());
  fs::permissions(shared.root(), fs::perms::owner_all | fs::perms::group_read |
                                     fs::perms::group_exec | fs::perms::others_read |
                                     fs::perms::others_exec);
  auto warnings = std::make_shared<spdlog::sinks::ringbuffer_sink_mt>(8);
  warnings->set_level(spdlog::level::warn);
  spdlog::default_logger()->sinks().push_back(warnings);
  vmfest::setup_model(make_qcow2("other.qcow2").string(), {}, shared);
  vmfest::setup_model(make_qcow2("third.qcow2").string(), {}, shared);
  spdlog::default_logger()->sinks().pop_back();
  const std::vector<std::string> seen = warnings->last_formatted();
  ASSERT_EQ(seen.size(), 1U) << "one warning per home and process";
  EXPECT_NE(seen[0].find("can be read by other users (mode 0755)"), std::string::npos) << seen[0];
  EXPECT_NE(seen[0].find("`chmod 700 " + shared.root().string() + "`"), std::string::npos)
      << seen[0];
}

// A VMFEST_HOME under a file (a typo, a path of another machine) is vmfest's error naming the
// home and the fix, not the file system library's.
TEST_F(RegistryTest, AHomeThatCannotBeMadeIsAnErrorNamingVmfestHome) {
  std::ofstream(root_ / "a-file") << "not a folder";
  const vmfest::Home impossible(root_ / "a-file" / "deeper" / "home");
  try {
    vmfest::setup_model(make_qcow2("base.qcow2").string(), {}, impossible);
    FAIL() << "a home under a file was made";
  } catch (const vmfest::Error& error) {
    const std::string message = error.what();
    EXPECT_NE(message.find(impossible.root().string()), std::string::npos) << message;
    EXPECT_NE(message.find("VMFEST_HOME"), std::string::npos) << message;
  }
}

}  // namespace

// Homes of one path on two CI runners must not share an id: a copy of a home (a restored cache)
// at the original path makes its own, while the home itself keeps its id wherever it is moved.
TEST_F(RegistryTest, AHomeKeepsItsIdAndACopyAtItsPathMakesAnother) {
  const std::string id = home().id();
  EXPECT_EQ(id.size(), 16U) << id;
  EXPECT_EQ(home().id(), id) << "asked again";
  EXPECT_EQ(fs::status(home().root() / "home-id").permissions() & fs::perms::all,
            fs::perms::owner_read | fs::perms::owner_write);

  const fs::path moved = root_ / "moved-home";
  fs::rename(home().root(), moved);
  fs::copy(moved, home().root(), fs::copy_options::recursive);
  const std::string copy_id = home().id();
  EXPECT_NE(copy_id, id) << "a copy at the same path took the original's id";
  EXPECT_EQ(vmfest::Home(moved).id(), id) << "a moved home lost its id";
  EXPECT_EQ(home().id(), copy_id);
}
