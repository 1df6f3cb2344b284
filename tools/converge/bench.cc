// `converge bench <name>|all [options]`: runs the benchmarks registered under bench/.
#include "bench/bench.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "command.h"

namespace converge::bench {

std::vector<Benchmark>& Benchmarks() {
  static std::vector<Benchmark> benchmarks;
  return benchmarks;
}

}  // namespace converge::bench

namespace converge::cli {
namespace {

std::vector<bench::Benchmark> SortedBenchmarks() {
  std::vector<bench::Benchmark> all = bench::Benchmarks();
  std::sort(all.begin(), all.end(),
            [](const bench::Benchmark& a, const bench::Benchmark& b) { return a.name < b.name; });
  return all;
}

void PrintBenchUsage(std::FILE* out) {
  std::fputs(
      "Usage: converge bench <name> [options]   run one benchmark\n"
      "       converge bench all [options]      run every benchmark with the same options\n"
      "       converge bench <name> --help      options of one benchmark\n"
      "\n"
      "Benchmarks are programs, not tests: they start their peer systems themselves on\n"
      "loopback in temporary directories and measure them side by side in one run.\n"
      "Output: a table, or with --json one JSON object per line.\n"
      "\n"
      "Benchmarks:\n",
      out);
  for (const bench::Benchmark& b : SortedBenchmarks()) {
    std::fprintf(out, "  %-10s %s\n", b.name.c_str(), b.summary.c_str());
  }
}

int RunBench(int argc, char** argv) {
  if (argc < 2) {
    PrintBenchUsage(stderr);
    return 2;
  }
  std::string_view name = argv[1];
  if (name == "--help" || name == "-h" || name == "help") {
    PrintBenchUsage(stdout);
    return 0;
  }
  if (name == "all") {
    int worst = 0;
    for (const bench::Benchmark& b : SortedBenchmarks()) {
      // Same options for each; argv[1] ("all") becomes the benchmark's own argv[0].
      std::vector<char*> args(argv + 1, argv + argc);
      std::string own_name = b.name;
      args[0] = own_name.data();
      int rc = b.run(static_cast<int>(args.size()), args.data());
      worst = std::max(worst, rc);
    }
    return worst;
  }
  for (const bench::Benchmark& b : bench::Benchmarks()) {
    if (b.name == name) return b.run(argc - 1, argv + 1);
  }
  std::fprintf(stderr, "converge bench: unknown benchmark '%s'\n\n", argv[1]);
  PrintBenchUsage(stderr);
  return 2;
}

CommandRegistration registration({"bench", "benchmarks against peer systems (bench --help)",
                                  RunBench});

}  // namespace
}  // namespace converge::cli
