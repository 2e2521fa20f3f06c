// A separate process that sets up one model, for the tests of concurrent and interrupted setups.
// Usage: vmfest_setup_model_helper SOURCE NAME [FILE_SIZE_LIMIT_BYTES]
// Uses $VMFEST_HOME; prints "disk=PATH sha256=HEX" on success; exit 1 with the error otherwise.
// FILE_SIZE_LIMIT_BYTES sets RLIMIT_FSIZE, so writes past it fail as they do on a full disk.
#include <sys/resource.h>

#include <csignal>
#include <cstdio>
#include <string>

#include "vmfest/error.h"
#include "vmfest/model.h"

int main(int argc, char** argv) {
  if (argc < 3 || argc > 4) {
    std::fprintf(stderr, "usage: %s SOURCE NAME [FILE_SIZE_LIMIT_BYTES]\n", argv[0]);
    return 2;
  }
  if (argc == 4) {
    std::signal(SIGXFSZ, SIG_IGN);  // a write past the limit then fails with EFBIG
    const rlim_t limit = std::stoull(argv[3]);
    const rlimit fsize{limit, limit};
    if (setrlimit(RLIMIT_FSIZE, &fsize) != 0) std::perror("setrlimit");
  }
  try {
    vmfest::SetupOptions options;
    options.name = argv[2];
    const vmfest::Model model = vmfest::setup_model(argv[1], options);
    std::printf("disk=%s sha256=%s\n", model.disk.c_str(), model.sha256.c_str());
    return 0;
  } catch (const vmfest::Error& error) {
    std::fprintf(stderr, "%s\n", error.what());
    return 1;
  }
}
