#include "converge/conflict/registers.h"

#include <gtest/gtest.h>

#include "conflict/test_util.h"

namespace converge::conflict {
namespace {

constexpr ReplicaId kA(1), kB(2), kC(3);

std::vector<std::string> Values(const MvRegister& r) {
  std::vector<std::string> out;
  for (const auto& s : r.siblings()) out.push_back(s.value);
  return out;
}

TEST(LwwRegisterTest, GreaterStampWinsAndReplicaBreaksTies) {
  LwwRegister a, b;
  ASSERT_TRUE(a.Set(kA, HlcTimestamp{100, 0}, "from-a").ok());
  ASSERT_TRUE(b.Set(kB, HlcTimestamp{100, 0}, "from-b").ok());  // same timestamp
  LwwRegister ab = a, ba = b;
  ab.Merge(b);
  ba.Merge(a);
  EXPECT_EQ(ab.value(), "from-b");  // replica 2 > replica 1
  EXPECT_EQ(ab, ba);
  ASSERT_TRUE(a.Set(kA, HlcTimestamp{100, 1}, "later").ok());
  ab.Merge(a);
  EXPECT_EQ(ab.value(), "later");
}

TEST(LwwRegisterTest, RefusesAWriteThatWouldLoseInsteadOfDroppingIt) {
  LwwRegister r;
  ASSERT_TRUE(r.Set(kB, HlcTimestamp{200, 0}, "current").ok());
  const LwwRegister before = r;
  Result<LwwRegister> stale = r.Set(kA, HlcTimestamp{150, 0}, "stale");
  EXPECT_EQ(stale.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(r, before);
  EXPECT_EQ(r.Set(kA, HlcTimestamp{200, 0}, "tie loses").status().code(),
            StatusCode::kFailedPrecondition);
  EXPECT_EQ(r.Set(ReplicaId(), HlcTimestamp{300, 0}, "x").status().code(),
            StatusCode::kInvalidArgument);
}

TEST(LwwRegisterTest, ClockOverloadObservesTheCurrentStampSoALateReaderWins) {
  // The writer's wall clock is 100 ms behind the stamp it overwrites; observing that stamp
  // first makes its write causally (and by timestamp) later.
  testing::ManualClock fast(1'700'000'000'100'000'000), slow(1'700'000'000'000'000'000);
  HybridClock fast_hlc(fast), slow_hlc(slow);
  LwwRegister r;
  ASSERT_TRUE(r.Set(kA, fast_hlc, "first").ok());
  Result<LwwRegister> delta = r.Set(kB, slow_hlc, "second, after reading first");
  ASSERT_TRUE(delta.ok()) << delta.status().ToString();
  EXPECT_EQ(r.value(), "second, after reading first");
  const LwwStamp first_stamp{HlcTimestamp{1'700'000'000'100'000, 0}, kA};
  EXPECT_LT(first_stamp, r.stamp());
  EXPECT_EQ(*delta, r);
}

TEST(LwwRegisterTest, SkewGuardRejectionLeavesTheRegisterUnchanged) {
  testing::ManualClock clock;
  HybridClock hlc(clock, /*max_skew_micros=*/1000);
  LwwRegister r;
  ASSERT_TRUE(r.Set(kA, HlcTimestamp{clock.NowWallMicros() + 10'000'000, 0}, "future").ok());
  const LwwRegister before = r;
  EXPECT_EQ(r.Set(kB, hlc, "x").status().code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(r, before);
}

TEST(LwwRegisterTest, ClearAndSerialization) {
  LwwRegister r;
  EXPECT_EQ(r.ToJson(), R"({"type":"lww-register"})");
  ASSERT_TRUE(r.Set(kA, HlcTimestamp{5, 1}, "v").ok());
  EXPECT_EQ(r.ToJson(), R"({"type":"lww-register","timestamp":"5.1","replica":"1","value":"v"})");
  ASSERT_TRUE(r.Clear(kA, HlcTimestamp{6, 0}).ok());
  EXPECT_FALSE(r.has_value());
  for (const LwwRegister& x : {LwwRegister(), r}) {
    EXPECT_EQ(LwwRegister::FromJson(x.ToJson()).value(), x);
    EXPECT_EQ(LwwRegister::FromBinary(x.ToBinary()).value(), x);
  }
  EXPECT_FALSE(LwwRegister::FromJson(R"({"type":"lww-register","value":"x"})").ok());
  EXPECT_FALSE(LwwRegister::FromJson(R"({"type":"g-set","timestamp":"1.0","replica":"1"})").ok());
}

TEST(MvRegisterTest, ConcurrentWritesBecomeSiblingsAndAResolvingWriteReplacesThem) {
  MvRegister a, b;
  MvRegister da = a.Write(kA, "red").value();
  MvRegister db = b.Write(kB, "blue").value();
  a.Merge(db);
  b.Merge(da);
  EXPECT_EQ(a, b);
  EXPECT_TRUE(a.HasConflict());
  EXPECT_EQ(Values(a), (std::vector<std::string>{"red", "blue"}));
  EXPECT_EQ(Compare(a.siblings()[0].version, a.siblings()[1].version), Ordering::kConcurrent);
  // The application resolves at A with the context it read; B learns through the delta.
  MvRegister resolution = a.Resolve(kA, "purple", a.context()).value();
  b.Merge(resolution);
  EXPECT_EQ(Values(b), (std::vector<std::string>{"purple"}));
  EXPECT_EQ(a, b);
}

TEST(MvRegisterTest, AWriteSupersedesOnlyWhatItsWriterObserved) {
  MvRegister server;
  ASSERT_TRUE(server.Write(kA, "v1").ok());
  const CausalContext read_by_client = server.context();  // client reads v1
  ASSERT_TRUE(server.Write(kA, "v2").ok());               // another client overwrites v1
  // The first client writes based on its (older) read: v2 was not observed, so it stays.
  ASSERT_TRUE(server.Write(kA, "v3", read_by_client).ok());
  EXPECT_EQ(Values(server), (std::vector<std::string>{"v2", "v3"}));
  EXPECT_EQ(Compare(server.siblings()[0].version, server.siblings()[1].version),
            Ordering::kConcurrent);
}

TEST(MvRegisterTest, ResolvingFromAnOlderReadKeepsWritesThatArrivedSince) {
  MvRegister r, other;
  ASSERT_TRUE(r.Write(kA, "x").ok());
  MvRegister y = other.Write(kB, "y").value();
  r.Merge(y);
  const CausalContext read = r.context();  // saw x and y
  MvRegister z = MvRegister().Write(kC, "z").value();
  r.Merge(z);  // z arrives after the read
  ASSERT_TRUE(r.Resolve(kA, "x+y", read).ok());
  EXPECT_EQ(Values(r), (std::vector<std::string>{"x+y", "z"}));
}

TEST(MvRegisterTest, ResolveWithFoldsSiblingsAndFailsCleanly) {
  MvRegister r;
  r.Merge(MvRegister().Write(kA, "1").value());
  r.Merge(MvRegister().Write(kB, "2").value());
  const MvRegister before = r;
  Result<MvRegister> failed = r.ResolveWith(kC, [](std::string_view, std::string_view) {
    return Result<std::string>(InvalidArgumentError("cannot merge"));
  });
  EXPECT_EQ(failed.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(r, before);
  auto sum = [](std::string_view a, std::string_view b) -> Result<std::string> {
    return std::to_string(std::stoi(std::string(a)) + std::stoi(std::string(b)));
  };
  ASSERT_TRUE(r.ResolveWith(kC, sum).ok());
  EXPECT_EQ(Values(r), (std::vector<std::string>{"3"}));
  EXPECT_TRUE(r.ResolveWith(kC, sum).value().empty());  // nothing left to resolve
}

TEST(MvRegisterTest, ClientContextFromElsewhereSupersedesAWriteThatArrivesLater) {
  MvRegister at_b;
  MvRegister w = at_b.Write(kB, "b's value").value();
  // A client read at B, then writes through A, which has not received B's write yet.
  MvRegister at_a;
  ASSERT_TRUE(at_a.Write(kA, "client overwrite", at_b.context()).ok());
  at_a.Merge(w);  // the overwritten write arrives late and must not come back
  EXPECT_EQ(Values(at_a), (std::vector<std::string>{"client overwrite"}));
}

TEST(MvRegisterTest, ClearAndSerialization) {
  MvRegister r;
  r.Merge(MvRegister().Write(kA, "a").value());
  r.Merge(MvRegister().Write(kB, std::string("\xff\x00", 2)).value());
  EXPECT_NE(r.ToJson().find(R"({"base64":"/wA="})"), std::string::npos) << r.ToJson();
  EXPECT_EQ(MvRegister::FromJson(r.ToJson()).value(), r);
  EXPECT_EQ(MvRegister::FromBinary(r.ToBinary()).value(), r);
  r.Clear(r.context());
  EXPECT_TRUE(r.empty());
  EXPECT_EQ(MvRegister::FromBinary(r.ToBinary()).value(), r);
  // A sibling whose dot is outside the context is rejected.
  EXPECT_FALSE(
      MvRegister::FromJson(
          R"({"type":"mv-register","siblings":[{"value":"x","dot":{"replica":"1","counter":2},"past":{}}],"context":{"vv":{"1":1}}})")
          .ok());
}

}  // namespace
}  // namespace converge::conflict
