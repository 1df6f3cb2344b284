// Unit tests of the shared store: collections and permissions, conditional writes, merge
// fields, transactions, range reads, TTL, the change feed, recovery and checkpoints (on the
// simulated Env), and lost-update freedom under concurrent threads (production Env).
//
// Built twice: store_test (the embedded store) and, with CONVERGE_STORE_TEST_POSTGRES,
// postgres_store_test: the same StoreTest cases against the PostgreSQL store on a real
// PostgreSQL (a "reopen" opens a new store on the same tables); cases about the embedded
// store's files (WAL, checkpoints, directory lock, crashes, group commits) skip there, saying
// why.
#include "converge/store.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <stdlib.h>

#include <atomic>
#include <boost/asio/post.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "converge/conflict/counters.h"
#include "converge/event.h"
#include "converge/sim_env.h"
#include "log/testing/full_disk_env.h"
#include "store/feed.h"
#include "store/testing/memory_log.h"
#include "support/temp_dir.h"
#ifdef CONVERGE_STORE_TEST_POSTGRES
#include "store/postgres_store.h"
#include "support/postgres_server.h"
#endif

namespace converge {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

constexpr int64_t kMs = 1'000'000;
const Caller kOrders = Caller::Service("orders");
const Caller kBilling = Caller::Service("billing");
const Caller kStranger = Caller::Service("stranger");

// "<prefix><n>" (appending avoids a GCC 12 -Wrestrict false positive on operator+).
std::string Numbered(std::string prefix, long n) {
  prefix += std::to_string(n);
  return prefix;
}

// One temporary directory per test (tests/support/temp_dir.h).
using ::converge::testing::TempDir;

class StoreTest : public ::testing::Test {
 protected:
  StoreTest() : env_(42) {}

  StoreOptions Options() {
    StoreOptions o;
    o.dir = "/data/store";
    o.feed_log = &log_;
    o.ttl_sweep_interval_ms = 0;
    o.merge_functions["max"] = [](std::string_view stored,
                                  std::string_view written) -> Result<std::string> {
      auto num = [](std::string_view s) -> Result<long> {
        if (s.empty()) return 0L;
        char* end = nullptr;
        const std::string t(s);
        long v = std::strtol(t.c_str(), &end, 10);
        if (end == t.c_str() || *end != '\0') return InvalidArgumentError("not an integer");
        return v;
      };
      CONVERGE_ASSIGN_OR_RETURN(long a, num(stored));
      CONVERGE_ASSIGN_OR_RETURN(long b, num(written));
      return std::to_string(std::max(a, b));
    };
    return o;
  }

  void Open(StoreOptions o) {
    store_.reset();
#ifdef CONVERGE_STORE_TEST_POSTGRES
    auto s = OpenPostgresStore(env_, o, PostgresOptions());
#else
    auto s = Store::Open(env_, o);
#endif
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    store_ = std::move(*s);
  }
  void Open() { Open(Options()); }

  void CreateOrders(CollectionConfig config = {}) {
    if (config.owner.empty()) config.owner = "orders";
    if (config.writers.empty()) config.writers = {"billing"};
    ASSERT_TRUE(store_->CreateCollection(kOrders, "orders", config).ok());
  }

  std::vector<std::string> FeedIds() {
    std::vector<std::string> ids;
    for (const auto& r : log_.Records("store-changes")) ids.push_back(r.id);
    return ids;
  }

#ifdef CONVERGE_STORE_TEST_POSTGRES
  // One PostgreSQL for the suite; tables per test (so a reopen in a test sees its store).
  static PostgresStoreOptions PostgresOptions() {
    static std::unique_ptr<testing::PostgresServer> server = [] {
      auto started = testing::PostgresServer::Start();
      if (!started.ok()) {
        ADD_FAILURE() << "PostgreSQL did not start: " << started.status().ToString();
        std::abort();
      }
      return std::move(*started);
    }();
    const ::testing::TestInfo* info = ::testing::UnitTest::GetInstance()->current_test_info();
    char hex[17];
    std::snprintf(hex, sizeof(hex), "%016zx", std::hash<std::string>{}(info->name()));
    PostgresStoreOptions pg;
    pg.conninfo = server->ConnInfo();
    pg.table_prefix = std::string("t") + hex;
    return pg;
  }
  static constexpr bool kPostgres = true;
#else
  static constexpr bool kPostgres = false;
#endif

  sim::SimEnv env_;
  store_testing::MemoryLog log_;
  std::unique_ptr<Store> store_;
};

// Cases about the embedded store's own files and threads.
#define SKIP_ON_POSTGRES(why) \
  if (kPostgres) GTEST_SKIP() << "PostgreSQL store: " << why

// ---------------------------------------------------------------------------------------
// Collections and permissions

TEST_F(StoreTest, CollectionsAreOwnedAndValidated) {
  Open();
  CollectionConfig config;
  config.owner = "orders";
  EXPECT_EQ(store_->CreateCollection(kBilling, "orders", config).code(),
            StatusCode::kPermissionDenied);
  EXPECT_TRUE(store_->CreateCollection(kOrders, "orders", config).ok());
  EXPECT_EQ(store_->CreateCollection(kOrders, "orders", config).code(), StatusCode::kAlreadyExists);
  EXPECT_EQ(store_->CreateCollection(kOrders, "_hidden", config).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->CreateCollection(kOrders, "a b", config).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->CreateCollection(kOrders, "", config).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->CreateCollection(kOrders, "x", CollectionConfig{}).code(),
            StatusCode::kInvalidArgument);  // no owner
  CollectionConfig bad_merge = config;
  bad_merge.merge_fields["n"] = "no-such-function";
  EXPECT_EQ(store_->CreateCollection(kOrders, "y", bad_merge).code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(store_->ListCollections(), ElementsAre("orders"));

  // Only the owner (or an admin) changes or deletes it.
  config.writers = {"billing"};
  EXPECT_EQ(store_->UpdateCollection(kBilling, "orders", config).code(),
            StatusCode::kPermissionDenied);
  EXPECT_TRUE(store_->UpdateCollection(kOrders, "orders", config).ok());
  auto info = store_->DescribeCollection("orders");
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->config.writers, std::vector<std::string>{"billing"});
  EXPECT_EQ(store_->DeleteCollection(kStranger, "orders").code(), StatusCode::kPermissionDenied);
  EXPECT_TRUE(store_->DeleteCollection(Caller::Admin(), "orders").ok());
  EXPECT_EQ(store_->DescribeCollection("orders").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(store_->DeleteCollection(kOrders, "orders").code(), StatusCode::kNotFound);
}

TEST_F(StoreTest, OnlyOwnerAndWritersMayWriteEveryoneMayRead) {
  Open();
  CreateOrders();
  EXPECT_TRUE(store_->Put(kOrders, "orders", "o1", R"({"total":1})").ok());
  EXPECT_TRUE(store_->Put(kBilling, "orders", "o2", R"({"total":2})").ok());
  auto denied = store_->Put(kStranger, "orders", "o1", R"({"total":666})");
  EXPECT_EQ(denied.status().code(), StatusCode::kPermissionDenied);
  EXPECT_THAT(std::string(denied.status().message()), HasSubstr("stranger"));
  EXPECT_EQ(store_->Delete(kStranger, "orders", "o1").status().code(),
            StatusCode::kPermissionDenied);
  EXPECT_EQ(store_->Put(Caller::Service(""), "orders", "o1", "1").status().code(),
            StatusCode::kPermissionDenied);
  std::vector<WriteOp> txn = {WriteOp::Put("orders", "o3", "3"), WriteOp::Put("orders", "o4", "4")};
  EXPECT_EQ(store_->Commit(kStranger, txn).status().code(), StatusCode::kPermissionDenied);
  // Nothing changed, and anyone reads.
  auto doc = store_->Get("orders", "o1");
  ASSERT_TRUE(doc.ok());
  EXPECT_EQ(doc->value, R"({"total":1})");
  EXPECT_EQ(store_->Get("orders", "o3").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(FeedIds().size(), 2u);

  // "*" lets every service write; admin always may.
  CollectionConfig open;
  open.owner = "orders";
  open.writers = {"*"};
  ASSERT_TRUE(store_->UpdateCollection(kOrders, "orders", open).ok());
  EXPECT_TRUE(store_->Put(kStranger, "orders", "o5", "5").ok());
  EXPECT_TRUE(store_->Put(Caller::Admin(), "orders", "o6", "6").ok());
}

TEST_F(StoreTest, WriteOutcomesAreCountedPerCollection) {
  Open();
  CreateOrders();
  CollectionConfig other;
  other.owner = "billing";
  ASSERT_TRUE(store_->CreateCollection(kBilling, "invoices", other).ok());
  auto first = store_->Put(kOrders, "orders", "o1", "1");
  ASSERT_TRUE(first.ok());
  ASSERT_TRUE(store_->Put(kBilling, "orders", "o1", "2", Precondition::IfMatch(first->etag)).ok());
  // Conflicts: a stale If-Match, a create-only on an existing document.
  EXPECT_EQ(
      store_->Put(kOrders, "orders", "o1", "3", Precondition::IfMatch(first->etag)).status().code(),
      StatusCode::kAborted);
  EXPECT_EQ(store_->Put(kOrders, "orders", "o1", "3", Precondition::CreateOnly()).status().code(),
            StatusCode::kAlreadyExists);
  // Denied: a stranger, alone or inside a transaction.
  EXPECT_EQ(store_->Put(kStranger, "orders", "o2", "1").status().code(),
            StatusCode::kPermissionDenied);
  std::vector<WriteOp> txn = {WriteOp::Put("invoices", "i1", "1"),
                              WriteOp::Put("orders", "o3", "1")};
  EXPECT_EQ(store_->Commit(kBilling, txn).status().code(), StatusCode::kOk);
  EXPECT_EQ(store_->Commit(kOrders, txn).status().code(), StatusCode::kPermissionDenied);
  // Rejected: nothing to delete. Not counted: a malformed key, a missing collection.
  EXPECT_EQ(store_->Delete(kOrders, "orders", "nope").status().code(), StatusCode::kNotFound);
  EXPECT_FALSE(store_->Put(kOrders, "orders", "bad key", "1").ok());
  EXPECT_FALSE(store_->Put(kOrders, "missing", "k", "1").ok());
  ASSERT_TRUE(store_->Delete(kOrders, "orders", "o3").ok());

  auto orders = store_->DescribeCollection("orders");
  ASSERT_TRUE(orders.ok());
  EXPECT_EQ(orders->writes.ok, 4u);  // o1 twice, o3 by the transaction, the delete of o3
  EXPECT_EQ(orders->writes.conflict, 2u);
  EXPECT_EQ(orders->writes.denied, 1u);
  EXPECT_EQ(orders->writes.rejected, 1u);
  EXPECT_EQ(orders->documents, 1u);
  auto invoices = store_->DescribeCollection("invoices");
  ASSERT_TRUE(invoices.ok());
  EXPECT_EQ(invoices->writes.ok, 1u);
  EXPECT_EQ(invoices->writes.denied, 1u);  // the second transaction, refused at its first op
  EXPECT_EQ(invoices->writes.conflict + invoices->writes.rejected, 0u);
}

// ---------------------------------------------------------------------------------------
// Conditional writes

TEST_F(StoreTest, VersionsETagsAndPreconditions) {
  Open();
  CreateOrders();
  auto created = store_->Put(kOrders, "orders", "k", R"({"n":1})", Precondition::CreateOnly());
  ASSERT_TRUE(created.ok()) << created.status().ToString();
  EXPECT_TRUE(created->created);
  EXPECT_EQ(created->etag, ETagForVersion(created->version));
  EXPECT_EQ(*VersionFromETag(created->etag), created->version);

  auto doc = store_->Get("orders", "k");
  ASSERT_TRUE(doc.ok());
  EXPECT_EQ(doc->version, created->version);
  EXPECT_EQ(doc->etag, created->etag);

  // Create-only on an existing document.
  EXPECT_EQ(store_->Put(kOrders, "orders", "k", "2", Precondition::CreateOnly()).status().code(),
            StatusCode::kAlreadyExists);
  // If-Match with the current ETag succeeds and changes the version.
  auto updated =
      store_->Put(kOrders, "orders", "k", R"({"n":2})", Precondition::IfMatch(doc->etag));
  ASSERT_TRUE(updated.ok());
  EXPECT_GT(updated->version, doc->version);
  EXPECT_FALSE(updated->created);
  // The old ETag is now stale.
  auto stale = store_->Put(kOrders, "orders", "k", R"({"n":3})", Precondition::IfMatch(doc->etag));
  EXPECT_EQ(stale.status().code(), StatusCode::kAborted);
  EXPECT_EQ(store_->Get("orders", "k")->value, R"({"n":2})");
  // If-Match on a missing document; If-Match: * needs existence.
  EXPECT_EQ(
      store_->Put(kOrders, "orders", "nope", "1", Precondition::IfMatch(doc->etag)).status().code(),
      StatusCode::kAborted);
  EXPECT_EQ(store_->Put(kOrders, "orders", "nope", "1", Precondition::IfMatch("*")).status().code(),
            StatusCode::kAborted);
  EXPECT_TRUE(store_->Put(kOrders, "orders", "k", "4", Precondition::IfMatch("*")).ok());
  // Malformed ETags are the caller's error.
  EXPECT_EQ(
      store_->Put(kOrders, "orders", "k", "1", Precondition::IfMatch("W/\"1\"")).status().code(),
      StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->Put(kOrders, "orders", "k", "1", Precondition::IfMatch("12")).status().code(),
            StatusCode::kInvalidArgument);

  // Delete: stale ETag refused; then deleted; a re-created document never reuses a version.
  auto cur = store_->Get("orders", "k");
  EXPECT_EQ(
      store_->Delete(kOrders, "orders", "k", Precondition::IfMatch(doc->etag)).status().code(),
      StatusCode::kAborted);
  auto del = store_->Delete(kOrders, "orders", "k", Precondition::IfMatch(cur->etag));
  ASSERT_TRUE(del.ok());
  EXPECT_EQ(store_->Get("orders", "k").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(store_->Delete(kOrders, "orders", "k").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(
      store_->Put(kOrders, "orders", "k", "1", Precondition::IfMatch(cur->etag)).status().code(),
      StatusCode::kAborted);
  auto again = store_->Put(kOrders, "orders", "k", "1", Precondition::CreateOnly());
  ASSERT_TRUE(again.ok());
  EXPECT_GT(again->version, del->version);
}

TEST_F(StoreTest, MalformedKeysAndBodiesAreInvalidOversizedAreExhausted) {
  StoreOptions o = Options();
  o.max_document_bytes = 1000;
  o.max_key_bytes = 16;
  Open(o);
  CollectionConfig config;
  config.owner = "orders";
  config.max_document_bytes = 100;
  ASSERT_TRUE(store_->CreateCollection(kOrders, "orders", config).ok());
  for (const std::string& key :
       std::vector<std::string>{"", "has space", "tab\t", "quote\"", "pct%20", "q?x", "h#x",
                                "aaaaaaaaaaaaaaaaa", std::string("nul\0x", 5), "é"}) {
    EXPECT_EQ(store_->Put(kOrders, "orders", key, "1").status().code(),
              StatusCode::kInvalidArgument)
        << key;
    EXPECT_EQ(store_->Get("orders", key).status().code(), StatusCode::kInvalidArgument) << key;
  }
  EXPECT_TRUE(store_->Put(kOrders, "orders", "a-Z_0.9~:@/+=,!", "1").ok());
  for (const std::string& body :
       std::vector<std::string>{"", "{", "{\"a\":}", "[1,2", "nul", "1 2", "{\"a\":1}x", "'s'",
                                std::string(100, '[') + std::string(100, ']')}) {
    EXPECT_EQ(store_->Put(kOrders, "orders", "k", body).status().code(),
              StatusCode::kInvalidArgument)
        << body;
  }
  for (const std::string& body :
       std::vector<std::string>{"1", "\"s\"", "null", "true", "[1,{\"a\":[]}]", " {\"a\":1} "}) {
    EXPECT_TRUE(store_->Put(kOrders, "orders", "k", body).ok()) << body;
  }
  // Store-wide bound, then the collection's smaller one.
  const std::string big = "\"" + std::string(1000, 'x') + "\"";
  EXPECT_EQ(store_->Put(kOrders, "orders", "k", big).status().code(),
            StatusCode::kResourceExhausted);
  const std::string medium = "\"" + std::string(200, 'x') + "\"";
  EXPECT_EQ(store_->Put(kOrders, "orders", "k", medium).status().code(),
            StatusCode::kResourceExhausted);
  EXPECT_EQ(store_->Get("orders", "k")->value, " {\"a\":1} ");
}

TEST_F(StoreTest, StoreSizeBoundRefusesGrowth) {
  StoreOptions o = Options();
  o.max_store_bytes = 100;
  Open(o);
  CreateOrders();
  EXPECT_TRUE(store_->Put(kOrders, "orders", "a", "\"" + std::string(80, 'x') + "\"").ok());
  EXPECT_EQ(store_->Put(kOrders, "orders", "b", "\"" + std::string(30, 'x') + "\"").status().code(),
            StatusCode::kResourceExhausted);
  // Shrinking is always allowed.
  EXPECT_TRUE(store_->Put(kOrders, "orders", "a", "1").ok());
  EXPECT_TRUE(store_->Put(kOrders, "orders", "b", "\"" + std::string(30, 'x') + "\"").ok());
}

// ---------------------------------------------------------------------------------------
// Merge fields

TEST_F(StoreTest, MergeFieldsMergeStaleWritesConfinedToThem) {
  Open();
  CollectionConfig config;
  config.owner = "orders";
  config.merge_fields["high"] = "max";
  ASSERT_TRUE(store_->CreateCollection(kOrders, "scores", config).ok());
  auto v1 = store_->Put(kOrders, "scores", "s", R"({"name":"a","high":5})");
  ASSERT_TRUE(v1.ok());
  auto v2 = store_->Put(kOrders, "scores", "s", R"({"name":"a","high":7})",
                        Precondition::IfMatch(v1->etag));
  ASSERT_TRUE(v2.ok());
  EXPECT_FALSE(v2->merged);
  // Stale, but only the merge field differs: merged, not refused.
  auto v3 = store_->Put(kOrders, "scores", "s", R"({"name":"a","high":6})",
                        Precondition::IfMatch(v1->etag));
  ASSERT_TRUE(v3.ok()) << v3.status().ToString();
  EXPECT_TRUE(v3->merged);
  EXPECT_EQ(store_->Get("scores", "s")->value, R"({"name":"a","high":7})");
  auto v4 = store_->Put(kOrders, "scores", "s", R"({"name":"a","high":9})",
                        Precondition::IfMatch(v1->etag));
  ASSERT_TRUE(v4.ok());
  EXPECT_EQ(store_->Get("scores", "s")->value, R"({"name":"a","high":9})");
  // Stale and another field changed: refused.
  auto refused = store_->Put(kOrders, "scores", "s", R"({"name":"b","high":10})",
                             Precondition::IfMatch(v1->etag));
  EXPECT_EQ(refused.status().code(), StatusCode::kAborted);
  // A fresh write still joins the merge field (no decrease) and keeps it when omitted.
  auto cur = store_->Get("scores", "s");
  ASSERT_TRUE(store_
                  ->Put(kOrders, "scores", "s", R"({"name":"b","high":1})",
                        Precondition::IfMatch(cur->etag))
                  .ok());
  EXPECT_EQ(store_->Get("scores", "s")->value, R"({"name":"b","high":9})");
  ASSERT_TRUE(store_->Put(kOrders, "scores", "s", R"({"name":"c"})").ok());
  EXPECT_EQ(store_->Get("scores", "s")->value, R"({"name":"c","high":9})");
  // Non-objects and values the merge function rejects.
  EXPECT_EQ(store_->Put(kOrders, "scores", "t", "[1]").status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->Put(kOrders, "scores", "t", R"({"high":"x"})").status().code(),
            StatusCode::kInvalidArgument);
}

TEST_F(StoreTest, CrdtMergeFieldsFromTheConflictModule) {
  Open();
  CollectionConfig config;
  config.owner = "orders";
  config.writers = {"*"};
  config.merge_fields["likes"] = "pn-counter";
  config.merge_fields["tags"] = "or-set";
  ASSERT_TRUE(store_->CreateCollection(kOrders, "posts", config).ok());
  EXPECT_EQ(store_
                ->CreateCollection(kOrders, "bad",
                                   [&] {
                                     CollectionConfig c = config;
                                     c.merge_fields["x"] =
                                         "versioned-value";  // not a join: no built-in
                                     return c;
                                   }())
                .code(),
            StatusCode::kInvalidArgument);

  conflict::PnCounter zero;
  auto base =
      store_->Put(kOrders, "posts", "p1", R"({"title":"hello","likes":)" + zero.ToJson() + "}");
  ASSERT_TRUE(base.ok()) << base.status().ToString();
  // Three services read version `base` and each adds its likes at its own replica id; every
  // write but the first is stale, and none is refused or lost.
  for (uint64_t replica = 1; replica <= 3; ++replica) {
    conflict::PnCounter mine = zero;
    ASSERT_TRUE(mine.Increment(conflict::ReplicaId(replica), replica * 10).ok());
    auto w = store_->Put(Caller::Service("svc" + std::to_string(replica)), "posts", "p1",
                         R"({"title":"hello","likes":)" + mine.ToJson() + "}",
                         Precondition::IfMatch(base->etag));
    ASSERT_TRUE(w.ok()) << w.status().ToString();
    EXPECT_EQ(w->merged, replica > 1);
  }
  auto doc = store_->Get("posts", "p1");
  ASSERT_TRUE(doc.ok());
  boost::json::value v = boost::json::parse(doc->value);
  auto likes = conflict::PnCounter::FromJson(boost::json::serialize(v.at("likes")));
  ASSERT_TRUE(likes.ok()) << likes.status().ToString();
  EXPECT_EQ(likes->Value(), 60);
  EXPECT_EQ(v.at("title").as_string(), "hello");
  // A stale write that also changes a plain field still fails.
  EXPECT_EQ(
      store_
          ->Put(kOrders, "posts", "p1", R"({"title":"changed","likes":)" + zero.ToJson() + "}",
                Precondition::IfMatch(base->etag))
          .status()
          .code(),
      StatusCode::kAborted);
  // A value that is not the declared CRDT is the writer's error.
  EXPECT_EQ(store_->Put(kOrders, "posts", "p1", R"({"title":"hello","likes":5})").status().code(),
            StatusCode::kInvalidArgument);
}

TEST_F(StoreTest, MissingMergeFunctionAfterReopenIsFailedPrecondition) {
  Open();
  CollectionConfig config;
  config.owner = "orders";
  config.merge_fields["high"] = "max";
  ASSERT_TRUE(store_->CreateCollection(kOrders, "scores", config).ok());
  StoreOptions o = Options();
  o.merge_functions.clear();
  Open(o);
  EXPECT_EQ(store_->Put(kOrders, "scores", "s", R"({"high":1})").status().code(),
            StatusCode::kFailedPrecondition);
}

// ---------------------------------------------------------------------------------------
// Transactions

TEST_F(StoreTest, TransactionsAreAllOrNothing) {
  Open();
  CreateOrders();
  auto a = store_->Put(kOrders, "orders", "a", "1");
  auto b = store_->Put(kOrders, "orders", "b", "1");
  ASSERT_TRUE(a.ok() && b.ok());
  const size_t events_before = FeedIds().size();

  // The third op's precondition fails: nothing is applied.
  std::vector<WriteOp> txn = {
      WriteOp::Put("orders", "a", "2", Precondition::IfMatch(a->etag)),
      WriteOp::Put("orders", "new", "2", Precondition::CreateOnly()),
      WriteOp::Put("orders", "b", "2", Precondition::IfMatch(ETagForVersion(b->version + 100)))};
  auto failed = store_->Commit(kOrders, txn);
  EXPECT_EQ(failed.status().code(), StatusCode::kAborted);
  EXPECT_THAT(std::string(failed.status().message()), HasSubstr("op 2"));
  EXPECT_EQ(store_->Get("orders", "a")->value, "1");
  EXPECT_EQ(store_->Get("orders", "new").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(FeedIds().size(), events_before);

  // All preconditions hold: every write applied under one commit sequence number.
  txn[2] = WriteOp::Put("orders", "b", "2", Precondition::IfMatch(b->etag));
  txn.push_back(WriteOp::Check("orders", "a", Precondition::IfMatch(a->etag)));
  EXPECT_EQ(store_->Commit(kOrders, txn).status().code(), StatusCode::kInvalidArgument)
      << "a document may appear once";
  txn.pop_back();
  auto ok = store_->Commit(kOrders, txn);
  ASSERT_TRUE(ok.ok()) << ok.status().ToString();
  ASSERT_EQ(ok->results.size(), 3u);
  for (const auto& r : ok->results) EXPECT_EQ(r.version, ok->commit_seq);
  EXPECT_EQ(store_->Get("orders", "a")->value, "2");
  EXPECT_EQ(store_->Get("orders", "new")->value, "2");
  EXPECT_EQ(store_->Get("orders", "b")->value, "2");
  EXPECT_EQ(FeedIds().size(), events_before + 3);

  // A check guards a value the transaction only read.
  std::vector<WriteOp> guarded = {WriteOp::Check("orders", "a", Precondition::IfMatch(a->etag)),
                                  WriteOp::Delete("orders", "b")};
  EXPECT_EQ(store_->Commit(kOrders, guarded).status().code(), StatusCode::kAborted);
  EXPECT_TRUE(store_->Get("orders", "b").ok());
  guarded[0] = WriteOp::Check("orders", "a", Precondition::IfMatch(ETagForVersion(ok->commit_seq)));
  ASSERT_TRUE(store_->Commit(kOrders, guarded).ok());
  EXPECT_EQ(store_->Get("orders", "b").status().code(), StatusCode::kNotFound);

  // Bounds and malformed transactions.
  EXPECT_EQ(store_->Commit(kOrders, {}).status().code(), StatusCode::kInvalidArgument);
  std::vector<WriteOp> too_many;
  for (int i = 0; i < 1001; ++i) too_many.push_back(WriteOp::Put("orders", Numbered("k", i), "1"));
  EXPECT_EQ(store_->Commit(kOrders, too_many).status().code(), StatusCode::kResourceExhausted);
  std::vector<WriteOp> unknown = {WriteOp::Put("orders", "x", "1"),
                                  WriteOp::Put("nosuch", "x", "1")};
  auto nf = store_->Commit(kOrders, unknown);
  EXPECT_EQ(nf.status().code(), StatusCode::kNotFound);
  EXPECT_EQ(store_->Get("orders", "x").status().code(), StatusCode::kNotFound);
  std::vector<WriteOp> bad_json = {WriteOp::Put("orders", "x", "1"),
                                   WriteOp::Put("orders", "y", "{")};
  EXPECT_THAT(std::string(store_->Commit(kOrders, bad_json).status().message()), HasSubstr("op 1"));
}

// ---------------------------------------------------------------------------------------
// Range reads

TEST_F(StoreTest, RangeReadsAndPagination) {
  Open();
  CreateOrders();
  for (const char* k : {"a/1", "a/2", "a/3", "b/1", "b/2", "c"}) {
    ASSERT_TRUE(store_->Put(kOrders, "orders", k, "1").ok());
  }
  auto keys = [](const ListResult& r) {
    std::vector<std::string> out;
    for (const auto& d : r.documents) out.push_back(d.key);
    return out;
  };
  ListOptions all;
  auto r = store_->List("orders", all);
  ASSERT_TRUE(r.ok());
  EXPECT_THAT(keys(*r), ElementsAre("a/1", "a/2", "a/3", "b/1", "b/2", "c"));
  EXPECT_EQ(r->next_page_token, "");

  ListOptions prefix;
  prefix.prefix = "b/";
  EXPECT_THAT(keys(*store_->List("orders", prefix)), ElementsAre("b/1", "b/2"));

  ListOptions range;
  range.start_key = "a/2";
  range.end_key = "b/2";
  EXPECT_THAT(keys(*store_->List("orders", range)), ElementsAre("a/2", "a/3", "b/1"));

  // Pages of two, following tokens, see every key once.
  ListOptions page;
  page.limit = 2;
  std::vector<std::string> seen;
  int pages = 0;
  while (true) {
    auto p = store_->List("orders", page);
    ASSERT_TRUE(p.ok());
    ++pages;
    for (auto& k : keys(*p)) seen.push_back(k);
    if (p->next_page_token.empty()) break;
    page.page_token = p->next_page_token;
  }
  EXPECT_EQ(pages, 3);
  EXPECT_THAT(seen, ElementsAre("a/1", "a/2", "a/3", "b/1", "b/2", "c"));

  // Pagination with a prefix and a write between pages.
  ListOptions pp;
  pp.prefix = "a/";
  pp.limit = 2;
  auto p1 = store_->List("orders", pp);
  ASSERT_TRUE(p1.ok());
  EXPECT_EQ(p1->next_page_token, "a/2");
  ASSERT_TRUE(store_->Put(kOrders, "orders", "a/25", "1").ok());
  pp.page_token = p1->next_page_token;
  EXPECT_THAT(keys(*store_->List("orders", pp)), ElementsAre("a/25", "a/3"));

  ListOptions bad;
  bad.limit = 0;
  EXPECT_EQ(store_->List("orders", bad).status().code(), StatusCode::kInvalidArgument);
  bad.limit = 100000;
  EXPECT_EQ(store_->List("orders", bad).status().code(), StatusCode::kInvalidArgument);
  ListOptions bad_token;
  bad_token.page_token = "sp ace";
  EXPECT_EQ(store_->List("orders", bad_token).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->List("nosuch", all).status().code(), StatusCode::kNotFound);
}

// ---------------------------------------------------------------------------------------
// TTL

TEST_F(StoreTest, DocumentsExpireAndTheSweepPublishesExpiries) {
  Open();
  CollectionConfig config;
  config.owner = "orders";
  config.default_ttl_ms = 5000;
  ASSERT_TRUE(store_->CreateCollection(kOrders, "sessions", config).ok());
  ASSERT_TRUE(store_->Put(kOrders, "sessions", "default", "1").ok());
  ASSERT_TRUE(store_->Put(kOrders, "sessions", "short", "1", {}, 1000).ok());
  ASSERT_TRUE(store_->Put(kOrders, "sessions", "forever", "1", {}, kNoTtl).ok());
  auto doc = store_->Get("sessions", "short");
  ASSERT_TRUE(doc.ok());
  EXPECT_EQ(doc->expires_at_ms, env_.clock().NowWallNanos() / kMs + 1000);
  EXPECT_EQ(store_->Put(kOrders, "sessions", "x", "1", {}, -5).status().code(),
            StatusCode::kInvalidArgument);

  env_.AdvanceTime(1500 * kMs);
  EXPECT_EQ(store_->Get("sessions", "short").status().code(), StatusCode::kNotFound);
  EXPECT_TRUE(store_->Get("sessions", "default").ok());
  // An expired document counts as absent for preconditions.
  EXPECT_EQ(store_->Put(kOrders, "sessions", "short", "2", Precondition::IfMatch(doc->etag))
                .status()
                .code(),
            StatusCode::kAborted);
  EXPECT_EQ(store_->List("sessions", {})->documents.size(), 2u);

  env_.AdvanceTime(4000 * kMs);
  auto swept = store_->ExpireDue();
  ASSERT_TRUE(swept.ok());
  EXPECT_EQ(*swept, 2u);
  EXPECT_EQ(store_->DescribeCollection("sessions")->documents, 1u);
  EXPECT_EQ(*store_->ExpireDue(), 0u);
  auto records = log_.Records("store-changes");
  ASSERT_EQ(records.size(), 5u);
  EXPECT_EQ(DecodeBinary(records[3].value)->type(), "converge.store.expire");
  EXPECT_EQ(DecodeBinary(records[4].value)->type(), "converge.store.expire");
}

TEST_F(StoreTest, PeriodicSweepRunsOnTheExecutor) {
  StoreOptions o = Options();
  o.ttl_sweep_interval_ms = 100;
  Open(o);
  CreateOrders();
  ASSERT_TRUE(store_->Put(kOrders, "orders", "k", "1", {}, 250).ok());
  env_.RunFor(200 * kMs);
  EXPECT_EQ(store_->Stats().documents, 1u);
  env_.RunFor(200 * kMs);
  EXPECT_EQ(store_->Stats().documents, 0u);
}

// ---------------------------------------------------------------------------------------
// Change feed

TEST_F(StoreTest, FeedHasOneEventPerCommittedWriteInCommitOrder) {
  Open();
  CreateOrders();
  std::vector<uint64_t> seqs;
  auto put = store_->Put(kOrders, "orders", "a", R"({"x":1})");
  seqs.push_back(put->version);
  EXPECT_FALSE(store_->Put(kOrders, "orders", "a", "2", Precondition::CreateOnly()).ok());
  auto txn = store_->Commit(kOrders, std::vector<WriteOp>{WriteOp::Put("orders", "b", "1"),
                                                          WriteOp::Delete("orders", "a")});
  ASSERT_TRUE(txn.ok());
  EXPECT_EQ(store_->Delete(kOrders, "orders", "a").status().code(), StatusCode::kNotFound);
  ASSERT_TRUE(store_->FlushFeed().ok());
  const auto records = log_.Records("store-changes");
  ASSERT_EQ(records.size(), 3u);
  EXPECT_EQ(records[0].id, "orders/a/" + std::to_string(put->version));
  EXPECT_EQ(records[1].id, "orders/b/" + std::to_string(txn->commit_seq));
  EXPECT_EQ(records[2].id, "orders/a/" + std::to_string(txn->commit_seq));
  EXPECT_EQ(records[0].key, "orders/a");
  auto put_event = DecodeBinary(records[0].value);
  ASSERT_TRUE(put_event.ok()) << put_event.status().ToString();
  EXPECT_EQ(put_event->id(), records[0].id);
  EXPECT_EQ(put_event->source(), "/converge/store");
  EXPECT_EQ(put_event->type(), "converge.store.put");
  EXPECT_EQ(put_event->subject(), "a");
  EXPECT_EQ(put_event->data_kind(), DataKind::kJson);
  EXPECT_EQ(put_event->data(), R"({"x":1})");
  EXPECT_EQ(put_event->datacontenttype(), "application/json");
  EXPECT_EQ(put_event->partitionkey(), "orders/a");
  ASSERT_NE(put_event->FindExtension("collection"), nullptr);
  EXPECT_EQ(put_event->FindExtension("collection")->value, "orders");
  EXPECT_EQ(put_event->FindExtension("version")->value, std::to_string(put->version));
  EXPECT_EQ(put_event->time(), FormatRfc3339(env_.clock().NowWallNanos() / kMs * kMs));
  auto del_event = DecodeBinary(records[2].value);
  ASSERT_TRUE(del_event.ok());
  EXPECT_EQ(del_event->type(), "converge.store.delete");
  EXPECT_EQ(del_event->data_kind(), DataKind::kNone);
  EXPECT_EQ(del_event->FindExtension("commitseq")->value, std::to_string(txn->commit_seq));
  EXPECT_EQ(store_->Stats().feed_published_seq, txn->commit_seq);
}

TEST_F(StoreTest, FeedFailuresKeepWritesAcknowledgedAndCatchUp) {
  SKIP_ON_POSTGRES(
      "the feed backlog is the changes table in PostgreSQL, not memory: writes are not refused "
      "while this process's log refuses appends (docs/scaling.md)");
  StoreOptions o = Options();
  o.feed_backlog_max_events = 3;
  Open(o);
  CreateOrders();
  log_.SetFailAppends(true);
  for (int i = 0; i < 3; ++i) {
    EXPECT_TRUE(store_->Put(kOrders, "orders", Numbered("k", i), "1").ok());
  }
  EXPECT_EQ(store_->Stats().feed_backlog_events, 3u);
  auto refused = store_->Put(kOrders, "orders", "k3", "1");
  EXPECT_EQ(refused.status().code(), StatusCode::kUnavailable);
  EXPECT_EQ(store_->FlushFeed().code(), StatusCode::kUnavailable);
  log_.SetFailAppends(false);
  EXPECT_TRUE(store_->Put(kOrders, "orders", "k3", "1").ok());
  ASSERT_TRUE(store_->FlushFeed().ok());
  EXPECT_EQ(store_->Stats().feed_backlog_events, 0u);
  const auto ids = FeedIds();
  ASSERT_EQ(ids.size(), 4u);
  uint64_t prev = 0;
  for (const auto& id : ids) {
    uint64_t seq = 0;
    ASSERT_TRUE(store_internal::SeqFromFeedEventId(id, &seq));
    EXPECT_GT(seq, prev);
    prev = seq;
  }
}

TEST_F(StoreTest, ReopenRepublishesWhatTheFeedMissedExactlyOnce) {
  Open();
  CreateOrders();
  ASSERT_TRUE(store_->Put(kOrders, "orders", "a", "1").ok());
  log_.SetFailAppends(true);
  ASSERT_TRUE(store_->Put(kOrders, "orders", "b", "1").ok());
  ASSERT_TRUE(store_->Put(kOrders, "orders", "c", "1").ok());
  store_.reset();  // the close cannot publish either
  log_.SetFailAppends(false);
  Open();
  EXPECT_EQ(FeedIds().size(), 3u);
  Open();
  EXPECT_EQ(FeedIds().size(), 3u);
  // Even with the topic trimmed (the cursor then comes from the snapshot and the WAL, and
  // idempotent ids absorb the repeats).
  ASSERT_TRUE(store_->Checkpoint().ok());
  log_.TrimAll("store-changes");
  Open();
  ASSERT_TRUE(store_->Put(kOrders, "orders", "d", "1").ok());
  EXPECT_EQ(FeedIds().size(), 4u);
}

// ---------------------------------------------------------------------------------------
// Recovery and checkpoints

TEST_F(StoreTest, ReopenRestoresEverythingAndNeverReusesVersions) {
  Open();
  CollectionConfig config;
  config.owner = "orders";
  config.writers = {"billing"};
  config.default_ttl_ms = 60'000;
  ASSERT_TRUE(store_->CreateCollection(kOrders, "orders", config).ok());
  auto a = store_->Put(kOrders, "orders", "a", R"({"v":1})");
  ASSERT_TRUE(store_->Put(kOrders, "orders", "b", R"({"v":2})").ok());
  ASSERT_TRUE(store_->Delete(kOrders, "orders", "b").ok());
  const uint64_t last = store_->Stats().last_seq;
  Open();
  auto doc = store_->Get("orders", "a");
  ASSERT_TRUE(doc.ok());
  EXPECT_EQ(doc->value, R"({"v":1})");
  EXPECT_EQ(doc->version, a->version);
  EXPECT_NE(doc->expires_at_ms, 0);
  EXPECT_EQ(store_->Get("orders", "b").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(store_->DescribeCollection("orders")->config, config);
  auto next = store_->Put(kOrders, "orders", "c", "1");
  ASSERT_TRUE(next.ok());
  EXPECT_GT(next->version, last);
}

TEST_F(StoreTest, CheckpointsBoundTheWalAndRecoverTheSameState) {
  SKIP_ON_POSTGRES("no WAL or checkpoints (PostgreSQL keeps the data)");
  StoreOptions o = Options();
  o.checkpoint_wal_bytes = 1024;
  Open(o);
  CreateOrders();
  std::map<std::string, std::string> model;
  for (int i = 0; i < 400; ++i) {
    const std::string key = Numbered("k", i % 37);
    const std::string value = std::to_string(i);
    if (i % 11 == 0 && model.count(key)) {
      ASSERT_TRUE(store_->Delete(kOrders, "orders", key).ok());
      model.erase(key);
    } else {
      ASSERT_TRUE(store_->Put(kOrders, "orders", key, value).ok());
      model[key] = value;
    }
  }
  const StoreStats stats = store_->Stats();
  EXPECT_GT(stats.checkpoints, 5u);
  auto files = env_.fs().ListDir("/data/store");
  ASSERT_TRUE(files.ok());
  size_t wals = 0, snapshots = 0;
  for (const auto& f : *files) {
    wals += f.rfind("wal-", 0) == 0;
    snapshots += f.rfind("snapshot-", 0) == 0;
  }
  EXPECT_LE(wals, 2u);
  EXPECT_EQ(snapshots, 1u);
  Open(o);
  ListOptions lo;
  lo.limit = 1000;
  auto all = store_->List("orders", lo);
  ASSERT_TRUE(all.ok());
  std::map<std::string, std::string> got;
  for (const auto& d : all->documents) got[d.key] = d.value;
  EXPECT_EQ(got, model);
  EXPECT_EQ(log_.Records("store-changes").size(), 400u);
}

TEST_F(StoreTest, SecondOpenOfTheSameDirectoryFails) {
  SKIP_ON_POSTGRES("several stores (sidecars) share the tables by design");
  Open();
  EXPECT_EQ(Store::Open(env_, Options()).status().code(), StatusCode::kFailedPrecondition);
}

TEST_F(StoreTest, DamagedWalBeforeTheTailIsDataLoss) {
  SKIP_ON_POSTGRES("no WAL files");
  Open();
  CreateOrders();
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(store_->Put(kOrders, "orders", "k", "1").ok());
  store_.reset();
  std::string wal;
  auto listed = env_.fs().ListDir("/data/store");
  ASSERT_TRUE(listed.ok());
  for (const auto& f : *listed) {
    if (f.rfind("wal-", 0) == 0 && *env_.fs().GetFileSize("/data/store/" + f) > 0) wal = f;
  }
  ASSERT_FALSE(wal.empty());
  ASSERT_TRUE(env_.sim_fs().CorruptByte("/data/store/" + wal, 20, 0x5a).ok());
  auto s = Store::Open(env_, Options());
  EXPECT_EQ(s.status().code(), StatusCode::kDataLoss) << s.status().ToString();
}

TEST_F(StoreTest, UnsyncedTailIsLostOnMachineCrashUnderNoneDurability) {
  SKIP_ON_POSTGRES("durability is PostgreSQL's (synchronous_commit), not store.durability");
  StoreOptions o = Options();
  o.durability = Durability::kNone;
  o.feed_log = nullptr;
  Open(o);
  CreateOrders();
  ASSERT_TRUE(store_->Sync().ok());
  auto a = store_->Put(kOrders, "orders", "a", "1");
  ASSERT_TRUE(a.ok());
  env_.sim_fs().Crash();
  store_.reset();
  Open(o);
  EXPECT_EQ(store_->Get("orders", "a").status().code(), StatusCode::kNotFound);
  // The lost version is never handed out again.
  auto b = store_->Put(kOrders, "orders", "a", "2");
  ASSERT_TRUE(b.ok());
  EXPECT_GT(b->version, a->version);
}

TEST_F(StoreTest, BackgroundWorkersDoTheSyncsAndTryGetNeverWaits) {
  SKIP_ON_POSTGRES(
      "no group commits: each call is its own PostgreSQL transaction on the background executor, "
      "and TryGet always answers Unavailable");
  std::vector<std::function<void()>> tasks;
  StoreOptions o = Options();
  o.background = [&tasks](std::function<void()> task) { tasks.push_back(std::move(task)); };
  Open(o);
  CreateOrders();
  auto before = store_->Put(kOrders, "orders", "k", "1");  // synchronous API: syncs itself
  ASSERT_TRUE(before.ok());
  tasks.clear();

  std::vector<Result<CommitResult>> results;
  for (int i = 0; i < 3; ++i) {
    std::vector<WriteOp> ops = {WriteOp::Put("orders", "k", std::to_string(i + 2))};
    store_->CommitAsync(kOrders, std::move(ops),
                        [&](Result<CommitResult> r) { results.push_back(std::move(r)); });
  }
  // Applied in memory, not durable yet: no completion, and readers do not see it.
  EXPECT_TRUE(results.empty());
  ASSERT_EQ(tasks.size(), 1u) << "one WAL worker at a time";
  auto pending = store_->TryGet("orders", "k");
  EXPECT_EQ(pending.status().code(), StatusCode::kUnavailable);
  EXPECT_EQ(store_->TryGet("orders", "absent").status().code(), StatusCode::kNotFound);
  // GetAsync: answered at once when that answer is durable, else after the sync (with the
  // value as of the call), and never starts a second WAL worker.
  std::vector<Result<Document>> reads;
  store_->GetAsync("orders", "absent", [&](Result<Document> d) { reads.push_back(std::move(d)); });
  ASSERT_EQ(reads.size(), 1u);
  EXPECT_EQ(reads[0].status().code(), StatusCode::kNotFound);
  store_->GetAsync("orders", "k", [&](Result<Document> d) { reads.push_back(std::move(d)); });
  EXPECT_EQ(reads.size(), 1u);
  EXPECT_EQ(tasks.size(), 1u);

  // The WAL worker syncs all three in one group and hands the events to a feed worker.
  auto run = [&tasks] {
    while (!tasks.empty()) {
      std::function<void()> t = std::move(tasks.front());
      tasks.erase(tasks.begin());
      t();
    }
  };
  const uint64_t groups = store_->Stats().group_commits;
  run();
  ASSERT_EQ(results.size(), 3u);
  for (const auto& r : results) EXPECT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(store_->Stats().group_commits, groups + 1);
  ASSERT_EQ(reads.size(), 2u);
  ASSERT_TRUE(reads[1].ok()) << reads[1].status().ToString();
  EXPECT_EQ(reads[1]->value, "4");
  EXPECT_EQ(reads[1]->version, results[2]->commit_seq);
  EXPECT_EQ(reads[1]->etag, results[2]->results[0].etag);
  auto doc = store_->TryGet("orders", "k");
  ASSERT_TRUE(doc.ok());
  EXPECT_EQ(doc->value, "4");
  EXPECT_EQ(doc->version, results[2]->commit_seq);
  EXPECT_EQ(FeedIds().size(), 4u);
  EXPECT_EQ(store_->Stats().feed_backlog_events, 0u);
}

#ifndef CONVERGE_STORE_TEST_POSTGRES
// ---------------------------------------------------------------------------------------
// Threads on the production Env: no lost update

TEST(StoreThreadsTest, IfMatchIncrementsNeverLoseAnUpdate) {
  TempDir dir;
  ASSERT_FALSE(dir.path().empty());
  store_testing::MemoryLog log;
  StoreOptions o;
  o.dir = dir.path() + "/store";
  o.feed_log = &log;
  auto opened = Store::Open(Env::Default(), o);
  ASSERT_TRUE(opened.ok()) << opened.status().ToString();
  std::unique_ptr<Store> store = std::move(*opened);
  CollectionConfig config;
  config.owner = "orders";
  ASSERT_TRUE(store->CreateCollection(kOrders, "counters", config).ok());
  ASSERT_TRUE(store->Put(kOrders, "counters", "hot", "0").ok());
  for (int k = 0; k < 8; ++k) {
    ASSERT_TRUE(store->Put(kOrders, "counters", Numbered("spread", k), "0").ok());
  }

  constexpr int kThreads = 8;
  constexpr int kAttempts = 150;
  std::atomic<int> hot_ok{0}, spread_ok{0}, conflicts{0};
  std::atomic<int> unexpected{0};
  auto increment = [&](const std::string& key, std::atomic<int>* successes) {
    auto doc = store->Get("counters", key);
    if (!doc.ok()) {
      ++unexpected;
      return;
    }
    const long n = std::stol(doc->value);
    auto w = store->Put(kOrders, "counters", key, std::to_string(n + 1),
                        Precondition::IfMatch(doc->etag));
    if (w.ok()) {
      ++*successes;
    } else if (w.status().code() == StatusCode::kAborted) {
      ++conflicts;
    } else {
      ++unexpected;
    }
  };
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kAttempts; ++i) {
        increment("hot", &hot_ok);
        increment(Numbered("spread", (t * 7 + i) % 8), &spread_ok);
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(unexpected.load(), 0);
  EXPECT_GT(conflicts.load(), 0) << "the test should create contention";
  EXPECT_EQ(std::stol(store->Get("counters", "hot")->value), hot_ok.load());
  long spread_total = 0;
  for (int k = 0; k < 8; ++k) {
    spread_total += std::stol(store->Get("counters", Numbered("spread", k))->value);
  }
  EXPECT_EQ(spread_total, spread_ok.load());
  ASSERT_TRUE(store->FlushFeed().ok());
  // One event per committed write (9 initial puts + the successful increments), in order.
  const auto records = log.Records("store-changes");
  EXPECT_EQ(records.size(), 9u + hot_ok.load() + spread_ok.load());
  uint64_t prev = 0;
  for (const auto& r : records) {
    uint64_t seq = 0;
    ASSERT_TRUE(store_internal::SeqFromFeedEventId(r.id, &seq));
    EXPECT_GT(seq, prev);
    prev = seq;
  }
  const StoreStats stats = store->Stats();
  EXPECT_LT(stats.group_commits, stats.commits) << "group commit shares syncs";

  // Reopen: the same counters.
  store.reset();
  opened = Store::Open(Env::Default(), o);
  ASSERT_TRUE(opened.ok());
  EXPECT_EQ(std::stol((*opened)->Get("counters", "hot")->value), hot_ok.load());
}

TEST(StoreThreadsTest, AsyncCommitsWithBackgroundWorkersOnAPool) {
  TempDir dir;
  ASSERT_FALSE(dir.path().empty());
  store_testing::MemoryLog log;
  boost::asio::thread_pool pool(3);
  StoreOptions o;
  o.dir = dir.path() + "/store";
  o.feed_log = &log;
  o.checkpoint_wal_bytes = 64 << 10;  // checkpoints run on the pool too
  o.background = [&pool](std::function<void()> task) { boost::asio::post(pool, std::move(task)); };
  auto opened = Store::Open(Env::Default(), o);
  ASSERT_TRUE(opened.ok()) << opened.status().ToString();
  std::unique_ptr<Store> store = std::move(*opened);
  CollectionConfig config;
  config.owner = "orders";
  ASSERT_TRUE(store->CreateCollection(kOrders, "c", config).ok());

  // Four threads issue writes to their own 16 keys without waiting for them.
  constexpr int kThreads = 4;
  constexpr int kPerThread = 400;
  std::mutex mu;
  std::condition_variable cv;
  int done = 0, failed = 0;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        const std::string key = Numbered(Numbered("t", t) + "-", i % 16);
        std::vector<WriteOp> ops = {WriteOp::Put("c", key, std::to_string(i))};
        store->CommitAsync(kOrders, std::move(ops), [&](Result<CommitResult> r) {
          std::lock_guard<std::mutex> g(mu);
          if (!r.ok()) ++failed;
          ++done;
          cv.notify_all();
        });
        if (i % 4 == 0) (void)store->TryGet("c", key);
      }
    });
  }
  for (auto& th : threads) th.join();
  {
    std::unique_lock<std::mutex> l(mu);
    cv.wait(l, [&] { return done == kThreads * kPerThread; });
    EXPECT_EQ(failed, 0);
  }
  ASSERT_TRUE(store->FlushFeed().ok());
  EXPECT_EQ(log.Records("store-changes").size(), static_cast<size_t>(kThreads * kPerThread));
  pool.join();  // every background task has run before the store goes
  for (int t = 0; t < kThreads; ++t) {
    for (int k = 0; k < 16; ++k) {
      auto doc = store->Get("c", Numbered(Numbered("t", t) + "-", k));
      ASSERT_TRUE(doc.ok());
      EXPECT_EQ(doc->value, std::to_string(kPerThread - 16 + k));
    }
  }
}

TEST(StoreThreadsTest, AsyncCommitsShareSyncsWithoutAThreadEach) {
  TempDir dir;
  ASSERT_FALSE(dir.path().empty());
  store_testing::MemoryLog log;
  StoreOptions o;
  o.dir = dir.path() + "/store";
  o.feed_log = &log;
  auto opened = Store::Open(Env::Default(), o);
  ASSERT_TRUE(opened.ok()) << opened.status().ToString();
  std::unique_ptr<Store> store = std::move(*opened);
  CollectionConfig config;
  config.owner = "orders";
  ASSERT_TRUE(store->CreateCollection(kOrders, "c", config).ok());

  // Two threads each issue 500 writes without waiting for any of them.
  constexpr int kPerThread = 500;
  std::mutex mu;
  std::condition_variable cv;
  int done = 0, ok = 0, refused = 0;
  std::map<std::string, uint64_t> versions;
  auto on_done = [&](std::string key, Result<CommitResult> r) {
    std::lock_guard<std::mutex> g(mu);
    ++done;
    if (r.ok()) {
      ++ok;
      versions[key] = r->commit_seq;
    } else {
      ++refused;
      EXPECT_EQ(r.status().code(), StatusCode::kAlreadyExists) << r.status().ToString();
    }
    cv.notify_all();
  };
  std::vector<std::thread> threads;
  for (int t = 0; t < 2; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        // Thread 1 repeats thread 0's keys create-only: exactly one of each pair wins.
        std::string key = Numbered("k", i);
        std::vector<WriteOp> ops = {
            WriteOp::Put("c", key, std::to_string(t), Precondition::CreateOnly())};
        store->CommitAsync(kOrders, std::move(ops),
                           [&, key](Result<CommitResult> r) { on_done(key, std::move(r)); });
      }
    });
  }
  for (auto& th : threads) th.join();
  {
    std::unique_lock<std::mutex> l(mu);
    cv.wait(l, [&] { return done == 2 * kPerThread; });
  }
  EXPECT_EQ(ok, kPerThread);
  EXPECT_EQ(refused, kPerThread);
  // A refused transaction calls back at once, with the reason.
  bool called = false;
  store->CommitAsync(kOrders, {}, [&](Result<CommitResult> r) {
    called = true;
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  });
  EXPECT_TRUE(called);
  const StoreStats stats = store->Stats();
  EXPECT_LT(stats.group_commits, stats.commits);
  ASSERT_TRUE(store->FlushFeed().ok());
  EXPECT_EQ(log.Records("store-changes").size(), static_cast<size_t>(kPerThread));
  // Acknowledged means durable: all there after reopening.
  store.reset();
  opened = Store::Open(Env::Default(), o);
  ASSERT_TRUE(opened.ok());
  for (const auto& [key, version] : versions) {
    auto doc = (*opened)->Get("c", key);
    ASSERT_TRUE(doc.ok()) << key;
    EXPECT_EQ(doc->version, version);
  }
}

// ---------------------------------------------------------------------------------------
// A full disk: a group that cannot be written is undone, and the store goes on

TEST(StoreFullDiskTest, RefusedWritesChangeNothingAndLaterWritesWork) {
  sim::SimEnv sim(7);
  log_testing::FullDiskEnv env(sim);
  store_testing::MemoryLog log;
  StoreOptions o;
  o.dir = "/data/store";
  o.feed_log = &log;
  o.ttl_sweep_interval_ms = 0;
  auto open = [&]() {
    auto opened = Store::Open(env, o);
    EXPECT_TRUE(opened.ok()) << opened.status().ToString();
    return opened.ok() ? std::move(*opened) : nullptr;
  };
  std::unique_ptr<Store> store = open();
  ASSERT_NE(store, nullptr);
  CollectionConfig config;
  config.owner = "orders";
  ASSERT_TRUE(store->CreateCollection(kOrders, "c", config).ok());
  ASSERT_TRUE(store->CreateCollection(kOrders, "other", config).ok());
  ASSERT_TRUE(store->Put(kOrders, "c", "a", "1").ok());
  ASSERT_TRUE(store->Put(kOrders, "c", "b", "1").ok());
  ASSERT_TRUE(store->Put(kOrders, "c", "gone", "1").ok());
  ASSERT_TRUE(store->Put(kOrders, "other", "x", "1").ok());
  ASSERT_TRUE(store->FlushFeed().ok());
  const size_t feed_before = log.Records("store-changes").size();

  auto value = [&](const std::string& coll, const std::string& key) -> std::string {
    auto d = store->Get(coll, key);
    return d.ok() ? d->value : d.status().ToString();
  };
  // Room for part of a record: a short write that must be cut off again.
  env.SetFreeBytes(10);
  auto put = store->Put(kOrders, "c", "a", "2");
  EXPECT_EQ(put.status().code(), StatusCode::kUnavailable) << put.status().ToString();
  EXPECT_EQ(value("c", "a"), "1");
  std::vector<WriteOp> ops = {WriteOp::Put("c", "b", "2"), WriteOp::Delete("c", "gone"),
                              WriteOp::Put("c", "new", "1")};
  EXPECT_EQ(store->Commit(kOrders, ops).status().code(), StatusCode::kUnavailable);
  EXPECT_EQ(value("c", "b"), "1");
  EXPECT_EQ(value("c", "gone"), "1");
  EXPECT_EQ(store->Get("c", "new").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(store->DeleteCollection(kOrders, "other").code(), StatusCode::kUnavailable);
  EXPECT_EQ(value("other", "x"), "1");
  EXPECT_EQ(store->CreateCollection(kOrders, "fresh", config).code(), StatusCode::kUnavailable);
  EXPECT_EQ(store->DescribeCollection("fresh").status().code(), StatusCode::kNotFound);
  // A failed sync is undone the same way.
  env.SetUnlimited();
  env.FailSyncs(true);
  EXPECT_EQ(store->Put(kOrders, "c", "a", "3").status().code(), StatusCode::kUnavailable);
  EXPECT_EQ(value("c", "a"), "1");

  // A checkpoint that cannot sync, or cannot write its snapshot, fails alone: the store goes
  // on, and no partial snapshot keeps the space.
  EXPECT_FALSE(store->Checkpoint().ok());
  env.SetUnlimited();
  env.SetFreeBytes(0);
  EXPECT_EQ(store->Checkpoint().code(), StatusCode::kResourceExhausted);
  const std::vector<std::string> names = env.fs().ListDir(o.dir).value();
  for (const std::string& name : names) {
    EXPECT_FALSE(name.ends_with(".tmp")) << name;
  }
  EXPECT_EQ(value("c", "a"), "1");

  // Space is back: writes work without a reopen, and the feed holds only what was committed.
  env.SetUnlimited();
  auto ok = store->Put(kOrders, "c", "a", "4");
  ASSERT_TRUE(ok.ok()) << ok.status().ToString();
  EXPECT_EQ(value("c", "a"), "4");
  ASSERT_TRUE(store->FlushFeed().ok());
  EXPECT_EQ(log.Records("store-changes").size(), feed_before + 1);

  store.reset();
  store = open();
  ASSERT_NE(store, nullptr);
  EXPECT_EQ(value("c", "a"), "4");
  EXPECT_EQ(value("c", "b"), "1");
  EXPECT_EQ(value("c", "gone"), "1");
  EXPECT_EQ(value("other", "x"), "1");
  EXPECT_EQ(store->DescribeCollection("fresh").status().code(), StatusCode::kNotFound);
}

#endif  // CONVERGE_STORE_TEST_POSTGRES

}  // namespace
}  // namespace converge
