// Leases in a real PostgreSQL started by the test: acquire, renew, release and expiry by the
// server's clock; fencing tokens that grow with every change of holder; a fenced write refused
// for an old token; and two keepers across a PostgreSQL restart never holding at once.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <string>
#include <thread>

#include "converge/sql.h"
#include "lease/lease.h"
#include "support/postgres_suite.h"

namespace converge::lease {
namespace {

class LeasePgTest : public testing::PostgresSuite {
 protected:


  static std::unique_ptr<LeaseStore> Open(const std::string& table) {
    PostgresLeaseStoreOptions o;
    o.conninfo = server_->ConnInfo();
    o.table = table;
    Result<std::unique_ptr<LeaseStore>> store = OpenPostgresLeaseStore(o);
    EXPECT_TRUE(store.ok()) << store.status().ToString();
    return store.ok() ? std::move(store).value() : nullptr;
  }

};

TEST_F(LeasePgTest, AcquireRenewReleaseAndExpiryByTheServersClock) {
  auto a = Open("leases_basic");
  auto b = Open("leases_basic");
  ASSERT_TRUE(a && b);
  Result<Acquired> first = a->Acquire("relay:orders", "a", 60'000);
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  EXPECT_EQ(first->token, 1);
  EXPECT_FALSE(first->takeover);
  // Held: nobody else may take it. Its holder may (an acquire whose reply it lost), with a new
  // token; the old token is then dead.
  EXPECT_EQ(b->Acquire("relay:orders", "b", 60'000).status().code(),
            StatusCode::kFailedPrecondition);
  Result<Acquired> again = a->Acquire("relay:orders", "a", 60'000);
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_EQ(again->token, 2);
  EXPECT_FALSE(again->takeover);
  EXPECT_EQ(a->Renew("relay:orders", "a", 1, 60'000).code(), StatusCode::kFailedPrecondition);
  EXPECT_TRUE(a->Renew("relay:orders", "a", 2, 60'000).ok());
  EXPECT_EQ(b->Renew("relay:orders", "b", 2, 60'000).code(), StatusCode::kFailedPrecondition);
  Result<std::vector<LeaseRecord>> list = b->List();
  ASSERT_TRUE(list.ok()) << list.status().ToString();
  ASSERT_EQ(list->size(), 1u);
  EXPECT_EQ((*list)[0].holder, "a");
  EXPECT_GT((*list)[0].expires_in_ms, 50'000);

  // Released: taken at once, with the next token, not a takeover.
  ASSERT_TRUE(a->Release("relay:orders", "a", 2).ok());
  Result<Acquired> second = b->Acquire("relay:orders", "b", 300);
  ASSERT_TRUE(second.ok()) << second.status().ToString();
  EXPECT_EQ(second->token, 3);
  EXPECT_FALSE(second->takeover);
  // Expired by the server's clock (300 ms): taken over; the old holder cannot renew.
  Result<Acquired> third = Status(UnavailableError("not tried"));
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (std::chrono::steady_clock::now() < deadline) {
    third = a->Acquire("relay:orders", "a", 60'000);
    if (third.ok()) break;
    ASSERT_EQ(third.status().code(), StatusCode::kFailedPrecondition);
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ASSERT_TRUE(third.ok()) << third.status().ToString();
  EXPECT_EQ(third->token, 4);
  EXPECT_TRUE(third->takeover);
  EXPECT_EQ(b->Renew("relay:orders", "b", 3, 60'000).code(), StatusCode::kFailedPrecondition);
  // A stale release changes nothing.
  ASSERT_TRUE(b->Release("relay:orders", "b", 3).ok());
  EXPECT_EQ(b->Acquire("relay:orders", "b", 60'000).status().code(),
            StatusCode::kFailedPrecondition);
}

TEST_F(LeasePgTest, FencedWriteIsRefusedForAnOldToken) {
  auto store = Open("leases_fence");
  ASSERT_TRUE(store);
  ASSERT_TRUE(store->Acquire("sagas", "a", 200).ok());
  sql::PostgresOptions po;
  po.conninfo = server_->ConnInfo();
  auto db = sql::Database::ConnectPostgres(po);
  ASSERT_TRUE(db.ok()) << db.status().ToString();
  ASSERT_TRUE((*db)->ExecuteScript("CREATE TABLE fenced_effects (token bigint)").ok());
  auto write = [&](int64_t token) {
    return (*db)->Transact([&](sql::Transaction& txn) -> Status {
      CONVERGE_RETURN_IF_ERROR(CheckFence(txn, "leases_fence", "sagas", token));
      const sql::Value p[] = {sql::Value::Int(token)};
      return txn.Execute("INSERT INTO fenced_effects VALUES ($1::bigint)", p).status();
    });
  };
  EXPECT_TRUE(write(1).ok());
  // The lease expires and another holder takes it: the old token's write is refused.
  Result<Acquired> b = Status(UnavailableError("not tried"));
  for (int i = 0; i < 500 && !b.ok(); ++i) {
    b = store->Acquire("sagas", "b", 60'000);
    if (!b.ok()) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_TRUE(b.ok()) << b.status().ToString();
  EXPECT_EQ(write(1).code(), StatusCode::kFailedPrecondition);
  EXPECT_TRUE(write(b->token).ok());
  EXPECT_EQ(*server_->Query("postgres", "SELECT count(*) FROM fenced_effects"), "2");
}

// A process that knows a holder is dead (its own previous incarnation) takes its live lease at
// once, with a new token: the dead holder's writes are fenced from then on. Only from that
// holder: a lease it released, or another holds, is left alone.
TEST_F(LeasePgTest, TakeOverFromADeadHolderGivesANewTokenAndFencesTheOldOne) {
  auto store = Open("leases_takeover");
  ASSERT_TRUE(store);
  Result<Acquired> old = store->Acquire("node:a", "a/1@http://h:1", 60'000);
  ASSERT_TRUE(old.ok()) << old.status().ToString();
  ASSERT_TRUE(store->Acquire("relay:x", "b/1@http://h:2", 60'000).ok());
  sql::PostgresOptions po;
  po.conninfo = server_->ConnInfo();
  auto db = sql::Database::ConnectPostgres(po);
  ASSERT_TRUE(db.ok()) << db.status().ToString();
  auto fenced = [&](int64_t token) {
    return (*db)->Transact([&](sql::Transaction& txn) -> Status {
      return CheckFence(txn, "leases_takeover", "node:a", token);
    });
  };
  ASSERT_TRUE(fenced(old->token).ok());

  Result<Acquired> taken = store->TakeOver("node:a", "a/2@http://h:1", "a/1@http://h:1", 60'000);
  ASSERT_TRUE(taken.ok()) << taken.status().ToString();
  EXPECT_GT(taken->token, old->token);
  EXPECT_TRUE(taken->takeover);
  EXPECT_EQ(fenced(old->token).code(), StatusCode::kFailedPrecondition);
  EXPECT_TRUE(fenced(taken->token).ok());
  EXPECT_EQ(store->Renew("node:a", "a/1@http://h:1", old->token, 60'000).code(),
            StatusCode::kFailedPrecondition);
  EXPECT_TRUE(store->Renew("node:a", "a/2@http://h:1", taken->token, 60'000).ok());

  // Not from a holder that does not hold it: another's lease, a released one, itself.
  EXPECT_EQ(store->TakeOver("relay:x", "a/2@http://h:1", "a/1@http://h:1", 60'000).status().code(),
            StatusCode::kFailedPrecondition);
  ASSERT_TRUE(store->Release("node:a", "a/2@http://h:1", taken->token).ok());
  EXPECT_EQ(store->TakeOver("node:a", "a/3@http://h:1", "a/2@http://h:1", 60'000).status().code(),
            StatusCode::kFailedPrecondition);
  EXPECT_EQ(store->TakeOver("relay:x", "b/1@http://h:2", "b/1@http://h:2", 60'000).status().code(),
            StatusCode::kInvalidArgument);
  Result<std::vector<LeaseRecord>> list = store->List();
  ASSERT_TRUE(list.ok());
  for (const LeaseRecord& r : *list) {
    if (r.name == "relay:x") {
      EXPECT_EQ(r.holder, "b/1@http://h:2");
    } else if (r.name == "node:a") {
      EXPECT_EQ(r.holder, "");
    }
  }
}

// Runs store calls on threads of their own, as the server's pool does.
void RunDetached(std::function<void()> fn) { std::thread(std::move(fn)).detach(); }

// Two keepers on two connections; PostgreSQL is stopped for longer than the ttl and started
// again. Sampled every millisecond, at most one keeper holds the lease, and one holds it again
// within the bound after the restart.
TEST_F(LeasePgTest, PostgresRestartNeverLeavesTwoHolders) {
  auto store_a = Open("leases_restart");
  auto store_b = Open("leases_restart");
  ASSERT_TRUE(store_a && store_b);
  LeaseKeeperOptions o;
  o.name = "relay:orders";
  o.ttl_ms = 1000;
  o.renew_interval_ms = 300;
  o.safety_margin_ms = 200;
  o.run_blocking = RunDetached;
  o.holder = "a";
  auto a = LeaseKeeper::Create(Env::Default(), *store_a, o);
  o.holder = "b";
  auto b = LeaseKeeper::Create(Env::Default(), *store_b, o);
  ASSERT_TRUE(a.ok() && b.ok());
  (*a)->Start();
  (*b)->Start();

  std::atomic<bool> done{false};
  std::atomic<int64_t> both_held_samples{0};
  std::atomic<int64_t> held_samples{0};
  std::thread sampler([&] {
    while (!done.load()) {
      const bool ha = (*a)->held();
      const bool hb = (*b)->held();
      if (ha && hb) both_held_samples.fetch_add(1);
      if (ha || hb) held_samples.fetch_add(1);
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  });
  auto wait_for_holder = [&](int seconds) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
    while (std::chrono::steady_clock::now() < deadline) {
      if ((*a)->held() || (*b)->held()) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return false;
  };
  ASSERT_TRUE(wait_for_holder(10));
  LeaseKeeper* first = (*a)->held() ? a->get() : b->get();

  for (int round = 0; round < 2; ++round) {
    ASSERT_TRUE(server_->Stop().ok());
    // Down for twice the ttl: the holder's deadline passes; it must stop holding by itself.
    std::this_thread::sleep_for(std::chrono::milliseconds(2000));
    EXPECT_FALSE((*a)->held());
    EXPECT_FALSE((*b)->held());
    ASSERT_TRUE(server_->Restart().ok()) << server_->LogTail();
    const auto restarted = std::chrono::steady_clock::now();
    ASSERT_TRUE(wait_for_holder(15)) << "nobody took the lease after the restart";
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - restarted).count();
    std::printf("lease held again %.3f s after PostgreSQL accepted connections (round %d)\n",
                seconds, round);
    // Let renewals and acquire attempts run against each other for a while.
    std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  }
  done = true;
  sampler.join();
  EXPECT_EQ(both_held_samples.load(), 0) << "both keepers held the lease";
  EXPECT_GT(held_samples.load(), 0);
  EXPECT_GE(first->stats().losses, 1u);
  (*a)->Stop();
  (*b)->Stop();
}

}  // namespace
}  // namespace converge::lease
