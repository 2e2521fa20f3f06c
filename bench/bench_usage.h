// What every benchmark does with its command line before it starts a VM: --help (or -h) prints
// its usage and exits 0; any other option prints it and exits 2.
#pragma once

#include <cstdlib>
#include <iostream>
#include <string_view>

namespace vmfest::bench {

inline void answer_help(int argc, char** argv, std::string_view usage) {
  for (int index = 1; index < argc; ++index) {
    const std::string_view argument = argv[index];
    if (argument == "--help" || argument == "-h") {
      std::cout << usage;
      std::exit(0);
    }
    if (argument.starts_with('-')) {
      std::cerr << argv[0] << ": unknown option " << argument << "\n" << usage;
      std::exit(2);
    }
  }
}

}  // namespace vmfest::bench
