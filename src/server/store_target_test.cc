// The store-collection replica target (server/store_target.h): a first batch larger than one
// store transaction (a bootstrap snapshot) is applied in pages behind a marker, and a bootstrap
// that did not finish (its marker and pages left by a crash) is redone from a clean copy.
#include "server/store_target.h"

#include <gtest/gtest.h>

#include <deque>
#include <map>

#include "converge/sim_env.h"

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wrestrict"
#endif

namespace converge::server {
namespace {

class StoreTargetTest : public ::testing::Test {
 protected:
  void SetUp() override {
    StoreOptions options;
    options.dir = "/data/store";
    options.ttl_sweep_interval_ms = 0;
    auto opened = Store::Open(env_, options);
    ASSERT_TRUE(opened.ok()) << opened.status().ToString();
    store_ = std::move(opened).value();
    auto t = NewStoreTarget(*store_, env_, "r", "copy", "store-changes");
    ASSERT_TRUE(t.ok()) << t.status().ToString();
    target_ = std::move(t).value();
  }

  // A batch from offset 0 with keys k0..k<n-1> at version 10 + i.
  replica::ApplyBatch Snapshot(size_t n, uint64_t end) {
    changes_.clear();
    replica::ApplyBatch b;
    for (size_t i = 0; i < n; ++i) {
      replica::Change c;
      c.key = "k" + std::to_string(i);
      c.version = 10 + i;
      c.document = "{\"i\":" + std::to_string(i) + "}";
      c.commit_time_micros = 1;
      changes_.push_back(std::move(c));
    }
    for (const replica::Change& c : changes_) b.changes.push_back(&c);
    b.from_offset = 0;
    b.position.partition = 0;
    b.position.next_offset = end;
    b.position.commitseq = end;
    b.applied_time_micros = 2;
    b.partitions = 1;
    return b;
  }

  size_t CopySize() {
    size_t n = 0;
    ListOptions list;
    list.limit = 1000;
    while (true) {
      auto page = store_->List("copy", list);
      EXPECT_TRUE(page.ok()) << page.status().ToString();
      if (!page.ok()) return n;
      n += page->documents.size();
      if (page->next_page_token.empty()) return n;
      list.page_token = page->next_page_token;
    }
  }

  sim::SimEnv env_{11};
  std::unique_ptr<Store> store_;
  std::unique_ptr<replica::Target> target_;
  std::deque<replica::Change> changes_;
};

TEST_F(StoreTargetTest, ASnapshotLargerThanOneTransactionIsAppliedInPages) {
  auto applied = target_->Apply(Snapshot(1'200, 5'000));
  ASSERT_TRUE(applied.ok()) << applied.status().ToString();
  EXPECT_EQ(applied->applied, 1'200u);
  EXPECT_EQ(CopySize(), 1'200u);
  auto state = target_->Load();
  ASSERT_TRUE(state.ok());
  ASSERT_EQ(state->positions.size(), 1u);
  EXPECT_EQ(state->positions[0].next_offset, 5'000u);
  auto row = ReadStoreTargetRow(*store_, "r", "copy", "k1199");
  ASSERT_TRUE(row.ok()) << row.status().ToString();
  ASSERT_TRUE(row->has_value());
  EXPECT_EQ((*row)->version, 1'209u);
  EXPECT_EQ((*row)->document, "{\"i\":1199}");
}

TEST_F(StoreTargetTest, AnUnfinishedBootstrapIsRefusedToReadersAndRedoneFromACleanCopy) {
  // What a crash after the first pages leaves: the marker, entries and documents, no position
  // (among them a key the next snapshot no longer lists).
  const Caller replica{"converge-replica", true};
  std::vector<WriteOp> ops = {
      WriteOp::Put(ReplicaMetaCollection("r"), "b", R"({"next_offset":10,"started_us":1})"),
      WriteOp::Put(ReplicaMetaCollection("r"), "v/gone",
                   R"({"v":3,"d":false,"p":0,"c":1,"a":1})"),
      WriteOp::Put("copy", "gone", R"({"old":true})"),
      WriteOp::Put(ReplicaMetaCollection("r"), "v/k0", R"({"v":99,"d":false,"p":0,"c":1,"a":1})"),
      WriteOp::Put("copy", "k0", R"({"old":true})")};
  ASSERT_TRUE(store_->Commit(replica, ops).ok());
  auto refused = ReadStoreTargetRow(*store_, "r", "copy", "gone");
  EXPECT_EQ(refused.status().code(), StatusCode::kUnavailable) << refused.status().ToString();

  // The next bootstrap (small or large) starts over: only the new snapshot's keys remain, at
  // its versions.
  auto applied = target_->Apply(Snapshot(900, 2'000));
  ASSERT_TRUE(applied.ok()) << applied.status().ToString();
  EXPECT_EQ(CopySize(), 900u);
  auto gone = ReadStoreTargetRow(*store_, "r", "copy", "gone");
  ASSERT_TRUE(gone.ok()) << gone.status().ToString();
  EXPECT_FALSE(gone->has_value());
  auto k0 = ReadStoreTargetRow(*store_, "r", "copy", "k0");
  ASSERT_TRUE(k0.ok() && k0->has_value());
  EXPECT_EQ((*k0)->version, 10u);
  EXPECT_EQ((*k0)->document, "{\"i\":0}");
  // A second batch from 0 is refused now that the position is committed.
  EXPECT_FALSE(target_->Apply(Snapshot(10, 20)).ok());
}

// Reconciliation's repairs of the copy never undo a write that moved the entry since the run
// compared it: each is conditional (version gate, or If-Match on the compared entry), and
// fences an applier batch in flight by rewriting the position.
TEST_F(StoreTargetTest, ARepairWritesOnlyWhileTheEntryIsTheOneCompared) {
  Document source;
  source.key = "k1";
  source.version = 50;
  source.value = R"({"src":1})";
  // Before the first batch: nothing is repaired.
  auto early = RepairStoreTargetRow(*store_, "r", "copy", "k1", std::nullopt, source, 3);
  ASSERT_TRUE(early.ok()) << early.status().ToString();
  EXPECT_FALSE(*early);
  ASSERT_TRUE(target_->Apply(Snapshot(3, 10)).ok());  // k0..k2 at versions 10..12
  auto position = [&] { return store_->Get(ReplicaMetaCollection("r"), "p/0")->version; };
  const uint64_t pos_before = position();

  // Missing key: written, and the position's version moves (an applier's batch in flight
  // that read before it fails its If-Match).
  source.key = "new";
  auto added = RepairStoreTargetRow(*store_, "r", "copy", "new", std::nullopt, source, 3);
  ASSERT_TRUE(added.ok() && *added);
  EXPECT_GT(position(), pos_before);
  // A second repair of the same run's view finds the entry there now: refused by the gate.
  auto again = RepairStoreTargetRow(*store_, "r", "copy", "new", std::nullopt, source, 3);
  ASSERT_TRUE(again.ok());
  EXPECT_FALSE(*again);
  // The copy lower than the source, but the applier moved the entry to the source's version
  // or past it meanwhile: left alone.
  source.key = "k1";
  source.version = 11;  // k1 is at 11 already
  auto gated = RepairStoreTargetRow(*store_, "r", "copy", "k1", uint64_t{5}, source, 3);
  ASSERT_TRUE(gated.ok());
  EXPECT_FALSE(*gated);
  // Extra or ahead, compared at a version the entry is no longer at: nothing written.
  auto extra = RepairStoreTargetRow(*store_, "r", "copy", "k2", uint64_t{9}, std::nullopt, 3);
  ASSERT_TRUE(extra.ok());
  EXPECT_FALSE(*extra);
  EXPECT_TRUE(store_->Get("copy", "k2").ok());
  // ... and at the compared version: removed, document and entry.
  auto removed = RepairStoreTargetRow(*store_, "r", "copy", "k2", uint64_t{12}, std::nullopt, 3);
  ASSERT_TRUE(removed.ok() && *removed);
  EXPECT_EQ(store_->Get("copy", "k2").status().code(), StatusCode::kNotFound);
  auto row = ReadStoreTargetRow(*store_, "r", "copy", "k2");
  ASSERT_TRUE(row.ok());
  EXPECT_FALSE(row->has_value());
  // The live entries are what a run compares.
  std::map<std::string, uint64_t> live;
  ASSERT_TRUE(ScanStoreTarget(*store_, "r", [&](const std::string& k, uint64_t v) {
                live[k] = v;
              }).ok());
  EXPECT_EQ(live, (std::map<std::string, uint64_t>{{"k0", 10}, {"k1", 11}, {"new", 50}}));
}

}  // namespace
}  // namespace converge::server
