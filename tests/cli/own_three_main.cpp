// Helper of the reaper tests: owns three (or COUNT) running instances of the default model and
// never lets go. Creates PREFIX-1..3, starts them, prints "INSTANCE <name>" for each, then "READY",
// and sleeps until it is killed (the test SIGKILLs it, so nothing is cleaned up: the instances
// leak).
#include <unistd.h>

#include <cstdlib>
#include <exception>
#include <iostream>
#include <thread>
#include <vector>

#include "vmfest/gtest/fixture.h"
#include "vmfest/instance.h"

int main(int argc, char** argv) {
  const int count = argc == 3 ? std::atoi(argv[2]) : 3;
  if (argc < 2 || argc > 3 || count < 1) {
    std::cerr << "usage: " << argv[0] << " NAME-PREFIX [COUNT]\n";
    return 2;
  }
  try {
    std::vector<vmfest::Instance> instances;
    for (int index = 1; index <= count; ++index) {
      vmfest::InstanceRequest request;
      request.model = vmfest::testing::kDefaultModel;
      request.name = std::string(argv[1]) + "-" + std::to_string(index);
      request.ready_timeout = std::chrono::seconds(300);
      instances.push_back(vmfest::Instance::create(request));
    }
    std::vector<std::exception_ptr> failures(instances.size());
    {
      std::vector<std::jthread> boots;
      for (std::size_t index = 0; index < instances.size(); ++index) {
        boots.emplace_back([&, index] {
          try {
            instances[index].start();
          } catch (...) {
            failures[index] = std::current_exception();
          }
        });
      }
    }
    for (const auto& failure : failures) {
      if (failure) std::rethrow_exception(failure);
    }
    for (const auto& instance : instances) std::cout << "INSTANCE " << instance.name() << "\n";
    std::cout << "READY" << std::endl;
    while (true) ::pause();
  } catch (const std::exception& error) {
    std::cerr << "own_three: " << error.what() << "\n";
    return 1;
  }
}
