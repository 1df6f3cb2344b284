// Scenario tests of the counters, sets, flag and maps (the randomized laws are in
// property_test.cc).
#include <gtest/gtest.h>

#include "conflict/test_util.h"
#include "converge/conflict/counters.h"
#include "converge/conflict/lww_map.h"
#include "converge/conflict/or_map.h"
#include "converge/conflict/sets.h"

namespace converge::conflict {
namespace {

constexpr ReplicaId kA(1), kB(2), kC(3);

// "e" + number, built by appending (operator+ on strings trips a GCC 12 -Wrestrict bug).
std::string Cat(const char* prefix, int n) {
  std::string s(prefix);
  s += std::to_string(n);
  return s;
}

// ---- counters ---------------------------------------------------------------------------

TEST(GCounterTest, SumsReplicasAndMergesByMaximum) {
  GCounter a, b;
  GCounter da = a.Increment(kA, 3).value();
  ASSERT_TRUE(b.Increment(kB, 4).ok());
  b.Merge(da);
  b.Merge(da);  // duplicate delivery changes nothing
  EXPECT_EQ(b.Value(), 7u);
  EXPECT_EQ(da.entries().size(), 1u);
  EXPECT_EQ(b.ToJson(), R"({"type":"g-counter","entries":{"1":3,"2":4}})");
  EXPECT_EQ(GCounter::FromJson(b.ToJson()).value(), b);
  EXPECT_EQ(GCounter::FromBinary(b.ToBinary()).value(), b);
  GCounter full;
  ASSERT_TRUE(full.Increment(kA, UINT64_MAX).ok());
  EXPECT_EQ(full.Increment(kA, 1).status().code(), StatusCode::kOutOfRange);
  ASSERT_TRUE(full.Increment(kB, 5).ok());
  EXPECT_EQ(full.Value(), UINT64_MAX);  // saturates
}

TEST(PnCounterTest, IncrementsAndDecrements) {
  PnCounter a, b;
  ASSERT_TRUE(a.Add(kA, 10).ok());
  ASSERT_TRUE(b.Add(kB, -4).ok());
  ASSERT_TRUE(b.Add(kB, INT64_MIN).ok());  // negating INT64_MIN must not overflow
  a.Merge(b);
  EXPECT_EQ(a.Value(), INT64_MIN + 6);  // 10 - 4 - 2^63
  ASSERT_TRUE(a.Add(kC, -10).ok());
  EXPECT_EQ(a.Value(), INT64_MIN);  // clamped, not wrapped
  EXPECT_EQ(PnCounter::FromJson(a.ToJson()).value(), a);
  EXPECT_EQ(PnCounter::FromBinary(a.ToBinary()).value(), a);
  EXPECT_EQ(a.Increment(ReplicaId(), 1).status().code(), StatusCode::kInvalidArgument);
}

TEST(BoundedCounterTest, DecrementsOnlyWithinLocalRights) {
  BoundedCounter stock(0);
  BoundedCounter at_b(0);
  BoundedCounter restock = stock.Increment(kA, 10).value();  // A holds all 10 rights
  ASSERT_TRUE(at_b.Merge(restock).ok());
  EXPECT_EQ(at_b.Value(), 10);
  // B sees 10 in stock but holds no rights: selling would risk overselling.
  Result<BoundedCounter> sell = at_b.Decrement(kB, 1);
  EXPECT_EQ(sell.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(at_b.Value(), 10);
  // A transfers 4 rights to B; now both can sell concurrently without coordination.
  BoundedCounter transfer = stock.TransferRights(kA, kB, 4).value();
  ASSERT_TRUE(at_b.Merge(transfer).ok());
  EXPECT_EQ(at_b.RightsOf(kB), 4u);
  BoundedCounter sold_b = at_b.Decrement(kB, 4).value();
  BoundedCounter sold_a = stock.Decrement(kA, 6).value();
  EXPECT_EQ(stock.Decrement(kA, 1).status().code(), StatusCode::kFailedPrecondition);
  ASSERT_TRUE(stock.Merge(sold_b).ok());
  ASSERT_TRUE(at_b.Merge(sold_a).ok());
  EXPECT_EQ(stock.Value(), 0);
  EXPECT_EQ(stock, at_b);
  EXPECT_EQ(stock.TransferRights(kA, kA, 1).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(stock.Decrement(kA, 0).status().code(), StatusCode::kInvalidArgument);
}

TEST(BoundedCounterTest, RejectsDifferentBoundsAndForgedStates) {
  BoundedCounter a(0), b(5);
  EXPECT_EQ(a.Merge(b).code(), StatusCode::kFailedPrecondition);
  // A forged state claiming a transfer from A that A never had rights for.
  Result<BoundedCounter> forged = BoundedCounter::FromJson(
      R"({"type":"bounded-counter","bound":0,"rows":{"1":{"p":0,"n":0,"t":{"2":5}},"2":{"p":0,"n":5}}})");
  EXPECT_EQ(forged.status().code(), StatusCode::kInvalidArgument);
  // Two individually valid states whose rows for replica 1 disagree.
  BoundedCounter x =
      BoundedCounter::FromJson(
          R"({"type":"bounded-counter","bound":0,"rows":{"1":{"p":10,"n":0,"t":{"2":10}},"2":{"p":0,"n":10}}})")
          .value();
  BoundedCounter y =
      BoundedCounter::FromJson(R"({"type":"bounded-counter","bound":0,"rows":{"1":{"p":3,"n":3}}})")
          .value();
  const BoundedCounter before = y;
  EXPECT_EQ(y.Merge(x).code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(y, before);
  EXPECT_EQ(BoundedCounter::FromBinary(x.ToBinary()).value(), x);
}

TEST(BoundedCounterTest, NegativeBoundAndOverflow) {
  BoundedCounter c(-3);
  EXPECT_EQ(c.Value(), -3);
  ASSERT_TRUE(c.Increment(kA, 2).ok());
  ASSERT_TRUE(c.Decrement(kA, 2).ok());
  EXPECT_EQ(c.Value(), -3);
  BoundedCounter big(INT64_MAX - 1);
  ASSERT_TRUE(big.Increment(kA, 1).ok());
  EXPECT_EQ(big.Increment(kA, 1).status().code(), StatusCode::kOutOfRange);
}

// ---- sets and flag ------------------------------------------------------------------------

TEST(GSetTest, UnionAndSerialization) {
  GSet a, b;
  a.Add("x");
  GSet d = b.Add("y");
  a.Merge(d);
  EXPECT_TRUE(a.Contains("x"));
  EXPECT_TRUE(a.Contains("y"));
  EXPECT_EQ(a.ToJson(), R"({"type":"g-set","elements":["x","y"]})");
  EXPECT_EQ(GSet::FromJson(a.ToJson()).value(), a);
  EXPECT_EQ(GSet::FromBinary(a.ToBinary()).value(), a);
  EXPECT_FALSE(GSet::FromJson(R"({"type":"g-set","elements":["x","x"]})").ok());
}

TEST(OrSetTest, ConcurrentAddWinsOverRemove) {
  OrSet a, b;
  OrSet add = a.Add(kA, "milk").value();
  b.Merge(add);
  OrSet remove = b.Remove("milk");          // B removes the milk it saw...
  OrSet readd = a.Add(kA, "milk").value();  // ...while A adds milk again
  a.Merge(remove);
  b.Merge(readd);
  EXPECT_TRUE(a.Contains("milk"));
  EXPECT_EQ(a, b);
}

TEST(OrSetTest, RemovedElementsLeaveNoTombstones) {
  OrSet a, b;
  for (int round = 0; round < 50; ++round) {
    const std::string e = Cat("item", round % 5);
    b.Merge(a.Add(kA, e).value());
    a.Merge(b.Remove(e));
  }
  EXPECT_TRUE(a.empty());
  EXPECT_EQ(a, b);
  // 50 adds were made, yet the state is just a version vector.
  EXPECT_TRUE(a.context().IsCompact());
  EXPECT_EQ(a.context().compact().Get(kA), 50u);
  EXPECT_LT(a.ToBinary().size(), 8u);
}

TEST(OrSetTest, OutOfOrderDeltasStillConverge) {
  OrSet origin;
  std::vector<OrSet> deltas;
  deltas.push_back(origin.Add(kA, "a").value());
  deltas.push_back(origin.Add(kA, "b").value());
  deltas.push_back(origin.Remove("a"));
  deltas.push_back(origin.Add(kA, "a").value());
  deltas.push_back(origin.Remove("b"));
  OrSet reversed;
  for (auto it = deltas.rbegin(); it != deltas.rend(); ++it) reversed.Merge(*it);
  EXPECT_EQ(reversed, origin);
  EXPECT_EQ(reversed.Elements(), (std::vector<std::string>{"a"}));
  EXPECT_EQ(OrSet::FromJson(origin.ToJson()).value(), origin);
  EXPECT_EQ(OrSet::FromBinary(origin.ToBinary()).value(), origin);
}

TEST(OrSetTest, LargeStateMergesTakeTheScanPath) {
  // A full-state merge whose context covers many dots exercises the scan of live dots.
  OrSet a, b;
  for (int i = 0; i < 300; ++i) ASSERT_TRUE(a.Add(kA, Cat("e", i)).ok());
  b.Merge(a);
  for (int i = 0; i < 300; i += 2) a.Remove(Cat("e", i));
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(b.Add(kB, Cat("b", i)).ok());
  b.Merge(a);
  a.Merge(b);
  EXPECT_EQ(a, b);
  EXPECT_EQ(a.size(), 160u);
}

TEST(EwFlagTest, EnableWins) {
  EwFlag a, b;
  b.Merge(a.Enable(kA).value());
  EwFlag off = b.Disable();
  EwFlag on = a.Enable(kA).value();
  a.Merge(off);
  b.Merge(on);
  EXPECT_TRUE(a.value());
  EXPECT_EQ(a, b);
  b.Merge(b.Disable());
  a.Merge(b);
  EXPECT_FALSE(a.value());
  EXPECT_TRUE(a.context().IsCompact());
  EXPECT_EQ(EwFlag::FromJson(a.ToJson()).value(), a);
  EXPECT_EQ(EwFlag::FromBinary(a.ToBinary()).value(), a);
}

// ---- LWW-map ------------------------------------------------------------------------------

TEST(LwwMapTest, PerKeyLastWriterWinsWithTombstones) {
  LwwMap a, b;
  ASSERT_TRUE(a.Set(kA, HlcTimestamp{10, 0}, "name", "ada").ok());
  ASSERT_TRUE(b.Set(kB, HlcTimestamp{11, 0}, "name", "bob").ok());
  ASSERT_TRUE(b.Set(kB, HlcTimestamp{12, 0}, "city", "rome").ok());
  LwwMap del = a.Remove(kA, HlcTimestamp{13, 0}, "city").value();  // a never saw "city"
  a.Merge(b);
  b.Merge(del);
  EXPECT_EQ(*a.Get("name"), "bob");
  EXPECT_EQ(a.Get("city"), nullptr);
  EXPECT_EQ(a, b);
  EXPECT_EQ(a.size(), 1u);
  EXPECT_EQ(a.tombstone_count(), 1u);
  EXPECT_EQ(a.Keys(), (std::vector<std::string>{"name"}));
  EXPECT_EQ(a.Set(kA, HlcTimestamp{12, 0}, "city", "late").status().code(),
            StatusCode::kFailedPrecondition);
  EXPECT_EQ(LwwMap::FromJson(a.ToJson()).value(), a);
  EXPECT_EQ(LwwMap::FromBinary(a.ToBinary()).value(), a);
  EXPECT_EQ(a.PurgeTombstonesBefore(HlcTimestamp{13, 0}), 0u);
  EXPECT_EQ(a.PurgeTombstonesBefore(HlcTimestamp{14, 0}), 1u);
  EXPECT_EQ(a.tombstone_count(), 0u);
}

TEST(LwwMapTest, ClockOverloadsAlwaysWinLocally) {
  testing::ManualClock clock;
  HybridClock hlc(clock);
  LwwMap m;
  ASSERT_TRUE(m.Set(kB, HlcTimestamp{clock.NowWallMicros() + 100'000, 0}, "k", "ahead").ok());
  ASSERT_TRUE(m.Set(kA, hlc, "k", "after reading").ok());
  EXPECT_EQ(*m.Get("k"), "after reading");
  ASSERT_TRUE(m.Remove(kA, hlc, "k").ok());
  EXPECT_FALSE(m.Contains("k"));
}

// ---- OR-map -------------------------------------------------------------------------------

MapPath P(std::initializer_list<FieldKey> keys) { return MapPath(keys); }
FieldKey Map(std::string name) { return FieldKey{std::move(name), ValueKind::kMap}; }
FieldKey Counter(std::string name) { return FieldKey{std::move(name), ValueKind::kCounter}; }
FieldKey Set(std::string name) { return FieldKey{std::move(name), ValueKind::kOrSet}; }
FieldKey Reg(std::string name) { return FieldKey{std::move(name), ValueKind::kMvRegister}; }

TEST(OrMapTest, NestedValuesMergeIndependently) {
  OrMap a, b;
  OrMap d1 = a.IncrementCounter(kA, P({Map("cart"), Counter("items")}), 2).value();
  OrMap d2 = b.AddToSet(kB, P({Map("cart"), Set("tags")}), "gift").value();
  OrMap d3 = b.IncrementCounter(kB, P({Map("cart"), Counter("items")}), 1).value();
  a.Merge(d2);
  a.Merge(d3);
  b.Merge(d1);
  EXPECT_EQ(a, b);
  EXPECT_EQ(a.CounterValue(P({Map("cart"), Counter("items")})).value(), 3);
  EXPECT_EQ(a.SetElements(P({Map("cart"), Set("tags")})).value(),
            (std::vector<std::string>{"gift"}));
  EXPECT_EQ(a.Keys(P({Map("cart")})).value().size(), 2u);
  EXPECT_EQ(OrMap::FromJson(a.ToJson()).value(), a);
  EXPECT_EQ(OrMap::FromBinary(a.ToBinary()).value(), a);
}

TEST(OrMapTest, ConcurrentUpdateSurvivesRemoval) {
  OrMap a, b;
  b.Merge(a.AssignRegister(kA, P({Map("profile"), Reg("name")}), "ada").value());
  OrMap removal = b.Remove(P({Map("profile")})).value();
  OrMap update = a.AssignRegister(kA, P({Map("profile"), Reg("email")}), "ada@x").value();
  a.Merge(removal);
  b.Merge(update);
  EXPECT_EQ(a, b);
  EXPECT_FALSE(a.Contains(P({Map("profile"), Reg("name")})));  // observed, removed
  EXPECT_EQ(a.RegisterValues(P({Map("profile"), Reg("email")})).value(),
            (std::vector<std::string>{"ada@x"}));  // concurrent, survives
  // Removing everything leaves no tombstones: only the causal context remains.
  OrMap all = a.Remove(P({Map("profile")})).value();
  b.Merge(all);
  EXPECT_TRUE(b.empty());
  EXPECT_TRUE(b.context().IsCompact());
}

TEST(OrMapTest, TypedKeysAvoidTypeConflictsAndPathsAreChecked) {
  OrMap a, b;
  OrMap d1 = a.IncrementCounter(kA, P({Counter("x")}), 1).value();
  OrMap d2 = b.EnableFlag(kB, P({FieldKey{"x", ValueKind::kFlag}})).value();
  a.Merge(d2);
  b.Merge(d1);
  EXPECT_EQ(a, b);
  EXPECT_EQ(a.Keys().value().size(), 2u);
  EXPECT_TRUE(a.FlagValue(P({FieldKey{"x", ValueKind::kFlag}})).value());
  EXPECT_EQ(a.CounterValue(P({Counter("missing")})).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(a.CounterValue(P({Set("x")})).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(a.IncrementCounter(kA, P({Counter("a"), Counter("b")}), 1).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(a.IncrementCounter(kA, {}, 1).status().code(), StatusCode::kInvalidArgument);
  MapPath deep;
  for (size_t i = 0; i < kMaxOrMapDepth; ++i) deep.push_back(Map("m"));
  deep.push_back(Counter("c"));
  EXPECT_EQ(a.IncrementCounter(kA, deep, 1).status().code(), StatusCode::kInvalidArgument);
  deep.erase(deep.begin());
  ASSERT_TRUE(a.IncrementCounter(kA, deep, 1).ok());
  EXPECT_EQ(OrMap::FromBinary(a.ToBinary()).value(), a);
  DecodeLimits shallow;
  shallow.max_depth = 4;
  EXPECT_EQ(OrMap::FromBinary(a.ToBinary(), shallow).status().code(), StatusCode::kInvalidArgument);
}

TEST(OrMapTest, CountersFlagsLwwAndSets) {
  OrMap m;
  const MapPath c = P({Counter("c")});
  ASSERT_TRUE(m.IncrementCounter(kA, c, 5).ok());
  ASSERT_TRUE(m.IncrementCounter(kA, c, -2).ok());
  ASSERT_TRUE(m.IncrementCounter(kB, c, 4).ok());
  EXPECT_EQ(m.CounterValue(c).value(), 7);
  EXPECT_EQ(m.IncrementCounter(kA, c, INT64_MAX).status().code(), StatusCode::kOutOfRange);
  const MapPath f = P({FieldKey{"f", ValueKind::kFlag}});
  ASSERT_TRUE(m.EnableFlag(kA, f).ok());
  ASSERT_TRUE(m.DisableFlag(f).ok());
  EXPECT_FALSE(m.Contains(f));
  const MapPath l = P({FieldKey{"l", ValueKind::kLwwRegister}});
  ASSERT_TRUE(m.AssignLww(kA, l, HlcTimestamp{10, 0}, "old").ok());
  ASSERT_TRUE(m.AssignLww(kB, l, HlcTimestamp{11, 0}, "new").ok());
  EXPECT_EQ(m.AssignLww(kA, l, HlcTimestamp{9, 0}, "stale").status().code(),
            StatusCode::kFailedPrecondition);
  EXPECT_EQ(m.LwwValue(l).value(), "new");
  const MapPath s = P({Set("s")});
  ASSERT_TRUE(m.AddToSet(kA, s, "p").ok());
  ASSERT_TRUE(m.AddToSet(kA, s, "q").ok());
  ASSERT_TRUE(m.RemoveFromSet(s, "p").ok());
  EXPECT_EQ(m.SetElements(s).value(), (std::vector<std::string>{"q"}));
  EXPECT_EQ(OrMap::FromJson(m.ToJson()).value(), m);
  OrMap copy = m;
  OrMap moved = std::move(copy);
  EXPECT_EQ(moved, m);
}

}  // namespace
}  // namespace converge::conflict
