#include "converge/hlc.h"

#include <gtest/gtest.h>

namespace converge {
namespace {

class ManualClock : public Clock {
 public:
  int64_t NowMonotonicNanos() override { return mono_ns; }
  int64_t NowWallNanos() override { return wall_ns; }
  int64_t mono_ns = 0;
  int64_t wall_ns = 1'700'000'000'000'000'000;
};

TEST(HlcTest, MonotonicEvenWhenWallClockStallsOrGoesBack) {
  ManualClock clock;
  HybridClock hlc(clock);
  HlcTimestamp prev = hlc.Now();
  for (int i = 0; i < 1000; ++i) {
    if (i % 7 == 0) clock.wall_ns -= 3'000;  // wall clock jumps backwards
    if (i % 11 == 0) clock.wall_ns += 5'000;
    HlcTimestamp next = hlc.Now();
    EXPECT_LT(prev, next) << "step " << i;
    prev = next;
  }
}

TEST(HlcTest, FollowsWallClockWhenItAdvances) {
  ManualClock clock;
  HybridClock hlc(clock);
  HlcTimestamp a = hlc.Now();
  EXPECT_EQ(a.physical_micros, clock.wall_ns / 1000);
  EXPECT_EQ(a.logical, 0u);
  HlcTimestamp b = hlc.Now();
  EXPECT_EQ(b.physical_micros, a.physical_micros);
  EXPECT_EQ(b.logical, 1u);
  clock.wall_ns += 1'000'000;
  HlcTimestamp c = hlc.Now();
  EXPECT_EQ(c.physical_micros, clock.wall_ns / 1000);
  EXPECT_EQ(c.logical, 0u);
}

TEST(HlcTest, PreservesCausalityAcrossSendAndReceive) {
  ManualClock fast_clock, slow_clock;
  fast_clock.wall_ns += 200'000'000;  // 200 ms ahead, inside the 500 ms bound
  HybridClock sender(fast_clock), receiver(slow_clock);
  for (int i = 0; i < 100; ++i) {
    HlcTimestamp sent = sender.Now();
    Result<HlcTimestamp> received = receiver.Update(sent);
    ASSERT_TRUE(received.ok()) << received.status().ToString();
    EXPECT_LT(sent, *received);
    HlcTimestamp after = receiver.Now();
    EXPECT_LT(*received, after);
    // And back the other way.
    Result<HlcTimestamp> back = sender.Update(after);
    ASSERT_TRUE(back.ok());
    EXPECT_LT(after, *back);
  }
}

TEST(HlcTest, RejectsRemoteBeyondSkewBoundWithoutMovingTheClock) {
  ManualClock clock;
  HybridClock hlc(clock, /*max_skew_micros=*/1000);
  HlcTimestamp before = hlc.Now();
  HlcTimestamp remote{clock.wall_ns / 1000 + 1001, 0};
  Result<HlcTimestamp> r = hlc.Update(remote);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(hlc.Peek(), before);
  HlcTimestamp within{clock.wall_ns / 1000 + 1000, 4};
  Result<HlcTimestamp> ok = hlc.Update(within);
  ASSERT_TRUE(ok.ok());
  EXPECT_EQ(*ok, (HlcTimestamp{within.physical_micros, 5}));
}

TEST(HlcTest, LogicalOverflowFromRemoteIsAnErrorNotACrash) {
  ManualClock clock;
  HybridClock hlc(clock);
  HlcTimestamp remote{clock.wall_ns / 1000, UINT32_MAX};
  Result<HlcTimestamp> r = hlc.Update(remote);
  EXPECT_FALSE(r.ok());
}

TEST(HlcTest, ParseRoundTripsAndRejectsGarbage) {
  HlcTimestamp ts{1732640000123456, 42};
  Result<HlcTimestamp> parsed = HlcTimestamp::Parse(ts.ToString());
  ASSERT_TRUE(parsed.ok());
  EXPECT_EQ(*parsed, ts);
  for (const char* bad : {"", "12", "12.", ".3", "a.b", "-5.1", "1.2.3", "1.99999999999"}) {
    EXPECT_FALSE(HlcTimestamp::Parse(bad).ok()) << bad;
  }
}

}  // namespace
}  // namespace converge
