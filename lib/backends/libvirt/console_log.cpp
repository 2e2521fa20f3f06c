#include "console_log.h"

#include <fcntl.h>
#include <unistd.h>

#include <array>
#include <mutex>

#include <fmt/format.h>

#include "vmfest/error.h"

namespace vmfest::detail::libvirt {

// Reached from libvirt's event thread; the owner closes it, so every use is under the mutex.
struct ConsoleLog::State {
  std::mutex mutex;
  int fd = -1;

  ~State() {
    if (fd >= 0) ::close(fd);
  }
};

namespace {

// What the callback owns: a reference to the state, freed by libvirt once no callback can run.
struct CallbackData {
  std::shared_ptr<ConsoleLog::State> state;
};

void free_callback_data(void* opaque) { delete static_cast<CallbackData*>(opaque); }

void on_console_event(virStreamPtr stream, int events, void* opaque) {
  auto& state = *static_cast<CallbackData*>(opaque)->state;
  std::array<char, 16384> buffer{};
  std::lock_guard lock(state.mutex);
  if (state.fd < 0) return;
  while ((events & VIR_STREAM_EVENT_READABLE) != 0) {
    const int received = virStreamRecv(stream, buffer.data(), buffer.size());
    if (received <= 0) {
      // -2: nothing more now; 0: the console closed (the domain is gone); -1: broken.
      if (received != -2) virStreamEventRemoveCallback(stream);
      return;
    }
    for (int written = 0; written < received;) {
      const ssize_t n =
          ::write(state.fd, buffer.data() + written, static_cast<std::size_t>(received - written));
      if (n <= 0) return;
      written += static_cast<int>(n);
    }
  }
  if ((events & (VIR_STREAM_EVENT_HANGUP | VIR_STREAM_EVENT_ERROR)) != 0) {
    virStreamEventRemoveCallback(stream);
  }
}

}  // namespace

ConsoleLog::ConsoleLog(virConnectPtr connection, virDomainPtr domain,
                       const std::filesystem::path& file, const std::string& uri)
    : state_(std::make_shared<State>()), stream_(virStreamNew(connection, VIR_STREAM_NONBLOCK)) {
  state_->fd = ::open(file.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0644);
  if (state_->fd < 0) {
    throw BackendError(fmt::format("cannot write the console log {}", file.string()));
  }
  if (!stream_ || virDomainOpenConsole(domain, nullptr, stream_.get(), 0) < 0) {
    fail("libvirt: could not open the console of domain " + std::string(virDomainGetName(domain)),
         uri);
  }
  auto* data = new CallbackData{state_};
  if (virStreamEventAddCallback(
          stream_.get(),
          VIR_STREAM_EVENT_READABLE | VIR_STREAM_EVENT_HANGUP | VIR_STREAM_EVENT_ERROR,
          on_console_event, data, free_callback_data) < 0) {
    delete data;
    fail("libvirt: could not watch the console of domain " + std::string(virDomainGetName(domain)),
         uri);
  }
}

ConsoleLog::~ConsoleLog() {
  {
    std::lock_guard lock(state_->mutex);
    ::close(state_->fd);
    state_->fd = -1;
  }
  virStreamEventRemoveCallback(stream_.get());
  virStreamAbort(stream_.get());
}

}  // namespace vmfest::detail::libvirt
