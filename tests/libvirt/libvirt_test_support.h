// What the libvirt backend's test files share: hosts, volumes and domains as libvirt lists them,
// and a home of a test's own.
#pragma once

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <string>
#include <thread>

#include <fmt/format.h>

#include "child_process.h"

#include "backends/libvirt/hosts.h"
#include "backends/libvirt/libvirt_api.h"
#include "backends/libvirt/storage.h"
#include "vmfest/gtest/fixture.h"
#include "vmfest/instance.h"
#include "vmfest/internal/driver.h"

namespace vmfest::testing::libvirt_support {
namespace fs = std::filesystem;
namespace lv = vmfest::detail::libvirt;
using vmfest::Instance;

// The first host of VMFEST_LIBVIRT_URI.
inline std::string first_uri() { return lv::configured_hosts().front().uri; }

// The volumes of the first pool of `uri` whose names contain `part`, with their paths on the host.
inline std::map<std::string, std::string> volumes_with(const std::string& uri,
                                                       const std::string& part) {
  lv::Connection connection = lv::connect(uri);
  const lv::StoragePool pool(connection.get(), uri);
  std::map<std::string, std::string> found;
  for (const std::string& name : pool.volume_names()) {
    if (name.find(part) != std::string::npos) found[name] = pool.path_of(name);
  }
  return found;
}

// Whether a domain whose name contains `part` exists on `uri`.
inline bool domain_exists(const std::string& uri, const std::string& part) {
  lv::Connection connection = lv::connect(uri);
  const auto names = lv::domain_names(connection.get(), uri);
  return std::any_of(names.begin(), names.end(),
                     [&](const std::string& name) { return name.find(part) != std::string::npos; });
}

// Waits up to `limit` for the domains whose names contain `part` to be gone; whether they are.
inline bool domains_gone_within(const std::string& uri, const std::string& part,
                                std::chrono::milliseconds limit) {
  return vmfest::detail::poll_until(limit, std::chrono::milliseconds(200),
                                    [&] { return !domain_exists(uri, part); });
}

// A started instance of the test model: a warm clone, or one that boots (`warm` false).
inline Instance start_instance(bool warm = true) {
  vmfest::InstanceRequest request;
  request.model = vmfest::testing::test_model();
  request.warm = warm;
  Instance instance = Instance::create(request);
  instance.start();
  return instance;
}

// A home of the test's own while it lives: every Instance::create of a process sharing a home reaps
// that home once, so another test could reap the killed child's instance before this one looks.
class PrivateHome {
 public:
  PrivateHome()
      : previous_(std::getenv("VMFEST_HOME") != nullptr ? std::getenv("VMFEST_HOME") : ""),
        home_(fs::temp_directory_path() / fmt::format("vmfest-libvirt-home-{}", ::getpid())) {
    fs::remove_all(home_);
    ::setenv("VMFEST_HOME", home_.c_str(), 1);
    vmfest::testing::ensure_default_model();
  }
  PrivateHome(const PrivateHome&) = delete;
  PrivateHome& operator=(const PrivateHome&) = delete;
  ~PrivateHome() {
    const vmfest::Home home = vmfest::Home::from_environment();
    vmfest::reap_leaked_instances(home, {.force = true});
    // Its warm images' volumes too: a reap deletes those that no image folder of the home names.
    std::error_code ignored;
    for (const auto& model : fs::directory_iterator(home.models(), ignored)) {
      fs::remove_all(model.path() / "warm", ignored);
    }
    vmfest::reap_leaked_instances(home, {.force = true});
    ::setenv("VMFEST_HOME", previous_.c_str(), 1);
    fs::remove_all(home_);
  }

 private:
  std::string previous_;
  fs::path home_;
};

// The disk and seed among an instance's volumes (its lease markers aside).
inline std::size_t disk_and_seed(const std::map<std::string, std::string>& volumes) {
  return std::ranges::count_if(volumes, [](const auto& volume) {
    return volume.first.ends_with(".qcow2") || volume.first.ends_with("-seed.iso");
  });
}

// The lease markers among them.
inline std::size_t lease_markers(const std::map<std::string, std::string>& volumes) {
  return std::ranges::count_if(
      volumes, [](const auto& volume) { return volume.first.find(".lease") != std::string::npos; });
}

// The instance a child says it made ("\ninstance NAME\n"), waiting for it up to 5 minutes; "" when
// it said none.
inline std::string announced_instance(const ChildProcess& child) {
  for (auto deadline = std::chrono::steady_clock::now() + std::chrono::minutes(5);
       std::chrono::steady_clock::now() < deadline;
       std::this_thread::sleep_for(std::chrono::milliseconds(100))) {
    const std::string text = child.output();
    if (const auto at = text.find("\ninstance ");
        at != std::string::npos && text.find('\n', at + 1) != std::string::npos) {
      return text.substr(at + 10, text.find('\n', at + 1) - at - 10);
    }
  }
  return "";
}

}  // namespace vmfest::testing::libvirt_support
