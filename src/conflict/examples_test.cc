// The worked examples of docs/conflicts.md, compiled and checked so the document cannot drift
// from the API. Keep the two in sync.
#include <gtest/gtest.h>

#include <algorithm>
#include <set>

#include "conflict/test_util.h"
#include "converge/conflict/counters.h"
#include "converge/conflict/lww_map.h"
#include "converge/conflict/or_map.h"
#include "converge/conflict/resolver.h"
#include "converge/conflict/sets.h"
#include "converge/conflict/versioned.h"

namespace converge::conflict {
namespace {

// Example 1: reject on conflict. Two clients edit an order's status from the same read.
TEST(ConflictsDocExample, RejectOnConflict) {
  ResolverRegistry registry;
  ASSERT_TRUE(registry.Register("order", ResolverSpec::RejectOnConflict()).ok());

  WriteRequest create;
  create.replica = ReplicaId(1);
  create.value = R"({"status":"placed"})";
  std::string state = registry.ApplyWrite("order", "", "", create).value();
  const ReadResult read = registry.Read("order", "", state).value();  // two clients read this

  WriteRequest ship = create;
  ship.value = R"({"status":"shipped"})";
  ship.precondition.if_match = read.etag;
  state = registry.ApplyWrite("order", "", state, ship).value();  // first writer wins

  WriteRequest cancel = ship;
  cancel.value = R"({"status":"cancelled"})";
  Result<std::string> late = registry.ApplyWrite("order", "", state, cancel);
  EXPECT_EQ(late.status().code(), StatusCode::kAborted);  // stale ETag: re-read, decide again
}

// Example 2: last writer wins, opted into explicitly for a UI preference.
TEST(ConflictsDocExample, LastWriterWins) {
  testing::ManualClock laptop_wall, phone_wall(1'700'000'000'000'000'000 - 40'000'000);
  HybridClock laptop_clock(laptop_wall), phone_clock(phone_wall);  // phone runs 40 ms behind

  LwwMap prefs_laptop, prefs_phone;
  LwwMap d1 = prefs_laptop.Set(ReplicaId(1), laptop_clock, "theme", "dark").value();
  prefs_phone.Merge(d1);
  // The phone saw "dark" and then changed it: its clock observes the stamp first, so the
  // change wins even though the phone's wall clock is behind.
  LwwMap d2 = prefs_phone.Set(ReplicaId(2), phone_clock, "theme", "light").value();
  prefs_laptop.Merge(d2);
  EXPECT_EQ(*prefs_laptop.Get("theme"), "light");
  EXPECT_EQ(prefs_laptop, prefs_phone);
}

// Example 3: multi-value register — two editors change a title concurrently.
TEST(ConflictsDocExample, MultiValue) {
  MvRegister at_a, at_b;
  at_b.Merge(at_a.Write(ReplicaId(1), "Q3 plan").value());
  MvRegister edit_a = at_a.Write(ReplicaId(1), "Q3 plan (draft)").value();
  MvRegister edit_b = at_b.Write(ReplicaId(2), "Q3 roadmap").value();
  at_a.Merge(edit_b);
  at_b.Merge(edit_a);

  ASSERT_TRUE(at_a.HasConflict());  // both titles are kept, neither silently lost
  std::vector<std::string> shown;
  for (const auto& sibling : at_a.siblings()) shown.push_back(sibling.value);
  EXPECT_EQ(shown, (std::vector<std::string>{"Q3 plan (draft)", "Q3 roadmap"}));

  // A person picks; the write carries the context that was shown, superseding both.
  MvRegister pick = at_a.Resolve(ReplicaId(1), "Q3 roadmap (draft)", at_a.context()).value();
  at_b.Merge(pick);
  EXPECT_FALSE(at_b.HasConflict());
  EXPECT_EQ(at_b.siblings()[0].value, "Q3 roadmap (draft)");
}

// Example 4: CRDT merge — stock that must never go negative, sold from two warehouses.
TEST(ConflictsDocExample, BoundedCounterStock) {
  BoundedCounter hq(0), berlin(0), lisbon(0);
  ASSERT_TRUE(hq.Increment(ReplicaId(1), 10).ok());  // 10 units arrive at HQ
  ASSERT_TRUE(berlin.Merge(hq.TransferRights(ReplicaId(1), ReplicaId(2), 6).value()).ok());
  ASSERT_TRUE(lisbon.Merge(hq.TransferRights(ReplicaId(1), ReplicaId(3), 4).value()).ok());

  // Offline, each warehouse sells within its own rights; no coordination needed.
  BoundedCounter sold_berlin = berlin.Decrement(ReplicaId(2), 6).value();
  BoundedCounter sold_lisbon = lisbon.Decrement(ReplicaId(3), 4).value();
  EXPECT_EQ(lisbon.Decrement(ReplicaId(3), 1).status().code(), StatusCode::kFailedPrecondition);

  ASSERT_TRUE(hq.Merge(sold_berlin).ok());
  ASSERT_TRUE(hq.Merge(sold_lisbon).ok());
  EXPECT_EQ(hq.Value(), 0);  // sold out, never oversold
}

// Example 4b: CRDT merge — a shopping cart as an OR-Map of per-item counters.
TEST(ConflictsDocExample, OrMapCart) {
  const FieldKey items{"items", ValueKind::kMap};
  OrMap phone, laptop;
  laptop.Merge(
      phone.IncrementCounter(ReplicaId(1), {items, {"apple", ValueKind::kCounter}}, 2).value());
  OrMap removed = laptop.Remove({items, {"apple", ValueKind::kCounter}}).value();
  OrMap added =
      phone.IncrementCounter(ReplicaId(1), {items, {"pear", ValueKind::kCounter}}, 1).value();
  phone.Merge(removed);
  laptop.Merge(added);  // both: no apple, one pear
  EXPECT_EQ(phone, laptop);
  EXPECT_FALSE(phone.Contains({items, {"apple", ValueKind::kCounter}}));
  EXPECT_EQ(phone.CounterValue({items, {"pear", ValueKind::kCounter}}).value(), 1);
}

// Example 5: a registered pure merge function — tags kept as a sorted comma-separated list.
TEST(ConflictsDocExample, CustomMerge) {
  auto union_of_tags = [](std::string_view a, std::string_view b) -> Result<std::string> {
    std::set<std::string> tags;
    for (std::string_view list : {a, b}) {
      size_t start = 0;
      while (start <= list.size()) {
        const size_t comma = std::min(list.find(',', start), list.size());
        if (comma > start) tags.emplace(list.substr(start, comma - start));
        start = comma + 1;
      }
    }
    std::string out;
    for (const std::string& t : tags) {
      if (!out.empty()) out += ',';
      out += t;
    }
    return out;
  };
  ResolverRegistry registry;
  ASSERT_TRUE(
      registry
          .RegisterField("article", "tags", ResolverSpec::CustomMerge("tag-union", union_of_tags))
          .ok());

  WriteRequest a;
  a.replica = ReplicaId(1);
  a.value = "c++,crdt";
  WriteRequest b;
  b.replica = ReplicaId(2);
  b.value = "crdt,databases";
  const std::string sa = registry.ApplyWrite("article", "tags", "", a).value();
  const std::string sb = registry.ApplyWrite("article", "tags", "", b).value();
  const std::string merged = registry.Merge("article", "tags", sa, sb).value();
  EXPECT_EQ(registry.Read("article", "tags", merged).value().value, "c++,crdt,databases");
}

}  // namespace
}  // namespace converge::conflict
