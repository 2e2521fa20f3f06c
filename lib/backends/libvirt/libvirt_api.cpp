#include "libvirt_api.h"

#include <array>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>
#include <string_view>
#include <thread>
#include <utility>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "vmfest/error.h"
#include "vmfest/internal/base.h"

namespace vmfest::detail::libvirt {

namespace {

// How long a host may take to answer a connect (VMFEST_LIBVIRT_TIMEOUT): a remote URI's SSH
// login is part of it, so generous.
std::chrono::seconds connect_timeout() {
  constexpr long kDefaultSeconds = 60;
  return std::chrono::seconds(whole_number_setting("VMFEST_LIBVIRT_TIMEOUT", 1, 3600, "of seconds")
                                  .value_or(kDefaultSeconds));
}

constexpr int kKeepAliveSeconds = 5;
constexpr unsigned kKeepAliveMisses = 6;

// libvirt prints every error to stderr unless told otherwise; ours reach the user as exceptions.
void ignore_error(void* /*data*/, virErrorPtr /*error*/) {}

// One thread runs libvirt's default event loop for the whole process, as virsh does: the console
// stream is read from its callbacks. It blocks in poll(2) and holds nothing when the process exits.
void start_event_loop() {
  static std::once_flag started;
  std::call_once(started, [] {
    virSetErrorFunc(nullptr, ignore_error);
    if (virEventRegisterDefaultImpl() < 0) {
      throw BackendError("libvirt: could not set up its event loop: " + last_error());
    }
    std::thread([] {
      while (virEventRunDefaultImpl() == 0) {
      }
      spdlog::error("vmfest: libvirt's event loop stopped: {}", last_error());
    }).detach();
  });
}

}  // namespace

std::string last_error() {
  const char* message = virGetLastErrorMessage();
  return message == nullptr ? "" : message;
}

int last_error_code() {
  virErrorPtr error = virGetLastError();
  return error == nullptr ? VIR_ERR_OK : error->code;
}

void fail(const std::string& what, const std::string& uri, const std::string& hint) {
  throw BackendError(
      fmt::format("{} on {}: {}{}", what, uri, last_error(), hint.empty() ? "" : "; " + hint));
}

namespace {

// virConnectOpen has no timeout of its own: a daemon that accepts the socket but never answers
// (hung, or stopped) would hang the caller for good. The attempt runs on a thread of its own that
// is left behind when it takes too long, and closes what it opened if that happens later.
Connection open_within(const std::string& uri, std::chrono::seconds timeout) {
  struct Attempt {
    std::mutex mutex;
    std::condition_variable done_or_abandoned;
    bool done = false;
    bool abandoned = false;
    virConnectPtr connection = nullptr;
    std::string error;
  };
  auto attempt = std::make_shared<Attempt>();
  std::thread([attempt, uri] {
    virConnectPtr connection = virConnectOpen(uri.c_str());
    const std::string error = connection == nullptr ? last_error() : "";
    std::lock_guard lock(attempt->mutex);
    if (attempt->abandoned) {
      if (connection != nullptr) virConnectClose(connection);
      return;
    }
    attempt->connection = connection;
    attempt->error = error;
    attempt->done = true;
    attempt->done_or_abandoned.notify_all();
  }).detach();
  std::unique_lock lock(attempt->mutex);
  if (!attempt->done_or_abandoned.wait_for(lock, timeout, [&] { return attempt->done; })) {
    attempt->abandoned = true;
    throw BackendError(fmt::format(
        "libvirt: {} did not answer within {} s (VMFEST_LIBVIRT_TIMEOUT); check that its "
        "libvirtd runs and responds (`virsh -c '{}' version`)",
        uri, timeout.count(), uri));
  }
  if (attempt->connection == nullptr) {
    throw BackendError(fmt::format(
        "libvirt: could not connect on {}: {}; check that libvirtd (and virtlogd) run there, that "
        "the URI is right (VMFEST_LIBVIRT_URI), and that its user may use libvirt (group libvirt)",
        uri, attempt->error));
  }
  return Connection(attempt->connection);
}

}  // namespace

Connection connect(const std::string& uri) {
  start_event_loop();
  // One connection per URI for the whole process, each caller holding a reference: a remote
  // URI's connect is an SSH login (about 0.3 s), paid once instead of per instance. A domain
  // started with AUTODESTROY still dies with this process, at the latest, and each instance ends
  // its own domain explicitly. One that died (a restarted daemon, a keepalive timeout) is replaced.
  // Never destroyed: the process's exit closes them, as libvirt's event loop thread may still run.
  static auto* const mutex = new std::mutex;
  static auto* const open = new std::map<std::string, Connection>;
  std::lock_guard lock(*mutex);
  Connection& shared = (*open)[uri];
  if (!shared || virConnectIsAlive(shared.get()) != 1) {
    shared = open_within(uri, connect_timeout());
    // A daemon that stops answering later (a hung host, a deadlocked libvirtd) fails the call
    // waiting on it with "connection closed due to keepalive timeout" instead of hanging the test.
    if (virConnectSetKeepAlive(shared.get(), kKeepAliveSeconds, kKeepAliveMisses) < 0) {
      spdlog::warn("vmfest: libvirt at {} takes no keepalive: a hung daemon would hang its calls",
                   uri);
    }
  }
  if (virConnectRef(shared.get()) < 0) fail("libvirt: could not share the connection", uri);
  return Connection(shared.get());
}

namespace {

// A lookup that may find nothing: nullopt on libvirt's `not_found` error, BackendError on any
// other.
template <typename Handle, typename Raw>
std::optional<Handle> found_or_none(Raw* raw, int not_found, const std::string& what,
                                    const std::string& uri) {
  Handle handle(raw);
  if (handle) return handle;
  if (last_error_code() == not_found) return std::nullopt;
  fail(what, uri);
}

}  // namespace

std::optional<Domain> find_domain(virConnectPtr connection, const std::string& name,
                                  const std::string& uri) {
  return found_or_none<Domain>(virDomainLookupByName(connection, name.c_str()), VIR_ERR_NO_DOMAIN,
                               fmt::format("libvirt: could not look up domain '{}'", name), uri);
}

std::optional<Volume> find_volume(virStoragePoolPtr pool, const std::string& name,
                                  const std::string& uri) {
  return found_or_none<Volume>(virStorageVolLookupByName(pool, name.c_str()),
                               VIR_ERR_NO_STORAGE_VOL,
                               fmt::format("libvirt: could not look up volume '{}'", name), uri);
}

void destroy_domain(virDomainPtr domain, const std::string& uri) {
  if (virDomainDestroy(domain) == 0) return;
  const int code = last_error_code();
  if (code == VIR_ERR_OPERATION_INVALID || code == VIR_ERR_NO_DOMAIN) return;  // not running
  const std::string why = last_error();  // before the next call of libvirt resets it
  throw BackendError(fmt::format("libvirt: could not stop domain '{}' on {}: {}",
                                 virDomainGetName(domain), uri, why));
}

std::vector<Domain> list_domains(virConnectPtr connection, const std::string& uri, unsigned flags) {
  virDomainPtr* domains = nullptr;
  const int count = virConnectListAllDomains(connection, &domains, flags);
  if (count < 0) fail("libvirt: could not list domains", uri);
  return adopt_all<Domain>(domains, count);
}

std::vector<std::string> domain_names(virConnectPtr connection, const std::string& uri) {
  std::vector<std::string> names;
  for (const Domain& domain : list_domains(connection, uri)) {
    names.emplace_back(virDomainGetName(domain.get()));
  }
  return names;
}

std::string xml_escape(const std::string& text) {
  std::string escaped;
  escaped.reserve(text.size());
  for (char c : text) {
    switch (c) {
      case '&':
        escaped += "&amp;";
        break;
      case '<':
        escaped += "&lt;";
        break;
      case '>':
        escaped += "&gt;";
        break;
      case '"':
        escaped += "&quot;";
        break;
      case '\'':
        escaped += "&apos;";
        break;
      default:
        escaped += c;
    }
  }
  return escaped;
}

std::string xml_unescape(const std::string& text) {
  static constexpr std::array<std::pair<std::string_view, char>, 5> kEntities = {
      {{"&amp;", '&'}, {"&lt;", '<'}, {"&gt;", '>'}, {"&quot;", '"'}, {"&apos;", '\''}}};
  std::string plain;
  for (std::size_t i = 0; i < text.size(); ++i) {
    bool replaced = false;
    for (const auto& [entity, character] : kEntities) {
      if (text.compare(i, entity.size(), entity) == 0) {
        plain += character;
        i += entity.size() - 1;
        replaced = true;
        break;
      }
    }
    if (!replaced) plain += text[i];
  }
  return plain;
}

}  // namespace vmfest::detail::libvirt
