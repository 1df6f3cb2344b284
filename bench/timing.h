// Clocks, pacing and latency percentiles for benchmarks. The benchmark harness is an edge: it
// reads the real monotonic clock directly (std::chrono::steady_clock / CLOCK_MONOTONIC).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

namespace converge::bench {

// Nanoseconds on the monotonic clock (CLOCK_MONOTONIC, the same clock in every thread).
int64_t NowNanos();

// Sleeps until the monotonic clock reads `ns` (returns at once if it already passed).
void SleepUntilNanos(int64_t ns);

// Lowers this thread's timer slack to 1 ns so paced sleeps wake within a few microseconds
// instead of the default 50 us.
void ReduceTimerSlack();

// The schedule of a fixed-rate publisher: event i is due at start + i / rate.
class Pacer {
 public:
  Pacer(uint64_t rate_per_s, int64_t start_ns) : rate_per_s_(rate_per_s), start_ns_(start_ns) {}
  int64_t DueNanos(uint64_t i) const {
    // i < rate * 3600 * 1000 (the harness bounds runs) keeps i * 1e9 within 64 bits.
    return start_ns_ + static_cast<int64_t>(i * 1'000'000'000u / rate_per_s_);
  }
  // How many of events [0, total) are due at `now_ns`.
  uint64_t DueCount(int64_t now_ns, uint64_t total) const;

 private:
  uint64_t rate_per_s_;
  int64_t start_ns_;
};

// Latency samples (nanoseconds), kept exactly and sorted on demand. Bounded: samples beyond
// `max_samples` are counted in overflow() and not kept. One writer thread; read after it is done.
class LatencyRecorder {
 public:
  explicit LatencyRecorder(size_t max_samples);

  void Record(int64_t nanos) {
    if (samples_.size() < max_samples_) {
      samples_.push_back(nanos);
    } else {
      ++overflow_;
    }
  }
  size_t count() const { return samples_.size(); }
  uint64_t overflow() const { return overflow_; }

  struct Percentiles {
    double p50_us = 0;
    double p99_us = 0;
    double p999_us = 0;
    double max_us = 0;
  };
  // Nearest-rank percentiles of the kept samples, in microseconds. All zero if empty.
  Percentiles Compute();

 private:
  size_t max_samples_;
  std::vector<int64_t> samples_;
  uint64_t overflow_ = 0;
};

// Event payloads: [u64 sequence][i64 stamp_ns][filler up to the event size], little-endian
// host order (producer and consumer run in this process). The stamp is the time the event
// was due to be published, so consumers compute publish-to-deliver latency.
inline constexpr size_t kPayloadHeaderBytes = 16;

// Fills `n` bytes (n >= kPayloadHeaderBytes) with the filler pattern and a zero header.
void FillPayload(char* p, size_t n);
inline void StampPayload(char* p, uint64_t seq, int64_t stamp_ns) {
  std::memcpy(p, &seq, 8);
  std::memcpy(p + 8, &stamp_ns, 8);
}
inline uint64_t PayloadSeq(const char* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}
inline int64_t PayloadStamp(const char* p) {
  int64_t v;
  std::memcpy(&v, p + 8, 8);
  return v;
}

}  // namespace converge::bench
