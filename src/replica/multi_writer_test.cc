// Multi-writer merge rules and the node's exchange, case by case (the simulator covers them
// under faults: multi_writer_sim_test.cc).
#include "replica/multi_writer.h"

#include <gtest/gtest.h>

#include <memory>

#include "converge/conflict/counters.h"
#include "converge/sim_env.h"
#include "replica/replica_test_util.h"

namespace converge::replica::mw {
namespace {

using conflict::VersionVector;

PolicySpec Spec(Policy policy) {
  PolicySpec spec;
  spec.policy = policy;
  if (policy == Policy::kCrdtFields) {
    spec.crdt_fields["n"] = testing::GCounterFieldMerge();
  }
  return spec;
}

struct Pair {
  explicit Pair(Policy policy, int64_t retention_ms = 0) : env(42) {
    for (int i = 0; i < 2; ++i) {
      NodeOptions o;
      o.self = i + 1;
      o.peers = {static_cast<uint64_t>(2 - i)};
      o.policy = Spec(policy);
      o.tombstone_retention_ms = retention_ms;
      options[i] = o;
      node[i] = *Node::Open(env, storage[i], o);
    }
  }
  // a pulls everything b has.
  void Pull(int a, int b) {
    for (;;) {
      Page page = *node[b]->Export(node[a]->NextFrom(b + 1), 2);
      auto r = node[a]->Apply(page);
      ASSERT_TRUE(r.ok()) << r.status().ToString();
      if (page.next == page.end) return;
    }
  }
  void Sync() {
    Pull(0, 1);
    Pull(1, 0);
  }
  std::optional<std::string> Read(int i, const std::string& key) {
    auto state = node[i]->Get(key);
    if (!state) return std::nullopt;
    return *Resolve(options[i].policy, *state);
  }
  sim::SimEnv env;
  MemoryStorage storage[2];
  NodeOptions options[2];
  std::unique_ptr<Node> node[2];
};

TEST(MultiWriterTest, PolicyNames) {
  EXPECT_EQ(*ParsePolicy("multi-value"), Policy::kMultiValue);
  auto bad = ParsePolicy("owner-wins");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("lww, multi-value"), std::string_view::npos);
  PolicySpec crdt;
  crdt.policy = Policy::kCrdtFields;
  EXPECT_FALSE(ValidatePolicy(crdt).ok());
  PolicySpec resolver;
  resolver.policy = Policy::kResolver;
  EXPECT_FALSE(ValidatePolicy(resolver).ok());
}

TEST(MultiWriterTest, LwwConcurrentWritesConvergeToTheLaterOne) {
  Pair p(Policy::kLww);
  ASSERT_TRUE(p.node[0]->Put("k", "\"a\"").ok());
  p.env.AdvanceTime(1'000'000);
  ASSERT_TRUE(p.node[1]->Put("k", "\"b\"").ok());
  p.Sync();
  EXPECT_EQ(p.Read(0, "k"), "\"b\"");
  EXPECT_EQ(p.Read(1, "k"), "\"b\"");
  EXPECT_EQ(*p.node[0]->Get("k"), *p.node[1]->Get("k"));
}

TEST(MultiWriterTest, MultiValueKeepsSiblingsUntilAWriteNamesThem) {
  Pair p(Policy::kMultiValue);
  ASSERT_TRUE(p.node[0]->Put("k", "\"a\"").ok());
  ASSERT_TRUE(p.node[1]->Put("k", "\"b\"").ok());
  p.Sync();
  KeyState seen = *p.node[0]->Get("k");
  ASSERT_EQ(seen.siblings.size(), 2u);
  EXPECT_EQ(seen, *p.node[1]->Get("k"));
  // A write on node 1 naming what node 0's reader saw resolves both.
  ASSERT_TRUE(p.node[1]->Put("k", "\"ab\"", &seen.vv).ok());
  p.Sync();
  ASSERT_EQ(p.node[0]->Get("k")->siblings.size(), 1u);
  EXPECT_EQ(p.Read(0, "k"), "\"ab\"");
}

TEST(MultiWriterTest, AWriteNamingOldVersionsKeepsAConcurrentOne) {
  Pair p(Policy::kMultiValue);
  ASSERT_TRUE(p.node[0]->Put("k", "\"a\"").ok());
  p.Sync();
  KeyState seen = *p.node[1]->Get("k");
  ASSERT_TRUE(p.node[0]->Put("k", "\"a2\"").ok());  // not seen by node 1's reader
  ASSERT_TRUE(p.node[1]->Put("k", "\"b\"", &seen.vv).ok());
  p.Sync();
  EXPECT_EQ(p.node[0]->Get("k")->siblings.size(), 2u);
}

TEST(MultiWriterTest, ADeleteIsNotUndoneByAnOlderWriteArrivingLate) {
  Pair p(Policy::kLww, /*retention_ms=*/10);
  ASSERT_TRUE(p.node[0]->Put("k", "\"a\"").ok());
  Page old = *p.node[0]->Export(1, 10);  // an old page, delivered again later
  p.Sync();
  ASSERT_TRUE(p.node[1]->Delete("k").ok());
  p.Sync();
  EXPECT_EQ(p.Read(0, "k"), std::nullopt);
  // The old page is refused (position), and its state is dominated anyway.
  EXPECT_EQ(p.node[1]->Apply(old).status().code(), StatusCode::kAborted);
  auto merged = Merge(p.options[1].policy, *p.node[1]->Get("k"), old.entries[0].state);
  EXPECT_TRUE(merged->deleted());
  // Stable and old enough: purged on both; nothing comes back.
  p.env.AdvanceTime(20'000'000);
  p.Sync();
  EXPECT_EQ(*p.node[0]->PurgeTombstones(), 1u);
  EXPECT_EQ(*p.node[1]->PurgeTombstones(), 1u);
  p.Sync();
  EXPECT_FALSE(p.node[0]->Get("k").has_value());
  EXPECT_FALSE(p.node[1]->Get("k").has_value());
}

TEST(MultiWriterTest, AnUnstableTombstoneIsKept) {
  Pair p(Policy::kLww, /*retention_ms=*/10);
  ASSERT_TRUE(p.node[0]->Put("k", "\"a\"").ok());
  ASSERT_TRUE(p.node[0]->Delete("k").ok());
  p.env.AdvanceTime(20'000'000);
  // Node 1 has not reported seeing the delete.
  EXPECT_EQ(*p.node[0]->PurgeTombstones(), 0u);
  p.Sync();
  p.Pull(0, 1);  // node 1's report now covers it
  EXPECT_EQ(*p.node[0]->PurgeTombstones(), 1u);
}

TEST(MultiWriterTest, CrdtFieldsCountEveryIncrementOnce) {
  Pair p(Policy::kCrdtFields);
  auto inc = [&](int i) {
    conflict::GCounter c;
    if (auto doc = p.Read(i, "k")) {
      c = *conflict::GCounter::FromJson(
          (*doc).substr(5, (*doc).find(",\"x\"") - 5));  // {"n":<counter>,"x":..}
    }
    ASSERT_TRUE(c.Increment(conflict::ReplicaId(i + 1)).ok());
    ASSERT_TRUE(
        p.node[i]->Put("k", "{\"n\":" + c.ToJson() + ",\"x\":" + std::to_string(i) + "}").ok());
  };
  inc(0);
  inc(1);
  inc(1);
  p.Sync();
  inc(0);
  p.Sync();
  auto doc = *p.Read(1, "k");
  auto c = conflict::GCounter::FromJson(doc.substr(5, doc.find(",\"x\"") - 5));
  ASSERT_TRUE(c.ok()) << doc;
  EXPECT_EQ(c->Value(), 4u);
  EXPECT_EQ(p.Read(0, "k"), p.Read(1, "k"));
}

TEST(MultiWriterTest, ARepeatedPageChangesNothing) {
  Pair p(Policy::kLww);
  ASSERT_TRUE(p.node[0]->Put("k", "\"a\"").ok());
  Page page = *p.node[0]->Export(1, 10);
  auto first = p.node[1]->Apply(page);
  ASSERT_TRUE(first.ok());
  EXPECT_EQ(first->merged, 1u);
  EXPECT_EQ(p.node[1]->Apply(page).status().code(), StatusCode::kAborted);
  // Node 0 gets its own write back through node 1? No: node 1 exports its own writes only.
  EXPECT_TRUE(p.node[1]->Export(1, 10)->entries.empty());
}

TEST(MultiWriterTest, GarbledPagesAreRefused) {
  Pair p(Policy::kMultiValue);
  ASSERT_TRUE(p.node[0]->Put("k", "\"a\"").ok());
  std::string bytes = p.node[0]->Export(1, 10)->ToBinary();
  for (size_t cut = 0; cut < bytes.size(); ++cut) {
    EXPECT_FALSE(Page::FromBinary(bytes.substr(0, cut)).ok()) << cut;
  }
  EXPECT_TRUE(Page::FromBinary(bytes).ok());
  Page foreign = *Page::FromBinary(bytes);
  foreign.origin = 9;
  EXPECT_EQ(p.node[1]->Apply(foreign).status().code(), StatusCode::kInvalidArgument);
}

TEST(MultiWriterTest, RepairMergesAndKeepsTheDigestCurrent) {
  Pair p(Policy::kMultiValue);
  ASSERT_TRUE(p.node[0]->Put("k", "\"a\"").ok());
  ASSERT_TRUE(p.node[1]->Put("k", "\"b\"").ok());
  EXPECT_NE(p.node[0]->digest().digest(), p.node[1]->digest().digest());
  // Each side merges the other's state: both siblings on both, equal digests.
  KeyState zero = *p.node[0]->Get("k");
  KeyState one = *p.node[1]->Get("k");
  EXPECT_TRUE(*p.node[0]->Repair("k", one));
  EXPECT_TRUE(*p.node[1]->Repair("k", zero));
  EXPECT_FALSE(*p.node[1]->Repair("k", zero));  // already covered: nothing written
  EXPECT_EQ(p.node[0]->Get("k")->siblings.size(), 2u);
  EXPECT_EQ(p.node[0]->digest().digest(), p.node[1]->digest().digest());
  EXPECT_EQ(p.node[0]->digest().Get("k"), StateVersion(*p.node[0]->Get("k")));
}

TEST(MultiWriterTest, ARestoredNodeNeverMintsADotTwice) {
  Pair p(Policy::kLww);
  ASSERT_TRUE(p.node[0]->Put("k", "\"a\"").ok());
  MemoryStorage backup;
  backup.mutable_data() = p.storage[0].data();
  ASSERT_TRUE(p.node[0]->Put("k", "\"b\"").ok());  // dot 1:2
  p.Sync();
  // Node 0 restored: it remembers only dot 1:1; node 1's report moves it past 1:2.
  p.storage[0].mutable_data() = backup.data();
  p.node[0] = *Node::Open(p.env, p.storage[0], p.options[0]);
  p.Pull(0, 1);
  KeyState s = *p.node[0]->Put("j", "\"c\"");
  EXPECT_EQ(s.siblings[0].dot.counter, 3u);
}

TEST(MultiWriterTest, GarbledStatesAreRefused) {
  KeyState st;
  st.vv.Observe(conflict::ReplicaId(1), 1);
  st.siblings.push_back(Sibling{{conflict::ReplicaId(1), 1}, {5, 0}, false, "\"x\""});
  const std::string bytes = EncodeStates({{"k", st}});
  auto back = DecodeStates(bytes);
  ASSERT_TRUE(back.ok());
  EXPECT_EQ((*back)[0].second, st);
  for (size_t cut = 0; cut < bytes.size(); ++cut) {
    EXPECT_FALSE(DecodeStates(bytes.substr(0, cut)).ok()) << cut;
  }
}

}  // namespace
}  // namespace converge::replica::mw
