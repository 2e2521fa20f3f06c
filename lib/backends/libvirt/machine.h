#pragma once
// A libvirt domain as a vmfest Machine: its disk and seed volumes, its launch (a cold boot or the
// host's warm image), its lifecycle, its console and its agent channel (machine.cpp), and what it
// saves: warm images, and the disk and memory of an instance saved as a model (machine_warm.cpp).
// See libvirt_backend.cpp for what the backend guarantees.

#include <chrono>
#include <filesystem>
#include <functional>
#include <future>
#include <memory>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "agent_channel.h"
#include "console_log.h"
#include "domain_xml.h"
#include "hosts.h"
#include "leases.h"
#include "libvirt_api.h"
#include "naming.h"
#include "storage.h"
#include "vmfest/internal/driver.h"
#include "warm.h"

namespace vmfest::detail::libvirt {

std::unique_ptr<Machine> make_machine(const MachineConfig& config, const nlohmann::json& saved);

// TCG's translation cache per VM in MiB.
int tb_size_mib();

// The kernel a host's KVM is tested with for `model`.
std::filesystem::path probe_kernel(const Model& model);

inline constexpr const char* kConsoleLog = "serial.log";

class LibvirtMachine final : public Machine {
 public:
  LibvirtMachine(MachineConfig config, const nlohmann::json& saved);

  void create_disk() override;

  // The VM runs on the libvirt host, not as our child: it takes room under that host's cap.
  void launch(const VmSlot* /*slot*/) override;

  DomainSpec domain_spec();

  // Starts the domain through `start` (a create or a restore of `spec`), with another forward
  // port should QEMU find one taken. Throws, with libvirt's reason, when it does not start.
  Domain start_with_a_free_port(DomainSpec& spec, const std::function<virDomainPtr()>& start);

  // Restores the warm image as this instance's domain, running at once: its agent is guarded from
  // the save on, so it waits for this process to take the channel (a few seconds of grace), and a
  // process killed at any moment from here leaves a guest that powers itself off.
  void resume_warm_image(DomainSpec& spec);

  void expect_ok(const std::string& reply, const char* request) const;

  void pause() override { act("pause", virDomainSuspend); }
  void resume() override { act("resume", virDomainResume); }

  void power_down(std::chrono::milliseconds grace) override;

  void kill() noexcept override;

  InstanceState state() override;

  void remove() override;

  std::string agent_exchange(const std::string& request,
                             std::chrono::milliseconds timeout) override;

  nlohmann::json save_warm_image(const std::filesystem::path& image_directory) override;

  // The domain is paused (or gone): its disk, flattened, through a copy on the host (disk_copy.h).
  void export_disk(const std::filesystem::path& destination) override;

  // libvirt saves a domain only by ending it: the paused domain is saved as the image's state, and
  // restored from that very state as this instance again, paused, ready to resume. The image's base
  // is a copy of the disk at the save, as for any warm image of this backend (warm.h), so the new
  // model's clones need nothing of the model's own upload.
  nlohmann::json save_warm_image_of(const Model& model,
                                    const std::filesystem::path& image_directory) override;

  [[nodiscard]] bool resumed_warm() const override { return resumed_warm_; }

  [[nodiscard]] ssh::Endpoint ssh_endpoint() const override;
  [[nodiscard]] std::filesystem::path console_log() const override {
    return config_.directory / kConsoleLog;
  }
  [[nodiscard]] std::string accelerator() const override;
  [[nodiscard]] nlohmann::json saved_state() const override;

  void detach() noexcept override;

 private:
  [[nodiscard]] std::string disk_volume() const { return domain_ + kDiskSuffix; }
  [[nodiscard]] std::string seed_volume() const { return domain_ + kSeedSuffix; }

  // What a warm image's manifest records of how it was made.
  nlohmann::json warm_image_facts();

  // Sends the paused guest's agent `request` ("guard on", "guard off"), the guest running for just
  // that exchange: paused again also when it fails.
  void tell_paused_agent(virDomainPtr domain, const char* request);

  // Runs this instance's domain again from the state it was saved as (libvirt restores a save
  // image as the very domain it saved), and pauses it, ready to resume. Restored running, as a
  // clone is: its agent, guarded since before the save, powers it off should this process die
  // before it holds the agent's channel, which holds the domain's life from then on.
  void restore_from(const WarmVolumes& volumes);

  static std::string host_name();

  virConnectPtr connection();

  const StoragePool& storage();

  // Before anything that ends the domain. When a domain is freed while a console stream on it
  // closes, libvirtd 9 takes the domain's console-table lock and the stream's lock in opposite
  // orders (virChrdevFree against the stream's close callback): a narrow race that can deadlock
  // its event loop, and so every client. A stream closed first is out of that table.
  void close_console() noexcept { console_.reset(); }

  std::optional<Domain> find() { return find_domain(connection(), domain_, host_.uri); }

  bool find_or_null() noexcept;

  InstanceState state_of(virDomainPtr domain);

  void act(const char* what, int (*call)(virDomainPtr));

  MachineConfig config_;
  HostUri host_;
  std::string domain_;
  std::string domain_type_ = "qemu";
  bool outlives_owner_ = false;
  bool started_here_ = false;   // this connection started the domain (and, owned, it dies with it)
  bool resumed_warm_ = false;   // the last launch resumed the warm image
  bool warm_restored_ = false;  // a launch resumed it already: later ones boot the disk
  bool image_gone_ = false;     // the warm image's volumes are not on its host any more
  int port_ = 0;
  Connection connection_;
  std::optional<StoragePool> pool_;  // after connection_: it uses it
  std::optional<Lease> lease_;       // after pool_: it uses it; held while this process owns it
  std::unique_ptr<ConsoleLog> console_;
  std::unique_ptr<AgentChannel> agent_;                 // after connection_: its stream is of it
  std::future<std::unique_ptr<StateCopy>> state_copy_;  // last: it uses pool_
};

}  // namespace vmfest::detail::libvirt
