// Shared by the replica tests: change records and a target conformance check that every
// Target (memory, SQLite, PostgreSQL) must pass.
#pragma once

#include <gtest/gtest.h>

#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "converge/conflict/counters.h"
#include "converge/event.h"
#include "converge/replica.h"

namespace converge::replica::testing {

// A CRDT field merge for the multi-writer tests: the field holds a GCounter's JSON and two
// writes merge (what the server's built-in "gcounter" kind does, which replica cannot use).
inline std::function<Result<std::string>(std::string_view, std::string_view)> GCounterFieldMerge() {
  return [](std::string_view stored, std::string_view written) -> Result<std::string> {
    CONVERGE_ASSIGN_OR_RETURN(conflict::GCounter w, conflict::GCounter::FromJson(written));
    if (stored.empty()) return w.ToJson();
    CONVERGE_ASSIGN_OR_RETURN(conflict::GCounter s, conflict::GCounter::FromJson(stored));
    s.Merge(w);
    return s.ToJson();
  };
}

inline Change MakeChange(std::string key, uint64_t version, bool del = false,
                         std::string doc = "") {
  Change c;
  c.key = std::move(key);
  c.version = version;
  c.kind = del ? ChangeKind::kDelete : ChangeKind::kUpsert;
  if (!del) c.document = doc.empty() ? "{\"v\":" + std::to_string(version) + "}" : doc;
  c.commit_time_micros = 1'700'000'000'000'000 + static_cast<int64_t>(version);
  return c;
}

// The encoded record of a change (what a producer appends to the topic).
inline std::string Record(const Change& c) {
  Result<Event> e = MakeChangeEvent(c, "/test");
  CONVERGE_CHECK(e.ok());
  std::string out;
  CONVERGE_CHECK(EncodeBinary(*e, &out).ok());
  return out;
}

// Applies `changes` as one batch moving partition 0 from `from` to `to`.
inline Result<ApplyOutcome> ApplyChanges(Target& target, const std::vector<Change>& changes,
                                         uint64_t from, uint64_t to, int64_t now) {
  ApplyBatch b;
  for (const Change& c : changes) b.changes.push_back(&c);
  b.from_offset = from;
  b.position = Position{0, to, 0};
  b.applied_time_micros = now;
  return target.Apply(b);
}

// The rules of docs/formats/replica.md, checked on any fresh target. `read` returns the row of
// a key (nullopt when there is none).
template <typename ReadRow>
void CheckTargetConformance(Target& target, ReadRow read) {
  Result<TargetState> s0 = target.Load();
  ASSERT_TRUE(s0.ok()) << s0.status().ToString();
  EXPECT_TRUE(s0->positions.empty());

  // Upserts, then a higher version wins and a lower or equal one is skipped.
  auto r = ApplyChanges(target, {MakeChange("a", 5), MakeChange("b", 1)}, 0, 2, 1000);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->applied, 2u);
  r = ApplyChanges(target, {MakeChange("a", 4), MakeChange("b", 1, false, "{\"x\":1}")}, 2, 4,
                   1001);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->applied, 0u);
  EXPECT_EQ(r->stale, 2u);
  std::optional<Row> a = read("a");
  ASSERT_TRUE(a.has_value());
  EXPECT_EQ(a->version, 5u);
  EXPECT_EQ(a->document, "{\"v\":5}");
  EXPECT_FALSE(a->deleted);
  EXPECT_EQ(a->applied_time_micros, 1000);

  // The position fence: a batch from a position the target does not hold is refused whole.
  r = ApplyChanges(target, {MakeChange("c", 9)}, 3, 5, 1002);
  EXPECT_EQ(r.status().code(), StatusCode::kAborted) << r.status().ToString();
  EXPECT_FALSE(read("c").has_value());

  // Delete: a tombstone that gates older upserts.
  r = ApplyChanges(target, {MakeChange("a", 7, true), MakeChange("z", 3, true)}, 4, 6, 2000);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->applied, 2u);
  a = read("a");
  ASSERT_TRUE(a.has_value());
  EXPECT_TRUE(a->deleted);
  EXPECT_EQ(a->version, 7u);
  EXPECT_EQ(a->document, "");
  r = ApplyChanges(target, {MakeChange("a", 6)}, 6, 7, 2001);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->stale, 1u);
  EXPECT_TRUE(read("a")->deleted);

  // Purge the tombstones applied before 2001: the watermark becomes 7; a late upsert of a
  // purged key at or below it is refused, a new key above it applies.
  Result<uint64_t> purged = target.PurgeTombstones(2001);
  ASSERT_TRUE(purged.ok()) << purged.status().ToString();
  EXPECT_EQ(*purged, 2u);
  EXPECT_FALSE(read("a").has_value());
  Result<TargetState> s1 = target.Load();
  ASSERT_TRUE(s1.ok());
  ASSERT_EQ(s1->positions.size(), 1u);
  EXPECT_EQ(s1->positions[0].purge_watermark, 7u);
  EXPECT_EQ(s1->positions[0].next_offset, 7u);
  r = ApplyChanges(target, {MakeChange("a", 6), MakeChange("z", 2), MakeChange("b", 2),
                            MakeChange("n", 8)},
                   7, 8, 3000);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->below_watermark, 2u);
  EXPECT_EQ(r->applied, 2u);  // b (has a row) and n (above the watermark)
  EXPECT_FALSE(read("a").has_value());
  EXPECT_FALSE(read("z").has_value());
  EXPECT_EQ(read("b")->version, 2u);
  EXPECT_EQ(read("n")->version, 8u);

  // A document with the characters an array literal must escape.
  const std::string doc = "{\"s\":\"q\\\"uo,te{}\\\\ NULL\"}";
  r = ApplyChanges(target, {MakeChange("we\"ird,key", 10, false, doc)}, 8, 9, 3001);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ASSERT_TRUE(read("we\"ird,key").has_value());
  EXPECT_EQ(read("we\"ird,key")->document, doc);

  // A truncate at version 10 in a batch of partition 0 of a 3-partition source: rows below 10
  // go (b@2, n@8), rows at or above stay, the batch's own change at 10 applies; every
  // partition's watermark rises to 9, so an older change still to come from another partition
  // is refused while a newer one applies.
  ASSERT_TRUE(target.applies_truncates());
  Change t10 = MakeChange("t", 10);
  ApplyBatch tb;
  tb.changes.push_back(&t10);
  tb.from_offset = 9;
  tb.position = Position{0, 11, 0};
  tb.applied_time_micros = 4000;
  tb.truncate_below = 10;
  tb.partitions = 3;
  r = target.Apply(tb);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->applied, 1u);
  EXPECT_FALSE(read("b").has_value());
  EXPECT_FALSE(read("n").has_value());
  EXPECT_TRUE(read("we\"ird,key").has_value());
  EXPECT_EQ(read("t")->version, 10u);
  Result<TargetState> s2 = target.Load();
  ASSERT_TRUE(s2.ok());
  ASSERT_EQ(s2->positions.size(), 3u);
  for (const Position& p : s2->positions) {
    EXPECT_EQ(p.purge_watermark, 9u) << p.partition;
    EXPECT_EQ(p.next_offset, p.partition == 0 ? 11u : 0u) << p.partition;
  }
  Change late = MakeChange("b", 5), fresh = MakeChange("m", 12);
  ApplyBatch p2;
  p2.changes = {&late, &fresh};
  p2.from_offset = 0;
  p2.position = Position{2, 2, 0};
  p2.applied_time_micros = 4001;
  r = target.Apply(p2);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->below_watermark, 1u);
  EXPECT_EQ(r->applied, 1u);
  EXPECT_FALSE(read("b").has_value());
  EXPECT_EQ(read("m")->version, 12u);
}

}  // namespace converge::replica::testing
