// A vmfest_vbox_double process for a test: started on a free port of 127.0.0.1, stopped (with every
// guest it runs) when the handle goes away.
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/process/v2/process.hpp>

namespace vmfest::testing {

class DoubleProcess {
 public:
  // `api`: "6.1", "7.0" or "7.1"; `extra`: more options (--user, --drop-on, ...).
  explicit DoubleProcess(const std::string& api, const std::vector<std::string>& extra = {});
  ~DoubleProcess();
  DoubleProcess(const DoubleProcess&) = delete;
  DoubleProcess& operator=(const DoubleProcess&) = delete;

  [[nodiscard]] const std::string& url() const noexcept { return url_; }
  [[nodiscard]] int port() const noexcept { return port_; }

 private:
  std::filesystem::path folder_;
  boost::asio::io_context context_;
  std::optional<boost::process::v2::process> process_;
  int port_ = 0;
  std::string url_;
};

// A port on 127.0.0.1 where nothing listens.
int closed_port();

}  // namespace vmfest::testing
