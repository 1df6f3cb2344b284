#include "converge/retry.h"

#include <algorithm>
#include <cmath>
#include <string>

namespace converge {
namespace {

Status OutOfBounds(std::string_view field, std::string_view bounds) {
  return InvalidArgumentError("retry policy: " + std::string(field) + " must be in " +
                              std::string(bounds));
}

}  // namespace

Status RetryPolicy::Validate() const {
  if (max_delay_ms < 1 || max_delay_ms > kMaxDelayLimitMs) {
    return OutOfBounds("max_delay_ms", "[1, " + std::to_string(kMaxDelayLimitMs) + "]");
  }
  if (base_delay_ms < 1 || base_delay_ms > max_delay_ms) {
    return OutOfBounds("base_delay_ms", "[1, max_delay_ms]");
  }
  // Written so that NaN fails too.
  if (!(multiplier >= 1.0 && multiplier <= kMaxMultiplier)) {
    return OutOfBounds("multiplier", "[1, 100]");
  }
  if (max_attempts < 1 || max_attempts > kMaxAttemptsLimit) {
    return OutOfBounds("max_attempts", "[1, " + std::to_string(kMaxAttemptsLimit) + "]");
  }
  if (deadline_ms < 1 || deadline_ms > kMaxDeadlineLimitMs) {
    return OutOfBounds("deadline_ms", "[1, " + std::to_string(kMaxDeadlineLimitMs) + "]");
  }
  return Status::Ok();
}

bool RetryPolicy::IsRetryable(const Status& status) const {
  switch (status.code()) {
    case StatusCode::kUnavailable:
      return true;
    case StatusCode::kDeadlineExceeded:
      return retry_deadline_exceeded;
    case StatusCode::kResourceExhausted:
      return retry_resource_exhausted;
    case StatusCode::kAborted:
      return retry_aborted;
    case StatusCode::kOk:
    case StatusCode::kCancelled:
    case StatusCode::kInvalidArgument:
    case StatusCode::kNotFound:
    case StatusCode::kAlreadyExists:
    case StatusCode::kPermissionDenied:
    case StatusCode::kUnauthenticated:
    case StatusCode::kFailedPrecondition:
    case StatusCode::kOutOfRange:
    case StatusCode::kDataLoss:
    case StatusCode::kInternal:
      return false;
  }
  return false;
}

Result<Backoff> Backoff::Create(const RetryPolicy& policy, Clock& clock, Random& random) {
  CONVERGE_RETURN_IF_ERROR(policy.Validate());
  return Backoff(policy, clock, random, clock.NowMonotonicNanos());
}

int64_t Backoff::CapForRetry(uint32_t retry_index) const {
  const double cap = static_cast<double>(policy_.base_delay_ms) *
                     std::pow(policy_.multiplier, static_cast<double>(retry_index));
  // pow may overflow to infinity; min() with the finite bound handles it.
  return static_cast<int64_t>(std::min(cap, static_cast<double>(policy_.max_delay_ms)));
}

std::optional<int64_t> Backoff::NextDelay(const Status& last) {
  ++attempts_;
  if (last.ok()) {
    stop_ = Stop::kSucceeded;
    return std::nullopt;
  }
  if (!policy_.IsRetryable(last)) {
    stop_ = Stop::kNotRetryable;
    return std::nullopt;
  }
  if (attempts_ >= policy_.max_attempts) {
    stop_ = Stop::kAttemptsExhausted;
    return std::nullopt;
  }
  const int64_t delay_ms = random_->UniformRange(0, CapForRetry(attempts_ - 1));
  const int64_t elapsed_ns = clock_->NowMonotonicNanos() - start_ns_;
  const int64_t deadline_ns = policy_.deadline_ms * 1'000'000;
  if (elapsed_ns + delay_ms * 1'000'000 >= deadline_ns) {
    stop_ = Stop::kDeadline;
    return std::nullopt;
  }
  stop_ = Stop::kNone;
  return delay_ms;
}

}  // namespace converge
