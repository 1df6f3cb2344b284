// The sketch: entry identity, digest, index sequences, peeling and the difference estimate.
#include "reconcile/riblt.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <set>

#include "reconcile/reconcile_set.h"

namespace converge::reconcile {
namespace {

TEST(EntryHashTest, VersionAndKeyBothCount) {
  EXPECT_NE(EntryHash("a", 1), EntryHash("a", 2));
  EXPECT_NE(EntryHash("a", 1), EntryHash("b", 1));
  EXPECT_EQ(EntryHash("a", 1), EntryHash("a", 1));
}

TEST(SetDigestTest, OrderIndependentAndRemovable) {
  SetDigest a, b;
  a.Add(1);
  a.Add(2);
  b.Add(2);
  b.Add(1);
  EXPECT_EQ(a, b);
  b.Add(3);
  EXPECT_NE(a, b);
  b.Remove(3);
  EXPECT_EQ(a, b);
}

TEST(IndexSequenceTest, AscendingFromZeroWithTheDocumentedDensity) {
  // Over many entries, the share that lands on index j is about 2 / (j + 2).
  const int kEntries = 200000;
  std::vector<int> hits(200);
  std::mt19937_64 rng(7);
  for (int e = 0; e < kEntries; ++e) {
    IndexSequence s(rng());
    EXPECT_EQ(s.current(), 0u);
    uint64_t last = 0;
    while (s.current() < hits.size()) {
      ++hits[s.current()];
      s.Next();
      ASSERT_GT(s.current(), last);
      last = s.current();
    }
  }
  for (uint64_t j : {0, 1, 2, 10, 50, 199}) {
    const double share = static_cast<double>(hits[j]) / kEntries;
    EXPECT_NEAR(share, SymbolDensity(j), 0.1 * SymbolDensity(j) + 0.002) << "index " << j;
  }
}

// Builds both sets' symbols, subtracts and peels with n symbols.
struct Pair {
  std::vector<uint64_t> common, remote_only, local_only;
};

Pair MakePair(size_t common, size_t remote, size_t local, uint64_t seed) {
  std::mt19937_64 rng(seed);
  Pair p;
  for (size_t i = 0; i < common; ++i) p.common.push_back(rng());
  for (size_t i = 0; i < remote; ++i) p.remote_only.push_back(rng());
  for (size_t i = 0; i < local; ++i) p.local_only.push_back(rng());
  return p;
}

// Symbols needed to decode (streamed one at a time).
uint64_t SymbolsToDecode(const Pair& p, PeelingDecoder* dec) {
  const uint64_t kMax = 100000;
  for (uint64_t i = 0; i < kMax; ++i) {
    Symbol r, l;
    std::vector<Symbol> one(1);
    for (uint64_t h : p.common) {
      ApplyToRange(h, +1, i, &r, 1);
      ApplyToRange(h, +1, i, &l, 1);
    }
    for (uint64_t h : p.remote_only) ApplyToRange(h, +1, i, &r, 1);
    for (uint64_t h : p.local_only) ApplyToRange(h, +1, i, &l, 1);
    r.Subtract(l);
    dec->Add(r);
    dec->Peel();
    if (dec->Decoded()) return i + 1;
  }
  return kMax;
}

TEST(PeelingDecoderTest, RecoversExactlyTheDifference) {
  for (uint64_t seed = 1; seed <= 20; ++seed) {
    Pair p = MakePair(500, seed * 3, seed * 2, seed);
    PeelingDecoder dec;
    const uint64_t used = SymbolsToDecode(p, &dec);
    ASSERT_TRUE(dec.Decoded()) << "seed " << seed;
    EXPECT_EQ(std::multiset<uint64_t>(dec.remote_only().begin(), dec.remote_only().end()),
              std::multiset<uint64_t>(p.remote_only.begin(), p.remote_only.end()));
    EXPECT_EQ(std::multiset<uint64_t>(dec.local_only().begin(), dec.local_only().end()),
              std::multiset<uint64_t>(p.local_only.begin(), p.local_only.end()));
    // About 1.35-1.7 symbols per difference, plus a small constant for tiny differences.
    EXPECT_LE(used, 2.5 * (seed * 5) + 10) << "seed " << seed;
  }
}

TEST(PeelingDecoderTest, IdenticalSetsDecodeAtOnce) {
  Pair p = MakePair(100, 0, 0, 3);
  PeelingDecoder dec;
  EXPECT_EQ(SymbolsToDecode(p, &dec), 1u);
  EXPECT_TRUE(dec.remote_only().empty());
}

TEST(EstimateDifferenceTest, WithinAFactorOfTwo) {
  for (uint64_t d : {1, 5, 30, 200, 1000, 5000, 20000}) {
    Pair p = MakePair(0, d / 2, d - d / 2, d);
    std::vector<uint64_t> idx;
    for (uint64_t i = 0; i < 64; ++i) idx.push_back(i);
    uint64_t x = 64;
    for (int i = 0; i < 48; ++i) {
      x = std::max(x + 1, static_cast<uint64_t>(x * 1.14));
      idx.push_back(x);
    }
    std::vector<bool> empty;
    for (uint64_t i : idx) {
      Symbol s;
      for (uint64_t h : p.remote_only) ApplyToRange(h, +1, i, &s, 1);
      for (uint64_t h : p.local_only) ApplyToRange(h, -1, i, &s, 1);
      empty.push_back(s.IsZero());
    }
    const uint64_t est = EstimateDifference(idx, empty);
    EXPECT_GE(est, d / 2) << "d " << d;
    EXPECT_LE(est, d * 2) << "d " << d;
  }
}

std::string K(int i) {
  std::string s = "k";
  s += std::to_string(i);
  return s;
}

TEST(ReconcileSetTest, MaintainedSymbolsEqualAScanAndSnapshotsStayFixed) {
  ReconcileSet set(SetOptions{64});
  for (int i = 0; i < 300; ++i) set.Put(K(i), i + 1);
  std::vector<Symbol> kept, scanned;
  set.Symbols(0, 200, &kept);
  ReconcileSet scan(SetOptions{0});
  for (int i = 0; i < 300; ++i) scan.Put(K(i), i + 1);
  scan.Symbols(0, 200, &scanned);
  EXPECT_EQ(kept, scanned);

  // Symbols at chosen indices, inside and beyond the maintained prefix, equal the range's.
  const std::vector<uint64_t> at{0, 5, 63, 64, 100, 199};
  std::vector<Symbol> picked;
  set.SymbolsAt(at, &picked);
  for (size_t i = 0; i < at.size(); ++i) EXPECT_EQ(picked[i], kept[at[i]]) << at[i];

  auto snap = set.OpenSnapshot();
  const SetDigest before = set.digest();
  std::vector<Symbol> snap_before;
  snap->Symbols(0, 150, &snap_before);
  set.Put("k1", 99);
  set.Erase("k2");
  set.Put("new", 5);
  set.Put("k1", 100);
  EXPECT_NE(set.digest(), before);
  EXPECT_EQ(snap->digest(), before);
  std::vector<Symbol> snap_after;
  snap->Symbols(0, 150, &snap_after);
  EXPECT_EQ(snap_before, snap_after);
  std::vector<Symbol> snap_picked;
  snap->SymbolsAt(at, &snap_picked);
  for (size_t i = 0; i < at.size(); ++i) {
    if (at[i] < 150) {
      EXPECT_EQ(snap_picked[i], snap_before[at[i]]) << at[i];
    }
  }
  EXPECT_EQ(snap->touched().size(), 3u);
  EXPECT_EQ(snap->touched().at("k1"), std::optional<uint64_t>(2));
  EXPECT_EQ(snap->touched().at("new"), std::nullopt);
  std::unordered_set<uint64_t> want{EntryHash("k1", 2), EntryHash("k2", 3)};
  std::vector<Entry> found;
  snap->Lookup(want, &found);
  EXPECT_EQ(found.size(), 2u);
}

}  // namespace
}  // namespace converge::reconcile
