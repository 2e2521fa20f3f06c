#include "instance_record.h"

#include <fmt/format.h>

#include "../base/files.h"
#include "../base/json_file.h"
#include "vmfest/error.h"

namespace vmfest::detail {
namespace fs = std::filesystem;

namespace {

nlohmann::json nic_json(const PrivateNic& nic) {
  nlohmann::json hosts = nlohmann::json::array();
  for (const SegmentHost& host : nic.hosts) {
    hosts.push_back({{"address", host.address}, {"names", host.names}});
  }
  return {{"hub_socket", nic.hub_socket.string()},
          {"port_socket", nic.port_socket.string()},
          {"mac", nic.mac},
          {"address", nic.address},
          {"prefix_length", nic.prefix_length},
          {"hosts", hosts}};
}

PrivateNic nic_from_json(const nlohmann::json& json) {
  PrivateNic nic;
  nic.hub_socket = json.at("hub_socket").get<std::string>();
  nic.port_socket = json.at("port_socket").get<std::string>();
  nic.mac = json.at("mac").get<std::string>();
  nic.address = json.value("address", "");
  nic.prefix_length = json.value("prefix_length", 24);
  for (const auto& host : json.value("hosts", nlohmann::json::array())) {
    nic.hosts.push_back(
        {host.at("address").get<std::string>(), host.at("names").get<std::vector<std::string>>()});
  }
  return nic;
}

}  // namespace

InstanceRecordError invalid_record(const fs::path& directory, std::string_view why) {
  const std::string name = directory.filename().string();
  return InstanceRecordError(
      fmt::format("instance '{}': {} is not a valid instance record ({}); `vmfest destroy --force "
                  "{}` removes the instance's files",
                  name, (directory / kRecordFile).string(), why, name));
}

std::optional<InstanceRecord> read_instance_record(const fs::path& directory) {
  const fs::path file = directory / kRecordFile;
  if (!fs::exists(file)) return std::nullopt;
  return read_json_file(
      file,
      [](const nlohmann::json& json) {
        InstanceRecord record;
        record.name = json.at("name").get<std::string>();
        record.model = json.at("model").get<std::string>();
        record.backend = json.value("backend", "");
        const auto profile = json.value("profile", nlohmann::json::object());
        record.profile = Profile{profile.value("name", "custom"), profile.value("memory_mib", 256),
                                 profile.value("cpus", 1)};
        record.permanent = json.value("permanent", false);
        record.detached = json.value("detached", false);
        record.started = json.value("started", false);
        record.owner_pid = json.value("owner_pid", 0);
        record.warm_image = json.value("warm_image", "");
        record.warm_build = json.value("warm_build", "");
        record.layer_build = json.value("layer_build", "");
        record.first_login_done = json.value("first_login_done", false);
        if (json.contains("private_nic")) record.private_nic = nic_from_json(json["private_nic"]);
        record.machine = json.value("machine", nlohmann::json::object());
        return record;
      },
      [&](std::string_view why) { return invalid_record(directory, why); });
}

void write_instance_record(const fs::path& directory, const InstanceRecord& record) {
  nlohmann::json json = {{"name", record.name},
                         {"model", record.model},
                         {"backend", record.backend},
                         {"profile",
                          {{"name", record.profile.name},
                           {"memory_mib", record.profile.memory_mib},
                           {"cpus", record.profile.cpus}}},
                         {"permanent", record.permanent},
                         {"detached", record.detached},
                         {"started", record.started},
                         {"owner_pid", record.owner_pid},
                         {"warm_image", record.warm_image},
                         {"warm_build", record.warm_build},
                         {"layer_build", record.layer_build},
                         {"first_login_done", record.first_login_done},
                         {"machine", record.machine}};
  if (record.private_nic) json["private_nic"] = nic_json(*record.private_nic);
  write_text_atomically(directory / kRecordFile, json.dump(2));
}

}  // namespace vmfest::detail
