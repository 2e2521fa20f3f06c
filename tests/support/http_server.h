// Test support: tests/support/http_server.py run on a free port of 127.0.0.1 for one test, stopped
// on destruction. See the script for the URL flags (ranges, drop-once=N, truncate=N, rate=B, ...).
#pragma once

#include <chrono>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "child_process.h"

namespace vmfest::testing {

class HttpServer {
 public:
  // Serves the files under `root`; its request log and output go to `scratch`.
  HttpServer(const std::filesystem::path& root, const std::filesystem::path& scratch)
      : log_(scratch / "requests.log"),
        process_({python(), std::string(VMFEST_TEST_SUPPORT_DIR) + "/http_server.py", "--root",
                  root.string(), "--log", log_.string()},
                 scratch / "server.out") {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (port_ == 0) {
      const std::string output = process_.output();
      if (auto at = output.find("PORT ");
          at != std::string::npos && output.find('\n', at) != std::string::npos) {
        port_ = std::stoi(output.substr(at + 5));
      } else if (!process_.running() || std::chrono::steady_clock::now() > deadline) {
        throw std::runtime_error("the test HTTP server did not start: " + output);
      } else {
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
    }
  }

  [[nodiscard]] int port() const noexcept { return port_; }
  // "http://127.0.0.1:PORT/<flags>/<file>"
  [[nodiscard]] std::string url(const std::string& flags, const std::string& file) const {
    return "http://127.0.0.1:" + std::to_string(port_) + "/" + flags + "/" + file;
  }
  // The requests served so far, oldest first: {"method", "path", "range", "if_range"}.
  [[nodiscard]] std::vector<nlohmann::json> requests() const {
    std::vector<nlohmann::json> entries;
    std::ifstream in(log_);
    for (std::string line; std::getline(in, line);) entries.push_back(nlohmann::json::parse(line));
    return entries;
  }
  [[nodiscard]] std::vector<nlohmann::json> requests_for(const std::string& flags,
                                                         const std::string& file) const {
    std::vector<nlohmann::json> matching;
    for (auto& entry : requests()) {
      if (entry["path"] == "/" + flags + "/" + file) matching.push_back(entry);
    }
    return matching;
  }
  [[nodiscard]] std::string output() const { return process_.output(); }

  // Debian's python3 (tools/install-deps.sh), not whatever a version manager put first on PATH.
  static std::string python() {
    return std::filesystem::exists("/usr/bin/python3") ? "/usr/bin/python3" : "python3";
  }

 private:
  std::filesystem::path log_;
  ChildProcess process_;
  int port_ = 0;
};

}  // namespace vmfest::testing
