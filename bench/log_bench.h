// `converge bench log`: the same event-log workloads against converge in-process and its
// peers (NATS JetStream, Redis Streams, a raw-disk group-commit baseline).
//
// Workloads, per system:
//   publish      publish `events` events of `event_bytes`, batched or asynchronous as the
//                system does best; timed from the first publish call until the last event is
//                acknowledged (durable as the system's durability column says).
//   consume_ack  consume the events just published and acknowledge them through the system's
//                consumer mechanism; timed until the system has recorded every ack.
//   latency      a publisher at a fixed rate (real clock) and a consumer in another thread;
//                publish-to-deliver latency from each event's scheduled publish time (the start
//                of its publish call while the publisher keeps up) to its delivery.
//
// Each system gets its servers and files in a fresh temporary directory that is removed after.
#pragma once

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "bench/report.h"
#include "bench/timing.h"
#include "converge/status.h"

namespace converge::bench {

struct LogWorkload {
  uint64_t events = 1'000'000;
  uint32_t event_bytes = 128;
  uint32_t rate_per_s = 10'000;
  uint32_t latency_seconds = 10;  // measured; a warmup second is added before it
  uint32_t latency_warmup_seconds = 1;
  // converge's topic durability: "fsync" (the default and the targets' setting), "interval"
  // (synced every 50 ms) or "none"; the others show what the syncs cost.
  std::string converge_durability = "fsync";
  // --backend (with --via server): where `converge serve` keeps its log, "embedded" (its own
  // files) or "jetstream" (a nats-server started for it: file storage, one replica, as the
  // jetstream peer's streams).
  std::string converge_backend = "embedded";
  // --replicas: the replica count of the JetStream streams, of the jetstream peer and (with
  // --backend jetstream) of converge's; above 1 the nats-servers are a three-node cluster.
  uint32_t jetstream_replicas = 1;
  // --sidecars (with --backend jetstream): single_publish spreads its connections over this
  // many `converge serve` instances sharing the one JetStream log.
  uint32_t sidecars = 1;
  // --schema (with --via server): two more publish rows, the same JSON order events into a
  // plain topic and into a topic validated against a registered schema, side by side.
  bool schema = false;
  // --clients: the numbers of concurrent clients of the many-small-clients workloads
  // (single_publish: one event per request, each client waiting for its durable reply before
  // the next; fetch10_ack: each client fetching up to 10 events and acking them). `events`
  // is then the number of requests (events) per client count.
  std::vector<uint32_t> clients;
  std::string dir;  // this system's scratch directory (exists, empty)
};

// A system under test. Calls come in this order from one thread: Start, Publish, ConsumeAck
// (only after Publish), Latency, Stop. Each call appends its rows to `out`; a non-OK Status
// aborts this system's remaining workloads (Stop is still called).
class LogSystem {
 public:
  virtual ~LogSystem() = default;
  virtual std::string name() const = 0;
  virtual std::string durability() const = 0;

  virtual Status Start(const LogWorkload& w) = 0;
  virtual Status Publish(const LogWorkload& w, std::vector<Measurement>& out) = 0;
  virtual bool has_consume() const { return true; }
  virtual Status ConsumeAck(const LogWorkload& w, std::vector<Measurement>& out) = 0;
  virtual bool has_latency() const { return true; }
  virtual Status Latency(const LogWorkload& w, std::vector<Measurement>& out) = 0;
  // The many-small-clients workloads with `clients` concurrent clients (rows carry
  // Measurement::clients): `publish` single_publish, then `consume` fetch10_ack of what it
  // published (a system without a consumer row adds none). Only when has_many_clients().
  virtual bool has_many_clients() const { return false; }
  virtual Status ManyClients(const LogWorkload& w, uint32_t clients, bool publish, bool consume,
                             std::vector<Measurement>& out) {
    return Status::Ok();
  }
  // Stops servers and closes files. Must be safe after a failed Start.
  virtual Status Stop() = 0;
};

// Factories, one per adapter file.
std::unique_ptr<LogSystem> MakeRawDiskSystem();
std::unique_ptr<LogSystem> MakeJetStreamSystem();
std::unique_ptr<LogSystem> MakeRedisSystem(const std::string& appendfsync);  // always|everysec
// converge in-process (bench/converge_log.cc).
std::unique_ptr<LogSystem> MakeConvergeSystem();
// converge through the HTTP sidecar, `converge serve` as a child process (`--via server`,
// bench/converge_server.cc).
std::unique_ptr<LogSystem> MakeConvergeServerSystem();

// ---- shared pieces of the latency workload ----

// Events the latency workload publishes in total, and how many of the first are warmup
// (delivered but not recorded).
uint64_t LatencyTotalEvents(const LogWorkload& w);
uint64_t LatencyWarmupEvents(const LogWorkload& w);

// Counts deliveries of the latency workload and records the latency of each first delivery of
// a non-warmup event. Deliver() is called by one consumer thread; WaitAll() by another.
class DeliveryTracker {
 public:
  DeliveryTracker(uint64_t total_events, uint64_t warmup_events);

  // `payload` starts with the header written by StampPayload.
  void Deliver(const char* payload, size_t size, int64_t now_ns);
  // Blocks until every event was delivered once or `timeout_ms` passed; true if all arrived.
  bool WaitAll(int64_t timeout_ms);

  uint64_t delivered() const { return delivered_.load(std::memory_order_acquire); }
  uint64_t duplicates() const { return duplicates_; }
  uint64_t malformed() const { return malformed_; }
  LatencyRecorder& recorder() { return recorder_; }

 private:
  uint64_t total_;
  uint64_t warmup_;
  std::vector<bool> seen_;
  LatencyRecorder recorder_;
  uint64_t duplicates_ = 0;
  uint64_t malformed_ = 0;
  std::atomic<uint64_t> delivered_{0};
  std::mutex mu_;
  std::condition_variable all_delivered_;
};

struct PacedRunStats {
  int64_t start_ns = 0;
  int64_t end_ns = 0;      // when the last publish call returned
  int64_t max_lag_ns = 0;  // worst delay between an event's due time and its call
};

// Publishes `total` events at `rate_per_s` on the real clock. Calls
// publish(first_seq, count, pacer) whenever events are due; `count` > 1 when the publisher
// fell behind (bounded by max_batch). The callee stamps event i with pacer.DueNanos(i).
// Returns the first non-OK status from `publish`.
template <typename PublishFn>
Status RunPacedPublisher(uint64_t total, uint32_t rate_per_s, uint64_t max_batch,
                         PublishFn&& publish, PacedRunStats* stats) {
  ReduceTimerSlack();
  const int64_t start = NowNanos() + 1'000'000;
  Pacer pacer(rate_per_s, start);
  stats->start_ns = start;
  uint64_t next = 0;
  while (next < total) {
    const int64_t now = NowNanos();
    const uint64_t due = pacer.DueCount(now, total);
    if (due <= next) {
      SleepUntilNanos(pacer.DueNanos(next));
      continue;
    }
    const uint64_t count = std::min<uint64_t>(due - next, max_batch);
    const int64_t lag = now - pacer.DueNanos(next);
    if (lag > stats->max_lag_ns) stats->max_lag_ns = lag;
    CONVERGE_RETURN_IF_ERROR(publish(next, count, pacer));
    next += count;
  }
  stats->end_ns = NowNanos();
  return Status::Ok();
}

// A row of a many-clients workload: `events` in `elapsed_ns` from `clients` concurrent clients,
// the latency percentiles and mean of `latencies_ns` (sorted here), `errors` failed requests.
Measurement ManyClientsMeasurement(const std::string& workload, const std::string& system,
                                   const std::string& durability, uint32_t clients,
                                   uint64_t events, uint64_t errors, int64_t elapsed_ns,
                                   std::vector<int64_t>& latencies_ns, std::string note);

// The latency row: rate achieved by the publisher, percentiles of the tracker's samples.
Measurement LatencyMeasurement(const std::string& system, const std::string& durability,
                               DeliveryTracker& tracker, const PacedRunStats& stats,
                               const std::string& note);

}  // namespace converge::bench
