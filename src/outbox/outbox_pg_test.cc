// Integration tests of the outbox, relay and inbox on a real PostgreSQL 15 started by the test
// (tests/support/postgres_server.h): per-key commit order under concurrent writers, LISTEN/NOTIFY
// wake-ups, two relays at once, the database going away and coming back, malformed rows,
// crashes at each step and a relay process killed mid-batch.
#include <atomic>
#include <random>
#include <set>
#include <chrono>
#include <thread>

#include "outbox/outbox_test_util.h"
#include "support/postgres_server.h"

namespace converge::outbox_test {
namespace {

// One server for the whole suite (start-up costs seconds); each test gets fresh databases.
class PostgresTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    testing::PostgresServerOptions o;
    o.settings = {"track_commit_timestamp=on", "max_connections=200"};
    auto s = testing::PostgresServer::Start(o);
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    server_ = std::move(s).value().release();
  }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
  }

  void SetUp() override {
    ASSERT_NE(server_, nullptr);
    if (!server_->running()) ASSERT_OK(server_->Restart());
    static int n = 0;
    ++n;
    service_db_ = Numbered("service", n);
    consumer_db_ = Numbered("consumer", n);
    ASSERT_OK(server_->CreateDatabase(service_db_));
    ASSERT_OK(server_->CreateDatabase(consumer_db_));
    pipeline_ = std::make_unique<Pipeline>(
        sql::DatabaseTarget{sql::Engine::kPostgres, server_->ConnInfo(service_db_)},
        sql::DatabaseTarget{sql::Engine::kPostgres, server_->ConnInfo(consumer_db_)});
    ASSERT_OK(pipeline_->Open());
  }
  void TearDown() override { pipeline_.reset(); }

  Result<std::unique_ptr<sql::Database>> Connect(const std::string& db) {
    sql::PostgresOptions o;
    o.conninfo = server_->ConnInfo(db);
    return sql::Database::ConnectPostgres(o);
  }

  static testing::PostgresServer* server_;
  std::string service_db_;
  std::string consumer_db_;
  std::unique_ptr<Pipeline> pipeline_;
};

testing::PostgresServer* PostgresTest::server_ = nullptr;

// Concurrent writers whose sequence numbers are drawn in one order and whose commits happen in
// another: the relay must still publish each key's events in commit order. Each transaction
// sleeps between its outbox write and its commit, so without the per-key lock a later writer
// of the same key would draw a higher sequence number and commit first.
TEST_F(PostgresTest, EventsOfAKeyArePublishedInCommitOrderUnderConcurrentWriters) {
  Pipeline& p = *pipeline_;
  constexpr int kThreads = 6, kPerThread = 40;
  std::atomic<int> errors{0};
  std::vector<std::thread> writers;
  for (int t = 0; t < kThreads; ++t) {
    writers.emplace_back([&, t] {
      auto db = Connect(service_db_);
      if (!db.ok()) {
        ++errors;
        return;
      }
      Outbox outbox(Env::Default());
      std::mt19937 rng(static_cast<uint32_t>(t));
      for (int i = 0; i < kPerThread; ++i) {
        std::string key = Numbered("k", static_cast<int64_t>(rng() % 3));
        Status s = (*db)->Transact([&](sql::Transaction& tx) -> Status {
          // The transaction id orders commits: pg_xact_commit_timestamp tells when it committed.
          std::string xid;
          CONVERGE_RETURN_IF_ERROR(
              tx.Query("SELECT pg_current_xact_id()::text", {}, [&](const sql::Row& r) {
                  xid = std::string(r.Bytes(0));
                  return Status::Ok();
                }).status());
          Event e = MakeEvent(key, std::stoll(xid));
          CONVERGE_RETURN_IF_ERROR(outbox.Write(tx, p.topic, e));
          std::this_thread::sleep_for(std::chrono::microseconds(rng() % 3000));
          return Status::Ok();
        });
        if (!s.ok()) ++errors;
      }
    });
  }
  for (auto& w : writers) w.join();
  ASSERT_EQ(errors.load(), 0);
  auto relay = p.NewRelay();
  ASSERT_TRUE(relay.ok());
  auto n = (*relay)->Drain(1000);
  ASSERT_TRUE(n.ok()) << n.status().ToString();
  ASSERT_EQ(*n, static_cast<size_t>(kThreads * kPerThread));
  // Per key, commit timestamps never go backwards along the log.
  auto db = Connect(service_db_);
  ASSERT_TRUE(db.ok());
  size_t checked = 0;
  for (uint32_t part = 0; part < 4; ++part) {
    auto batch = p.log->Read(p.topic, part, 0, 100'000, 64u << 20);
    ASSERT_TRUE(batch.ok());
    std::map<std::string, std::string> last_commit;
    for (const StoredRecord& r : batch->records) {
      auto e = DecodeBinary(r.value);
      ASSERT_TRUE(e.ok());
      std::string commit;
      sql::Value q[] = {sql::Value::Int(EventNumber(*e))};
      ASSERT_OK((*db)
                    ->Query("SELECT to_char(pg_xact_commit_timestamp($1::text::xid), "
                            "'YYYYMMDDHH24MISSUS')",
                            q,
                            [&](const sql::Row& row) {
                              commit = std::string(row.Bytes(0));
                              return Status::Ok();
                            })
                    .status());
      ASSERT_FALSE(commit.empty());
      std::string& prev = last_commit[std::string(r.key)];
      EXPECT_LE(prev, commit) << "key " << r.key << " published out of commit order";
      prev = commit;
      ++checked;
    }
  }
  EXPECT_EQ(checked, static_cast<size_t>(kThreads * kPerThread));
}

TEST_F(PostgresTest, NotifyWakesTheRelayWithoutPolling) {
  Pipeline& p = *pipeline_;
  RelayOptions ro = p.DefaultRelayOptions();
  ro.poll_interval_ms = 3'600'000;
  auto relay = p.NewRelay(ro);
  ASSERT_TRUE(relay.ok());
  ASSERT_OK((*relay)->Start());
  for (int round = 1; round <= 5; ++round) {
    ASSERT_OK(p.Write(1, 1, 1));
    EXPECT_TRUE(
        Eventually([&] { return *p.LogEventCount() >= static_cast<uint64_t>(round); }, 30'000))
        << "round " << round;
  }
  (*relay)->Stop();
  EXPECT_EQ((*relay)->stats().polls, 0u);
  EXPECT_GE((*relay)->stats().wakeups, 1u);
}

TEST_F(PostgresTest, TwoRelaysShareTheBucketsAndEveryEffectHappensOnce) {
  Pipeline& p = *pipeline_;
  RelayOptions ro = p.DefaultRelayOptions();
  ro.rebalance_interval_ms = 20;
  ro.batch_max_events = 50;
  ro.name = "relay-a";
  auto a = p.NewRelay(ro);
  ro.name = "relay-b";
  auto b = p.NewRelay(ro);
  ASSERT_TRUE(a.ok() && b.ok());
  // Deterministic hand-over first: a takes everything, b joins, a gives half back.
  ASSERT_TRUE((*a)->RunOnce().ok());
  EXPECT_EQ((*a)->stats().buckets, 64u);
  ASSERT_TRUE((*b)->RunOnce().ok());
  EXPECT_EQ((*b)->stats().buckets, 0u);
  ASSERT_TRUE((*a)->RunOnce().ok());
  EXPECT_EQ((*a)->stats().buckets, 32u);
  ASSERT_TRUE((*b)->RunOnce().ok());
  EXPECT_EQ((*b)->stats().buckets, 32u);
  // Then both run on their own threads while writers write and a consumer consumes.
  ASSERT_OK((*a)->Start());
  ASSERT_OK((*b)->Start());
  auto c = p.NewConsumer();
  ASSERT_TRUE(c.ok());
  ASSERT_OK((*c)->Start());
  std::vector<std::thread> writers;
  std::atomic<int> errors{0};
  constexpr int kThreads = 4, kPerThread = 150;
  std::mutex ids_mu;
  std::vector<std::string> all_ids;
  for (int t = 0; t < kThreads; ++t) {
    writers.emplace_back([&, t] {
      auto db = Connect(service_db_);
      if (!db.ok()) {
        ++errors;
        return;
      }
      Outbox outbox(Env::Default());
      std::map<std::string, int64_t> next;
      // Each thread owns its keys, so per-key numbers are its own.
      for (int i = 0; i < kPerThread; i += 5) {
        std::vector<Event> events;
        for (int j = 0; j < 5; ++j) {
          std::string key = Numbered(Numbered("t", t) + "-k", (i + j) % 9);
          events.push_back(MakeEvent(key, next[key]++));
        }
        Status s = (*db)->Transact([&](sql::Transaction& tx) {
          return outbox.Write(tx, p.topic, std::span<Event>(events));
        });
        if (!s.ok()) ++errors;
        std::lock_guard<std::mutex> lock(ids_mu);
        for (const Event& e : events) all_ids.push_back(EventIdentity(e));  // the log record id
      }
    });
  }
  for (auto& w : writers) w.join();
  ASSERT_EQ(errors.load(), 0);
  const int total = kThreads * kPerThread;
  EXPECT_TRUE(Eventually([&] { return SummarizeEffects(*p.consumer).rows >= total; }, 60'000))
      << "consumer: " << (*c)->stats().last_error << " handled " << (*c)->stats().handled
      << " batches " << (*c)->stats().batches << " dup " << (*c)->stats().duplicates << " retried "
      << (*c)->stats().retried << " dead " << (*c)->stats().dead_lettered << " dbf "
      << (*c)->stats().db_failures << " relay a: " << (*a)->stats().last_error
      << " relay b: " << (*b)->stats().last_error << " in log: " << *p.LogEventCount()
      << " published a " << (*a)->stats().published << " b " << (*b)->stats().published
      << " outbox rows " << CountRows(*p.service, "converge_outbox");
  (*c)->Stop();
  (*a)->Stop();
  (*b)->Stop();
  EffectSummary e = SummarizeEffects(*p.consumer);
  EXPECT_EQ(e.rows, total);
  EXPECT_EQ(e.applied_sum, total);
  EXPECT_EQ(e.violations, 0);
  EXPECT_GT((*a)->stats().published, 0u);
  EXPECT_GT((*b)->stats().published, 0u);
  EXPECT_EQ(*p.LogEventCount(), static_cast<uint64_t>(total));
  std::set<std::string> in_log;
  size_t records = 0;
  for (uint32_t part = 0; part < 4; ++part) {
    auto batch = p.log->Read(p.topic, part, 0, 100'000, 64u << 20);
    ASSERT_TRUE(batch.ok());
    for (const StoredRecord& r : batch->records) {
      in_log.insert(std::string(r.id));
      ++records;
    }
  }
  std::set<std::string> written(all_ids.begin(), all_ids.end());
  EXPECT_EQ(written.size(), all_ids.size()) << "ids were not unique";
  EXPECT_EQ(in_log.size(), records) << "the log holds an id twice";
  for (const std::string& id : written) EXPECT_TRUE(in_log.count(id)) << "missing " << id;
}

TEST_F(PostgresTest, TheDatabaseGoingAwayIsRetriedAndEverythingArrivesOnceWhenItReturns) {
  Pipeline& p = *pipeline_;
  auto relay = p.NewRelay();
  ASSERT_TRUE(relay.ok());
  ASSERT_OK((*relay)->Start());
  auto c = p.NewConsumer();
  ASSERT_TRUE(c.ok());
  ASSERT_OK((*c)->Start());
  ASSERT_OK(p.Write(50, 5, 10));
  EXPECT_TRUE(Eventually([&] { return SummarizeEffects(*p.consumer).rows >= 50; }, 60'000));
  // Down: both the service and the consumer databases are gone.
  ASSERT_OK(server_->Stop());
  EXPECT_FALSE(p.Write(5, 5, 5).ok());
  EXPECT_TRUE(Eventually([&] { return (*relay)->stats().failures >= 3; }, 30'000));
  ASSERT_OK(server_->Restart());
  // The test's own connections reconnect on their next use.
  ASSERT_OK(p.service->Reconnect());
  ASSERT_OK(p.consumer->Reconnect());
  ASSERT_OK(p.Write(50, 5, 10));
  EXPECT_TRUE(Eventually([&] { return SummarizeEffects(*p.consumer).rows >= 100; }, 60'000));
  (*c)->Stop();
  (*relay)->Stop();
  EffectSummary e = SummarizeEffects(*p.consumer);
  EXPECT_EQ(e.rows, 100);
  EXPECT_EQ(e.applied_sum, 100);
  EXPECT_EQ(e.violations, 0);
  EXPECT_GE((*relay)->stats().failures, 3u);
  EXPECT_EQ(CountRows(*p.service, "converge_outbox"), 0);
}

TEST_F(PostgresTest, AMalformedRowIsDeadLetteredAndTheRelayKeepsGoing) {
  Pipeline& p = *pipeline_;
  ASSERT_OK(p.Write(2, 1, 2));
  ASSERT_OK(p.service->ExecuteScript(
      "INSERT INTO converge_outbox (id, topic, partition_key, source, type, traceparent) "
      "VALUES ('bad-1', 'orders', 'k0', '/s', 't', 'garbage')"));
  ASSERT_OK(p.Write(2, 1, 2));
  auto relay = p.NewRelay();
  ASSERT_TRUE(relay.ok());
  ASSERT_TRUE((*relay)->Drain(100).ok());
  EXPECT_EQ(*p.LogEventCount(), 4u);
  auto dlq = p.log->Read("_dlq.outbox", 0, 0, 10, 1u << 20);
  ASSERT_TRUE(dlq.ok());
  ASSERT_EQ(dlq->records.size(), 1u);
  EXPECT_NE(dlq->records[0].value.find("traceparent"), std::string_view::npos);
  EXPECT_EQ(CountRows(*p.service, "converge_outbox"), 0);
}

TEST_F(PostgresTest, CrashesAtEachRelayAndInboxStepApplyEveryEffectOnce) {
  Pipeline& p = *pipeline_;
  int written = 0;
  for (const char* point : {"relay.claimed", "relay.chunk_published", "relay.published",
                            "relay.removed", "inbox.handled", "inbox.committed", "inbox.acked"}) {
    SCOPED_TRACE(point);
    ASSERT_OK(p.Write(60, 4, 15));
    written += 60;
    FaultInjector faults;
    faults.Arm(point, 2);
    const bool relay_fault = std::string_view(point).substr(0, 5) == "relay";
    RelayOptions ro = p.DefaultRelayOptions();
    ro.batch_max_events = 20;
    ro.publish_chunk_max_events = 7;
    if (relay_fault) ro.fault_point = faults.Hook();
    // A relay that crashed may leave its claimed rows locked until PostgreSQL has ended its
    // session; the next one skips locked rows and drains "nothing". So lives go on until the
    // outbox is empty (bounded), not until the first clean drain.
    for (int life = 0; life < 50; ++life) {
      auto relay = p.NewRelay(ro);
      ASSERT_TRUE(relay.ok());
      const bool drained = (*relay)->Drain(1000).ok();
      if (drained && CountRows(*p.service, "converge_outbox") == 0) break;
      if (drained) std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    EXPECT_EQ(CountRows(*p.service, "converge_outbox"), 0);
    for (int life = 0; life < 3; ++life) {
      InboxConsumerOptions co = p.DefaultConsumerOptions();
      co.fetch_max_events = 16;
      if (!relay_fault) co.fault_point = faults.Hook();
      auto c = p.NewConsumer(co);
      ASSERT_TRUE(c.ok());
      if (Pipeline::DrainConsumer(**c).ok()) break;
      c->reset();
      p.CloseLog();
      ASSERT_OK(p.OpenLog());
    }
    EXPECT_EQ(faults.fired(), 1);
  }
  EffectSummary e = SummarizeEffects(*p.consumer);
  EXPECT_EQ(e.rows, written);
  EXPECT_EQ(e.applied_sum, written);
  EXPECT_EQ(e.violations, 0);
}

TEST_F(PostgresTest, ARelayProcessKilledMidBatchLosesAndDuplicatesNothing) {
  KillRelayMidBatchAndVerify(*pipeline_, pipeline_->service_target.location, 600);
}

TEST_F(PostgresTest, SeveralConsumerWorkersKeepPerKeyOrder) {
  Pipeline& p = *pipeline_;
  ASSERT_OK(p.Write(400, 13, 20));
  auto relay = p.NewRelay();
  ASSERT_TRUE(relay.ok());
  ASSERT_TRUE((*relay)->Drain(100).ok());
  InboxConsumerOptions co = p.DefaultConsumerOptions();
  co.workers = 4;
  co.fetch_max_events = 64;
  auto c = p.NewConsumer(co);
  ASSERT_TRUE(c.ok());
  auto n = Pipeline::DrainConsumer(**c);
  ASSERT_TRUE(n.ok()) << n.status().ToString();
  EffectSummary e = SummarizeEffects(*p.consumer);
  EXPECT_EQ(e.rows, 400);
  EXPECT_EQ(e.applied_sum, 400);
  EXPECT_EQ(e.violations, 0);
}

// The inbox consumer's statement timeout bounds the handler's statements too: a handler whose
// statement outlasts it sees DeadlineExceeded, and with the default the same statement runs.
TEST_F(PostgresTest, TheInboxStatementTimeoutBoundsTheHandlersStatements) {
  Pipeline& p = *pipeline_;
  ASSERT_OK(p.Write(1, 1, 1));
  auto relay = p.NewRelay();
  ASSERT_TRUE(relay.ok());
  ASSERT_TRUE((*relay)->Drain(10).ok());
  auto run = [&](int64_t statement_timeout_ms) -> Status {
    InboxConsumerOptions co = p.DefaultConsumerOptions();
    co.group = "g" + std::to_string(statement_timeout_ms);
    co.postgres_statement_timeout_ms = statement_timeout_ms;
    co.is_retryable = [](const Status&) { return false; };
    std::mutex mu;
    Status seen = InternalError("handler not run");
    auto c = p.NewConsumer(co, [&](sql::Transaction& tx, const InboxMessage&) -> Status {
      Status s = tx.Execute("SELECT pg_sleep(0.3)").status();
      std::lock_guard<std::mutex> lock(mu);
      seen = s;
      return Status::Ok();
    });
    if (!c.ok()) return c.status();
    (void)(*c)->RunOnce();
    std::lock_guard<std::mutex> lock(mu);
    return seen;
  };
  EXPECT_EQ(run(100).code(), StatusCode::kDeadlineExceeded);
  EXPECT_OK(run(30'000));
}

// The consumer's first try of a batch expects new ids (a plain INSERT): a known id makes it fail
// with AlreadyExists and record nothing, and RecordBatch then sorts new from known.
TEST_F(PostgresTest, RecordBatchExpectingNewRefusesAKnownIdWhole) {
  Pipeline& p = *pipeline_;
  ASSERT_OK(Inbox::CreateSchema(*p.consumer));
  InboxOptions io;
  io.consumer = "expecting-new";
  Inbox inbox(p.env, io);
  std::vector<std::string_view> first = {"a", "b"};
  std::vector<bool> fresh;
  ASSERT_OK(p.consumer->Transact(
      [&](sql::Transaction& tx) { return inbox.RecordBatchExpectingNew(tx, first, &fresh); }));
  EXPECT_EQ(fresh, (std::vector<bool>{true, true}));
  std::vector<std::string_view> second = {"c", "a"};
  Status s = p.consumer->Transact(
      [&](sql::Transaction& tx) { return inbox.RecordBatchExpectingNew(tx, second, &fresh); });
  EXPECT_EQ(s.code(), StatusCode::kAlreadyExists) << s.ToString();
  EXPECT_EQ(CountRows(*p.consumer, "converge_inbox"), 2);  // nothing of the failed batch
  ASSERT_OK(p.consumer->Transact(
      [&](sql::Transaction& tx) { return inbox.RecordBatch(tx, second, &fresh); }));
  EXPECT_EQ(fresh, (std::vector<bool>{true, false}));
}

}  // namespace
}  // namespace converge::outbox_test
