#include "converge/ids.h"

#include <gtest/gtest.h>

#include <atomic>
#include <set>
#include <thread>
#include <unordered_set>

#include "core/core_test_util.h"

namespace converge {
namespace {

using testing::ManualClock;
using testing::SeededRandom;

// xxxxxxxx-xxxx-7xxx-yxxx-xxxxxxxxxxxx with lowercase hex and y in [89ab].
bool IsCanonicalV7(const std::string& s) {
  if (s.size() != 36) return false;
  for (size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    if (i == 8 || i == 13 || i == 18 || i == 23) {
      if (c != '-') return false;
    } else if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) {
      return false;
    }
  }
  return s[14] == '7' && (s[19] == '8' || s[19] == '9' || s[19] == 'a' || s[19] == 'b');
}

TEST(UuidV7Test, FormatAndFields) {
  ManualClock clock;
  clock.wall_ns = 1'722'000'123'456'789'000;  // ms = 1722000123456
  SeededRandom random(testing::TestSeed(1));
  UuidV7Generator gen(clock, random);
  for (int i = 0; i < 1000; ++i) {
    const Uuid id = gen.Next();
    const std::string text = id.ToString();
    ASSERT_TRUE(IsCanonicalV7(text)) << text;
    EXPECT_EQ(id.version(), 7);
    EXPECT_TRUE(id.is_rfc9562_variant());
    EXPECT_EQ(id.unix_ms(), 1'722'000'123'456) << text;
  }
  // The first 48 bits are the millisecond timestamp in hex.
  char expected[16];
  std::snprintf(expected, sizeof(expected), "%012llx", 1'722'000'123'456ULL);
  const std::string text = gen.Next().ToString();
  EXPECT_EQ(text.substr(0, 8) + text.substr(9, 4), expected);
}

TEST(UuidV7Test, ConsecutiveIdsStrictlyIncreaseWithinOneMillisecond) {
  ManualClock clock;
  SeededRandom random(testing::TestSeed(2));
  UuidV7Generator gen(clock, random);
  Uuid prev = gen.Next();
  std::string prev_text = prev.ToString();
  // 10k ids with the clock standing still: more than the 12-bit counter holds, so the
  // generator must borrow future milliseconds and still stay ordered.
  for (int i = 0; i < 10'000; ++i) {
    const Uuid next = gen.Next();
    const std::string next_text = next.ToString();
    ASSERT_LT(prev, next) << i;
    ASSERT_LT(prev_text, next_text) << i;  // string order is creation order too
    prev = next;
    prev_text = next_text;
  }
  EXPECT_GT(prev.unix_ms(), clock.wall_ns / 1'000'000);
  EXPECT_LE(prev.unix_ms(), clock.wall_ns / 1'000'000 + 10);
}

TEST(UuidV7Test, OrderSurvivesAClockThatJumpsBackwards) {
  ManualClock clock;
  SeededRandom random(testing::TestSeed(3));
  UuidV7Generator gen(clock, random);
  Uuid prev = gen.Next();
  for (int i = 0; i < 5000; ++i) {
    if (i % 10 == 0) clock.wall_ns -= 5'000'000;  // 5 ms back
    if (i % 7 == 0) clock.wall_ns += 3'000'000;
    const Uuid next = gen.Next();
    ASSERT_LT(prev, next) << i;
    prev = next;
  }
}

TEST(UuidV7Test, FollowsTheClockWhenItAdvances) {
  ManualClock clock;
  SeededRandom random(testing::TestSeed(4));
  UuidV7Generator gen(clock, random);
  for (int i = 0; i < 100; ++i) {
    clock.wall_ns += 1'000'000;
    EXPECT_EQ(gen.Next().unix_ms(), clock.wall_ns / 1'000'000);
  }
}

TEST(UuidV7Test, UniqueOver100kAndAcrossGenerators) {
  ManualClock clock;
  SeededRandom random_a(testing::TestSeed(5)), random_b(testing::TestSeed(5) + 1);
  UuidV7Generator a(clock, random_a), b(clock, random_b);
  std::unordered_set<std::string> seen;
  seen.reserve(200'000);
  for (int i = 0; i < 100'000; ++i) {
    if (i % 97 == 0) clock.wall_ns += 1'000'000;
    ASSERT_TRUE(seen.insert(a.NextString()).second) << i;
    ASSERT_TRUE(seen.insert(b.NextString()).second) << i;  // same clock, other generator
  }
}

TEST(UuidV7Test, DeterministicGivenClockAndRandom) {
  ManualClock clock1, clock2;
  SeededRandom r1(77), r2(77);
  UuidV7Generator g1(clock1, r1), g2(clock2, r2);
  for (int i = 0; i < 100; ++i) EXPECT_EQ(g1.Next(), g2.Next());
}

// Thread-safe stand-ins for the production clock and random source.
class AtomicClock : public Clock {
 public:
  int64_t NowMonotonicNanos() override { return now_.fetch_add(1000); }
  int64_t NowWallNanos() override { return now_.fetch_add(1000); }

 private:
  std::atomic<int64_t> now_{1'700'000'000'000'000'000};
};

class LockedRandom : public Random {
 public:
  uint64_t Next64() override {
    std::lock_guard<std::mutex> lock(mu_);
    return inner_.Next64();
  }

 private:
  std::mutex mu_;
  SeededRandom inner_{99};
};

TEST(UuidV7Test, ThreadSafe) {
  AtomicClock clock;
  LockedRandom random;
  UuidV7Generator gen(clock, random);
  constexpr int kThreads = 4, kPerThread = 20'000;
  std::vector<std::vector<Uuid>> ids(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      ids[t].reserve(kPerThread);
      for (int i = 0; i < kPerThread; ++i) ids[t].push_back(gen.Next());
    });
  }
  for (auto& th : threads) th.join();
  std::set<Uuid> all;
  for (const auto& v : ids) {
    for (size_t i = 1; i < v.size(); ++i) ASSERT_LT(v[i - 1], v[i]);  // per-thread order
    all.insert(v.begin(), v.end());
  }
  EXPECT_EQ(all.size(), size_t{kThreads} * kPerThread);
}

TEST(UuidTest, ParseRoundTripsAndValidates) {
  ManualClock clock;
  SeededRandom random(8);
  UuidV7Generator gen(clock, random);
  const Uuid id = gen.Next();
  EXPECT_EQ(Uuid::Parse(id.ToString()).value(), id);
  EXPECT_EQ(Uuid::ParseV7(id.ToString()).value(), id);
  std::string upper = id.ToString();
  for (char& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  EXPECT_EQ(Uuid::Parse(upper).value(), id);

  const char* v4 = "f47ac10b-58cc-4372-a567-0e02b2c3d479";
  ASSERT_TRUE(Uuid::Parse(v4).ok());
  EXPECT_EQ(Uuid::Parse(v4)->version(), 4);
  EXPECT_EQ(Uuid::ParseV7(v4).status().code(), StatusCode::kInvalidArgument);
  // Version 7 but the wrong variant.
  EXPECT_FALSE(Uuid::ParseV7("01901ea8-0c00-7000-c000-000000000000").ok());
  EXPECT_EQ(Uuid().ToString(), "00000000-0000-0000-0000-000000000000");

  for (const char* bad :
       {"", "f47ac10b58cc4372a5670e02b2c3d479", "f47ac10b-58cc-4372-a567-0e02b2c3d47",
        "f47ac10b-58cc-4372-a567-0e02b2c3d4799", "f47ac10b-58cc-4372-a567_0e02b2c3d479",
        "g47ac10b-58cc-4372-a567-0e02b2c3d479", "{f47ac10b-58cc-4372-a567-0e02b2c3d47}",
        "f47ac10b-58cc-4372-a5670-e02b2c3d479"}) {
    EXPECT_EQ(Uuid::Parse(bad).status().code(), StatusCode::kInvalidArgument) << bad;
  }
}

}  // namespace
}  // namespace converge
