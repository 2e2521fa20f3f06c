// A QEMU guest's saved state (its devices', and its memory unless that lives in a shared file),
// written and read through migration to and from a file: what warm images are made of.
#pragma once

#include <chrono>
#include <filesystem>
#include <functional>
#include <string>

#include "qmp_client.h"

namespace vmfest::detail::qemu {

// Migrates the stopped VM behind `client` into `state_file`. `mapped`: its memory is a shared
// file that the state leaves out (x-ignore-shared, which the loading side must set too). Errors
// begin with `what` ("instance 'x': saving the warm image").
void save_state(QmpClient& client, const std::filesystem::path& state_file, bool mapped,
                const std::string& what);

// Loads `state_file` into the incoming QEMU behind `client` (started with -incoming defer) and
// waits until it has arrived, paused. False when `alive` says QEMU died, or the migration takes
// longer than a save is allowed to.
bool load_state(QmpClient& client, const std::filesystem::path& state_file, bool mapped,
                const std::function<bool()>& alive);

// Moves `from` to `to` (the same path: in place) with `mode` and flushes it to disk: a clone
// trusts what a warm image's manifest recorded of it. Errors name `instance`.
void keep_durably(const std::filesystem::path& from, const std::filesystem::path& to,
                  std::filesystem::perms mode, const std::string& instance);

}  // namespace vmfest::detail::qemu
