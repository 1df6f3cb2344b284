// converge: the command-line entry point (sidecar, benchmarks, simulator, admin commands).
#include <algorithm>
#include <cstdio>
#include <string>
#include <string_view>

#include "command.h"
#include "converge/version.h"

namespace converge::cli {

std::vector<Command>& Commands() {
  static std::vector<Command> commands;
  return commands;
}

namespace {

void PrintUsage(std::FILE* out) {
  std::fputs(
      "converge - keep data consistent and synchronized across microservices\n"
      "\n"
      "Usage: converge <command> [options]      (converge <command> --help for details)\n"
      "\n"
      "Commands:\n",
      out);
  auto commands = Commands();
  std::sort(commands.begin(), commands.end(),
            [](const Command& a, const Command& b) { return a.name < b.name; });
  for (const Command& c : commands) {
    std::fprintf(out, "  %-14s %s\n", c.name.c_str(), c.summary.c_str());
  }
  std::fprintf(out, "  %-14s %s\n", "version", "print the version");
  std::fprintf(out, "  %-14s %s\n", "help", "print this help");
}

}  // namespace
}  // namespace converge::cli

int main(int argc, char** argv) {
  using converge::cli::Commands;
  if (argc < 2) {
    converge::cli::PrintUsage(stderr);
    return 2;
  }
  std::string_view name = argv[1];
  if (name == "--help" || name == "-h" || name == "help") {
    converge::cli::PrintUsage(stdout);
    return 0;
  }
  if (name == "version" || name == "--version") {
    std::printf("converge %s\n", converge::kVersion);
    return 0;
  }
  for (const auto& command : Commands()) {
    if (command.name == name) return command.run(argc - 1, argv + 1);
  }
  std::fprintf(stderr, "converge: unknown command '%s'\n\n", argv[1]);
  converge::cli::PrintUsage(stderr);
  return 2;
}
