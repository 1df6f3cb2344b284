// Registry of `converge bench <name>` benchmarks. Each benchmark lives in its own file under
// bench/ and registers itself with a static BenchmarkRegistration; `converge bench all` runs
// every registered one with the same options.
//
// Benchmarks are programs, never timed tests. They start their peers themselves (on loopback,
// in temporary directories), run them side by side in one run and print a table for people
// or, with --json, one JSON object per line (see report.h).
#pragma once

#include <functional>
#include <string>
#include <vector>

namespace converge::bench {

struct Benchmark {
  std::string name;     // "log"
  std::string summary;  // one line for `converge bench --help`
  // argv[0] is the benchmark name. Returns the process exit code (0 ok, 1 failure, 2 usage).
  std::function<int(int argc, char** argv)> run;
};

std::vector<Benchmark>& Benchmarks();

struct BenchmarkRegistration {
  explicit BenchmarkRegistration(Benchmark benchmark) {
    Benchmarks().push_back(std::move(benchmark));
  }
};

}  // namespace converge::bench
