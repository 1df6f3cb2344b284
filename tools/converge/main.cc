// converge: the command-line entry point (sidecar, benchmarks, simulator, admin commands).
#include <cstdio>
#include <cstring>
#include <string>
#include <string_view>

#include "converge/version.h"

namespace {

constexpr char kUsage[] =
    "converge - keep data consistent and synchronized across microservices\n"
    "\n"
    "Usage: converge <command> [options]\n"
    "\n"
    "Commands:\n"
    "  version        print the version\n"
    "  help           print this help\n";

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fputs(kUsage, stderr);
    return 2;
  }
  std::string_view cmd = argv[1];
  if (cmd == "--help" || cmd == "-h" || cmd == "help") {
    std::fputs(kUsage, stdout);
    return 0;
  }
  if (cmd == "version" || cmd == "--version") {
    std::printf("converge %s\n", converge::kVersion);
    return 0;
  }
  std::fprintf(stderr, "converge: unknown command '%s'\n\n%s", argv[1], kUsage);
  return 2;
}
