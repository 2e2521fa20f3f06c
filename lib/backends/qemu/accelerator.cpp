#include "accelerator.h"

#include <sys/utsname.h>
#include <unistd.h>

#include <array>
#include <cstdlib>
#include <fstream>
#include <optional>
#include <thread>

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <boost/asio/io_context.hpp>
#include <boost/process/v2/process.hpp>
#include <boost/process/v2/stdio.hpp>
#include <nlohmann/json.hpp>

#include "../../src/files.h"
#include "../../src/json_file.h"
#include "../../src/subprocess.h"
#include "vmfest/error.h"

namespace vmfest::detail::qemu {
namespace fs = std::filesystem;
namespace bp = boost::process::v2;
using Clock = std::chrono::steady_clock;

namespace {

constexpr std::string_view kProbeMarker = "VMFEST-PROBE-OK";

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

}  // namespace

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
    // No root device: a kernel that runs to completion panics with "VFS: Unable to mount root".
    args.insert(args.end(), {"-kernel", kernel.string(), "-append", "console=ttyS0 panic=-1"});
    success = "VFS: ";
  } else {
    const fs::path sector = work / "probe-boot-sector.img";
    write_boot_sector(sector);
    args.insert(args.end(), {"-drive", "file=" + sector.string() + ",format=raw,if=ide"});
    success = kProbeMarker;
  }
  boost::asio::io_context context;
  FILE* log = std::fopen((work / "probe-qemu.log").c_str(), "w");
  bp::process child(context, qemu.string(), args, bp::process_stdio{nullptr, log, log},
                    CloseInheritedFds{});
  if (log != nullptr) std::fclose(log);
  const auto deadline = Clock::now() + timeout;
  bool found = false;
  while (Clock::now() < deadline) {
    if (read_text_if_exists(serial).find(success) != std::string::npos) {
      found = true;
      break;
    }
    if (!is_running(child)) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  kill_and_reap(child);
  if (!found) {
    found = read_text_if_exists(serial).find(success) != std::string::npos;
  }
  if (!found) {
    std::string qemu_log = tail_lines(work / "probe-qemu.log", 5);
    why = qemu_log.empty()
              ? fmt::format("the probe guest showed no sign of life within {} ms under KVM",
                            timeout.count())
              : fmt::format("qemu -accel kvm failed: {}", qemu_log);
  }
  return found;
}

namespace {

std::string host_key(const fs::path& qemu, const fs::path& kernel) {
  utsname host{};
  ::uname(&host);
  ToolResult version = run_tool(qemu, {"--version"});
  std::string first_line = version.output.substr(0, version.output.find('\n'));
  return fmt::format("{}|{}|{}|{}", first_line, host.release,
                     fs::exists("/dev/kvm") ? "kvm-dev" : "no-kvm-dev",
                     kernel.empty() ? "boot-sector" : "kernel");
}

}  // namespace

AcceleratorChoice choose_accelerator(const fs::path& qemu, const fs::path& cache_dir,
                                     const fs::path& probe_kernel,
                                     std::chrono::milliseconds probe_timeout) {
  if (const char* forced = std::getenv("VMFEST_ACCEL"); forced != nullptr && *forced != '\0') {
    std::string name = forced;
    if (name != "kvm" && name != "tcg") {
      throw InvalidArgument(fmt::format("VMFEST_ACCEL={} is not valid: use kvm or tcg", name));
    }
    return {name, "VMFEST_ACCEL=" + name};
  }
  if (::access("/dev/kvm", R_OK | W_OK) != 0) {
    return {"tcg", "/dev/kvm is missing or not accessible; using TCG (software emulation)"};
  }
  fs::create_directories(cache_dir);
  const fs::path cache_file = cache_dir / "accelerator.json";
  const std::string key = host_key(qemu, probe_kernel);
  // One probe per host, even with many processes starting at once.
  FileLock lock(cache_dir / "accelerator.lock");
  if (fs::exists(cache_file)) {
    try {
      auto cached = read_json_file(
          cache_file,
          [&](const nlohmann::json& json) -> std::optional<AcceleratorChoice> {
            if (json.value("key", "") != key) return std::nullopt;  // another host or QEMU
            return AcceleratorChoice{json.value("name", "tcg"),
                                     json.value("reason", "") + " (cached probe)"};
          },
          [&](std::string_view why) {
            return Error(fmt::format("{} is not a valid accelerator cache ({}); probing again",
                                     cache_file.string(), why));
          });
      if (cached) return *cached;
    } catch (const Error& error) {
      spdlog::warn("vmfest: {}", error.what());
    }
  }
  std::string detail;
  AcceleratorChoice choice;
  if (kvm_runs_guest(qemu, cache_dir, probe_kernel, probe_timeout, detail)) {
    choice = {"kvm", "a probe guest ran under KVM"};
  } else {
    choice = {"tcg", "KVM is present but unusable (" + detail +
                         "); falling back to TCG (software emulation)"};
  }
  write_text_atomically(
      cache_file,
      nlohmann::json{{"key", key}, {"name", choice.name}, {"reason", choice.reason}}.dump(2));
  return choice;
}

}  // namespace vmfest::detail::qemu
