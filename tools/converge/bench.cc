// `converge bench <name>|all [options]`: runs converge-bench, the program of the benchmarks
// (bench/main.cc), from the folder of this binary. The benchmarks live in a program of their
// own so that this binary, the server, does not link the peers' clients (nats.c, hiredis) nor
// need their packages installed.
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>

#include "command.h"

namespace converge::cli {
namespace {

int RunBench(int argc, char** argv) {
  char buf[4096];
  const ssize_t n = ::readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  if (n <= 0) {
    std::fprintf(stderr, "converge bench: cannot find this executable (/proc/self/exe)\n");
    return 2;
  }
  std::string path(buf, static_cast<size_t>(n));
  path = path.substr(0, path.rfind('/') + 1) + "converge-bench";
  if (::access(path.c_str(), X_OK) != 0) {
    std::fprintf(stderr,
                 "converge bench: the benchmarks are not built (no %s).\n"
                 "They are a separate program, built when their packages are installed: "
                 "`make bench` installs them (scripts/install-deps bench) and builds it.\n",
                 path.c_str());
    return 2;
  }
  // argv[0] ("bench") becomes the program; the rest is passed unchanged.
  argv[0] = path.data();
  ::execv(path.c_str(), argv);
  std::fprintf(stderr, "converge bench: cannot run %s: %s\n", path.c_str(), std::strerror(errno));
  return 2;
}

CommandRegistration registration({"bench", "benchmarks against peer systems (bench --help)",
                                  RunBench});

}  // namespace
}  // namespace converge::cli
