#include "host_checks.h"

#include <grp.h>
#include <unistd.h>

#include <algorithm>
#include <string>

#include <fmt/format.h>

#include "host_qemu.h"
#include "qemu_machine.h"
#include "vmfest/error.h"

namespace vmfest::detail::qemu {
namespace fs = std::filesystem;
using Verdict = HostCheck::Verdict;

namespace {

constexpr const char* kKvmDevice = "/dev/kvm";

HostCheck qemu_check() {
  const fs::path& binary = qemu_binary();  // BackendError naming the package when missing
  qemu_img();
  return {"qemu", Verdict::Ok,
          fmt::format("{} at {} (machine {})", qemu_version(), binary.string(), machine_type()),
          ""};
}

HostCheck warm_memory_check() {
  const bool forced = std::getenv("VMFEST_WARM_MEMORY") != nullptr;
  const WarmMemory memory = warm_memory();
  const std::string source = forced ? "VMFEST_WARM_MEMORY says so" : "probed";
  if (memory == WarmMemory::Mapped) {
    return {"warm memory", Verdict::Ok,
            fmt::format("mapped ({}): warm clones map the saved guest memory from a file, "
                        "copy-on-write, and share its unchanged pages",
                        source),
            ""};
  }
  return {"warm memory", Verdict::Warn,
          fmt::format("streamed ({}): each warm clone loads the saved guest memory whole", source),
          forced ? "unset VMFEST_WARM_MEMORY to use what this QEMU can do"
                 : "a QEMU with the migration capability x-ignore-shared (QEMU 4.0 or later) "
                   "maps it instead"};
}

HostCheck accelerator_check(const fs::path& home) {
  const AcceleratorChoice choice = accelerator_choice(home, {});
  if (choice.name == "kvm") return {"accelerator", Verdict::Ok, "kvm: " + choice.reason, ""};
  std::string fix;
  if (choice.forced) {
    fix = "unset VMFEST_ACCEL to use KVM where it works";
  } else if (!fs::exists(kKvmDevice)) {
    fix =
        "enable virtualization (VT-x/AMD-V) in the firmware, or nested virtualization for a VM, "
        "and load kvm_intel or kvm_amd";
  } else if (::access(kKvmDevice, R_OK | W_OK) != 0) {
    fix = "add yourself to group kvm (see the kvm access line)";
  } else {
    fix = fmt::format("this host's KVM cannot boot a Linux guest; remove {} once it is fixed",
                      accelerator_cache_directory().string());
  }
  return {"accelerator", Verdict::Warn, "tcg (software emulation, slower): " + choice.reason, fix};
}

bool in_group(gid_t group) {
  if (::getegid() == group) return true;
  const int count = ::getgroups(0, nullptr);
  std::vector<gid_t> groups(static_cast<std::size_t>(std::max(count, 0)));
  if (count > 0 && ::getgroups(count, groups.data()) < 0) return false;
  return std::find(groups.begin(), groups.end(), group) != groups.end();
}

HostCheck kvm_access_check() {
  if (::geteuid() == 0) {
    return {"kvm access", Verdict::Ok, "running as root (vmfest does not need it)", ""};
  }
  if (!fs::exists(kKvmDevice)) {
    return {"kvm access", Verdict::Ok, fmt::format("no {} on this host", kKvmDevice), ""};
  }
  const group* kvm = ::getgrnam("kvm");
  if (kvm != nullptr && in_group(kvm->gr_gid)) {
    return {"kvm access", Verdict::Ok, "you are in group kvm", ""};
  }
  return {"kvm access", Verdict::Warn,
          fmt::format("{} exists but you are not in group kvm", kKvmDevice),
          "sudo usermod -aG kvm $USER, then log in again"};
}

}  // namespace

std::vector<HostCheck> qemu_host_checks(const fs::path& home) {
  std::vector<HostCheck> checks;
  checks.push_back(
      run_host_check("qemu",
                     "sudo apt-get install qemu-system-x86 qemu-utils (Debian), or set "
                     "VMFEST_QEMU to a qemu-system-x86_64",
                     qemu_check));
  if (checks.back().verdict != Verdict::Fail) {
    checks.push_back(run_host_check("warm memory",
                                    "set VMFEST_WARM_MEMORY to mapped or streamed, or unset it",
                                    warm_memory_check));
    checks.push_back(run_host_check("accelerator", "set VMFEST_ACCEL to kvm or tcg, or unset it",
                                    [&home] { return accelerator_check(home); }));
  }
  checks.push_back(kvm_access_check());
  return checks;
}

}  // namespace vmfest::detail::qemu
