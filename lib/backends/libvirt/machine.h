#pragma once
// A libvirt domain as a vmfest Machine (machine.cpp), and the settings a warm image's key shares
// with its launch.

#include <filesystem>
#include <memory>

#include <nlohmann/json.hpp>

#include "vmfest/internal/driver.h"

namespace vmfest::detail::libvirt {

std::unique_ptr<Machine> make_machine(const MachineConfig& config, const nlohmann::json& saved);

// TCG's translation cache per VM in MiB.
int tb_size_mib();

// The kernel a host's KVM is tested with for `model`.
std::filesystem::path probe_kernel(const Model& model);

}  // namespace vmfest::detail::libvirt
