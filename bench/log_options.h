// Options of `converge bench log` and the comparison it prints after the table.
#pragma once

#include <cstdio>
#include <string>
#include <string_view>
#include <vector>

#include "bench/log_bench.h"
#include "bench/report.h"
#include "converge/status.h"

namespace converge::bench {

inline constexpr const char* kLogSystems = "converge,jetstream,redis-always,redis-everysec,raw";
inline constexpr const char* kLogWorkloads = "publish,consume_ack,latency";
// With --clients (the default workloads then).
inline constexpr const char* kManyClientWorkloads = "single_publish,fetch10_ack";

struct LogOptions {
  LogWorkload workload;  // workload.dir is filled per system by the runner
  std::vector<std::string> systems;
  std::vector<std::string> workloads;
  bool systems_explicit = false;  // --systems given (a missing system is then an error)
  bool json = false;
  bool help = false;
  std::string dir;  // base of the scratch directory; empty = $TMPDIR or /tmp
  std::string via = "inproc";
  uint32_t rounds = 1;  // repeat the whole run; report each row's median
};

// Parses argv (argv[0] = "log"). InvalidArgument names the bad option or value.
Result<LogOptions> ParseLogOptions(int argc, char** argv);

void PrintLogHelp(std::FILE* out);

// "a,b,,c" -> {"a", "b", "c"}
std::vector<std::string> SplitList(std::string_view s);

// One row per (workload, system, durability), in first-seen order: the median of that pair's rows
// by events_per_s (throughput workloads) or p99_us (latency); its note says "median of N".
std::vector<Measurement> MedianOfRounds(const std::vector<Measurement>& rows);

// The lines after the table: each peer relative to JetStream and the raw-disk baseline, and
// converge against the targets (PASS/MISS) when converge was measured; with
// `via_server` the sidecar's targets.
std::string LogComparison(const std::vector<Measurement>& rows, bool via_server = false);

}  // namespace converge::bench
