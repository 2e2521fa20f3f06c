#include "double_process.h"
#include "vmfest/internal/base.h"

#include <chrono>
#include <fstream>
#include <stdexcept>
#include <thread>

#include <fmt/format.h>
#include <boost/asio/ip/tcp.hpp>

namespace vmfest::testing {
namespace fs = std::filesystem;

DoubleProcess::DoubleProcess(const std::string& api, const std::vector<std::string>& extra)
    : folder_(fs::temp_directory_path() / fmt::format("vmfest-vbox-double-{}-{}", ::getpid(),
                                                      reinterpret_cast<std::uintptr_t>(this))) {
  fs::create_directories(folder_);
  const fs::path port_file = folder_ / "port";
  std::vector<std::string> args = {"--api", api, "--port-file", port_file.string()};
  args.insert(args.end(), extra.begin(), extra.end());
  process_.emplace(context_, VMFEST_VBOX_DOUBLE, args, vmfest::detail::CloseInheritedFds{});
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (!fs::exists(port_file)) {
    if (!process_->running() || std::chrono::steady_clock::now() > deadline) {
      throw std::runtime_error(fmt::format("{} did not start", VMFEST_VBOX_DOUBLE));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  std::ifstream(port_file) >> port_;
  url_ = fmt::format("http://127.0.0.1:{}/", port_);
}

DoubleProcess::~DoubleProcess() {
  boost::system::error_code ignored;
  process_->request_exit(ignored);
  process_->wait(ignored);
  fs::remove_all(folder_, ignored);
}

int closed_port() {
  boost::asio::io_context context;
  boost::asio::ip::tcp::acceptor probe(
      context, boost::asio::ip::tcp::endpoint(boost::asio::ip::address_v4::loopback(), 0));
  return probe.local_endpoint().port();  // free again once the probe closes
}

}  // namespace vmfest::testing
