#include "domain_xml.h"

#include <cstdlib>

#include <fmt/format.h>

#include "agent_channel.h"
#include "libvirt_api.h"
#include "vmfest/error.h"

namespace vmfest::detail::libvirt {

namespace {

std::string os_xml(const DomainSpec& spec) {
  std::string xml = "<os><type arch='x86_64' machine='pc'>hvm</type>";
  if (spec.kernel.empty()) {
    xml += "<boot dev='hd'/>";
  } else {
    xml += fmt::format("<kernel>{}</kernel>", xml_escape(spec.kernel));
    if (!spec.initrd.empty()) xml += fmt::format("<initrd>{}</initrd>", xml_escape(spec.initrd));
    xml += fmt::format("<cmdline>{}</cmdline>", xml_escape(spec.cmdline));
  }
  return xml + "</os>";
}

std::string volume_disk(const std::string& pool, const std::string& volume,
                        const std::string& format, const std::string& target, bool read_only) {
  return fmt::format(
      "<disk type='volume' device='disk'><driver name='qemu' type='{}'/>"
      "<source pool='{}' volume='{}'/><target dev='{}' bus='virtio'/>{}</disk>",
      format, xml_escape(pool), xml_escape(volume), target, read_only ? "<readonly/>" : "");
}

std::string metadata_xml(const DomainSpec& spec) {
  return fmt::format(
      "<metadata><vmfest:instance xmlns:vmfest='{}'><home>{}</home><name>{}</name>"
      "<owner>{}</owner><uri>{}</uri></vmfest:instance></metadata>",
      kMetadataNamespace, xml_escape(spec.vmfest_home), xml_escape(spec.instance_name),
      xml_escape(spec.owner), xml_escape(spec.uri));
}

void replace_all(std::string& text, const std::string& from, const std::string& to) {
  for (auto at = text.find(from); at != std::string::npos; at = text.find(from, at + to.size())) {
    text.replace(at, from.size(), to);
  }
}

// The part of `xml` from `begin` through `end`, replaced by `with`; false when there is none.
bool replace_between(std::string& xml, const std::string& begin, const std::string& end,
                     const std::string& with) {
  const auto from = xml.find(begin);
  const auto to = from == std::string::npos ? from : xml.find(end, from + begin.size());
  if (to == std::string::npos) return false;
  xml.replace(from, to + end.size() - from, with);
  return true;
}

}  // namespace

std::string domain_xml(const DomainSpec& spec) {
  // libvirt 9 has no XML for a user-mode network with a host forward: QEMU's own options, on a
  // PCI slot of their own (left to QEMU, the card takes the disk's).
  const std::string netdev = fmt::format("user,id=vmfestnet,hostfwd=tcp:127.0.0.1:{}-:{}",
                                         spec.ssh_forward_port, spec.guest_ssh_port);
  return fmt::format(
      "<domain type='{type}' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>"
      "<name>{name}</name>"
      "{metadata}"
      "<memory unit='MiB'>{memory}</memory><vcpu>{cpus}</vcpu>{os}"
      "<features><acpi/>{tcg}</features><clock offset='utc'/>"
      "<on_poweroff>destroy</on_poweroff><on_reboot>restart</on_reboot>"
      "<on_crash>destroy</on_crash>"
      "<devices>{emulator}{disk}{seed}"
      "<serial type='pty'><target port='0'/></serial>"
      "<console type='pty'><target type='serial' port='0'/></console>"
      "<rng model='virtio'><backend model='random'>/dev/urandom</backend></rng>"
      "<channel type='unix'><source mode='bind'/><target type='virtio' name='{agent}'/></channel>"
      "<memballoon model='none'/></devices>"
      "<qemu:commandline><qemu:arg value='-netdev'/><qemu:arg value='{netdev}'/>"
      "<qemu:arg value='-device'/><qemu:arg value='virtio-net-pci,netdev=vmfestnet,addr=0x10'/>"
      "</qemu:commandline></domain>",
      fmt::arg("type", spec.domain_type), fmt::arg("name", xml_escape(spec.name)),
      fmt::arg("tcg",
               spec.domain_type == "qemu" && spec.tb_size_mib > 0
                   ? fmt::format("<tcg><tb-cache unit='MiB'>{}</tb-cache></tcg>", spec.tb_size_mib)
                   : ""),
      fmt::arg("metadata", metadata_xml(spec)), fmt::arg("agent", kAgentChannel),
      fmt::arg("memory", spec.memory_mib), fmt::arg("cpus", spec.cpus),
      fmt::arg("os", os_xml(spec)), fmt::arg("emulator", emulator_xml(spec.emulator)),
      fmt::arg("disk", volume_disk(spec.pool, spec.disk_volume, "qcow2", kDiskTarget, false)),
      fmt::arg("seed", volume_disk(spec.pool, spec.seed_volume, "raw", "vdb", true)),
      fmt::arg("netdev", xml_escape(netdev)));
}

std::string emulator_setting() {
  const char* emulator = std::getenv("VMFEST_LIBVIRT_EMULATOR");
  return emulator != nullptr ? emulator : "";
}

std::string emulator_xml(const std::string& emulator) {
  return emulator.empty() ? "" : fmt::format("<emulator>{}</emulator>", xml_escape(emulator));
}

std::string clone_domain_xml(const std::string& saved_xml, const std::string& saved_name,
                             const DomainSpec& spec) {
  std::string xml = saved_xml;
  // Its volumes' names are the domain's name with a suffix, and so are libvirt's channel paths.
  replace_all(xml, saved_name, spec.name);
  replace_between(xml, "<uuid>", "</uuid>", "");  // libvirt gives the clone one of its own
  const std::string forward = "hostfwd=tcp:127.0.0.1:";
  const bool forwarded =
      replace_between(xml, forward, "-:", fmt::format("{}{}-:", forward, spec.ssh_forward_port));
  if (!forwarded || !replace_between(xml, "<metadata>", "</metadata>", metadata_xml(spec))) {
    throw BackendError(fmt::format(
        "the saved domain '{}' is not one vmfest made (it has no SSH forward or no metadata)",
        saved_name));
  }
  return xml;
}

std::string uri_in_metadata(const std::string& metadata_xml) {
  const auto begin = metadata_xml.find("<uri>");
  const auto end = metadata_xml.find("</uri>");
  if (begin == std::string::npos || end == std::string::npos || end < begin) return "";
  return xml_unescape(metadata_xml.substr(begin + 5, end - begin - 5));
}

}  // namespace vmfest::detail::libvirt
