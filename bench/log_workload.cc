// The pieces of the log workloads the adapters share (latency tracking and its row).
#include <algorithm>
#include <chrono>
#include <cstdio>

#include "bench/log_bench.h"

namespace converge::bench {

uint64_t LatencyTotalEvents(const LogWorkload& w) {
  return static_cast<uint64_t>(w.rate_per_s) * (w.latency_seconds + w.latency_warmup_seconds);
}

uint64_t LatencyWarmupEvents(const LogWorkload& w) {
  return static_cast<uint64_t>(w.rate_per_s) * w.latency_warmup_seconds;
}

DeliveryTracker::DeliveryTracker(uint64_t total_events, uint64_t warmup_events)
    : total_(total_events),
      warmup_(warmup_events),
      seen_(total_events, false),
      recorder_(total_events > warmup_events ? total_events - warmup_events : 0) {}

void DeliveryTracker::Deliver(const char* payload, size_t size, int64_t now_ns) {
  if (size < kPayloadHeaderBytes) {
    ++malformed_;
    return;
  }
  const uint64_t seq = PayloadSeq(payload);
  if (seq >= total_) {
    ++malformed_;
    return;
  }
  if (seen_[seq]) {
    ++duplicates_;
    return;
  }
  seen_[seq] = true;
  if (seq >= warmup_) recorder_.Record(now_ns - PayloadStamp(payload));
  const uint64_t delivered = delivered_.fetch_add(1, std::memory_order_acq_rel) + 1;
  if (delivered == total_) {
    { std::lock_guard<std::mutex> lock(mu_); }
    all_delivered_.notify_all();
  }
}

bool DeliveryTracker::WaitAll(int64_t timeout_ms) {
  std::unique_lock<std::mutex> lock(mu_);
  return all_delivered_.wait_for(lock, std::chrono::milliseconds(timeout_ms),
                                 [&] { return delivered() >= total_; });
}

Measurement LatencyMeasurement(const std::string& system, const std::string& durability,
                               DeliveryTracker& tracker, const PacedRunStats& stats,
                               const std::string& note) {
  LatencyRecorder::Percentiles p = tracker.recorder().Compute();
  Measurement m;
  m.workload = "latency";
  m.system = system;
  m.durability = durability;
  m.seconds = static_cast<double>(stats.end_ns - stats.start_ns) / 1e9;
  m.events = tracker.delivered();
  m.events_per_s = m.seconds > 0 ? static_cast<double>(m.events) / m.seconds : 0;
  m.p50_us = p.p50_us;
  m.p99_us = p.p99_us;
  m.p999_us = p.p999_us;
  char extra[160];
  std::snprintf(extra, sizeof(extra), "; max %.0f us; publisher max lag %.0f us", p.max_us,
                static_cast<double>(stats.max_lag_ns) / 1000.0);
  m.note = note + extra;
  if (tracker.duplicates() > 0)
    m.note += "; " + std::to_string(tracker.duplicates()) + " redelivered";
  return m;
}

Measurement ManyClientsMeasurement(const std::string& workload, const std::string& system,
                                   const std::string& durability, uint32_t clients,
                                   uint64_t events, uint64_t errors, int64_t elapsed_ns,
                                   std::vector<int64_t>& latencies_ns, std::string note) {
  Measurement m;
  m.workload = workload;
  m.system = system;
  m.durability = durability;
  m.events = events;
  m.seconds = static_cast<double>(elapsed_ns) / 1e9;
  m.events_per_s = m.seconds > 0 ? static_cast<double>(events) / m.seconds : 0;
  m.clients = clients;
  m.errors = errors;
  if (!latencies_ns.empty()) {
    std::sort(latencies_ns.begin(), latencies_ns.end());
    auto at = [&](double q) {
      const size_t i = std::min(latencies_ns.size() - 1,
                                static_cast<size_t>(q * static_cast<double>(latencies_ns.size())));
      return static_cast<double>(latencies_ns[i]) / 1e3;
    };
    m.p50_us = at(0.50);
    m.p99_us = at(0.99);
    m.p999_us = at(0.999);
    double sum = 0;
    for (int64_t v : latencies_ns) sum += static_cast<double>(v);
    m.mean_us = sum / static_cast<double>(latencies_ns.size()) / 1e3;
  }
  m.note = std::move(note);
  return m;
}

}  // namespace converge::bench
