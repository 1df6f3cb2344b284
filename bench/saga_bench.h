// Options of `converge bench saga` and its two-phase-commit workload (bench/twopc_bench.cc).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "bench/report.h"
#include "converge/status.h"

namespace converge::bench {

struct SagaBenchOptions {
  uint64_t sagas = 200'000;
  uint64_t window = 2'000;
  std::vector<std::string> topics = {"fsync", "none"};
  uint64_t txns = 20'000;
  uint64_t clients = 16;
  std::vector<std::string> workloads = {"saga", "twopc"};
  bool json = false;
  bool help = false;
  std::string dir;
};

// Two-phase commits across two PostgreSQL databases and the machine's fsync rate; appends its
// rows to *rows. An error when PostgreSQL cannot be started or a commit fails.
Status RunTwoPhaseBench(const SagaBenchOptions& options, std::vector<Measurement>* rows);

}  // namespace converge::bench
