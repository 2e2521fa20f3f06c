// The libvirt machine's saves (machine.h): a model's warm image made from a booted instance and
// resumed by its clones, and an instance saved as a model (its disk flattened, its memory).

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "disk_copy.h"
#include "machine.h"
#include "placement.h"
#include "vmfest/error.h"
#include "vmfest/internal/base.h"

namespace vmfest::detail::libvirt {
namespace fs = std::filesystem;

namespace {

constexpr std::chrono::seconds kAgentTimeout{10};

}  // namespace

void LibvirtMachine::resume_warm_image(DomainSpec& spec) {
  Domain domain;
  // A full host is no fault of the image: only what fails inside the room it got is.
  start_within_cap(connection(), storage(), host_, [&] {
    try {
      const WarmVolumes image = read_warm_volumes(config_.warm_image);
      // Made by create_disk, or now when another process created the instance; removed once
      // the domain runs, or its restore failed.
      const std::unique_ptr<StateCopy> state =
          state_copy_.valid()
              ? state_copy_.get()
              : std::make_unique<StateCopy>(storage(), image, domain_ + kStateSuffix);
      domain = start_with_a_free_port(spec, [&] {
        return restore_clone(connection(), storage(), image, *state, spec).release();
      });
      agent_ = std::make_unique<AgentChannel>(connection(), domain.get(), host_.uri,
                                              config_.instance_name);
      // A detached clone must outlive this process and so its channel.
      if (outlives_owner_) expect_ok(agent_exchange("guard off\n", kAgentTimeout), "guard off");
    } catch (const std::exception& error) {
      kill();
      throw WarmResumeError(
          fmt::format("instance '{}': libvirt could not restore warm image {} on {}: {}",
                      config_.instance_name, config_.warm_image.string(), host_.uri, error.what()),
          true);
    }
  });
  console_.reset();
  console_ = std::make_unique<ConsoleLog>(connection(), domain.get(), console_log(), host_.uri);
  started_here_ = true;
  resumed_warm_ = true;
  warm_restored_ = true;
  spdlog::info(
      "vmfest: instance '{}' resumed warm as libvirt domain '{}' on {} ({}, memory streamed "
      "from the saved state)",
      config_.instance_name, domain_, host_.uri, accelerator());
}

nlohmann::json LibvirtMachine::save_warm_image(const fs::path& image_directory) {
  auto domain = find();
  if (!domain) {
    throw StateError(fmt::format("instance '{}': libvirt domain '{}' on {} is not running",
                                 config_.instance_name, domain_, host_.uri));
  }
  // Every clone's agent is guarded from its first instant on: each dies with its owner.
  expect_ok(agent_exchange("guard on\n", kAgentTimeout), "guard on");
  const WarmVolumes volumes =
      plan_warm_volumes(image_directory, Home(config_.home).id(), host_.uri, domain_);
  close_console();
  try {
    save_domain(domain->get(), storage(), volumes, disk_volume());
  } catch (const std::exception&) {
    if (outlives_owner_ && find_or_null()) agent_exchange("guard off\n", kAgentTimeout);
    throw;
  }
  agent_.reset();
  spdlog::info(
      "vmfest: instance '{}': warm image saved on {} as volumes '{}' and '{}'; the guest's "
      "memory is streamed from the saved state (libvirt's save images hold it)",
      config_.instance_name, host_.uri, volumes.state, volumes.base);
  return warm_image_facts();
}

void LibvirtMachine::export_disk(const fs::path& destination) {
  const std::string copy = domain_ + kExportSuffix;
  try {
    auto domain = find();
    export_volume(storage(), domain ? domain->get() : nullptr, disk_volume(), copy, destination);
  } catch (const Error& error) {
    throw BackendError(fmt::format(
        "instance '{}': could not export its disk (volume '{}', through volume '{}') from {}: "
        "{}; check the free space of the pool on that host (virsh pool-info) and of {}",
        config_.instance_name, disk_volume(), copy, host_.uri, error.what(),
        destination.parent_path().string()));
  }
}

nlohmann::json LibvirtMachine::save_warm_image_of(const Model& model,
                                                  const fs::path& image_directory) {
  auto domain = find();
  if (!domain) {
    throw StateError(fmt::format("instance '{}': libvirt domain '{}' on {} is not running",
                                 config_.instance_name, domain_, host_.uri));
  }
  // Every clone's agent is guarded from its first instant on: each dies with its owner. The guest
  // runs for that one exchange; what it writes meanwhile is in the base, copied after the save.
  tell_paused_agent(domain->get(), "guard on");
  const StoragePool& pool = storage();
  const WarmVolumes volumes =
      plan_warm_volumes(image_directory, Home(config_.home).id(), host_.uri, domain_);
  close_console();
  try {
    save_state(domain->get(), pool, volumes);
  } catch (const Error&) {
    if (!find_or_null()) {  // saved, or ended in the attempt: run on from the state if it can
      agent_.reset();
      restore_from(volumes);
      remove_warm_volumes(pool, volumes);
      throw;
    }
    remove_warm_volumes(pool, volumes);
    try {
      console_ =
          std::make_unique<ConsoleLog>(connection(), domain->get(), console_log(), host_.uri);
      if (outlives_owner_) tell_paused_agent(domain->get(), "guard off");
    } catch (const std::exception& also) {
      spdlog::warn("vmfest: instance '{}' after its failed save: {}", config_.instance_name,
                   also.what());
    }
    throw;
  }
  agent_.reset();
  // Before the restore: the restored domain's QEMU takes the disk's lock again.
  std::exception_ptr base_failed;
  try {
    pool.create_copy(volumes.base, disk_volume());
  } catch (const std::exception&) {
    base_failed = std::current_exception();
  }
  restore_from(volumes);
  if (base_failed) {
    remove_warm_volumes(pool, volumes);
    std::rethrow_exception(base_failed);
  }
  spdlog::info(
      "vmfest: instance '{}': its memory is saved on {} as the warm image of model '{}' "
      "(volumes '{}' and '{}'), streamed to its clones",
      config_.instance_name, host_.uri, model.name, volumes.state, volumes.base);
  return warm_image_facts();
}

nlohmann::json LibvirtMachine::warm_image_facts() {
  unsigned long version = 0;
  virConnectGetVersion(connection(), &version);
  return {{"qemu_version", version},
          {"machine_type", "pc"},
          {"accelerator", accelerator()},
          {"memory", "streamed"},
          {"uri", host_.uri}};
}

void LibvirtMachine::tell_paused_agent(virDomainPtr domain, const char* request) {
  if (virDomainResume(domain) < 0) {
    fail(fmt::format("libvirt: could not resume domain '{}' of instance '{}' to tell its agent "
                     "'{}'",
                     domain_, config_.instance_name, request),
         host_.uri);
  }
  std::string reply;
  try {
    reply = agent_exchange(std::string(request) + "\n", kAgentTimeout);
  } catch (const std::exception&) {
    virDomainSuspend(domain);
    throw;
  }
  if (virDomainSuspend(domain) < 0) {
    fail(fmt::format("libvirt: could not pause domain '{}' of instance '{}' again", domain_,
                     config_.instance_name),
         host_.uri);
  }
  expect_ok(reply, request);
}

void LibvirtMachine::restore_from(const WarmVolumes& volumes) {
  const StoragePool& pool = storage();
  try {
    Domain domain;
    start_within_cap(connection(), pool, host_,
                     [&] { domain = restore_saved(connection(), pool, volumes); });
    agent_ = std::make_unique<AgentChannel>(connection(), domain.get(), host_.uri,
                                            config_.instance_name);
    started_here_ = true;  // its life is this process's channel now
    console_ = std::make_unique<ConsoleLog>(connection(), domain.get(), console_log(), host_.uri);
    if (outlives_owner_) expect_ok(agent_exchange("guard off\n", kAgentTimeout), "guard off");
    if (virDomainSuspend(domain.get()) < 0) {
      fail(fmt::format("libvirt: could not pause domain '{}'", domain_), host_.uri);
    }
  } catch (const Error& error) {
    kill();
    remove_warm_volumes(pool, volumes);
    throw BackendError(fmt::format(
        "instance '{}': libvirt saved its domain '{}' on {} but could not run it again: {}; "
        "`vmfest destroy {}` removes the instance",
        config_.instance_name, domain_, host_.uri, error.what(), config_.instance_name));
  }
}

}  // namespace vmfest::detail::libvirt
