// The relay's decisions, without I/O: a state machine fed the results of the steps it asks
// for (acquire lease -> claim batch -> publish -> dead-letter -> remove), deciding what comes
// next, when to wait and how long to back off. The driver (relay.cc) performs the steps with
// an OutboxSource and a RelaySink; tests feed it results directly.
//
// Time and randomness come from the Clock and Random it is given (the Env's).
// Thread-safety: none; one driver thread.
#pragma once

#include <cstdint>
#include <string>

#include "converge/env.h"
#include "converge/status.h"

namespace converge::outbox_internal {

struct RelayCoreOptions {
  int64_t poll_interval_ms = 500;
  int64_t retry_base_delay_ms = 10;
  int64_t retry_max_delay_ms = 5'000;
  int64_t standby_retry_ms = 1'000;
  int64_t rebalance_interval_ms = 1'000;
  // After a partial batch of at least linger_min_rows rows, wait linger_us (ignoring wake-ups)
  // before the next claim; 0 = never.
  int64_t linger_us = 0;
  uint32_t linger_min_rows = 0;
};

class RelayCore {
 public:
  enum class Op : uint8_t {
    kAcquire,     // take/renew the lease (rebalance() says whether to rebalance buckets)
    kClaim,       // read a batch
    kPublish,     // append the batch's good rows
    kDeadLetter,  // append the batch's malformed rows to the dead letters
    kRemove,      // delete the batch's rows
    kWait,        // block until wait_until_ns() (monotonic) or a wake-up
  };

  RelayCore(Clock& clock, Random& random, RelayCoreOptions options);

  Op next() const { return next_; }
  // For kWait: the monotonic deadline of the wait.
  int64_t wait_until_ns() const { return wait_until_ns_; }
  // For kAcquire: whether the bucket share should be recomputed.
  bool rebalance() const { return rebalance_; }
  // For kWait: true if this wait is a backoff after a failure (wake-ups do not end it).
  bool in_backoff() const { return backoff_; }
  // For kWait: true if wake-ups do not end this wait (a backoff or a linger).
  bool ignores_wakeups() const { return backoff_ || linger_; }
  // Consecutive failures since the last success.
  uint32_t failures() const { return failures_; }

  // Results of the steps. `active`: this relay holds a lease. `rows`/`good`/`malformed`: the
  // claimed batch's size and how many rows are publishable / malformed. `full`: the claim hit a
  // bound. Each failure schedules a backoff, after which the cycle restarts at kAcquire
  // (re-reading the rows: nothing is kept from a failed cycle).
  void AcquireDone(const Status& status, bool active);
  void ClaimDone(const Status& status, size_t rows, size_t good, size_t malformed, bool full);
  void PublishDone(const Status& status, size_t newly_malformed);
  void DeadLetterDone(const Status& status);
  void RemoveDone(const Status& status);
  // The wait ended: `notified` if by a wake-up rather than the deadline.
  void WaitDone(bool notified);

  // The backoff window (ms) the next failure would draw from.
  int64_t current_backoff_cap_ms() const;

 private:
  void Fail();
  void WaitUntil(int64_t deadline_ns, Op after);
  int64_t NowNs() const { return clock_.NowMonotonicNanos(); }

  Clock& clock_;
  Random& random_;
  RelayCoreOptions options_;
  Op next_ = Op::kAcquire;
  Op after_wait_ = Op::kAcquire;
  int64_t wait_until_ns_ = 0;
  bool rebalance_ = true;
  int64_t next_rebalance_ns_ = 0;
  uint32_t failures_ = 0;
  size_t malformed_ = 0;
  bool full_ = false;
  bool backoff_ = false;
  bool linger_ = false;
  size_t rows_ = 0;
};

}  // namespace converge::outbox_internal
