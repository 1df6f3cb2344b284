// Results of a benchmark run and the two ways they are printed: a table for people and, with
// --json, one JSON object per line. Every line carries at least
//   {"workload","system","durability","events_per_s","p50_us","p99_us","p999_us"}
// (the format of `converge bench log`; a benchmark counting another unit also repeats the rate
// under Measurement::rate_name: "sagas_per_s", "txns_per_s", "ops_per_s")
// (latencies are null where a workload does not measure them), then extra context fields.
#pragma once

#include <cstdint>
#include <cstdio>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace converge::bench {

struct Measurement {
  std::string workload;     // "publish" | "consume_ack" | "latency"
  std::string system;       // "converge", "jetstream", "redis-always", "raw-b512", ...
  std::string durability;   // "fsync", "interval-1s", ...
  double events_per_s = 0;  // the throughput, printed under rate_name
  // The throughput's JSON name, after its unit: "events_per_s", "sagas_per_s", "txns_per_s".
  std::string rate_name = "events_per_s";
  std::optional<double> p50_us;
  std::optional<double> p99_us;
  std::optional<double> p999_us;
  uint64_t events = 0;  // events the figure is based on
  double seconds = 0;   // wall time the figure is based on
  std::string note;     // how it was measured (batch sizes, API used)
  // Workloads of many small clients (`converge bench log --clients`): how many concurrent
  // clients, the mean latency and the failed requests. Printed only when set.
  std::optional<uint64_t> clients;
  std::optional<double> mean_us;
  std::optional<uint64_t> errors;
};

// `s` as a JSON string literal, quotes included (escapes ", \ and control characters; bytes
// >= 0x80 are passed through, so valid UTF-8 stays valid).
std::string JsonString(std::string_view s);

// One JSON object, no trailing newline. Numbers are printed with at most 3 decimals;
// missing latencies are null.
std::string ToJsonLine(const Measurement& m);

// The table for people: one row per measurement, columns aligned.
std::string FormatTable(const std::vector<Measurement>& rows);

// 1234567.8 -> "1,234,568"
std::string FormatThousands(double value);

}  // namespace converge::bench
