#include "websession.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <regex>

#include <fmt/chrono.h>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "result_codes.h"
// libgsoap++ needs the global namespace table; this source is in every program that calls
// vboxwebsrv.
#include "vboxBinding.nsmap"

namespace vmfest::detail::virtualbox {
using Clock = std::chrono::steady_clock;

namespace {

std::string environment(const char* name, const std::string& fallback = "") {
  const char* value = std::getenv(name);
  return value != nullptr && *value != '\0' ? std::string(value) : fallback;
}

constexpr const char* kStartHint =
    "start VirtualBox's web service on the VirtualBox host as the user who owns the VMs, e.g. "
    "`vboxwebsrv --host 127.0.0.1 --port 18083 --background` (`VBoxManage setproperty "
    "websrvauthlibrary null` turns its authentication off), and point VMFEST_VBOX_URL at it";

// The envelope of an HTTP message (the part after the headers), passwords masked.
std::string envelope_for_log(const std::string& http) {
  static const std::regex password("<password>[^<]*</password>");
  auto body = http.find("\r\n\r\n");
  std::string envelope = body == std::string::npos ? http : http.substr(body + 4);
  return std::regex_replace(envelope, password, "<password>***</password>");
}

void append_wire_log(const std::filesystem::path& path, const std::string& entry) {
  static std::mutex mutex;
  std::lock_guard lock(mutex);
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  if (fd < 0) {
    spdlog::warn("vmfest: cannot append to the VirtualBox wire log {} (VMFEST_VBOX_WIRE_LOG)",
                 path.string());
    return;
  }
  // One write per entry: O_APPEND keeps entries of concurrent processes whole.
  if (::write(fd, entry.data(), entry.size()) != static_cast<ssize_t>(entry.size())) {
    spdlog::warn("vmfest: the VirtualBox wire log {} is missing an entry: {}", path.string(),
                 std::strerror(errno));
  }
  ::close(fd);
}

bool is_fault(int status) {
  return status == SOAP_FAULT || status == SOAP_CLI_FAULT || status == SOAP_SVR_FAULT ||
         status == SOAP_MUSTUNDERSTAND || status == SOAP_VERSIONMISMATCH;
}

}  // namespace

std::string to_string(ApiVersion version) {
  switch (version) {
    case ApiVersion::V6_1:
      return "6.1";
    case ApiVersion::V7_0:
      return "7.0";
    case ApiVersion::V7_1:
      return "7.1";
  }
  return "?";
}

ApiVersion parse_api_version(const std::string& api_version, const std::string& url) {
  int major = 0;
  int minor = 0;
  if (std::sscanf(api_version.c_str(), "%d_%d", &major, &minor) != 2) {
    throw ProtocolError(
        fmt::format("vboxwebsrv at {} reported the API version '{}', which is not "
                    "of the form MAJOR_MINOR",
                    url, api_version));
  }
  if (major == 6 && minor == 1) return ApiVersion::V6_1;
  if (major == 7 && minor == 0) return ApiVersion::V7_0;
  if (major == 7 && minor == 1) return ApiVersion::V7_1;
  if (major > 7 || (major == 7 && minor > 1)) {
    static std::once_flag once;
    std::call_once(once, [&] {
      spdlog::warn(
          "vmfest: VirtualBox API {} at {} is newer than the newest vmfest knows (7.1); "
          "speaking 7.1",
          api_version, url);
    });
    return ApiVersion::V7_1;
  }
  throw BackendError(
      fmt::format("VirtualBox at {} has API version {}; vmfest supports VirtualBox "
                  "6.1, 7.0 and 7.1: upgrade VirtualBox",
                  url, api_version));
}

ServerOptions ServerOptions::from_environment() {
  ServerOptions options;
  options.url = environment("VMFEST_VBOX_URL", options.url);
  options.user = environment("VMFEST_VBOX_USER");
  options.password = environment("VMFEST_VBOX_PASSWORD");
  options.wire_log = environment("VMFEST_VBOX_WIRE_LOG");
  return options;
}

struct Websession::Hooks {
  static int send(struct soap* soap, const char* data, size_t size) {
    auto* self = static_cast<Websession*>(soap->user);
    self->sent_.append(data, size);
    return self->send_(soap, data, size);
  }
  static size_t receive(struct soap* soap, char* data, size_t size) {
    auto* self = static_cast<Websession*>(soap->user);
    size_t received = self->receive_(soap, data, size);
    self->received_.append(data, received);
    return received;
  }
};

Websession::Websession(ServerOptions options)
    : options_(std::move(options)), proxy_(SOAP_IO_KEEPALIVE | SOAP_C_UTFSTRING) {
  struct soap* soap = proxy_.soap;
  proxy_.soap_endpoint = options_.url.c_str();
  soap->connect_timeout = static_cast<int>(options_.connect_timeout.count());
  soap->send_timeout = static_cast<int>(options_.call_timeout.count());
  soap->recv_timeout = static_cast<int>(options_.call_timeout.count());
  soap->user = this;
  send_ = soap->fsend;
  receive_ = soap->frecv;
  soap->fsend = &Hooks::send;
  soap->frecv = &Hooks::receive;

  _vbox__IWebsessionManager_USCORElogon logon;
  logon.username = options_.user;
  logon.password = options_.password;
  try {
    virtualbox_ = call("IWebsessionManager_logon",
                       &vboxBindingProxy::IWebsessionManager_USCORElogon, std::move(logon))
                      .returnval;
  } catch (const RuntimeFaultError& error) {
    throw_logon_refused(error.text());
  } catch (const ProtocolError&) {
    throw_logon_refused(last_fault_);
  }
  try {
    std::string api = call_on(virtualbox_, "IVirtualBox_getAPIVersion",
                              &vboxBindingProxy::IVirtualBox_USCOREgetAPIVersion)
                          .returnval;
    version_ =
        options_.assume_version ? *options_.assume_version : parse_api_version(api, options_.url);
  } catch (...) {
    logoff();
    throw;
  }
}

Websession::~Websession() { logoff(); }

void Websession::throw_logon_refused(const std::string& reason) {
  throw LogonError(in_context(fmt::format(
      "vboxwebsrv at {} refused the logon of user '{}' ({}). Set VMFEST_VBOX_USER and "
      "VMFEST_VBOX_PASSWORD to an account of the VirtualBox host, or turn the web service's "
      "authentication off with `VBoxManage setproperty websrvauthlibrary null`",
      options_.url, options_.user, reason)));
}

void Websession::logoff() noexcept {
  if (virtualbox_.empty()) return;
  try {
    _vbox__IWebsessionManager_USCORElogoff request;
    request.refIVirtualBox = virtualbox_;
    call("IWebsessionManager_logoff", &vboxBindingProxy::IWebsessionManager_USCORElogoff,
         std::move(request));
  } catch (const std::exception& error) {
    // The server drops an abandoned websession (and its objects) after its idle timeout.
    spdlog::debug("vmfest: logoff from vboxwebsrv at {} failed: {}", options_.url, error.what());
  }
  virtualbox_.clear();
}

std::string Websession::in_context(const std::string& message) const {
  return options_.context.empty() ? message : options_.context + ": " + message;
}

void Websession::begin_call() {
  soap_destroy(proxy_.soap);
  soap_end(proxy_.soap);
  sent_.clear();
  received_.clear();
  call_started_ = Clock::now();
}

void Websession::end_call(const char* operation, int status) {
  if (!options_.wire_log.empty()) {
    std::string now = fmt::format("{:%Y-%m-%dT%H:%M:%S}", std::chrono::system_clock::now());
    std::string entry = fmt::format("==== {} pid {} {} -> {}\n{}\n", now, ::getpid(), operation,
                                    options_.url, envelope_for_log(sent_));
    entry += received_.empty()
                 ? fmt::format("==== {} (no answer: gSOAP error {})\n", operation, status)
                 : fmt::format("==== {} <- {}\n{}\n", operation, options_.url,
                               envelope_for_log(received_));
    append_wire_log(options_.wire_log, entry);
  }
  if (status != SOAP_OK) throw_failure(operation, status);
}

void Websession::throw_failure(const char* operation, int status) {
  struct soap* soap = proxy_.soap;
  const std::string& url = options_.url;
  if (status == SOAP_TCP_ERROR && sent_.empty()) {
    throw ServerUnreachableError(in_context(fmt::format(
        "cannot reach vboxwebsrv at {} ({}): {}", url,
        soap->errnum != 0 ? std::strerror(soap->errnum) : "connection failed", kStartHint)));
  }
  if (status == SOAP_EOF || status == SOAP_TCP_ERROR) {
    const auto waited =
        std::chrono::duration_cast<std::chrono::seconds>(Clock::now() - call_started_);
    if (waited >= options_.call_timeout) {
      throw ConnectionLostError(
          in_context(fmt::format("vboxwebsrv at {} did not answer {} within {} s; is the "
                                 "VirtualBox host overloaded or vboxwebsrv hung?",
                                 url, operation, options_.call_timeout.count())),
          true);
    }
    throw ConnectionLostError(
        in_context(fmt::format("vboxwebsrv at {} closed the connection during {} without "
                               "answering (did it crash or restart? `vboxwebsrv --logfile FILE` "
                               "records why)",
                               url, operation)),
        false);
  }
  if (is_fault(status) && soap->fault != nullptr) {
    last_fault_ = soap->fault->faultstring != nullptr ? soap->fault->faultstring : "";
    const SOAP_ENV__Detail* detail = soap->fault->detail;
    if (detail != nullptr && detail->vbox__RuntimeFault != nullptr) {
      const std::int32_t code = detail->vbox__RuntimeFault->resultCode;
      throw RuntimeFaultError(
          in_context(fmt::format("VirtualBox at {} refused {}: {} [{}]", url, operation,
                                 last_fault_, result_code_name(code))),
          operation, code, last_fault_);
    }
    if (detail != nullptr && detail->vbox__InvalidObjectFault != nullptr) {
      const std::string& bad = detail->vbox__InvalidObjectFault->badObjectID;
      throw InvalidObjectError(
          in_context(fmt::format("vboxwebsrv at {} does not know the object '{}' passed to {} "
                                 "({}); its websession expired or vboxwebsrv restarted: retry",
                                 url, bad, operation, last_fault_)),
          bad);
    }
    throw ProtocolError(in_context(fmt::format("vboxwebsrv at {} answered {} with a SOAP fault: {}",
                                               url, operation, last_fault_)));
  }
  if (status >= 100 && status < 600) {
    throw ProtocolError(in_context(fmt::format(
        "the server at {} answered {} with HTTP status {} instead of a SOAP message: is "
        "VMFEST_VBOX_URL the address of vboxwebsrv?",
        url, operation, status)));
  }
  char description[1024] = {};
  soap_sprint_fault(soap, description, sizeof(description));
  throw ProtocolError(in_context(fmt::format("the exchange {} with vboxwebsrv at {} failed: {}",
                                             operation, url, description)));
}

}  // namespace vmfest::detail::virtualbox
