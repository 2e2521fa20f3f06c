#include "libvirt_api.h"

#include <array>
#include <cstdlib>
#include <mutex>
#include <string_view>
#include <thread>
#include <utility>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "vmfest/error.h"

namespace vmfest::detail::libvirt {

namespace {

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

Connection connect(const std::string& uri) {
  start_event_loop();
  Connection connection(virConnectOpen(uri.c_str()));
  if (!connection) {
    fail("libvirt: could not connect", uri,
         "check that libvirtd (and virtlogd) run there, that the URI is right "
         "(VMFEST_LIBVIRT_URI), and that its user may use libvirt (group libvirt)");
  }
  return connection;
}

std::optional<Domain> find_domain(virConnectPtr connection, const std::string& name,
                                  const std::string& uri) {
  Domain domain(virDomainLookupByName(connection, name.c_str()));
  if (domain) return domain;
  if (last_error_code() == VIR_ERR_NO_DOMAIN) return std::nullopt;
  fail(fmt::format("libvirt: could not look up domain '{}'", name), uri);
}

std::optional<Volume> find_volume(virStoragePoolPtr pool, const std::string& name,
                                  const std::string& uri) {
  Volume volume(virStorageVolLookupByName(pool, name.c_str()));
  if (volume) return volume;
  if (last_error_code() == VIR_ERR_NO_STORAGE_VOL) return std::nullopt;
  fail(fmt::format("libvirt: could not look up volume '{}'", name), uri);
}

std::vector<std::string> domain_names(virConnectPtr connection, const std::string& uri) {
  virDomainPtr* domains = nullptr;
  const int count = virConnectListAllDomains(connection, &domains, 0);
  if (count < 0) fail("libvirt: could not list domains", uri);
  std::vector<std::string> names;
  for (int i = 0; i < count; ++i) {
    Domain domain(domains[i]);
    names.emplace_back(virDomainGetName(domain.get()));
  }
  std::free(domains);  // NOLINT(cppcoreguidelines-no-malloc): libvirt's allocation
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
