// The shared store's change feed, as the store writes it, replicated into a SQLite table: the
// copy of one collection equals the store's, and a write's commit sequence number, as a
// consistency token, is reached once the copy has it.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <map>
#include <thread>

#include "converge/env.h"
#include "converge/log.h"
#include "converge/replica.h"
#include "converge/sql.h"
#include "converge/store.h"
#include "support/temp_dir.h"

namespace converge {
namespace {

// One temporary directory per test (tests/support/temp_dir.h).
using ::converge::testing::TempDir;

struct CopyRow {
  uint64_t version = 0;
  bool deleted = false;
  std::string document;
};

std::map<std::string, CopyRow> ReadCopy(sql::Database& db) {
  std::map<std::string, CopyRow> out;
  Status s = db.Query("SELECT key, version, deleted, document FROM orders_copy", {},
                      [&](const sql::Row& row) {
                        out[std::string(row.Bytes(0))] =
                            CopyRow{static_cast<uint64_t>(*row.Int(1)), *row.Int(2) == 1,
                                    std::string(row.Bytes(3))};
                        return Status::Ok();
                      })
                 .status();
  EXPECT_TRUE(s.ok()) << s.ToString();
  return out;
}

TEST(StoreFeedReplicaTest, TheFeedReplicatesAsItIs) {
  TempDir dir;
  Env& env = Env::Default();
  LogOptions lo;
  lo.dir = dir.Sub("log");
  auto log = Log::Open(env, lo);
  ASSERT_TRUE(log.ok()) << log.status().ToString();
  StoreOptions so;
  so.dir = dir.Sub("store");
  so.feed_log = log->get();
  auto store = Store::Open(env, so);
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  const Caller owner = Caller::Service("orders");
  CollectionConfig config;
  config.owner = "orders";
  ASSERT_TRUE((*store)->CreateCollection(owner, "orders", config).ok());
  ASSERT_TRUE((*store)->CreateCollection(owner, "customers", config).ok());

  for (int i = 0; i < 20; ++i) {
    const std::string key = "o" + std::to_string(i % 7);
    ASSERT_TRUE((*store)->Put(owner, "orders", key, "{\"n\":" + std::to_string(i) + "}").ok());
    ASSERT_TRUE((*store)->Put(owner, "customers", key, "{\"c\":" + std::to_string(i) + "}").ok());
  }
  ASSERT_TRUE((*store)->Delete(owner, "orders", "o3").ok());
  const std::vector<WriteOp> txn = {WriteOp::Put("orders", "o9", "{\"t\":true}"),
                                    WriteOp::Delete("orders", "o4")};
  auto committed = (*store)->Commit(owner, txn);
  ASSERT_TRUE(committed.ok()) << committed.status().ToString();
  ASSERT_TRUE((*store)->FlushFeed().ok());

  sql::SqliteOptions sq;
  sq.path = dir.Sub("copy.db");
  auto db = sql::Database::OpenSqlite(sq);
  ASSERT_TRUE(db.ok());
  auto target = replica::NewSqlTarget(**db, {"orders", "orders_copy", so.feed_topic});
  ASSERT_TRUE(target.ok()) << target.status().ToString();
  std::unique_ptr<replica::Source> source = replica::NewLogSource(**log, so.feed_topic);
  replica::ApplierOptions ao;
  ao.name = "orders";
  ao.collection = "orders";
  auto applier = replica::Applier::Open(env, *source, **target, ao);
  ASSERT_TRUE(applier.ok()) << applier.status().ToString();

  // The write's token: its commit sequence number on the feed topic.
  const std::string token = replica::EncodeToken(
      {so.feed_topic, 0, replica::ConsistencyToken::Kind::kCommitSeq, committed->commit_seq});
  EXPECT_FALSE(*(*applier)->Reached(token));
  ASSERT_TRUE((*applier)->CatchUp().ok());
  EXPECT_TRUE(*(*applier)->Reached(token));
  const replica::ReplicaStats stats = (*applier)->Stats();
  EXPECT_EQ(stats.malformed, 0u);
  EXPECT_EQ(stats.filtered, 20u);  // the customers collection

  // The copy equals the collection: live rows are the store's documents at their versions,
  // deleted keys are tombstones.
  std::map<std::string, CopyRow> copy = ReadCopy(**db);
  auto listed = (*store)->List("orders", ListOptions{});
  ASSERT_TRUE(listed.ok());
  size_t live = 0;
  for (const auto& [key, row] : copy) {
    if (row.deleted) {
      EXPECT_FALSE((*store)->TryGet("orders", key).ok()) << key;
      continue;
    }
    ++live;
    auto doc = (*store)->Get("orders", key);
    ASSERT_TRUE(doc.ok()) << key;
    EXPECT_EQ(row.version, doc->version) << key;
    EXPECT_EQ(row.document, doc->value) << key;
  }
  EXPECT_EQ(live, listed->documents.size());
  EXPECT_TRUE(copy.at("o3").deleted);
  EXPECT_TRUE(copy.at("o4").deleted);
  EXPECT_EQ(copy.at("o9").document, "{\"t\":true}");

  // Read-your-writes: wait for a new write's token while the applier runs.
  auto w = (*store)->Commit(owner, std::vector<WriteOp>{WriteOp::Put("orders", "o1", "{\"x\":1}")});
  ASSERT_TRUE(w.ok());
  const std::string token2 = replica::EncodeToken(
      {so.feed_topic, 0, replica::ConsistencyToken::Kind::kCommitSeq, w->commit_seq});
  std::thread driver([&] {
    for (int i = 0; i < 1000 && !*(*applier)->Reached(token2); ++i) {
      ASSERT_TRUE((*applier)->Step().ok());
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
  });
  EXPECT_TRUE((*applier)->WaitFor(token2, 10'000).ok());
  driver.join();
  EXPECT_EQ(ReadCopy(**db).at("o1").document, "{\"x\":1}");
}

}  // namespace
}  // namespace converge
