#include "outbox/relay_core.h"

#include <algorithm>

namespace converge::outbox_internal {

namespace {
constexpr int64_t kNanosPerMs = 1'000'000;
}

RelayCore::RelayCore(Clock& clock, Random& random, RelayCoreOptions options)
    : clock_(clock), random_(random), options_(options) {}

int64_t RelayCore::current_backoff_cap_ms() const {
  int64_t cap = options_.retry_base_delay_ms;
  for (uint32_t i = 0; i < failures_ && cap < options_.retry_max_delay_ms; ++i) cap *= 2;
  return std::min(cap, options_.retry_max_delay_ms);
}

void RelayCore::Fail() {
  // Full jitter: uniform in [0, cap]; the cap doubles with each consecutive failure.
  const int64_t cap = current_backoff_cap_ms();
  ++failures_;
  const int64_t delay_ms = random_.UniformRange(0, cap);
  rebalance_ = true;  // after an error, re-check connection and lease first
  WaitUntil(NowNs() + delay_ms * kNanosPerMs, Op::kAcquire);
  backoff_ = true;
}

void RelayCore::WaitUntil(int64_t deadline_ns, Op after) {
  next_ = Op::kWait;
  backoff_ = false;
  linger_ = false;
  wait_until_ns_ = deadline_ns;
  after_wait_ = after;
}

void RelayCore::AcquireDone(const Status& status, bool active) {
  if (!status.ok()) return Fail();
  if (rebalance_) {
    rebalance_ = false;
    next_rebalance_ns_ = NowNs() + options_.rebalance_interval_ms * kNanosPerMs;
  }
  if (!active) {
    // Standby: someone else holds the outbox; try again later (or when woken).
    rebalance_ = true;
    return WaitUntil(NowNs() + options_.standby_retry_ms * kNanosPerMs, Op::kAcquire);
  }
  next_ = Op::kClaim;
}

void RelayCore::ClaimDone(const Status& status, size_t rows, size_t good, size_t malformed,
                          bool full) {
  if (!status.ok()) return Fail();
  failures_ = 0;
  full_ = full;
  rows_ = rows;
  malformed_ = malformed;
  if (rows == 0) {
    // Nothing to do: wait for a wake-up, or poll when the interval has passed.
    const int64_t now = NowNs();
    int64_t deadline = now + options_.poll_interval_ms * kNanosPerMs;
    Op after = Op::kClaim;
    if (next_rebalance_ns_ <= deadline) {
      deadline = std::max(now, next_rebalance_ns_);
      after = Op::kAcquire;
    }
    return WaitUntil(deadline, after);
  }
  next_ = good > 0 ? Op::kPublish : Op::kDeadLetter;
}

void RelayCore::PublishDone(const Status& status, size_t newly_malformed) {
  if (!status.ok()) return Fail();
  malformed_ += newly_malformed;
  next_ = malformed_ > 0 ? Op::kDeadLetter : Op::kRemove;
}

void RelayCore::DeadLetterDone(const Status& status) {
  if (!status.ok()) return Fail();
  next_ = Op::kRemove;
}

void RelayCore::RemoveDone(const Status& status) {
  if (!status.ok()) return Fail();
  failures_ = 0;
  const int64_t now = NowNs();
  if (now >= next_rebalance_ns_) {
    rebalance_ = true;
    next_ = Op::kAcquire;
    return;
  }
  if (full_) {
    next_ = Op::kClaim;  // more rows are waiting: no wait at all
    return;
  }
  if (options_.linger_us > 0 && rows_ >= options_.linger_min_rows) {
    // The outbox is busy (writers commit faster than one batch per cycle): let rows gather
    // briefly, so that the next batch costs one log sync and one delete for more events. A
    // quiet outbox (small batches) is claimed at once on the next wake-up.
    WaitUntil(now + options_.linger_us * 1000, Op::kClaim);
    linger_ = true;
    return;
  }
  // A partial batch drained what was visible; a wake-up that arrived meanwhile is still
  // pending on the waker, so this wait ends at once if there is more.
  WaitUntil(now + options_.poll_interval_ms * kNanosPerMs, Op::kClaim);
}

void RelayCore::WaitDone(bool notified) {
  next_ = after_wait_;
  backoff_ = false;
  linger_ = false;
  // Past the rebalance deadline (also when the wait was cut to end at it), the next acquire
  // rebalances, which sets the next deadline; otherwise every idle wait would end at once.
  if ((next_ == Op::kClaim || next_ == Op::kAcquire) && NowNs() >= next_rebalance_ns_) {
    rebalance_ = true;
    next_ = Op::kAcquire;
  }
  (void)notified;
}

}  // namespace converge::outbox_internal
