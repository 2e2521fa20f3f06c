// What the setup_model tests share: the images, gzip files and bundles they serve (made once for
// all test processes), and a fixture with a home, an HTTP server on 127.0.0.1
// (tests/support/http_server.py) and checks that a failed setup left nothing.
#pragma once

#include <gtest/gtest.h>

#include <cstddef>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "../support/child_process.h"
#include "../support/http_server.h"
#include "vmfest/home.h"
#include "vmfest/internal/base.h"
#include "vmfest/model.h"

namespace vmfest::testing {

inline constexpr std::size_t kNoiseBytes = 4
                                           << 20;  // incompressible: the gzip is as big as the data

// Runs a shell command that prepares test data; Error when it fails.
void sh(const std::string& command);
std::string quoted(const std::filesystem::path& path);

// Images, gzip files and bundles every test serves. ctest runs each test in its own process, so
// they are made once for all of them: in a folder named after the hash of setup_model_fixture.cpp
// (a change of its recipe makes a new one), built aside and renamed into place under a lock.
class TestData {
 public:
  TestData();

  [[nodiscard]] const std::filesystem::path& dir() const noexcept { return dir_; }
  [[nodiscard]] std::filesystem::path operator/(const std::string& file) const {
    return dir_ / file;
  }
  [[nodiscard]] std::string sha256(const std::string& file) const {
    return vmfest::detail::sha256_file(dir_ / file);
  }
  // Where evil-absolute.tar tries to write.
  [[nodiscard]] static std::filesystem::path absolute_escape() {
    return std::filesystem::temp_directory_path() / "vmfest-setup-data-escaped.txt";
  }

 private:
  void make() const;

  std::filesystem::path dir_;
};

class SetupModelTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { data_ = new TestData(); }
  static void TearDownTestSuite() {
    delete data_;
    data_ = nullptr;
  }

  // A folder of its own for each test: the home, the server's state, files the test makes.
  void SetUp() override;
  void TearDown() override;

  const TestData& data() const { return *data_; }
  vmfest::Home home() const { return vmfest::Home(root_ / "home"); }
  HttpServer& server();

  vmfest::Model setup(const std::string& source, const std::string& name = "",
                      vmfest::SetupOptions options = {}) {
    if (!name.empty()) options.name = name;
    return vmfest::setup_model(source, options, home());
  }

  // No staging folder, and (unless `keep_download`) no kept download.
  void expect_no_leftovers(bool keep_download = false) const;
  // No model either.
  void expect_nothing_left(bool keep_download = false) const {
    EXPECT_TRUE(vmfest::ModelRegistry(home()).list().empty());
    expect_no_leftovers(keep_download);
  }

  // The partial download of the one URL this test fetched (empty path when there is none).
  std::filesystem::path kept_partial() const;

  // vmfest_setup_model_helper setting up `source` as `name` in this test's home, its output in
  // file `output` of the test's folder.
  std::unique_ptr<ChildProcess> helper(const std::string& source, const std::string& name,
                                       const std::string& output,
                                       std::vector<std::string> extra_args = {});

  static vmfest::SetupOptions replacing() {
    vmfest::SetupOptions options;
    options.replace = true;
    return options;
  }

  static TestData* data_;
  std::filesystem::path root_;
  std::unique_ptr<HttpServer> server_;
  std::optional<std::filesystem::path> mounted_;  // a file system the test mounted, unmounted after
};

}  // namespace vmfest::testing
