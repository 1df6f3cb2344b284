#include "bench/timing.h"

#include <sys/prctl.h>
#include <time.h>

#include <algorithm>
#include <cerrno>
#include <cmath>

namespace converge::bench {

int64_t NowNanos() {
  timespec ts;
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

void SleepUntilNanos(int64_t ns) {
  timespec ts;
  ts.tv_sec = ns / 1'000'000'000;
  ts.tv_nsec = ns % 1'000'000'000;
  while (::clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, nullptr) == EINTR) {
  }
}

void ReduceTimerSlack() { ::prctl(PR_SET_TIMERSLACK, 1UL, 0UL, 0UL, 0UL); }

uint64_t Pacer::DueCount(int64_t now_ns, uint64_t total) const {
  if (now_ns < start_ns_) return 0;
  // Events i with start + floor(i * 1e9 / rate) <= now: i <= (now - start) * rate / 1e9
  // (conservatively recomputed to stay exact at the boundary).
  const auto elapsed = static_cast<double>(now_ns - start_ns_);
  auto n = static_cast<uint64_t>(elapsed * static_cast<double>(rate_per_s_) / 1e9) + 1;
  while (n > 0 && DueNanos(n - 1) > now_ns) --n;
  while (n < total && DueNanos(n) <= now_ns) ++n;
  return std::min(n, total);
}

LatencyRecorder::LatencyRecorder(size_t max_samples) : max_samples_(max_samples) {
  samples_.reserve(max_samples);
}

LatencyRecorder::Percentiles LatencyRecorder::Compute() {
  Percentiles p;
  if (samples_.empty()) return p;
  std::sort(samples_.begin(), samples_.end());
  auto at = [&](double q) {
    // Nearest rank: the smallest sample with at least q of all samples at or below it.
    auto rank = static_cast<size_t>(std::ceil(q * static_cast<double>(samples_.size())));
    rank = std::clamp<size_t>(rank, 1, samples_.size());
    return static_cast<double>(samples_[rank - 1]) / 1000.0;
  };
  p.p50_us = at(0.50);
  p.p99_us = at(0.99);
  p.p999_us = at(0.999);
  p.max_us = static_cast<double>(samples_.back()) / 1000.0;
  return p;
}

void FillPayload(char* p, size_t n) {
  std::memset(p, 0, std::min(n, kPayloadHeaderBytes));
  for (size_t i = kPayloadHeaderBytes; i < n; ++i) {
    p[i] = static_cast<char>('a' + (i % 26));
  }
}

}  // namespace converge::bench
