#include "instance_record.h"

#include "files.h"

namespace vmfest::detail {
namespace fs = std::filesystem;

std::optional<InstanceRecord> read_instance_record(const fs::path& directory) {
  const fs::path file = directory / kRecordFile;
  if (!fs::exists(file)) return std::nullopt;
  auto json = nlohmann::json::parse(read_text_if_exists(file), nullptr, false);
  if (json.is_discarded() || !json.is_object()) return std::nullopt;
  InstanceRecord record;
  record.name = json.value("name", "");
  record.model = json.value("model", "");
  record.backend = json.value("backend", "qemu");
  const auto profile = json.value("profile", nlohmann::json::object());
  record.profile = Profile{profile.value("name", "custom"), profile.value("memory_mib", 256),
                           profile.value("cpus", 1)};
  record.permanent = json.value("permanent", false);
  record.detached = json.value("detached", false);
  record.started = json.value("started", false);
  record.owner_pid = json.value("owner_pid", 0);
  record.warm_image = json.value("warm_image", "");
  record.machine = json.value("machine", nlohmann::json::object());
  return record;
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
                         {"machine", record.machine}};
  write_text_atomically(directory / kRecordFile, json.dump(2));
}

}  // namespace vmfest::detail
