// QEMU processes seen from outside: finding and stopping the QEMU of an instance folder that
// another (perhaps dead) process started.
#pragma once

#include <filesystem>
#include <vector>

namespace vmfest::detail::qemu {

// True while `pid` is a live (non-zombie) process whose working directory is `directory`: the
// check that keeps us from signalling an unrelated process that reused the pid.
bool is_our_qemu(int pid, const std::filesystem::path& directory);

// The live processes working in `directory` that are QEMU (by their executable, or by the program
// a wrapper script runs): what a VM of that instance folder may be.
std::vector<int> qemus_working_in(const std::filesystem::path& directory);

// SIGKILLs `pid` and waits until the whole process is gone (at most 5 s).
void kill_and_wait(int pid);

}  // namespace vmfest::detail::qemu
