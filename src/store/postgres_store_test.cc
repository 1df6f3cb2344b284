// The PostgreSQL store with several stores (as several sidecars) on one PostgreSQL: the
// change feed in commit order when a transaction commits late (the race a "seq > cursor" tail
// over a plain sequence loses), every change in every store's feed exactly once under
// concurrent writers, the TTL sweep from two stores, and health across a PostgreSQL restart.
// (The StoreTest cases of store_test.cc run against this store in the same binary.)
#include "store/postgres_store.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "converge/env.h"
#include "converge/event.h"
#include "converge/store.h"
#include "store/feed.h"
#include "store/testing/memory_log.h"
#include "support/postgres_suite.h"

namespace converge {
namespace {

const Caller kOrders = Caller::Service("orders");

// "<prefix><n>" (appending avoids a GCC 12 -Wrestrict false positive on operator+).
std::string Numbered(std::string prefix, long n) {
  prefix += std::to_string(n);
  return prefix;
}

class PostgresStoreTest : public testing::PostgresSuite {
 protected:

  PostgresStoreOptions Pg(const std::string& prefix) {
    PostgresStoreOptions pg;
    pg.conninfo = server_->ConnInfo();
    pg.table_prefix = prefix;
    pg.health_check_interval_ms = 0;
    return pg;
  }
  static StoreOptions Options(Log* feed) {
    StoreOptions o;
    o.feed_log = feed;
    o.ttl_sweep_interval_ms = 0;
    return o;
  }
  std::unique_ptr<Store> Open(Log* feed, const PostgresStoreOptions& pg) {
    auto s = OpenPostgresStore(Env::Default(), Options(feed), pg);
    EXPECT_TRUE(s.ok()) << s.status().ToString();
    return s.ok() ? std::move(*s) : nullptr;
  }

  // The commit sequence numbers of a feed topic's events, in topic order.
  static std::vector<uint64_t> FeedSeqs(store_testing::MemoryLog& log) {
    std::vector<uint64_t> seqs;
    for (const auto& r : log.Records("store-changes")) {
      uint64_t seq = 0;
      EXPECT_TRUE(store_internal::SeqFromFeedEventId(r.id, &seq)) << r.id;
      seqs.push_back(seq);
    }
    return seqs;
  }

};

// Transaction A takes commit number n and holds it until B, a write through another store,
// has asked for its own; A then commits first. A tail that read B's change before A's commit
// would move its cursor past n and never publish A's change. Here B waits for A (the counter
// row), gets n + 1, and both feeds hold n then n + 1.
TEST_F(PostgresStoreTest, ALateCommitIsNeitherSkippedNorReorderedInTheFeed) {
  std::mutex mu;
  std::condition_variable cv;
  bool holding = false;
  bool release = false;
  std::atomic<bool> hold_next{false};
  PostgresStoreOptions pg_a = Pg("race");
  pg_a.before_commit_for_testing = [&](uint64_t) {
    if (!hold_next.exchange(false)) return;
    std::unique_lock<std::mutex> l(mu);
    holding = true;
    cv.notify_all();
    cv.wait(l, [&] { return release; });
  };
  store_testing::MemoryLog log_a, log_b;
  std::unique_ptr<Store> a = Open(&log_a, pg_a);
  std::unique_ptr<Store> b = Open(&log_b, Pg("race"));
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  CollectionConfig config;
  config.owner = "orders";
  ASSERT_TRUE(a->CreateCollection(kOrders, "orders", config).ok());
  // B writes another collection: nothing but the commit order relates the two writes.
  ASSERT_TRUE(a->CreateCollection(kOrders, "billing", config).ok());
  ASSERT_TRUE(b->Put(kOrders, "orders", "before", "0").ok());

  hold_next = true;
  Result<WriteResult> a_write = InternalError("not run");
  std::thread ta([&] { a_write = a->Put(kOrders, "orders", "late", "1"); });
  {
    std::unique_lock<std::mutex> l(mu);
    cv.wait(l, [&] { return holding; });
  }
  std::atomic<bool> b_done{false};
  Result<WriteResult> b_write = InternalError("not run");
  std::thread tb([&] {
    b_write = b->Put(kOrders, "billing", "early", "2");
    b_done = true;
  });
  // B cannot commit while A holds its number, and neither feed shows anything of either.
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_FALSE(b_done.load()) << "B committed while A held an earlier commit number";
  ASSERT_TRUE(b->FlushFeed().ok());
  ASSERT_TRUE(a->FlushFeed().ok());
  const size_t before = FeedSeqs(log_b).size();
  {
    std::lock_guard<std::mutex> g(mu);
    release = true;
    cv.notify_all();
  }
  ta.join();
  tb.join();
  ASSERT_TRUE(a_write.ok()) << a_write.status().ToString();
  ASSERT_TRUE(b_write.ok()) << b_write.status().ToString();
  EXPECT_EQ(b_write->version, a_write->version + 1);
  ASSERT_TRUE(a->FlushFeed().ok());
  ASSERT_TRUE(b->FlushFeed().ok());
  for (store_testing::MemoryLog* log : {&log_a, &log_b}) {
    const std::vector<uint64_t> seqs = FeedSeqs(*log);
    ASSERT_EQ(seqs.size(), before + 2);
    EXPECT_EQ(seqs[seqs.size() - 2], a_write->version);
    EXPECT_EQ(seqs.back(), b_write->version);
  }
}

// Writers in two stores, tails running all the time in both: each feed holds every
// acknowledged write exactly once, in commit order, and the versions of each key grow.
TEST_F(PostgresStoreTest, EveryStoresFeedHasEveryCommitOnceInOrderUnderConcurrentWriters) {
  store_testing::MemoryLog log_a, log_b;
  std::unique_ptr<Store> a = Open(&log_a, Pg("feeds"));
  std::unique_ptr<Store> b = Open(&log_b, Pg("feeds"));
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  CollectionConfig config;
  config.owner = "orders";
  ASSERT_TRUE(a->CreateCollection(kOrders, "orders", config).ok());

  constexpr int kThreadsPerStore = 3;
  constexpr int kWrites = 60;
  std::mutex mu;
  std::set<uint64_t> acked;
  std::atomic<bool> stop{false};
  std::vector<std::thread> threads;
  for (int t = 0; t < 2 * kThreadsPerStore; ++t) {
    Store* s = t % 2 == 0 ? a.get() : b.get();
    threads.emplace_back([&, s, t] {
      for (int i = 0; i < kWrites; ++i) {
        // Three shared keys, so that per-key order matters.
        auto w = s->Put(kOrders, "orders", Numbered("k", (t + i) % 3), std::to_string(i));
        ASSERT_TRUE(w.ok()) << w.status().ToString();
        std::lock_guard<std::mutex> g(mu);
        acked.insert(w->version);
      }
    });
  }
  std::thread flusher([&] {
    while (!stop.load()) {
      a->FlushFeed().IgnoreError();
      b->FlushFeed().IgnoreError();
    }
  });
  for (auto& t : threads) t.join();
  stop = true;
  flusher.join();
  ASSERT_TRUE(a->FlushFeed().ok());
  ASSERT_TRUE(b->FlushFeed().ok());
  ASSERT_EQ(acked.size(), static_cast<size_t>(2 * kThreadsPerStore * kWrites));
  for (store_testing::MemoryLog* log : {&log_a, &log_b}) {
    const std::vector<uint64_t> seqs = FeedSeqs(*log);
    EXPECT_EQ(std::set<uint64_t>(seqs.begin(), seqs.end()), acked);
    EXPECT_EQ(seqs.size(), acked.size()) << "a change was published twice";
    for (size_t i = 1; i < seqs.size(); ++i) ASSERT_LT(seqs[i - 1], seqs[i]) << "out of order";
  }
  EXPECT_EQ(a->Stats().feed_backlog_events, 0u);
  EXPECT_EQ(b->Stats().feed_published_seq, *acked.rbegin());
}

// Two stores sweep the same expired documents at once: each is expired once, and each feed
// has one expiry event per document.
TEST_F(PostgresStoreTest, TwoStoresSweepEachExpiredDocumentOnce) {
  store_testing::MemoryLog log_a, log_b;
  std::unique_ptr<Store> a = Open(&log_a, Pg("sweep"));
  std::unique_ptr<Store> b = Open(&log_b, Pg("sweep"));
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  CollectionConfig config;
  config.owner = "orders";
  ASSERT_TRUE(a->CreateCollection(kOrders, "orders", config).ok());
  constexpr int kDocs = 40;
  for (int i = 0; i < kDocs; ++i) {
    ASSERT_TRUE(a->Put(kOrders, "orders", Numbered("d", i), "1", {}, 1).ok());
  }
  ASSERT_TRUE(a->Put(kOrders, "orders", "keep", "1").ok());
  // Wait (bounded) until every document reads as expired.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (b->Get("orders", Numbered("d", kDocs - 1)).ok()) {
    ASSERT_LT(std::chrono::steady_clock::now(), deadline);
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  std::atomic<size_t> expired{0};
  auto sweep = [&](Store* s) {
    while (true) {
      auto n = s->ExpireDue();
      ASSERT_TRUE(n.ok()) << n.status().ToString();
      if (*n == 0) return;
      expired += *n;
    }
  };
  std::thread ta(sweep, a.get());
  std::thread tb(sweep, b.get());
  ta.join();
  tb.join();
  EXPECT_EQ(expired.load(), static_cast<size_t>(kDocs));
  auto info = b->DescribeCollection("orders");
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->documents, 1u);
  ASSERT_TRUE(a->FlushFeed().ok());
  ASSERT_TRUE(b->FlushFeed().ok());
  for (store_testing::MemoryLog* log : {&log_a, &log_b}) {
    std::map<std::string, int> expiries;
    for (const auto& r : log->Records("store-changes")) {
      auto event = DecodeBinary(r.value);
      ASSERT_TRUE(event.ok());
      if (event->type() == "converge.store.expire") ++expiries[event->subject().value_or("")];
    }
    EXPECT_EQ(expiries.size(), static_cast<size_t>(kDocs));
    for (const auto& [key, n] : expiries) EXPECT_EQ(n, 1) << key;
  }
  EXPECT_EQ(a->Stats().documents, 1u);
}

// PostgreSQL down: unhealthy and writes Unavailable; back up: healthy, acknowledged writes
// there, writes work again.
TEST_F(PostgresStoreTest, HealthAndWritesFollowPostgresAcrossARestart) {
  auto own = testing::PostgresServer::Start();
  ASSERT_TRUE(own.ok()) << own.status().ToString();
  PostgresStoreOptions pg;
  pg.conninfo = (*own)->ConnInfo();
  pg.table_prefix = "restart";
  pg.health_check_interval_ms = 0;
  pg.connect_timeout_ms = 2'000;
  store_testing::MemoryLog log;
  std::unique_ptr<Store> s = Open(&log, pg);
  ASSERT_NE(s, nullptr);
  CollectionConfig config;
  config.owner = "orders";
  ASSERT_TRUE(s->CreateCollection(kOrders, "orders", config).ok());
  auto first = s->Put(kOrders, "orders", "a", "1");
  ASSERT_TRUE(first.ok());
  EXPECT_TRUE(s->Health().ok());

  ASSERT_TRUE((*own)->Stop().ok());
  EXPECT_EQ(s->Health().code(), StatusCode::kUnavailable);
  EXPECT_EQ(s->Put(kOrders, "orders", "b", "1").status().code(), StatusCode::kUnavailable);
  EXPECT_EQ(s->Get("orders", "a").status().code(), StatusCode::kUnavailable);

  ASSERT_TRUE((*own)->Restart().ok());
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (!s->Health().ok()) {
    ASSERT_LT(std::chrono::steady_clock::now(), deadline);
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  auto a = s->Get("orders", "a");
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  EXPECT_EQ(a->version, first->version);
  auto second = s->Put(kOrders, "orders", "b", "1");
  ASSERT_TRUE(second.ok()) << second.status().ToString();
  EXPECT_GT(second->version, first->version);
  ASSERT_TRUE(s->FlushFeed().ok());
  EXPECT_EQ(log.Records("store-changes").size(), 2u);
}

}  // namespace
}  // namespace converge
