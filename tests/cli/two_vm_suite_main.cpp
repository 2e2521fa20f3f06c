// Helper of the slot-stall test: a suite of ROUNDS tests that each need two VMs and start them one
// after the other, as most tests do. In its first test it starts its first VM, then waits at a
// barrier (a file per party in BARRIER-DIR) until all PARTIES hold one before it starts its
// second: every process then holds a VM and waits for another, the hold and wait that used to
// deadlock on the host's VM cap. Later tests meet it or not, as the suites' timing has it.
// Prints "ROUND <n> <seconds>" per test; exits 0 when every test passed.
#include <chrono>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <string>
#include <thread>

#include "vmfest/gtest/fixture.h"
#include "vmfest/instance.h"

namespace {
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

vmfest::Instance started(const std::string& name) {
  vmfest::InstanceRequest request;
  request.model = vmfest::testing::kDefaultModel;
  request.name = name;
  vmfest::Instance instance = vmfest::Instance::create(request);
  instance.start();
  return instance;
}

void await_all_parties(const fs::path& barrier, const std::string& party, int parties) {
  std::ofstream(barrier / party).close();
  const auto deadline = Clock::now() + std::chrono::minutes(5);
  while (true) {
    int arrived = 0;
    for (const auto& entry : fs::directory_iterator(barrier)) {
      arrived += entry.is_regular_file() ? 1 : 0;
    }
    if (arrived >= parties) return;
    if (Clock::now() > deadline) throw std::runtime_error("the other parties never arrived");
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 5) {
    std::cerr << "usage: " << argv[0] << " NAME-PREFIX ROUNDS BARRIER-DIR PARTIES\n";
    return 2;
  }
  const std::string prefix = argv[1];
  const int rounds = std::atoi(argv[2]);
  const fs::path barrier = argv[3];
  const int parties = std::atoi(argv[4]);
  try {
    for (int round = 1; round <= rounds; ++round) {
      const auto began = Clock::now();
      const std::string name = prefix + "-" + std::to_string(round);
      vmfest::Instance first = started(name + "-a");
      if (round == 1) await_all_parties(barrier, prefix, parties);
      vmfest::Instance second = started(name + "-b");
      for (vmfest::Instance* instance : {&first, &second}) {
        instance->ssh().check("echo " + instance->name() + " > /tmp/who && cat /tmp/who");
      }
      second.destroy();
      first.destroy();
      std::cout << "ROUND " << round << " "
                << std::chrono::duration<double>(Clock::now() - began).count() << std::endl;
    }
    return 0;
  } catch (const std::exception& error) {
    std::cerr << "two_vm_suite: " << error.what() << "\n";
    return 1;
  }
}
