#include "server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <sstream>
#include <stdexcept>

#include <fmt/format.h>
// libgsoap++ needs the global namespace table once per program: the client has its own (in
// websession.cpp), which the double, a server only, does not link.
#include "vboxBinding.nsmap"

namespace vmfest::vbox_double {
namespace {

constexpr int kPollMs = 200;

std::string lowercase(std::string text) {
  std::transform(text.begin(), text.end(), text.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return text;
}

// The value of an HTTP header in `head` (lowercase), or "".
std::string header(const std::string& head, const std::string& name) {
  const std::string lower = lowercase(head);
  auto at = lower.find("\r\n" + name + ":");
  if (at == std::string::npos) return {};
  at += name.size() + 3;
  auto end = lower.find("\r\n", at);
  std::string value = lower.substr(at, end - at);
  value.erase(0, value.find_first_not_of(' '));
  return value;
}

std::string body_of(const std::string& http) {
  auto at = http.find("\r\n\r\n");
  return at == std::string::npos ? std::string() : http.substr(at + 4);
}

}  // namespace

Server::Server(World& world, const MessageValidator& validator, ServerOptions options)
    : world_(world), validator_(validator), options_(std::move(options)) {
  listener_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int reuse = 1;
  ::setsockopt(listener_, SOL_SOCKET, SO_REUSEADDR, &reuse, sizeof(reuse));
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = htons(static_cast<std::uint16_t>(options_.port));
  socklen_t length = sizeof(address);
  if (listener_ < 0 || ::bind(listener_, reinterpret_cast<sockaddr*>(&address), length) != 0 ||
      ::listen(listener_, 64) != 0 ||
      ::getsockname(listener_, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
    const std::string reason = std::strerror(errno);
    if (listener_ >= 0) ::close(listener_);
    throw std::runtime_error(
        fmt::format("cannot listen on 127.0.0.1:{}: {}", options_.port, reason));
  }
  port_ = ntohs(address.sin_port);
}

Server::~Server() {
  stop();
  join_finished(true);
  ::close(listener_);
}

void Server::run() {
  while (!stopping_) {
    join_finished(false);
    pollfd ready{listener_, POLLIN, 0};
    if (::poll(&ready, 1, kPollMs) <= 0) continue;
    int connection = ::accept4(listener_, nullptr, nullptr, SOCK_CLOEXEC);
    if (connection < 0) continue;
    auto finished = std::make_shared<std::atomic<bool>>(false);
    connections_.push_back({std::thread([this, connection, finished] {
                              serve(connection);
                              *finished = true;
                            }),
                            finished});
  }
}

void Server::join_finished(bool all) {
  auto done = std::partition(connections_.begin(), connections_.end(),
                             [&](const Connection& c) { return !all && !*c.finished; });
  for (auto it = done; it != connections_.end(); ++it) it->thread.join();
  connections_.erase(done, connections_.end());
}

void Server::serve(int connection) {
  Service service(world_);
  std::string buffer;
  // More bytes from the client; false when it closed the connection or the server stops.
  auto fill = [&] {
    while (!stopping_) {
      pollfd ready{connection, POLLIN, 0};
      if (::poll(&ready, 1, kPollMs) <= 0) continue;
      char chunk[16384];
      ssize_t got = ::recv(connection, chunk, sizeof(chunk), 0);
      if (got <= 0) return false;
      buffer.append(chunk, static_cast<std::size_t>(got));
      return true;
    }
    return false;
  };
  while (true) {
    std::size_t head_end;
    while ((head_end = buffer.find("\r\n\r\n")) == std::string::npos) {
      if (!fill()) return (void)::close(connection);
    }
    const std::string head = buffer.substr(0, head_end + 2);
    const std::string length_text = header(head, "content-length");
    if (length_text.empty()) {
      const std::string refusal =
          "HTTP/1.1 411 Length Required\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
      ::send(connection, refusal.data(), refusal.size(), MSG_NOSIGNAL);
      break;
    }
    const std::size_t total = head_end + 4 + std::stoul(length_text);
    while (buffer.size() < total) {
      if (!fill()) return (void)::close(connection);
    }
    const std::string request = buffer.substr(0, total);
    buffer.erase(0, total);

    const MessageCheck check = validator_.check(body_of(request));
    if (options_.log_requests) {
      fmt::print(stderr, "vbox-double: {}{}\n", check.element.empty() ? "?" : check.element,
                 check.error.empty() ? "" : " (invalid: " + check.error + ")");
    }
    if (check.element == options_.drop_on) break;  // as if vboxwebsrv died mid-call
    if (check.element == options_.stall_on) {
      while (fill()) {  // as if vboxwebsrv hung: never answer
      }
      break;
    }
    std::string reject;
    if (!check.error.empty()) {
      reject = fmt::format(
          "The request {} does not match the schema of the VirtualBox {} web "
          "service: {}",
          check.element.empty() ? "message" : check.element, world_.options().api, check.error);
    }
    std::string response = answer(service, request, reject);
    const MessageCheck answered = validator_.check(body_of(response));
    if (!answered.error.empty()) {
      // A defect of the double: say so instead of sending what VirtualBox never would.
      fmt::print(stderr, "vbox-double: BUG: invalid answer to {}: {}\n", check.element,
                 answered.error);
      response = answer(service, request,
                        fmt::format("vmfest's VirtualBox double produced an invalid answer to "
                                    "{}: {}",
                                    check.element, answered.error));
    }
    if (::send(connection, response.data(), response.size(), MSG_NOSIGNAL) < 0) break;
    const std::string response_head = response.substr(0, response.find("\r\n\r\n") + 2);
    if (header(head, "connection") == "close" || header(response_head, "connection") == "close") {
      break;
    }
  }
  ::close(connection);
}

std::string Server::answer(Service& service, const std::string& request,
                           const std::string& reject) {
  std::istringstream in(request);
  std::ostringstream out;
  struct soap* soap = service.soap;
  soap->is = &in;
  soap->os = &out;
  if (!reject.empty()) service.reject_next(reject);
  // gSOAP's serve() for one request, reading and writing our buffers.
  if (soap_begin_serve(soap) != SOAP_OK || service.dispatch() != SOAP_OK) {
    if (soap->error != SOAP_OK && soap->error < SOAP_STOP) soap_send_fault(soap);
  }
  service.destroy();
  soap->is = nullptr;
  soap->os = nullptr;
  return out.str();
}

}  // namespace vmfest::vbox_double
