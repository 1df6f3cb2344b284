#include "converge/retry.h"

#include <gtest/gtest.h>

#include <cmath>
#include <set>

#include "core/core_test_util.h"

namespace converge {
namespace {

using testing::ManualClock;
using testing::SeededRandom;

RetryPolicy Policy() {
  RetryPolicy p;
  p.base_delay_ms = 10;
  p.multiplier = 2.0;
  p.max_delay_ms = 1000;
  p.max_attempts = 1000;
  p.deadline_ms = 7LL * 24 * 3600 * 1000;
  return p;
}

TEST(RetryTest, ValidatesBounds) {
  EXPECT_TRUE(RetryPolicy().Validate().ok());
  auto invalid = [](auto mutate, const char* field) {
    RetryPolicy p;
    mutate(p);
    Status s = p.Validate();
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << field;
    EXPECT_NE(s.message().find(field), std::string_view::npos) << s.ToString();
    ManualClock clock;
    SeededRandom random(1);
    EXPECT_FALSE(Backoff::Create(p, clock, random).ok()) << field;
  };
  invalid([](RetryPolicy& p) { p.base_delay_ms = 0; }, "base_delay_ms");
  invalid([](RetryPolicy& p) { p.base_delay_ms = p.max_delay_ms + 1; }, "base_delay_ms");
  invalid([](RetryPolicy& p) { p.max_delay_ms = 0; }, "max_delay_ms");
  invalid([](RetryPolicy& p) { p.max_delay_ms = RetryPolicy::kMaxDelayLimitMs + 1; },
          "max_delay_ms");
  invalid([](RetryPolicy& p) { p.multiplier = 0.5; }, "multiplier");
  invalid([](RetryPolicy& p) { p.multiplier = 101; }, "multiplier");
  invalid([](RetryPolicy& p) { p.multiplier = std::nan(""); }, "multiplier");
  invalid([](RetryPolicy& p) { p.max_attempts = 0; }, "max_attempts");
  invalid([](RetryPolicy& p) { p.max_attempts = RetryPolicy::kMaxAttemptsLimit + 1; },
          "max_attempts");
  invalid([](RetryPolicy& p) { p.deadline_ms = 0; }, "deadline_ms");
  invalid([](RetryPolicy& p) { p.deadline_ms = RetryPolicy::kMaxDeadlineLimitMs + 1; },
          "deadline_ms");
}

TEST(RetryTest, DelaysStayWithinTheExponentialCap) {
  const uint64_t seed = testing::TestSeed(11);
  ManualClock clock;
  SeededRandom random(seed);
  const RetryPolicy policy = Policy();
  for (int run = 0; run < 50; ++run) {
    Backoff backoff = Backoff::Create(policy, clock, random).value();
    for (uint32_t n = 0; n < 30; ++n) {
      const int64_t cap = backoff.current_cap_ms();
      const int64_t expected_cap = std::min<int64_t>(
          policy.max_delay_ms, policy.base_delay_ms * (int64_t{1} << std::min(n, 20u)));
      ASSERT_EQ(cap, expected_cap) << "retry " << n;
      std::optional<int64_t> d = backoff.NextDelay(UnavailableError("down"));
      ASSERT_TRUE(d.has_value()) << "seed " << seed << " retry " << n;
      ASSERT_GE(*d, 0);
      ASSERT_LE(*d, cap) << "seed " << seed << " retry " << n;
    }
  }
}

TEST(RetryTest, AttemptLimitIsRespected) {
  ManualClock clock;
  SeededRandom random(testing::TestSeed(12));
  RetryPolicy policy = Policy();
  policy.max_attempts = 5;
  Backoff backoff = Backoff::Create(policy, clock, random).value();
  int retries = 0;
  while (backoff.NextDelay(UnavailableError("down"))) ++retries;
  EXPECT_EQ(retries, 4);  // 5 attempts = the first + 4 retries
  EXPECT_EQ(backoff.attempts(), 5u);
  EXPECT_EQ(backoff.stop(), Backoff::Stop::kAttemptsExhausted);

  policy.max_attempts = 1;
  Backoff never = Backoff::Create(policy, clock, random).value();
  EXPECT_FALSE(never.NextDelay(UnavailableError("down")).has_value());
  EXPECT_EQ(never.stop(), Backoff::Stop::kAttemptsExhausted);
}

TEST(RetryTest, DeadlineIsRespected) {
  const uint64_t seed = testing::TestSeed(13);
  SeededRandom random(seed);
  for (int run = 0; run < 100; ++run) {
    ManualClock clock;
    RetryPolicy policy = Policy();
    policy.deadline_ms = 5000;
    const int64_t start = clock.mono_ns;
    Backoff backoff = Backoff::Create(policy, clock, random).value();
    int retries = 0;
    for (;;) {
      clock.mono_ns += 3'000'000;  // each attempt takes 3 ms
      std::optional<int64_t> d = backoff.NextDelay(DeadlineExceededError("slow"));
      if (!d) break;
      clock.mono_ns += *d * 1'000'000;
      ASSERT_LT(clock.mono_ns - start, policy.deadline_ms * 1'000'000)
          << "seed " << seed << ": a retry was scheduled at or past the deadline";
      ++retries;
    }
    EXPECT_EQ(backoff.stop(), Backoff::Stop::kDeadline) << "seed " << seed;
    EXPECT_GT(retries, 3) << "seed " << seed;
  }
  // Once the deadline has passed, nothing is retried, however short the delay.
  ManualClock clock;
  RetryPolicy policy = Policy();
  policy.deadline_ms = 100;
  Backoff backoff = Backoff::Create(policy, clock, random).value();
  clock.mono_ns += 100'000'000;
  EXPECT_FALSE(backoff.NextDelay(UnavailableError("down")).has_value());
  EXPECT_EQ(backoff.stop(), Backoff::Stop::kDeadline);
}

TEST(RetryTest, NonRetryableCodesGiveUpImmediately) {
  ManualClock clock;
  SeededRandom random(testing::TestSeed(14));
  const RetryPolicy policy = Policy();
  for (StatusCode code :
       {StatusCode::kInvalidArgument, StatusCode::kNotFound, StatusCode::kAlreadyExists,
        StatusCode::kPermissionDenied, StatusCode::kUnauthenticated,
        StatusCode::kFailedPrecondition, StatusCode::kDataLoss, StatusCode::kOutOfRange,
        StatusCode::kInternal, StatusCode::kCancelled, StatusCode::kAborted}) {
    Backoff backoff = Backoff::Create(policy, clock, random).value();
    EXPECT_FALSE(backoff.NextDelay(Status(code, "x")).has_value()) << StatusCodeName(code);
    EXPECT_EQ(backoff.stop(), Backoff::Stop::kNotRetryable);
    EXPECT_EQ(backoff.attempts(), 1u);
  }
  Backoff ok = Backoff::Create(policy, clock, random).value();
  EXPECT_FALSE(ok.NextDelay(Status::Ok()).has_value());
  EXPECT_EQ(ok.stop(), Backoff::Stop::kSucceeded);
}

TEST(RetryTest, ConfigurableCodes) {
  RetryPolicy p = Policy();
  EXPECT_TRUE(p.IsRetryable(UnavailableError("x")));
  EXPECT_TRUE(p.IsRetryable(DeadlineExceededError("x")));
  EXPECT_TRUE(p.IsRetryable(ResourceExhaustedError("x")));
  EXPECT_FALSE(p.IsRetryable(AbortedError("x")));
  EXPECT_FALSE(p.IsRetryable(Status::Ok()));
  p.retry_deadline_exceeded = false;
  p.retry_resource_exhausted = false;
  p.retry_aborted = true;  // the caller redoes the whole read-modify-write
  EXPECT_TRUE(p.IsRetryable(UnavailableError("x")));
  EXPECT_FALSE(p.IsRetryable(DeadlineExceededError("x")));
  EXPECT_FALSE(p.IsRetryable(ResourceExhaustedError("x")));
  EXPECT_TRUE(p.IsRetryable(AbortedError("x")));

  ManualClock clock;
  SeededRandom random(15);
  Backoff backoff = Backoff::Create(p, clock, random).value();
  EXPECT_TRUE(backoff.NextDelay(AbortedError("stale etag")).has_value());
  EXPECT_FALSE(backoff.NextDelay(ResourceExhaustedError("full")).has_value());
}

TEST(RetryTest, JitterVaries) {
  const uint64_t seed = testing::TestSeed(16);
  ManualClock clock;
  SeededRandom random(seed);
  RetryPolicy policy = Policy();
  policy.base_delay_ms = 1000;
  policy.max_delay_ms = 1000;
  std::set<int64_t> distinct;
  double sum = 0;
  constexpr int kDraws = 2000;
  for (int i = 0; i < kDraws; ++i) {
    Backoff backoff = Backoff::Create(policy, clock, random).value();
    const int64_t d = backoff.NextDelay(UnavailableError("down")).value();
    distinct.insert(d);
    sum += static_cast<double>(d);
  }
  // Uniform over [0, 1000]: ~870 distinct values expected among 2000 draws, mean ~500.
  EXPECT_GT(distinct.size(), 600u) << "seed " << seed;
  EXPECT_NEAR(sum / kDraws, 500.0, 40.0) << "seed " << seed;
  EXPECT_LT(*distinct.begin(), 50) << "seed " << seed;
  EXPECT_GT(*distinct.rbegin(), 950) << "seed " << seed;
}

TEST(RetryTest, SameSeedSameDelays) {
  ManualClock c1, c2;
  SeededRandom r1(5), r2(5);
  Backoff a = Backoff::Create(Policy(), c1, r1).value();
  Backoff b = Backoff::Create(Policy(), c2, r2).value();
  for (int i = 0; i < 20; ++i) {
    EXPECT_EQ(a.NextDelay(UnavailableError("x")), b.NextDelay(UnavailableError("x")));
  }
}

}  // namespace
}  // namespace converge
