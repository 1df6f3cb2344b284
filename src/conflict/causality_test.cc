#include "converge/conflict/causality.h"

#include <gtest/gtest.h>

namespace converge::conflict {
namespace {

constexpr ReplicaId kA(1), kB(2), kC(3);

TEST(ReplicaIdTest, ParsesCanonicalDecimalOnly) {
  EXPECT_EQ(ReplicaId::Parse("42").value(), ReplicaId(42));
  EXPECT_EQ(ReplicaId::Parse("18446744073709551615").value().value(), UINT64_MAX);
  for (const char* bad : {"", "-1", "+1", " 1", "1 ", "0x10", "007", "18446744073709551616"}) {
    EXPECT_EQ(ReplicaId::Parse(bad).status().code(), StatusCode::kInvalidArgument) << bad;
  }
  EXPECT_FALSE(ReplicaId().valid());
  EXPECT_EQ(ReplicaId(7).ToString(), "7");
}

TEST(VersionVectorTest, CompareCoversAllFourOutcomes) {
  const VersionVector a{{kA, 2}, {kB, 1}};
  const VersionVector b{{kA, 2}, {kB, 3}};
  const VersionVector c{{kA, 3}};
  EXPECT_EQ(Compare(a, b), Ordering::kBefore);
  EXPECT_EQ(Compare(b, a), Ordering::kAfter);
  EXPECT_EQ(Compare(a, a), Ordering::kEqual);
  EXPECT_EQ(Compare(b, c), Ordering::kConcurrent);
  EXPECT_EQ(Compare(VersionVector(), a), Ordering::kBefore);
  EXPECT_EQ(OrderingName(Ordering::kConcurrent), "concurrent");
}

TEST(VersionVectorTest, IncrementMergeAndContains) {
  VersionVector vv;
  EXPECT_EQ(vv.Increment(kB).value(), (Dot{kB, 1}));
  EXPECT_EQ(vv.Increment(kB).value(), (Dot{kB, 2}));
  EXPECT_EQ(vv.Increment(ReplicaId()).status().code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(vv.Contains(Dot{kB, 2}));
  EXPECT_FALSE(vv.Contains(Dot{kB, 3}));
  EXPECT_FALSE(vv.Contains(Dot{kB, 0}));
  vv.Merge(VersionVector{{kA, 5}, {kB, 1}, {kC, 1}});
  EXPECT_EQ(vv, (VersionVector{{kA, 5}, {kB, 2}, {kC, 1}}));
  EXPECT_EQ(vv.EventCount(), 8u);
  VersionVector full{{kA, UINT64_MAX}};
  EXPECT_EQ(full.Increment(kA).status().code(), StatusCode::kOutOfRange);
}

TEST(VersionVectorTest, SerializesToJsonAndBinary) {
  const VersionVector vv{{kA, 3}, {ReplicaId(900), 7}};
  EXPECT_EQ(vv.ToJson(), R"({"1":3,"900":7})");
  EXPECT_EQ(VersionVector::FromJson(vv.ToJson()).value(), vv);
  EXPECT_EQ(VersionVector::FromBinary(vv.ToBinary()).value(), vv);
  EXPECT_EQ(vv.ToBinary().size(), 1u + 2u + 3u);  // count; (1, 3); (899 as 2 bytes, 7)
  EXPECT_FALSE(VersionVector::FromJson(R"({"0":1})").ok());
  EXPECT_FALSE(VersionVector::FromJson(R"({"1":-1})").ok());
  EXPECT_FALSE(VersionVector::FromJson(R"([1])").ok());
  EXPECT_FALSE(VersionVector::FromJson(R"({"1":1)").ok());
}

TEST(DottedVersionVectorTest, TellsAClientWriteFromAnOverwrite) {
  // Two clients read {A:1} from replica A; each writes back through A, which gives the writes
  // dots (A,2) and (A,3). Plain version vectors would order {A:2} before {A:3}; the dotted
  // version vectors know neither write saw the other.
  const DottedVersionVector first{Dot{kA, 2}, VersionVector{{kA, 1}}};
  const DottedVersionVector second{Dot{kA, 3}, VersionVector{{kA, 1}}};
  EXPECT_EQ(Compare(first, second), Ordering::kConcurrent);
  // A third write that read both supersedes both.
  const DottedVersionVector third{Dot{kA, 4}, VersionVector{{kA, 3}}};
  EXPECT_EQ(Compare(first, third), Ordering::kBefore);
  EXPECT_EQ(Compare(third, second), Ordering::kAfter);
  EXPECT_EQ(Compare(third, third), Ordering::kEqual);
  EXPECT_TRUE(third.HistoryContains(Dot{kA, 2}));
  EXPECT_FALSE(second.HistoryContains(Dot{kA, 2}));
  EXPECT_EQ(DottedVersionVector::FromJson(second.ToJson()).value(), second);
  std::string bin;
  second.AppendBinary(&bin);
  EXPECT_EQ(DottedVersionVector::FromBinary(bin).value(), second);
}

TEST(CausalContextTest, CompactsContiguousDotsIntoTheVector) {
  CausalContext cc;
  cc.Add(Dot{kA, 3});
  cc.Add(Dot{kA, 5});
  EXPECT_FALSE(cc.IsCompact());
  EXPECT_EQ(cc.cloud().size(), 2u);
  cc.Add(Dot{kA, 1});
  cc.Add(Dot{kA, 2});  // fills the gap: 1..3 compact, 5 still in the cloud
  EXPECT_EQ(cc.compact().Get(kA), 3u);
  EXPECT_EQ(cc.cloud(), (std::vector<Dot>{{kA, 5}}));
  EXPECT_EQ(cc.NextDot(kA).value(), (Dot{kA, 6}));
  cc.Add(Dot{kA, 4});
  EXPECT_TRUE(cc.IsCompact());
  EXPECT_EQ(cc.compact().Get(kA), 5u);
  EXPECT_TRUE(cc.Contains(Dot{kA, 4}));
  EXPECT_FALSE(cc.Contains(Dot{kA, 6}));
  EXPECT_EQ(cc.NextDot(ReplicaId()).status().code(), StatusCode::kInvalidArgument);
}

TEST(CausalContextTest, MergeAndCompare) {
  CausalContext x, y;
  x.Add(Dot{kA, 1});
  x.Add(Dot{kB, 4});
  y.Add(Dot{kB, 1});
  EXPECT_EQ(Compare(x, y), Ordering::kConcurrent);
  CausalContext u = x;
  u.Merge(y);
  EXPECT_EQ(Compare(x, u), Ordering::kBefore);
  EXPECT_EQ(Compare(u, y), Ordering::kAfter);
  EXPECT_EQ(u.Ceiling(), (VersionVector{{kA, 1}, {kB, 4}}));
  EXPECT_EQ(CausalContext::FromJson(u.ToJson()).value(), u);
  EXPECT_EQ(CausalContext::FromBinary(u.ToBinary()).value(), u);
}

TEST(HlcCompareTest, TotallyOrderedNeverConcurrent) {
  EXPECT_EQ(Compare(HlcTimestamp{5, 0}, HlcTimestamp{5, 1}), Ordering::kBefore);
  EXPECT_EQ(Compare(HlcTimestamp{6, 0}, HlcTimestamp{5, 9}), Ordering::kAfter);
  EXPECT_EQ(Compare(HlcTimestamp{6, 2}, HlcTimestamp{6, 2}), Ordering::kEqual);
}

TEST(DecodeLimitsTest, OversizedInputIsResourceExhausted) {
  DecodeLimits limits;
  limits.max_input_bytes = 4;
  EXPECT_EQ(VersionVector::FromJson(R"({"1":3,"2":2})", limits).status().code(),
            StatusCode::kResourceExhausted);
}

}  // namespace
}  // namespace converge::conflict
