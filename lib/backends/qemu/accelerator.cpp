#include "accelerator.h"

#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <thread>

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <boost/asio/io_context.hpp>
#include <boost/process/v2/process.hpp>
#include <boost/process/v2/stdio.hpp>
#include <nlohmann/json.hpp>

#include "guest_port_watch.h"
#include "host_qemu.h"
#include "option_value.h"
#include "vmfest/error.h"
#include "vmfest/internal/base.h"

namespace vmfest::detail::qemu {
namespace fs = std::filesystem;
namespace bp = boost::process::v2;
using Clock = std::chrono::steady_clock;

namespace {

constexpr std::string_view kProbeMarker = "VMFEST-PROBE-OK";
// Probe kinds recorded with a decision. A boot sector runs under KVMs that hang 64-bit Linux, so
// its "kvm" is only trusted until a kernel can be tried.
constexpr const char* kKernelProbe = "kernel";
constexpr const char* kBootSectorProbe = "boot-sector";
constexpr const char* kRecorded = "recorded";  // record_decision(): as good as a kernel probe
// Under KVM a Linux kernel reaches its console within a second or two of a cold boot, and a
// resumed warm guest's agent answers at once: a guest silent for this long is not running.
constexpr std::chrono::milliseconds kKvmColdLifeBound{20000};
constexpr std::chrono::milliseconds kKvmWarmLifeBound{10000};
constexpr const char* kKvmQemuLog = "qemu-kvm.log";  // the failed KVM run's log, kept

// A 512-byte boot sector that writes kProbeMarker to COM1 and halts: reaches the marker only if the
// accelerator can run BIOS and guest code at all.
void write_boot_sector(const fs::path& path) {
  std::string image = "\xBA\xF8\x03";  // mov dx, 0x3f8
  for (char c : std::string(kProbeMarker) + "\n") {
    image += "\xB0";  // mov al, c
    image += c;
    image += "\xEE";  // out dx, al
  }
  image += "\xF4\xEB\xFD";  // hlt; jmp back to hlt
  image.resize(510, '\0');
  image += "\x55\xAA";
  std::ofstream(path, std::ios::binary) << image;
}

// QEMU's log without its warnings: under a broken KVM it warns about CPUID features it cannot
// offer, which is not why a guest fails.
std::string qemu_errors(const fs::path& log) {
  std::istringstream lines(read_text_if_exists(log));
  std::string errors;
  for (std::string line; std::getline(lines, line);) {
    if (line.empty() || line.find("warning:") != std::string::npos) continue;
    if (!errors.empty()) errors += "; ";
    errors += line;
  }
  return errors;
}

// What a decision depends on: the QEMU binary (where, replaced or not), the host kernel (which
// implements KVM) and the /dev/kvm device.
std::string host_key(const fs::path& qemu) {
  utsname host{};
  ::uname(&host);
  struct stat kvm {};
  const std::string device = ::stat("/dev/kvm", &kvm) == 0
                                 ? fmt::format("{}:{}", major(kvm.st_rdev), minor(kvm.st_rdev))
                                 : std::string("none");
  return fmt::format("{}|{}|/dev/kvm {}", on_disk_identity(qemu), host.release, device);
}

fs::path decision_file(const fs::path& cache_dir, const std::string& key) {
  return cache_dir / (sha256_text(key).substr(0, 16) + ".json");
}

void write_decision(const fs::path& file, const std::string& key, const AcceleratorChoice& choice,
                    const std::string& probe) {
  write_text_atomically(
      file,
      nlohmann::json{
          {"key", key}, {"name", choice.name}, {"reason", choice.reason}, {"probe", probe}}
          .dump(2));
}

bool readable(const fs::path& path) {
  std::error_code error;
  return fs::is_regular_file(path, error) && ::access(path.c_str(), R_OK) == 0;
}

// Empty when a cold-booted guest shows a sign of life within kKvmColdLifeBound (its console
// gets past the bootloader, or its SSH port speaks), else what it showed instead.
std::string kvm_silence_after_boot(const KvmLaunch& launch) {
  const auto deadline = Clock::now() + kKvmColdLifeBound;
  GuestPortWatch port(launch.ssh_port);
  for (int check = 0; Clock::now() < deadline; ++check) {
    if (console_past_bootloader(read_text_if_exists(launch.console)) || port.guest_spoke()) {
      return {};
    }
    if (check % 10 == 0) {
      // A guest that powered off ran: the core reports that. Only KVM stops one this way.
      if (!launch.running()) return {};
      if (launch.qemu_status() == "internal-error") {
        return "was stopped by a KVM internal error before printing anything past its "
               "bootloader";
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return fmt::format(
      "printed {} on its console within {} s",
      read_text_if_exists(launch.console).empty() ? "nothing" : "nothing past its bootloader",
      kKvmColdLifeBound.count() / 1000);
}

// Empty when the guest agent of a resumed warm guest answers within kKvmWarmLifeBound.
std::string kvm_silence_after_resume(const KvmLaunch& launch) {
  try {
    launch.ping_agent(kKvmWarmLifeBound);
    return {};
  } catch (const BackendError& error) {
    return fmt::format("was resumed from its warm image, but its guest agent did not answer ({})",
                       error.what());
  }
}

}  // namespace

fs::path accelerator_cache_directory() { return host_cache_root() / "accelerator"; }

fs::path find_probe_kernel(const fs::path& registered) {
  if (const char* kernel = std::getenv("VMFEST_PROBE_KERNEL"); kernel != nullptr && *kernel) {
    if (!readable(kernel)) {
      throw InvalidArgument(fmt::format(
          "VMFEST_PROBE_KERNEL={} is not a readable file: point it at a Linux kernel (vmlinuz)",
          kernel));
    }
    return kernel;
  }
  if (!registered.empty() && readable(registered)) return registered;
  for (const fs::path& bundle : default_model_bundles()) {
    if (readable(bundle / "vmlinuz")) return bundle / "vmlinuz";
  }
  utsname host{};
  ::uname(&host);
  if (const fs::path own = fs::path("/boot") / (std::string("vmlinuz-") + host.release);
      readable(own)) {
    return own;
  }
  return {};
}

bool kvm_runs_guest(const fs::path& qemu, const fs::path& work, const fs::path& kernel,
                    std::chrono::milliseconds timeout, std::string& why) {
  fs::create_directories(work);
  const fs::path serial = work / "probe-serial.log";
  fs::remove(serial);
  std::vector<std::string> args = {
      "-accel", "kvm",        "-nodefaults", "-no-user-config",        "-display", "none", "-m",
      "128",    "-no-reboot", "-serial",     "file:" + serial.string()};
  std::string success;
  if (!kernel.empty()) {
    // No root device: a kernel that runs to completion panics with "VFS: Unable to mount root",
    // having set up long mode, memory, interrupts and its console on the way.
    args.insert(args.end(), {"-kernel", kernel.string(), "-append", "console=ttyS0 panic=-1"});
    success = "VFS: ";
  } else {
    const fs::path sector = work / "probe-boot-sector.img";
    write_boot_sector(sector);
    args.insert(args.end(), {"-drive", "file=" + option_value(sector) + ",format=raw,if=ide"});
    success = kProbeMarker;
  }
  const fs::path qemu_log = work / "probe-qemu.log";
  boost::asio::io_context context;
  FILE* log = std::fopen(qemu_log.c_str(), "w");
  bp::process child(context, qemu.string(), args, bp::process_stdio{nullptr, log, log},
                    CloseInheritedFds{});
  if (log != nullptr) std::fclose(log);
  const auto deadline = Clock::now() + timeout;
  bool found = false;
  bool exited = false;
  while (Clock::now() < deadline) {
    if (read_text_if_exists(serial).find(success) != std::string::npos) {
      found = true;
      break;
    }
    if (!is_running(child)) {
      exited = true;
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  kill_and_reap(child);
  if (!found) {
    found = read_text_if_exists(serial).find(success) != std::string::npos;
  }
  if (!found) {
    const std::string what = kernel.empty() ? std::string("a boot sector")
                                            : fmt::format("a Linux kernel ({})", kernel.string());
    const std::string errors = qemu_errors(qemu_log);
    why = exited ? fmt::format("qemu -accel kvm exited while booting {}: {}", what,
                               errors.empty() ? "no error message" : errors)
                 : fmt::format("{} showed no sign of life on its console within {} ms under KVM",
                               what, timeout.count());
  }
  return found;
}

AcceleratorChoice choose_accelerator(const fs::path& qemu, const fs::path& cache_dir,
                                     const fs::path& probe_kernel,
                                     std::chrono::milliseconds probe_timeout) {
  if (const char* forced = std::getenv("VMFEST_ACCEL"); forced != nullptr && *forced != '\0') {
    std::string name = forced;
    if (name != "kvm" && name != "tcg") {
      throw InvalidArgument(fmt::format("VMFEST_ACCEL={} is not valid: use kvm or tcg", name));
    }
    return {name, "VMFEST_ACCEL=" + name, true};
  }
  if (::access("/dev/kvm", R_OK | W_OK) != 0) {
    return {"tcg", "/dev/kvm is missing or not accessible; using TCG (software emulation)"};
  }
  fs::create_directories(cache_dir);
  const std::string key = host_key(qemu);
  const fs::path file = decision_file(cache_dir, key);
  // One probe per host, even with many processes starting at once.
  FileLock lock(cache_dir / (file.stem().string() + ".lock"));
  if (fs::exists(file)) {
    auto cached = nlohmann::json::parse(read_text(file), nullptr, false);
    if (cached.is_object() && cached.value("key", "") == key &&
        (cached.value("probe", "") != kBootSectorProbe || probe_kernel.empty())) {
      return {cached.value("name", "tcg"), fmt::format("{} (decided earlier for this host: {})",
                                                       cached.value("reason", ""), file.string())};
    }
  }
  std::string detail;
  AcceleratorChoice choice;
  const auto begin = Clock::now();
  const fs::path work = cache_dir / ("probe-" + file.stem().string());
  const bool works = kvm_runs_guest(qemu, work, probe_kernel, probe_timeout, detail);
  fs::remove_all(work);
  const double seconds = std::chrono::duration<double>(Clock::now() - begin).count();
  if (works && probe_kernel.empty()) {
    choice = {"kvm",
              "weak probe: a boot sector ran under KVM, but no Linux kernel was found to test it "
              "with (set VMFEST_PROBE_KERNEL to a vmlinuz); a VM that shows no sign of life under "
              "KVM will switch this host to TCG"};
  } else if (works) {
    choice = {"kvm", fmt::format("a Linux kernel ({}) booted under KVM in {:.1f} s",
                                 probe_kernel.string(), seconds)};
  } else {
    choice = {"tcg", "KVM is present but unusable: " + detail +
                         "; using TCG (software emulation, slower). VMFEST_ACCEL=tcg skips "
                         "this probe"};
  }
  write_decision(file, key, choice, probe_kernel.empty() ? kBootSectorProbe : kKernelProbe);
  return choice;
}

void record_decision(const fs::path& qemu, const fs::path& cache_dir,
                     const AcceleratorChoice& choice) {
  fs::create_directories(cache_dir);
  const std::string key = host_key(qemu);
  const fs::path file = decision_file(cache_dir, key);
  FileLock lock(cache_dir / (file.stem().string() + ".lock"));
  write_decision(file, key, choice, kRecorded);
}

bool fall_back_to_tcg_if_silent(const AcceleratorChoice& choice, const KvmLaunch& launch) {
  const std::string silence =
      launch.resumed ? kvm_silence_after_resume(launch) : kvm_silence_after_boot(launch);
  if (silence.empty()) return false;
  launch.kill();
  const fs::path kvm_log = launch.qemu_log.parent_path() / kKvmQemuLog;
  std::error_code ignored;
  fs::rename(launch.qemu_log, kvm_log, ignored);
  const std::string what = fmt::format("{} {} under KVM", launch.guest, silence);
  if (choice.forced) {
    throw BackendError(fmt::format(
        "{}, and VMFEST_ACCEL=kvm rules out falling back to TCG: unset VMFEST_ACCEL, or set "
        "VMFEST_ACCEL=tcg. QEMU's log: {}",
        what, kvm_log.string()));
  }
  record_decision(qemu_binary(), accelerator_cache_directory(),
                  {"tcg", fmt::format("KVM showed no sign of life: {}; using TCG (software "
                                      "emulation, slower). VMFEST_ACCEL=tcg skips KVM",
                                      what)});
  spdlog::warn(
      "vmfest: KVM showed no sign of life: {}. This host's KVM cannot run it (the probe that "
      "chose KVM was fooled), so vmfest switched this host to TCG (software emulation, slower) "
      "for every later VM and restarts the instance under TCG. Set VMFEST_ACCEL=tcg to skip the "
      "KVM probe and this check. QEMU's log of the KVM run: {}",
      what, kvm_log.string());
  return true;
}

bool console_past_bootloader(const std::string& console) {
  static constexpr std::string_view kBootloaderLines[] = {"SYSLINUX", "ISOLINUX", "EXTLINUX",
                                                          "PXELINUX", "GRUB",     "Welcome to GRUB",
                                                          "Booting",  "Loading",  "\x1b"};
  std::size_t begin = 0;
  for (std::size_t end; (end = console.find('\n', begin)) != std::string::npos; begin = end + 1) {
    std::string_view line(console.data() + begin, end - begin);
    while (!line.empty() && std::isspace(static_cast<unsigned char>(line.front())) != 0) {
      line.remove_prefix(1);
    }
    while (!line.empty() && std::isspace(static_cast<unsigned char>(line.back())) != 0) {
      line.remove_suffix(1);
    }
    if (line.empty()) continue;
    if (std::none_of(std::begin(kBootloaderLines), std::end(kBootloaderLines),
                     [&](std::string_view prefix) { return line.starts_with(prefix); })) {
      return true;
    }
  }
  return false;
}

}  // namespace vmfest::detail::qemu
