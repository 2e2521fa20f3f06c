// The QEMU installed on this host: where its programs are, which version and machine type it has,
// and what it can do (probed, never assumed from a version number; the answers are kept per binary
// in the host's cache, see qemu_facts_directory()).
#pragma once

#include <filesystem>
#include <string>

namespace vmfest::detail::qemu {

// $VMFEST_QEMU, else qemu-system-x86_64 on PATH (BackendError naming the package when missing).
const std::filesystem::path& qemu_binary();
const std::filesystem::path& qemu_img();

// Which file `file` is: its real path, size, inode, modification and change times. Replacing or
// changing it (a package update, a rewritten kernel) changes them.
std::string on_disk_identity(const std::filesystem::path& file);
// sha256_file(file), kept in <host cache>/sha256 under on_disk_identity(file): a model's kernel and
// initrd are hashed into every warm clone's key, and an unchanged file is read once per host.
std::string kept_sha256(const std::filesystem::path& file);
// Where the answers of qemu_binary() to the probes below are kept, one JSON file per
// on_disk_identity(): they cost about 0.15 s of QEMU runs, which every test process would pay.
std::filesystem::path qemu_facts_directory();
// "QEMU emulator version 7.2.22 (Debian ...)": part of what makes a warm image valid.
const std::string& qemu_version();
// The versioned machine type behind the "pc" alias (e.g. pc-i440fx-7.2). Warm images only resume
// on the machine type they were saved on, so every launch names it exactly.
const std::string& machine_type();

// How a warm image holds the guest's memory.
enum class WarmMemory {
  // In a file of its own that every clone maps privately (copy-on-write): the saved state holds
  // only device state, a resume reads no memory up front, and the pages clones do not change stay
  // shared between them in the host's page cache. Needs the migration capability x-ignore-shared.
  Mapped,
  // Inside the saved state, which every clone loads whole into memory of its own.
  Streamed,
};
// Mapped where this QEMU has x-ignore-shared (asked over QMP), else Streamed; $VMFEST_WARM_MEMORY
// ("mapped" or "streamed") overrides, an unknown value is an InvalidArgument.
WarmMemory warm_memory();
const char* to_string(WarmMemory memory);

// The TCG translation cache of each VM, in MiB: $VMFEST_TCG_TB_SIZE, else kDefaultTbSizeMib
// (QEMU's own default is 1 GiB per VM). See the README's figures for how it was chosen.
inline constexpr int kDefaultTbSizeMib = 256;
int tcg_tb_size_mib();

}  // namespace vmfest::detail::qemu
