// `vmfest ls`: every instance with its state (asked of the hypervisor), owner and SSH endpoint.
#include <signal.h>

#include <cerrno>
#include <memory>
#include <string>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "vmfest/instance.h"
#include "vmfest_cli.h"
#include "vmfest_cli_table.h"

namespace vmfest::cli {
namespace {

bool reachable_over_ssh(InstanceState state) {
  return state == InstanceState::Running || state == InstanceState::Paused;
}

bool process_exists(int pid) { return ::kill(pid, 0) == 0 || errno == EPERM; }

std::string owner_column(const InstanceInfo& info) {
  if (info.detached) return "detached";
  // The owner lock decides what the reaper takes; a vanished pid is the visible hint.
  if (!process_exists(info.owner_pid))
    return fmt::format("pid {} (gone: vmfest reap)", info.owner_pid);
  return fmt::format("pid {}", info.owner_pid);
}

std::string profile_column(const Profile& profile) {
  return fmt::format("{} ({} MiB, {} CPU{})", profile.name, profile.memory_mib, profile.cpus,
                     profile.cpus == 1 ? "" : "s");
}

void print_table(const std::vector<InstanceInfo>& infos) {
  Table table({"NAME", "MODEL", "STATE", "OWNER", "SSH", "DISK", "PROFILE"});
  for (const InstanceInfo& info : infos) {
    table.add(
        {info.name, info.model, std::string(to_string(info.state)), owner_column(info),
         reachable_over_ssh(info.state) ? fmt::format("{}:{}", info.ssh.host, info.ssh.port) : "-",
         info.permanent ? "permanent" : "clone", profile_column(info.profile)});
  }
  table.print();
}

nlohmann::json to_json(const InstanceInfo& info) {
  nlohmann::json ssh = nullptr;
  if (reachable_over_ssh(info.state)) {
    ssh = {{"host", info.ssh.host}, {"port", info.ssh.port}, {"user", info.ssh.user}};
  }
  return {
      {"name", info.name},
      {"model", info.model},
      {"backend", info.backend},
      {"state", to_string(info.state)},
      {"permanent", info.permanent},
      {"detached", info.detached},
      {"owner_pid", info.detached ? nlohmann::json(nullptr) : nlohmann::json(info.owner_pid)},
      {"ssh", ssh},
      {"profile",
       {{"name", info.profile.name},
        {"memory_mib", info.profile.memory_mib},
        {"cpus", info.profile.cpus}}},
      {"directory", info.directory.string()},
      {"problem", info.problem.empty() ? nlohmann::json(nullptr) : nlohmann::json(info.problem)}};
}

}  // namespace

void add_list_command(CLI::App& app, Command& command) {
  auto json = std::make_shared<bool>(false);
  CLI::App* sub = app.add_subcommand(
      "ls",
      "List instances: state, owner, SSH endpoint, profile. An instance whose hypervisor cannot be "
      "reached is listed as unknown, one whose record cannot be read is left out; each with a "
      "warning on stderr");
  sub->add_flag(
      "--json", *json,
      "a JSON array of {name, model, backend, state, permanent, detached, owner_pid, "
      "ssh: {host, port, user} or null, profile: {name, memory_mib, cpus}, directory, problem: why "
      "the state is unknown, or null}");
  sub->callback([&command, json] {
    command.run = [json] {
      std::vector<InstanceInfo> infos = describe_instances();
      if (*json) {
        nlohmann::json list = nlohmann::json::array();
        for (const InstanceInfo& info : infos) list.push_back(to_json(info));
        fmt::print("{}\n", list.dump(2));
      } else {
        print_table(infos);
      }
      return 0;
    };
  });
}

}  // namespace vmfest::cli
