// `converge bench outbox`: transactional messaging end to end — a business transaction writes
// rows and their events, a relay moves the events to a log, a consumer applies each event's
// effect exactly once — on converge (SQLite, PostgreSQL) and on a straightforward polling
// outbox over the same PostgreSQL (SELECT ... FOR UPDATE SKIP LOCKED, publish to JetStream,
// DELETE; a JetStream pull consumer with a processed-ids table).
//
// Workloads
//   e2e      `events` events written by `writers` threads in transactions of `tx_events`
//            business rows + events (each row one order, one event); timed from the first
//            write until the consumer has committed every effect; then checked: every event
//            applied exactly once (per-key counters sum to `events`, processed ids = events).
//   latency  one event per transaction at `rate_per_s` for `latency_seconds`; commit-to-effect
//            latency = (consumer's commit returned) - (writer's commit returned), per event.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "bench/report.h"
#include "converge/event.h"
#include "converge/status.h"

namespace converge::bench {

struct OutboxWorkload {
  uint64_t events = 200'000;
  uint32_t tx_events = 100;    // business rows (and events) per transaction
  uint32_t keys = 1000;        // partition keys (customers); per writer thread a disjoint set
  uint32_t writers = 4;        // PostgreSQL writer threads (SQLite: always 1)
  uint32_t workers = 4;        // PostgreSQL consumer transactions at once (SQLite: 1)
  uint32_t rate_per_s = 1000;  // latency workload
  uint32_t latency_seconds = 5;
  std::string dir;  // scratch directory of this system
};

class OutboxSystem {
 public:
  virtual ~OutboxSystem() = default;
  virtual std::string name() const = 0;
  virtual std::string durability() const = 0;
  // Starts servers, creates databases and tables, starts relay and consumer.
  virtual Status Start(const OutboxWorkload& w) = 0;
  virtual Status EndToEnd(const OutboxWorkload& w, std::vector<Measurement>& out) = 0;
  virtual Status Latency(const OutboxWorkload& w, std::vector<Measurement>& out) = 0;
  virtual Status Stop() = 0;
};

std::unique_ptr<OutboxSystem> MakeConvergeOutboxSystem(bool postgres);
std::unique_ptr<OutboxSystem> MakePollingOutboxSystem();
// PostgreSQL table capture (bench/capture_bench.cc): e2e = row changes/s into the log,
// latency = capture lag at 5,000 changes/s.
std::unique_ptr<OutboxSystem> MakeCaptureSystem();

// ---- shared by the systems ----

// The event of order `seq`: key "c<writer>-<k>", data {"order":seq,"amount":...}.
Event OrderEvent(uint64_t seq, const std::string& key);
// The order number in an OrderEvent's data; -1 if absent.
int64_t OrderNumber(std::string_view data);
// The key of order `seq` written by writer `writer` of `writers` over `keys` keys: each writer
// has its own keys, so writers never wait on each other's per-key locks.
std::string OrderKey(uint64_t seq, uint32_t writer, uint32_t writers, uint32_t keys);

// Commit and effect times per order (monotonic ns), filled by writers and consumers, for the
// latency workload.
class CommitEffectTimes {
 public:
  explicit CommitEffectTimes(size_t n);
  void Committed(uint64_t seq, int64_t ns);
  void Applied(uint64_t seq, int64_t ns);
  // Latency rows (p50/p99/p999) over orders [skip, n) that have both times; `missing` counts
  // orders without an effect.
  Measurement Summarize(const std::string& system, const std::string& durability, size_t skip,
                        double seconds, const std::string& note, size_t* missing) const;

 private:
  size_t n_;
  std::unique_ptr<std::atomic<int64_t>[]> commit_;
  std::unique_ptr<std::atomic<int64_t>[]> effect_;
};

}  // namespace converge::bench
