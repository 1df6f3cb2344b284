// `converge bench topology`: the time of `converge topology check` (read every manifest,
// build the graph, run every check) on a generated system (topology/generate.h), by default
// 1,000 services and 10,000 channels. Prints one line per run: a table row or, with --json,
// {"workload","system","services","channels","manifest_bytes","findings","threads","seconds",
// "cpu_seconds"} (the manifests are parsed on every core, as `converge topology check` does).
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>

#include "bench/bench.h"
#include "bench/report.h"
#include "core/command_line.h"
#include "env/parallel_for.h"
#include "topology/generate.h"
#include "topology/manifest.h"
#include "topology/topology.h"

namespace converge::bench {
namespace {

int Run(int argc, char** argv) {
  CLI::App app("Time `converge topology check` on a generated system.", "converge bench topology");
  cli::Configure(app);
  bool json = false;
  uint64_t services = 1000, channels = 10000, runs = 3, seed = 1;
  std::string dir;
  app.add_flag("--json", json);
  app.add_option("--services", services, "services (default 1000)")
      ->check(cli::Integer(1, 100'000));
  app.add_option("--channels", channels, "channels (default 10000)")
      ->check(cli::Integer(0, 10'000'000));
  app.add_option("--runs", runs, "timed runs (default 3)")->check(cli::Integer(1, 1000));
  app.add_option("--seed", seed)->check(cli::Integer(0, UINT64_MAX));
  app.add_option("--dir", dir,
                 "write the manifests here and keep them (default: a temporary directory)");
  if (int rc = cli::ParseOrExit(app, argc, argv); rc >= 0) return rc;

  namespace fs = std::filesystem;
  const bool temporary = dir.empty();
  if (temporary) {
    dir = (fs::temp_directory_path() / ("converge-topology-bench-" + std::to_string(::getpid())))
              .string();
  }
  std::error_code ec;
  fs::create_directories(dir, ec);
  uint64_t bytes = 0;
  for (const auto& [name, text] : topology::GenerateSystem(static_cast<uint32_t>(services),
                                                           static_cast<uint32_t>(channels), seed)) {
    std::ofstream out(fs::path(dir) / name, std::ios::binary);
    out << text;
    bytes += text.size();
    if (!out) {
      std::fprintf(stderr, "converge bench topology: cannot write %s\n", name.c_str());
      return 1;
    }
  }
  const unsigned threads = std::max(1u, std::thread::hardware_concurrency());
  int rc = 0;
  for (uint64_t run = 0; run < runs; ++run) {
    const auto t0 = std::chrono::steady_clock::now();
    const std::clock_t c0 = std::clock();
    Result<std::vector<topology::Service>> loaded = topology::LoadManifests(
        Env::Default().fs(), dir, [threads](size_t n, const std::function<void(size_t)>& task) {
          ParallelFor(n, threads, task);
        });
    if (!loaded.ok()) {
      std::fprintf(stderr, "converge bench topology: %s\n",
                   std::string(loaded.status().message()).c_str());
      rc = 1;
      break;
    }
    const topology::System system = topology::System::Build(std::move(*loaded));
    const std::vector<topology::Finding> findings = system.Check(&topology::JsonSchemaContract);
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    // CPU time of every thread: the wall time is this divided among the cores, unless the
    // machine is busy with other work.
    const double cpu_seconds = static_cast<double>(std::clock() - c0) / CLOCKS_PER_SEC;
    size_t errors = 0;
    for (const auto& f : findings) errors += f.severity == topology::Severity::kError;
    if (errors > 0) {
      std::fprintf(stderr, "converge bench topology: the generated system has %zu errors\n",
                   errors);
      rc = 1;
    }
    if (json) {
      std::printf(
          "{\"workload\":\"topology_check\",\"system\":\"converge\",\"services\":%llu,"
          "\"channels\":%llu,\"manifest_bytes\":%llu,\"findings\":%zu,\"threads\":%u,"
          "\"seconds\":%.3f,\"cpu_seconds\":%.3f}\n",
          static_cast<unsigned long long>(services), static_cast<unsigned long long>(channels),
          static_cast<unsigned long long>(bytes), findings.size(), threads, seconds, cpu_seconds);
    } else {
      std::printf(
          "topology_check  %llu services  %llu channels  %s bytes  %zu findings  %u threads  "
          "%.3f s (cpu %.3f s)\n",
          static_cast<unsigned long long>(services), static_cast<unsigned long long>(channels),
          FormatThousands(static_cast<double>(bytes)).c_str(), findings.size(), threads, seconds,
          cpu_seconds);
    }
    std::fflush(stdout);
  }
  if (temporary) fs::remove_all(dir, ec);
  return rc;
}

const BenchmarkRegistration kRegistration{Benchmark{
    "topology", "converge topology check on a generated system (1,000 services, 10,000 channels)",
    Run}};

}  // namespace
}  // namespace converge::bench
