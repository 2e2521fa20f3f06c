#include "warm_state.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <thread>

#include <fmt/format.h>

#include "vmfest/error.h"
#include "vmfest/ssh/shell_quote.h"

namespace vmfest::detail::qemu {
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

namespace {

constexpr milliseconds kMigrationTimeout{120000};
constexpr milliseconds kMigrationPoll{5};

void set_ignore_shared(QmpClient& client) {
  client.execute("migrate-set-capabilities",
                 {{"capabilities",
                   nlohmann::json::array({{{"capability", "x-ignore-shared"}, {"state", true}}})}});
}

void wait_for_migration(QmpClient& client, const std::string& what) {
  const auto deadline = Clock::now() + kMigrationTimeout;
  while (true) {
    auto status = client.execute("query-migrate");
    const std::string state = status.value("status", "");
    if (state == "completed") return;
    if (state == "failed" || state == "cancelled" || Clock::now() >= deadline) {
      throw BackendError(
          fmt::format("{} failed ({}): {}", what, state, status.value("error-desc", "timed out")));
    }
    std::this_thread::sleep_for(kMigrationPoll);
  }
}

}  // namespace

void save_state(QmpClient& client, const fs::path& state_file, bool mapped,
                const std::string& what) {
  // Unthrottled: the state goes to a local file, and the guest is stopped meanwhile anyway.
  client.execute("migrate-set-parameters", {{"max-bandwidth", 107374182400LL}});
  if (mapped) set_ignore_shared(client);
  client.execute("migrate", {{"uri", "exec:cat > " + ssh::shell_quote(state_file.string())}});
  wait_for_migration(client, what);
}

bool load_state(QmpClient& client, const fs::path& state_file, bool mapped,
                const std::function<bool()>& alive) {
  if (mapped) set_ignore_shared(client);  // as at the save, or QEMU refuses the state
  client.execute("migrate-incoming",
                 {{"uri", "exec:cat " + ssh::shell_quote(state_file.string())}});
  const auto deadline = Clock::now() + kMigrationTimeout;
  while (client.execute("query-status").value("status", "") == "inmigrate") {
    if (Clock::now() >= deadline || !alive()) return false;
    std::this_thread::sleep_for(kMigrationPoll);
  }
  return true;
}

void keep_durably(const fs::path& from, const fs::path& to, fs::perms mode,
                  const std::string& instance) {
  try {
    if (from != to) fs::rename(from, to);
    fs::permissions(to, mode);
    const int fd = ::open(to.c_str(), O_RDONLY | O_CLOEXEC);
    const bool synced = fd >= 0 && ::fsync(fd) == 0;
    if (fd >= 0) ::close(fd);
    if (!synced) {
      throw BackendError(fmt::format("cannot flush {}: {}", to.string(), std::strerror(errno)));
    }
  } catch (const fs::filesystem_error& error) {
    throw BackendError(fmt::format("instance '{}': cannot keep {} in the warm image: {}", instance,
                                   from.string(), error.what()));
  }
}

}  // namespace vmfest::detail::qemu
