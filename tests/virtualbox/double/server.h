// The double's HTTP side: its own accept loop on 127.0.0.1 (gSOAP's run() binds every interface
// with a backlog of 1), a thread per connection with HTTP keep-alive, every request and every
// answer checked against the version's schema before the gSOAP service sees or sends it.
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "fake_virtualbox.h"
#include "message_validator.h"

namespace vmfest::vbox_double {

struct ServerOptions {
  int port = 0;               // 0: a free one
  std::string drop_on;        // close the connection without answering this operation
  std::string stall_on;       // never answer this operation
  bool log_requests = false;  // one stderr line per request
};

class Server {
 public:
  Server(World& world, const MessageValidator& validator, ServerOptions options);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  [[nodiscard]] int port() const noexcept { return port_; }
  // Accepts connections until stop().
  void run();
  void stop() noexcept { stopping_ = true; }

 private:
  void serve(int connection);
  // One request through the gSOAP service: the HTTP answer it produced.
  std::string answer(Service& service, const std::string& request, const std::string& reject);

  World& world_;
  const MessageValidator& validator_;
  ServerOptions options_;
  int listener_ = -1;
  int port_ = 0;
  std::atomic<bool> stopping_{false};
  struct Connection {
    std::thread thread;
    std::shared_ptr<std::atomic<bool>> finished;
  };
  void join_finished(bool all);
  std::vector<Connection> connections_;
};

}  // namespace vmfest::vbox_double
