// A websession with vboxwebsrv: logon on construction, logoff (which releases every managed object
// reference of the session) on destruction, calls through the gSOAP proxy generated from
// VirtualBox's WSDLs, SOAP faults and transport failures turned into vmfest errors.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>

#include "soapvboxBindingProxy.h"
#include "vmfest/error.h"

namespace vmfest::detail::virtualbox {

// The API versions whose wire shapes we speak (IVirtualBox_getAPIVersion: "6_1", "7_0", "7_1").
enum class ApiVersion { V6_1, V7_0, V7_1 };
std::string to_string(ApiVersion version);  // "6.1"
// "7_0" -> V7_0. Newer versions than 7.1 are spoken to as 7.1; older than 6.1 are refused.
ApiVersion parse_api_version(const std::string& api_version, const std::string& url);

struct ServerOptions {
  std::string url = "http://localhost:18083/";
  std::string user;
  std::string password;  // never logged
  std::chrono::seconds connect_timeout{10};
  std::chrono::seconds call_timeout{60};  // per call; long waits are split into shorter calls
  std::filesystem::path wire_log;         // empty: no wire log
  // Speak this version's shapes whatever the server reports (tests of the server's validation).
  std::optional<ApiVersion> assume_version;
  std::string context;  // what the calls are for ("instance 'x'"): leads every error message

  // VMFEST_VBOX_URL, VMFEST_VBOX_USER, VMFEST_VBOX_PASSWORD, VMFEST_VBOX_WIRE_LOG.
  static ServerOptions from_environment();
};

// Nothing listens at the URL (or the host does not resolve).
class ServerUnreachableError : public BackendError {
 public:
  using BackendError::BackendError;
};

// vboxwebsrv refused the user name and password.
class LogonError : public BackendError {
 public:
  using BackendError::BackendError;
};

// The connection broke during a call: closed by the server, or no answer within the call timeout.
class ConnectionLostError : public BackendError {
 public:
  ConnectionLostError(const std::string& message, bool timed_out)
      : BackendError(message), timed_out_(timed_out) {}
  [[nodiscard]] bool timed_out() const noexcept { return timed_out_; }

 private:
  bool timed_out_;
};

// vboxwebsrv does not know a managed object reference (expired websession, restarted server).
class InvalidObjectError : public BackendError {
 public:
  InvalidObjectError(const std::string& message, std::string bad_object)
      : BackendError(message), bad_object_(std::move(bad_object)) {}
  [[nodiscard]] const std::string& bad_object() const noexcept { return bad_object_; }

 private:
  std::string bad_object_;
};

// VirtualBox refused a call: its result code (VBOX_E_..., E_...) and its own explanation.
class RuntimeFaultError : public BackendError {
 public:
  RuntimeFaultError(const std::string& message, std::string operation, std::int32_t result_code,
                    std::string text)
      : BackendError(message),
        operation_(std::move(operation)),
        result_code_(result_code),
        text_(std::move(text)) {}
  [[nodiscard]] const std::string& operation() const noexcept { return operation_; }
  [[nodiscard]] std::int32_t result_code() const noexcept { return result_code_; }
  [[nodiscard]] const std::string& text() const noexcept { return text_; }

 private:
  std::string operation_;
  std::int32_t result_code_;
  std::string text_;
};

// Any other failed exchange: a SOAP fault without VirtualBox details (a request the server could
// not parse or validate), an HTTP error, an answer that is not SOAP.
class ProtocolError : public BackendError {
 public:
  using BackendError::BackendError;
};

class Websession {
 public:
  // Logs on and asks for the API version. Throws the errors above.
  explicit Websession(ServerOptions options);
  ~Websession();  // logs off; never throws
  Websession(const Websession&) = delete;
  Websession& operator=(const Websession&) = delete;

  [[nodiscard]] ApiVersion version() const noexcept { return version_; }
  [[nodiscard]] const std::string& virtualbox() const noexcept { return virtualbox_; }
  [[nodiscard]] const std::string& url() const noexcept { return options_.url; }
  // `message` led by the options' context.
  [[nodiscard]] std::string in_context(const std::string& message) const;

  // One SOAP call: `operation` is its WSDL name (for messages), `method` the generated proxy's.
  template <class Request, class Response>
  Response call(const char* operation, int (vboxBindingProxy::*method)(Request*, Response&),
                Request request) {
    begin_call();
    Response response;
    int status = (proxy_.*method)(&request, response);
    end_call(operation, status);
    return response;
  }

  // Calls whose request is just `_this`.
  template <class Request, class Response>
  Response call_on(const std::string& object, const char* operation,
                   int (vboxBindingProxy::*method)(Request*, Response&)) {
    Request request;
    request._USCOREthis = object;
    return call(operation, method, std::move(request));
  }

  // Wire-log hooks (gSOAP callbacks need plain functions; they find us through soap->user).
  struct Hooks;

 private:
  void begin_call();
  // Writes the wire log entry and throws when `status` is not SOAP_OK.
  void end_call(const char* operation, int status);
  [[noreturn]] void throw_failure(const char* operation, int status);
  [[noreturn]] void throw_logon_refused(const std::string& reason);
  void logoff() noexcept;

  ServerOptions options_;
  vboxBindingProxy proxy_;
  int (*send_)(struct soap*, const char*, size_t) = nullptr;
  size_t (*receive_)(struct soap*, char*, size_t) = nullptr;
  std::string sent_;
  std::string received_;
  std::chrono::steady_clock::time_point call_started_;
  std::string last_fault_;  // faultstring of the last SOAP fault
  std::string virtualbox_;
  ApiVersion version_ = ApiVersion::V7_1;
};

}  // namespace vmfest::detail::virtualbox
