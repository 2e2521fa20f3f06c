// Provisioned layers: the first instance of a list of steps runs them and saves a layer; every
// later instance resumes it, sees what the steps did, and keeps its own changes to itself.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "../support/child_process.h"
#include "vmfest/error.h"
#include "vmfest/gtest/environment.h"
#include "vmfest/instance.h"
#include "vmfest/internal/base.h"
#include "vmfest/internal/image_store.h"
#include "vmfest/internal/registry.h"
#include "vmfest/model.h"

namespace {
using vmfest::Instance;
using vmfest::ProvisionStep;
using vmfest::ProvisionSteps;
namespace fs = std::filesystem;

// Makes each run's steps new, so every run builds its own layers (the test home outlives runs).
std::string fresh_token() {
  std::random_device random;
  return fmt::format("{:08x}{:08x}", random(), random());
}

Instance start_provisioned(const ProvisionSteps& steps) {
  vmfest::InstanceRequest request;
  request.model = vmfest::testing::test_model();
  request.provision = steps;
  Instance instance = Instance::create(request);
  instance.start();
  return instance;
}

bool had_phase(const Instance& instance, const std::string& name) {
  const auto& phases = instance.start_phases();
  return std::any_of(phases.begin(), phases.end(),
                     [&](const vmfest::StartPhase& phase) { return phase.name == name; });
}

// The image the instance was cloned from (its layer, once built).
fs::path image_of(const Instance& instance) {
  auto record = vmfest::detail::read_instance_record(instance.directory());
  return record ? fs::path(record->warm_image) : fs::path();
}

nlohmann::json manifest_of(const fs::path& image) {
  return nlohmann::json::parse(vmfest::detail::read_text(image / "manifest.json"));
}

// A folder to upload: a script (executable) and a data file.
fs::path make_site(const std::string& token) {
  const fs::path site = fs::temp_directory_path() / ("vmfest-site-" + token);
  fs::create_directories(site / "bin");
  std::ofstream(site / "index.html") << "hello " << token << "\n";
  std::ofstream(site / "bin" / "serve") << "#!/bin/sh\necho serving\n";
  fs::permissions(site / "bin" / "serve", fs::perms::owner_all | fs::perms::group_read |
                                              fs::perms::group_exec | fs::perms::others_read |
                                              fs::perms::others_exec);
  return site;
}

TEST(Provision, EveryCloneSeesTheStepsAndKeepsItsOwnChanges) {
  const std::string token = fresh_token();
  const fs::path site = make_site(token);
  const ProvisionSteps steps = {ProvisionStep::run("echo " + token + " > /etc/provisioned"),
                                ProvisionStep::run("mkdir -p /opt"),
                                ProvisionStep::upload(site, "/opt/site")};
  Instance builder = start_provisioned(steps);
  EXPECT_TRUE(had_phase(builder, "provision"));
  EXPECT_TRUE(had_phase(builder, "layer")) << "the first instance did not save a layer";
  EXPECT_TRUE(builder.resumed_warm());
  const fs::path layer = image_of(builder);
  ASSERT_TRUE(layer.filename().string().starts_with("layer-")) << layer;
  EXPECT_EQ(manifest_of(layer)["layer"]["steps"].size(), 3u);
  builder.destroy();  // two VMs at a time at most

  Instance a = start_provisioned(steps);
  Instance b = start_provisioned(steps);
  for (Instance* clone : {&a, &b}) {
    EXPECT_FALSE(had_phase(*clone, "provision")) << clone->name() << " ran the steps again";
    EXPECT_TRUE(clone->resumed_warm());
    EXPECT_EQ(image_of(*clone), layer);
    EXPECT_EQ(clone->ssh().check("cat /etc/provisioned").stdout_text, token + "\n");
    EXPECT_EQ(clone->ssh().check("cat /opt/site/index.html").stdout_text, "hello " + token + "\n");
    EXPECT_EQ(clone->ssh().check("/opt/site/bin/serve").stdout_text, "serving\n");
    EXPECT_EQ(clone->ssh().check("hostname").stdout_text, clone->name() + "\n");
  }
  // Each clone's own changes, on disk and in memory, stay its own and out of the layer.
  a.ssh().check("echo mine > /etc/provisioned && hostname changed-by-a && sync");
  EXPECT_EQ(b.ssh().check("cat /etc/provisioned").stdout_text, token + "\n");
  EXPECT_EQ(b.ssh().check("hostname").stdout_text, b.name() + "\n");
  a.destroy();
  Instance later = start_provisioned(steps);
  EXPECT_EQ(later.ssh().check("cat /etc/provisioned").stdout_text, token + "\n");
  EXPECT_EQ(vmfest::detail::check_warm_image(layer), vmfest::detail::WarmStatus::Ready);
  fs::remove_all(site);
}

TEST(Provision, AChangedStepRebuildsAnUnchangedOneDoesNot) {
  const std::string token = fresh_token();
  const fs::path site = make_site(token);
  const ProvisionSteps first = {ProvisionStep::run("echo one > /etc/step-one"),
                                ProvisionStep::upload(site / "index.html", "/etc/" + token)};
  {
    Instance built = start_provisioned(first);
    EXPECT_TRUE(had_phase(built, "layer"));
  }
  {
    Instance reused = start_provisioned(first);
    EXPECT_FALSE(had_phase(reused, "provision"));
  }
  // One step more: only that step runs, on top of the first list's layer.
  ProvisionSteps longer = first;
  longer.push_back(ProvisionStep::run("echo two > /etc/step-two"));
  {
    Instance built = start_provisioned(longer);
    EXPECT_TRUE(had_phase(built, "layer"));
    const nlohmann::json layer = manifest_of(image_of(built))["layer"];
    EXPECT_EQ(layer["steps_inherited"], 2);
    EXPECT_EQ(built.ssh().check("cat /etc/step-one /etc/step-two").stdout_text, "one\ntwo\n");
  }
  // A changed command, or a changed byte of an uploaded file, is a new layer.
  ProvisionSteps changed = first;
  changed[0] = ProvisionStep::run("echo uno > /etc/step-one");
  {
    Instance built = start_provisioned(changed);
    EXPECT_TRUE(had_phase(built, "layer"));
    EXPECT_EQ(built.ssh().check("cat /etc/step-one").stdout_text, "uno\n");
  }
  std::ofstream(site / "index.html", std::ios::app) << "changed\n";
  {
    Instance built = start_provisioned(first);
    EXPECT_TRUE(had_phase(built, "layer")) << "a changed upload did not rebuild the layer";
    EXPECT_EQ(built.ssh().check("tail -n 1 /etc/" + token).stdout_text, "changed\n");
  }
  fs::remove_all(site);
}

TEST(Provision, AFailingStepFailsWithItsOutputAndLeavesNoLayer) {
  const std::string token = fresh_token();
  const ProvisionSteps steps = {
      ProvisionStep::run("echo " + token + " > ok"),
      ProvisionStep::run("echo out-" + token + "; echo err-" + token + " >&2; exit 3")};
  vmfest::InstanceRequest request;
  request.model = vmfest::testing::test_model();
  request.provision = steps;
  Instance instance = Instance::create(request);
  const auto record = vmfest::detail::read_instance_record(instance.directory());
  ASSERT_TRUE(record && !record->layer_build.empty());
  const fs::path layer = record->layer_build;
  try {
    instance.start();
    FAIL() << "a failing step did not fail start()";
  } catch (const vmfest::ProvisionError& error) {
    EXPECT_EQ(error.step_number(), 2);
    EXPECT_EQ(error.exit_status(), 3);
    const std::string message = error.what();
    EXPECT_NE(message.find("step 2 of 2"), std::string::npos) << message;
    EXPECT_NE(message.find("exit status 3"), std::string::npos) << message;
    EXPECT_NE(message.find("out-" + token), std::string::npos) << message;
    EXPECT_NE(message.find("err-" + token), std::string::npos) << message;
  }
  EXPECT_FALSE(fs::exists(layer));
  for (const auto& entry : fs::directory_iterator(layer.parent_path())) {
    EXPECT_FALSE(
        entry.path().filename().string().starts_with(".building-" + layer.filename().string()))
        << entry.path();
  }
  // The lock is free again: the next instance tries (and fails) again rather than wait.
  Instance again = Instance::create(request);
  EXPECT_THROW(again.start(), vmfest::ProvisionError);
}

TEST(Provision, ARebootIsAStep) {
  const std::string token = fresh_token();
  const ProvisionSteps steps = {
      ProvisionStep::run("echo " + token +
                         " > before && sync && "
                         "cat /proc/sys/kernel/random/boot_id > first-boot"),
      ProvisionStep::reboot(),
      ProvisionStep::run("cat /proc/sys/kernel/random/boot_id > second-boot")};
  {
    Instance builder = start_provisioned(steps);
    EXPECT_TRUE(had_phase(builder, "layer"));
  }
  Instance clone = start_provisioned(steps);
  EXPECT_FALSE(had_phase(clone, "provision"));
  EXPECT_EQ(clone.ssh().check("cat before").stdout_text, token + "\n");
  EXPECT_NE(clone.ssh().check("cat first-boot").stdout_text,
            clone.ssh().check("cat second-boot").stdout_text);
  EXPECT_EQ(clone.ssh().check("hostname").stdout_text, clone.name() + "\n");
}

// A child of the test below: three instances of the layer its parent names, one after another;
// prints how many of them built it.
TEST(ProvisionChild, ThreeInstancesOfOneLayer) {
  const char* token = std::getenv("VMFEST_PROVISION_TOKEN");
  if (token == nullptr) GTEST_SKIP() << "run by Provision.FourProcessesBuildOneLayerOnce";
  const ProvisionSteps steps = {
      ProvisionStep::run(std::string("sleep 2; echo ") + token + " > /etc/shared-layer")};
  int built = 0;
  for (int i = 0; i < 3; ++i) {
    Instance instance = start_provisioned(steps);
    if (had_phase(instance, "layer")) ++built;
    EXPECT_EQ(instance.ssh().check("cat /etc/shared-layer").stdout_text, std::string(token) + "\n");
  }
  std::printf("\nbuilt %d\n", built);
}

TEST(Provision, FourProcessesBuildOneLayerOnce) {
  const std::string token = fresh_token();
  const fs::path folder = fs::temp_directory_path() / ("vmfest-provision-" + token);
  fs::create_directories(folder);
  std::vector<std::unique_ptr<vmfest::testing::ChildProcess>> children;
  for (int i = 0; i < 4; ++i) {
    children.push_back(std::make_unique<vmfest::testing::ChildProcess>(
        std::vector<std::string>{"/usr/bin/env", "-u", "GTEST_SHARD_INDEX", "-u",
                                 "GTEST_TOTAL_SHARDS", "VMFEST_PROVISION_TOKEN=" + token,
                                 fs::read_symlink("/proc/self/exe").string(),
                                 "--gtest_filter=ProvisionChild.ThreeInstancesOfOneLayer"},
        folder / fmt::format("child-{}.out", i)));
  }
  int built = 0;
  for (auto& child : children) {
    const int status = child->wait();
    const std::string output = child->output();
    EXPECT_EQ(status, 0) << output;
    const auto at = output.find("\nbuilt ");
    ASSERT_NE(at, std::string::npos) << output;
    built += std::stoi(output.substr(at + 7));
  }
  EXPECT_EQ(built, 1) << "4 processes x 3 instances built the layer " << built << " times";
  if (!HasFailure()) fs::remove_all(folder);
}

// `docker commit` for a VM: what the instance holds at the save, on disk and in memory, is the new
// model's (its clones resume the saved guest), later writes are not, and the instance runs on.
TEST(SaveAsModel, ARunningInstanceBecomesAModelThatClonesLikeAnyOther) {
  const std::string token = fresh_token();
  const std::string model_name = "saved-" + token;
  {
    vmfest::InstanceRequest request;
    request.model = vmfest::testing::test_model();
    Instance source = Instance::create(request);
    source.start();
    source.ssh().check("echo " + token + " > saved-on-disk && echo " + token +
                       " > /proc/sys/kernel/domainname");
    const vmfest::Model model = source.save_as_model(model_name);
    EXPECT_EQ(model.name, model_name);
    EXPECT_EQ(source.state(), vmfest::InstanceState::Running);
    EXPECT_EQ(source.ssh().check("cat saved-on-disk").stdout_text, token + "\n");
    EXPECT_EQ(source.ssh().check("hostname").stdout_text, source.name() + "\n");
    source.ssh().check("echo later > after-the-save");
    EXPECT_THROW(source.save_as_model(model_name), vmfest::ModelError);
    EXPECT_FALSE(fs::exists(source.directory() / "model-bundle"));
  }
  {
    vmfest::InstanceRequest request;
    request.model = model_name;
    Instance clone = Instance::create(request);
    clone.start();
    EXPECT_TRUE(clone.resumed_warm()) << "the saved guest's memory was not its warm image";
    EXPECT_FALSE(had_phase(clone, "warm image")) << "the new model's warm image was rebuilt";
    EXPECT_EQ(clone.ssh().check("cat /proc/sys/kernel/domainname").stdout_text, token + "\n");
    EXPECT_EQ(clone.ssh().check("cat saved-on-disk").stdout_text, token + "\n");
    EXPECT_NE(clone.ssh().run("test -e after-the-save").exit_status, 0);
    EXPECT_EQ(clone.ssh().check("hostname").stdout_text, clone.name() + "\n");
  }
  vmfest::ModelRegistry().remove(model_name);
}

// A saved model's warm image holds the guest's memory in its state, where a layer build maps a
// copy of the memory file: provisioning steps on it work all the same, and build a layer that the
// next instance with these steps resumes.
TEST(SaveAsModel, ProvisioningStepsRunOnASavedModel) {
  const std::string token = fresh_token();
  const std::string model_name = "saved-" + token;
  {
    vmfest::InstanceRequest request;
    request.model = vmfest::testing::test_model();
    Instance source = Instance::create(request);
    source.start();
    source.ssh().check("echo " + token + " > saved-on-disk");
    source.save_as_model(model_name);
  }
  vmfest::InstanceRequest request;
  request.model = model_name;
  request.provision = {ProvisionStep::run("echo " + token + " > provisioned")};
  {
    Instance first = Instance::create(request);
    ASSERT_NO_THROW(first.start());
    EXPECT_EQ(first.ssh().check("cat saved-on-disk provisioned").stdout_text,
              token + "\n" + token + "\n");
    EXPECT_TRUE(first.resumed_warm()) << "the saved model's image was not resumed";
  }
  {
    Instance second = Instance::create(request);
    second.start();
    EXPECT_TRUE(second.resumed_warm());
    EXPECT_FALSE(had_phase(second, "provision")) << "the layer was not saved";
    EXPECT_EQ(second.ssh().check("cat provisioned").stdout_text, token + "\n");
  }
  vmfest::ModelRegistry().remove(model_name);
}

// A save that fails, whose guest then cannot run on either (here its host key is gone, so it
// cannot have its identity back), fails with the save's own error, kept as the cause, and says
// what became of the instance. The save fails because the model's folder is taken by a file.
TEST(SaveAsModel, AFailedSaveKeepsItsCauseWhenTheGuestCannotRunOn) {
  const std::string model_name = "saved-" + fresh_token();
  const fs::path taken = vmfest::Home::from_environment().models() / model_name;
  std::ofstream(taken) << "not a model\n";
  vmfest::InstanceRequest request;
  request.model = vmfest::testing::test_model();
  Instance source = Instance::create(request);
  source.start();
  fs::remove(source.directory() / vmfest::detail::kHostKeyDropbear);
  try {
    source.save_as_model(model_name);
    ADD_FAILURE() << "the save did not fail";
  } catch (const vmfest::ModelError& error) {
    const std::string message = error.what();
    EXPECT_NE(
        message.find("cannot save instance '" + source.name() + "' as model '" + model_name + "'"),
        std::string::npos)
        << message;
    EXPECT_NE(message.find(vmfest::detail::kHostKeyDropbear), std::string::npos) << message;
    EXPECT_NE(message.find("vmfest destroy " + source.name()), std::string::npos) << message;
    try {
      std::rethrow_if_nested(error);
      ADD_FAILURE() << "the save's own error is not kept as the cause";
    } catch (const std::exception& cause) {
      EXPECT_NE(message.find(cause.what()), std::string::npos) << message;
      EXPECT_NE(std::string(cause.what()).find(model_name), std::string::npos) << cause.what();
    }
  } catch (const std::exception& error) {
    ADD_FAILURE() << "not a ModelError: " << error.what();
  }
  fs::remove(taken);
}

}  // namespace
