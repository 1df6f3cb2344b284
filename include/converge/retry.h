// Retry policy: exponential backoff with full jitter, an attempt limit and an overall
// deadline, deciding from the Status of the last attempt whether to try again.
//
// Usage:
//   CONVERGE_ASSIGN_OR_RETURN(Backoff backoff, Backoff::Create(policy, env.clock(), env.random()));
//   for (;;) {
//     Status s = TryOnce();
//     std::optional<int64_t> delay_ms = backoff.NextDelay(s);
//     if (!delay_ms) return s;            // success, not retryable, or out of attempts/time
//     ... wait *delay_ms (on the Env's executor, never sleep in library code) ...
//   }
//
// Delay before retry n (n = 0 for the first retry):
//   uniform integer in [0, min(max_delay_ms, base_delay_ms * multiplier^n)]
// ("full jitter": spreads synchronized clients across the whole window).
//
// Which codes are retried (StatusCode's contract says what each means):
//   Unavailable                      always
//   DeadlineExceeded                 if retry_deadline_exceeded (the call may have happened:
//                                    only for idempotent operations)
//   ResourceExhausted                if retry_resource_exhausted
//   Aborted                          only if retry_aborted, which the caller sets when each
//                                    attempt redoes the whole read-modify-write
//   every other code (InvalidArgument, NotFound, AlreadyExists, PermissionDenied,
//   Unauthenticated, FailedPrecondition, OutOfRange, DataLoss, Internal, Cancelled)  never
//
// Thread-safety: RetryPolicy is a value. A Backoff belongs to one operation and is not
// synchronized; its Clock and Random (thread-safe in production) must outlive it.
#pragma once

#include <cstdint>
#include <optional>

#include "converge/env.h"
#include "converge/status.h"

namespace converge {

struct RetryPolicy {
  // Bounds checked by Validate().
  static constexpr int64_t kMaxDelayLimitMs = 24LL * 3600 * 1000;         // one day
  static constexpr int64_t kMaxDeadlineLimitMs = 7LL * 24 * 3600 * 1000;  // one week
  static constexpr uint32_t kMaxAttemptsLimit = 10'000;
  static constexpr double kMaxMultiplier = 100.0;

  int64_t base_delay_ms = 100;    // in [1, max_delay_ms]
  double multiplier = 2.0;        // in [1, kMaxMultiplier]
  int64_t max_delay_ms = 10'000;  // in [base_delay_ms, kMaxDelayLimitMs]
  // Total attempts including the first, in [1, kMaxAttemptsLimit]; 1 means never retry.
  uint32_t max_attempts = 10;
  // Monotonic time from Backoff::Create after which no retry starts, in
  // [1, kMaxDeadlineLimitMs].
  int64_t deadline_ms = 60'000;
  bool retry_deadline_exceeded = true;
  bool retry_resource_exhausted = true;
  bool retry_aborted = false;

  // OK, or InvalidArgument naming the first field out of its bounds.
  Status Validate() const;
  // Whether a failure with `status` may be retried under this policy (false for OK).
  bool IsRetryable(const Status& status) const;
};

class Backoff {
 public:
  // Why NextDelay last returned nullopt.
  enum class Stop : uint8_t {
    kNone,          // it has not
    kSucceeded,     // the attempt returned OK
    kNotRetryable,  // the code is never retried under this policy
    kAttemptsExhausted,
    kDeadline,  // the next attempt could not start before the deadline
  };

  // Starts the deadline clock now (monotonic). InvalidArgument if policy.Validate() fails.
  static Result<Backoff> Create(const RetryPolicy& policy, Clock& clock, Random& random);

  // Call after each failed attempt with its status. Returns the delay in milliseconds to
  // wait before the next attempt, or nullopt to stop and report `last` (see stop()): when
  // `last` is OK or not retryable, when max_attempts attempts have been made, or when
  // now + delay would reach the deadline.
  std::optional<int64_t> NextDelay(const Status& last);

  // Attempts made so far: the number of NextDelay calls.
  uint32_t attempts() const { return attempts_; }
  Stop stop() const { return stop_; }
  // The bound the next NextDelay call draws its delay from (before the deadline check):
  // min(max_delay_ms, base_delay_ms * multiplier^attempts()).
  int64_t current_cap_ms() const { return CapForRetry(attempts_); }

 private:
  Backoff(const RetryPolicy& policy, Clock& clock, Random& random, int64_t start_ns)
      : policy_(policy), clock_(&clock), random_(&random), start_ns_(start_ns) {}
  int64_t CapForRetry(uint32_t retry_index) const;

  RetryPolicy policy_;
  Clock* clock_;
  Random* random_;
  int64_t start_ns_;
  uint32_t attempts_ = 0;
  Stop stop_ = Stop::kNone;
};

}  // namespace converge
