// converge-bench: the program behind `converge bench <name>|all [options]`, which runs the
// benchmarks registered under bench/. It is a program of its own so that the server binary
// never links the peers' clients (nats.c, hiredis); `converge bench` execs it from beside
// itself (tools/converge/bench.cc).
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "bench/bench.h"

namespace converge::bench {

std::vector<Benchmark>& Benchmarks() {
  static std::vector<Benchmark> benchmarks;
  return benchmarks;
}

namespace {

std::vector<Benchmark> SortedBenchmarks() {
  std::vector<Benchmark> all = Benchmarks();
  std::sort(all.begin(), all.end(),
            [](const Benchmark& a, const Benchmark& b) { return a.name < b.name; });
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
  for (const Benchmark& b : SortedBenchmarks()) {
    std::fprintf(out, "  %-10s %s\n", b.name.c_str(), b.summary.c_str());
  }
}

}  // namespace
}  // namespace converge::bench

// argv[1] is the benchmark's name (or all / --help); argv[0] is this program.
int main(int argc, char** argv) {
  using converge::bench::Benchmark;
  using converge::bench::Benchmarks;
  if (argc < 2) {
    converge::bench::PrintBenchUsage(stderr);
    return 2;
  }
  std::string_view name = argv[1];
  if (name == "--help" || name == "-h" || name == "help") {
    converge::bench::PrintBenchUsage(stdout);
    return 0;
  }
  if (name == "all") {
    int worst = 0;
    for (const Benchmark& b : converge::bench::SortedBenchmarks()) {
      // Same options for each; argv[1] ("all") becomes the benchmark's own argv[0].
      std::vector<char*> args(argv + 1, argv + argc);
      std::string own_name = b.name;
      args[0] = own_name.data();
      int rc = b.run(static_cast<int>(args.size()), args.data());
      worst = std::max(worst, rc);
    }
    return worst;
  }
  for (const Benchmark& b : Benchmarks()) {
    if (b.name == name) return b.run(argc - 1, argv + 1);
  }
  std::fprintf(stderr, "converge bench: unknown benchmark '%s'\n\n", argv[1]);
  converge::bench::PrintBenchUsage(stderr);
  return 2;
}
