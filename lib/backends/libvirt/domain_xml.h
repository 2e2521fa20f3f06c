// The libvirt domain an instance runs as: the same virtual hardware as the QEMU backend's VMs
// (virtio disk and seed, a user-mode network card with the SSH forward, a serial console).
#pragma once

#include <string>

namespace vmfest::detail::libvirt {

struct DomainSpec {
  std::string name;
  std::string domain_type = "qemu";  // "qemu" (TCG) or "kvm"
  std::string emulator;              // the QEMU binary on the host; empty: libvirt's choice
  int memory_mib = 256;
  int cpus = 1;
  int tb_size_mib = 0;  // TCG's translation cache; 0: QEMU's default
  std::string pool;
  std::string disk_volume;  // qcow2
  std::string seed_volume;  // raw NoCloud ISO, read-only
  // Kernel boot (paths on the libvirt host, of volumes in the pool); empty kernel: boot the disk.
  std::string kernel;
  std::string initrd;
  std::string cmdline;
  int ssh_forward_port = 0;  // on the libvirt host's 127.0.0.1
  int guest_ssh_port = 22;
  // Tags for `vmfest reap` and people reading `virsh dumpxml`.
  std::string vmfest_home;
  std::string instance_name;
  std::string owner;  // "<host>:<pid>" of the process that made it
  std::string uri;    // the VMFEST_LIBVIRT_URI entry it was made through (a host's load)
};

std::string domain_xml(const DomainSpec& spec);
// The target of the instance's disk in it.
inline constexpr const char* kDiskTarget = "vda";

// The <emulator> element for $VMFEST_LIBVIRT_EMULATOR (the QEMU binary the hosts run, by its path
// there), or "" when unset: libvirt's default for the domain type.
std::string emulator_setting();
std::string emulator_xml(const std::string& emulator);

// The XML of a domain saved by libvirt (`saved_xml`, of domain `saved_name`) made the XML of the
// clone `spec` that restores its image: the clone's name (and so its volumes, which carry it), SSH
// forward port and metadata, and a UUID of its own. BackendError when it is not a vmfest domain.
std::string clone_domain_xml(const std::string& saved_xml, const std::string& saved_name,
                             const DomainSpec& spec);

// The <uri> of vmfest's metadata in the XML of a domain's metadata element ("" if none).
std::string uri_in_metadata(const std::string& metadata_xml);

// The namespace of vmfest's <metadata> element.
inline constexpr const char* kMetadataNamespace = "https://vmfest.dev/libvirt/instance/1";

}  // namespace vmfest::detail::libvirt
