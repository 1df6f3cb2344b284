// The WAL outbox (relay mode "wal", docs/formats/wal-outbox.md) on a real PostgreSQL 15 with
// wal_level=logical, started by the test: committed messages arrive once and in commit order,
// rolled-back ones never; the relay process killed after the commit and after the append but
// before the slot confirms; PostgreSQL restarted under load; the slot dropped or invalidated
// gives a clear error, never silent loss.
#include <atomic>
#include <map>
#include <random>
#include <set>
#include <thread>

#include "outbox/outbox_test_util.h"
#include "support/postgres_server.h"

namespace converge::outbox_test {
namespace {

testing::PostgresServerOptions LogicalServerOptions() {
  testing::PostgresServerOptions o;
  o.settings = {"wal_level=logical", "max_replication_slots=20", "max_wal_senders=20",
                "track_commit_timestamp=on", "max_connections=100"};
  return o;
}

class WalOutboxTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto s = testing::PostgresServer::Start(LogicalServerOptions());
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
    service_db_ = Numbered("walservice", n);
    slot_ = Numbered("slot", n);
    ASSERT_OK(server_->CreateDatabase(service_db_));
    ASSERT_OK(server_->CreateDatabase(Numbered("walconsumer", n)));
    pipeline_ = std::make_unique<Pipeline>(
        sql::DatabaseTarget{sql::Engine::kPostgres, server_->ConnInfo(service_db_)},
        sql::DatabaseTarget{sql::Engine::kPostgres, server_->ConnInfo(Numbered("walconsumer", n))});
    ASSERT_OK(pipeline_->Open(/*partitions=*/1));
    ASSERT_OK(CreateWalSlot(Conninfo(), slot_, "converge_outbox"));
  }
  void TearDown() override {
    pipeline_.reset();
    // Slots outlive databases' users: drop it so it does not pin WAL for the next tests.
    DropWalSlot(Conninfo(), slot_).IgnoreError();
    DropWalSlot(Conninfo(), slot_ + "_order").IgnoreError();  // a test's second slot, if any
  }

  std::string Conninfo() const { return server_->ConnInfo(service_db_); }

  RelayOptions WalOptions() {
    RelayOptions o = pipeline_->DefaultRelayOptions();
    o.mode = "wal";
    o.wal_slot = slot_;
    o.poll_interval_ms = 50;
    return o;
  }

  Result<std::unique_ptr<sql::Database>> Connect() {
    sql::PostgresOptions o;
    o.conninfo = Conninfo();
    return sql::Database::ConnectPostgres(o);
  }

  // Emits one event of `key` numbered `n` in its own transaction; `rollback` aborts it.
  Status EmitOne(sql::Database& db, const std::string& key, int64_t n, bool rollback = false) {
    Status s = db.Transact([&](sql::Transaction& tx) -> Status {
      Event e = MakeEvent(key, n);
      CONVERGE_RETURN_IF_ERROR(pipeline_->outbox.Emit(tx, pipeline_->topic, e));
      if (rollback) return AbortedError("rolled back on purpose");
      return Status::Ok();
    });
    if (rollback && s.code() == StatusCode::kAborted) return Status::Ok();
    return s;
  }

  // Runs the relay until the log holds `want` events (or the deadline passes).
  bool RelayUntil(Relay& relay, uint64_t want, int64_t timeout_ms = 60'000) {
    return Eventually(
        [&] {
          relay.RunOnce().status().IgnoreError();
          return *pipeline_->LogEventCount() >= want;
        },
        timeout_ms);
  }

  // (key, n) of every event in the topic, in log order.
  std::vector<std::pair<std::string, int64_t>> LogContents() {
    std::vector<std::pair<std::string, int64_t>> out;
    auto batch = pipeline_->log->Read(pipeline_->topic, 0, 0, 1'000'000, 256u << 20);
    EXPECT_TRUE(batch.ok());
    if (!batch.ok()) return out;
    for (const StoredRecord& r : batch->records) {
      auto e = DecodeBinary(r.value);
      EXPECT_TRUE(e.ok());
      if (e.ok()) out.emplace_back(std::string(r.key), EventNumber(*e));
    }
    return out;
  }

  static testing::PostgresServer* server_;
  std::string service_db_;
  std::string slot_;
  std::unique_ptr<Pipeline> pipeline_;
};

testing::PostgresServer* WalOutboxTest::server_ = nullptr;

// Concurrent writers; some transactions roll back. Every committed event arrives once, in
// commit order, and nothing of a rolled-back transaction arrives. The transaction id is the
// event number; the commit order is PostgreSQL's own, read from a second slot decoded by
// test_decoding. (Commit timestamps are not that order: PostgreSQL takes a transaction's
// timestamp before it writes its commit record, so two concurrent commits can reach the WAL
// in the other order of their timestamps.)
TEST_F(WalOutboxTest, CommittedMessagesArriveOnceInCommitOrderRollbacksNever) {
  constexpr int kThreads = 4, kPerThread = 60;
  const std::string oracle_slot = slot_ + "_order";
  {
    auto db = Connect();
    ASSERT_TRUE(db.ok());
    sql::Value q[] = {sql::Value::Text(oracle_slot)};
    ASSERT_OK((*db)
                  ->Query("SELECT pg_create_logical_replication_slot($1, 'test_decoding')", q,
                          [](const sql::Row&) { return Status::Ok(); })
                  .status());
  }
  std::atomic<int> errors{0}, committed{0};
  std::vector<std::thread> writers;
  for (int t = 0; t < kThreads; ++t) {
    writers.emplace_back([&, t] {
      auto db = Connect();
      if (!db.ok()) {
        ++errors;
        return;
      }
      std::mt19937 rng(static_cast<uint32_t>(t));
      for (int i = 0; i < kPerThread; ++i) {
        const bool rollback = i % 5 == 4;
        Status s = (*db)->Transact([&](sql::Transaction& tx) -> Status {
          std::string xid;
          CONVERGE_RETURN_IF_ERROR(
              tx.Query("SELECT pg_current_xact_id()::text", {}, [&](const sql::Row& r) {
                  xid = std::string(r.Bytes(0));
                  return Status::Ok();
                }).status());
          Event e = MakeEvent(rollback ? "rolled-back" : Numbered("k", rng() % 3), std::stoll(xid));
          CONVERGE_RETURN_IF_ERROR(pipeline_->outbox.Emit(tx, pipeline_->topic, e));
          std::this_thread::sleep_for(std::chrono::microseconds(rng() % 2000));
          if (rollback) return AbortedError("rollback");
          return Status::Ok();
        });
        if (rollback ? s.code() != StatusCode::kAborted : !s.ok()) ++errors;
        if (!rollback && s.ok()) ++committed;
      }
    });
  }
  auto relay = pipeline_->NewRelay(WalOptions());
  ASSERT_TRUE(relay.ok()) << relay.status().ToString();
  for (auto& w : writers) w.join();
  ASSERT_EQ(errors.load(), 0);
  ASSERT_TRUE(RelayUntil(**relay, committed.load())) << (*relay)->stats().last_error;
  // A little longer: nothing more (no rollback, no duplicate) may arrive.
  for (int i = 0; i < 20; ++i) ASSERT_TRUE((*relay)->RunOnce().ok());
  auto events = LogContents();
  ASSERT_EQ(events.size(), static_cast<size_t>(committed.load()));
  auto db = Connect();
  ASSERT_TRUE(db.ok());
  // Every transaction committed since the oracle slot was made, in the WAL's commit order.
  std::vector<int64_t> commit_order;
  sql::Value q[] = {sql::Value::Text(oracle_slot)};
  ASSERT_OK((*db)
                ->Query("SELECT xid::text FROM pg_logical_slot_peek_changes($1, NULL, NULL) "
                        "WHERE data LIKE 'COMMIT%'",
                        q,
                        [&](const sql::Row& row) {
                          commit_order.push_back(std::stoll(std::string(row.Bytes(0))));
                          return Status::Ok();
                        })
                .status());
  DropWalSlot(Conninfo(), oracle_slot).IgnoreError();
  std::map<int64_t, size_t> position;
  for (size_t i = 0; i < commit_order.size(); ++i) position.emplace(commit_order[i], i);
  std::set<int64_t> seen;
  size_t prev = 0;
  for (const auto& [key, xid] : events) {
    EXPECT_NE(key, "rolled-back");
    EXPECT_TRUE(seen.insert(xid).second) << "duplicate " << xid;
    auto at = position.find(xid);
    ASSERT_NE(at, position.end()) << "xid " << xid << " is not a committed transaction";
    EXPECT_LE(prev, at->second) << "xid " << xid << " out of commit order";
    prev = at->second;
  }
  RelayStats st = (*relay)->stats();
  EXPECT_EQ(st.dead_lettered, 0u);
  EXPECT_TRUE(st.active);
}

// A message that is not a valid event, and a non-transactional one, go to the dead letters
// with the reason; the relay goes on.
TEST_F(WalOutboxTest, MalformedMessagesAreDeadLettered) {
  auto db = Connect();
  ASSERT_TRUE(db.ok());
  ASSERT_OK((*db)
                ->Execute("SELECT pg_logical_emit_message(true, 'converge:orders', 'not json')")
                .status());
  ASSERT_OK(
      (*db)->Execute("SELECT pg_logical_emit_message(false, 'converge:orders', '{}')").status());
  ASSERT_OK(
      (*db)->Execute("SELECT pg_logical_emit_message(true, 'someone-else', 'ignored')").status());
  ASSERT_OK(EmitOne(**db, "a", 1));
  auto relay = pipeline_->NewRelay(WalOptions());
  ASSERT_TRUE(relay.ok());
  ASSERT_TRUE(RelayUntil(**relay, 1));
  ASSERT_TRUE(Eventually(
      [&] {
        (*relay)->RunOnce().status().IgnoreError();
        return (*relay)->stats().dead_lettered >= 2;
      },
      30'000));
  EXPECT_EQ((*relay)->stats().dead_lettered, 2u);
  auto dl = pipeline_->log->Read("_dlq.outbox", 0, 0, 100, 1 << 20);
  ASSERT_TRUE(dl.ok());
  ASSERT_EQ(dl->records.size(), 2u);
  EXPECT_NE(std::string(dl->records[0].value).find("not json"), std::string::npos);
  EXPECT_NE(std::string(dl->records[1].value).find("not transactional"), std::string::npos);
}

// The relay process killed with SIGKILL at a step, then a new relay: every committed message is
// in the log exactly once.
void KillAtStepThenRecover(WalOutboxTest* t, Pipeline& p, const std::string& conninfo,
                           const std::string& slot, const std::string& point, int events,
                           const std::function<Status(int)>& emit) {
  for (int i = 0; i < events; ++i) ASSERT_OK(emit(i));
  p.CloseLog();
  const std::string marker = p.dir.Sub("paused-" + point);
  pid_t pid = Spawn({OUTBOX_RELAY_HELPER, "--source", conninfo, "--log-dir", p.dir.Sub("log"),
                     "--batch", "10", "--partitions", "1", "--mode", "wal", "--slot", slot,
                     "--pause-at", point, "--pause-hit", "3", "--marker", marker});
  ASSERT_GT(pid, 0);
  ASSERT_TRUE(Eventually([&] { return FileExists(marker); }, 60'000)) << "helper never paused";
  ASSERT_EQ(kill(pid, SIGKILL), 0);
  EXPECT_EQ(WaitExit(pid), 128 + SIGKILL);
  ASSERT_OK(p.OpenLog());
  const uint64_t before = *p.LogEventCount();
  // Killed mid-stream: some batches are in the log (the third one too after relay.published,
  // though the slot never confirmed it), not all.
  EXPECT_GT(before, 0u);
  EXPECT_LT(before, static_cast<uint64_t>(events));
  (void)t;
}

TEST_F(WalOutboxTest, RelayKilledAfterAppendBeforeConfirmThenRecovers) {
  auto db = Connect();
  ASSERT_TRUE(db.ok());
  constexpr int kEvents = 50;
  KillAtStepThenRecover(this, *pipeline_, Conninfo(), slot_, "relay.published", kEvents,
                        [&](int i) { return EmitOne(**db, "k", i); });
  auto relay = pipeline_->NewRelay(WalOptions());
  ASSERT_TRUE(relay.ok());
  ASSERT_TRUE(RelayUntil(**relay, kEvents)) << (*relay)->stats().last_error;
  for (int i = 0; i < 10; ++i) ASSERT_TRUE((*relay)->RunOnce().ok());
  auto events = LogContents();
  ASSERT_EQ(events.size(), static_cast<size_t>(kEvents));  // the re-read batch was deduplicated
  for (int i = 0; i < kEvents; ++i) EXPECT_EQ(events[i].second, i);
  // The relay re-read the unconfirmed batch (published counts the dropped copies too).
  EXPECT_GE((*relay)->stats().published, 20u);
}

TEST_F(WalOutboxTest, RelayKilledAfterReadBeforeAppendThenRecovers) {
  auto db = Connect();
  ASSERT_TRUE(db.ok());
  constexpr int kEvents = 50;
  KillAtStepThenRecover(this, *pipeline_, Conninfo(), slot_, "relay.claimed", kEvents,
                        [&](int i) { return EmitOne(**db, "k", i); });
  auto relay = pipeline_->NewRelay(WalOptions());
  ASSERT_TRUE(relay.ok());
  ASSERT_TRUE(RelayUntil(**relay, kEvents)) << (*relay)->stats().last_error;
  for (int i = 0; i < 10; ++i) ASSERT_TRUE((*relay)->RunOnce().ok());
  auto events = LogContents();
  ASSERT_EQ(events.size(), static_cast<size_t>(kEvents));
  for (int i = 0; i < kEvents; ++i) EXPECT_EQ(events[i].second, i);
}

// PostgreSQL stopped and started while a writer emits and a relay streams: every acknowledged
// commit is in the log once; nothing else is (a commit whose answer was lost may be in it).
TEST_F(WalOutboxTest, PostgresRestartUnderLoad) {
  auto relay = pipeline_->NewRelay(WalOptions());
  ASSERT_TRUE(relay.ok());
  ASSERT_OK((*relay)->Start());
  std::atomic<bool> stop{false};
  std::mutex mu;
  std::set<int64_t> acked, ambiguous;
  std::thread writer([&] {
    int64_t n = 0;
    std::unique_ptr<sql::Database> db;
    while (!stop.load()) {
      if (db == nullptr || !db->healthy()) {
        auto c = Connect();
        if (!c.ok()) {
          std::this_thread::sleep_for(std::chrono::milliseconds(20));
          continue;
        }
        db = std::move(c).value();
      }
      const int64_t mine = n++;
      Status s = EmitOne(*db, "k", mine);
      std::lock_guard<std::mutex> lock(mu);
      (s.ok() ? acked : ambiguous).insert(mine);
    }
  });
  ASSERT_TRUE(Eventually(
      [&] {
        std::lock_guard<std::mutex> lock(mu);
        return acked.size() >= 100;
      },
      60'000));
  ASSERT_OK(server_->Stop());
  ASSERT_OK(server_->Restart());
  ASSERT_TRUE(Eventually(
      [&] {
        std::lock_guard<std::mutex> lock(mu);
        return acked.size() >= 300;
      },
      120'000));
  stop = true;
  writer.join();
  ASSERT_TRUE(Eventually([&] { return *pipeline_->LogEventCount() >= acked.size(); }, 60'000))
      << (*relay)->stats().last_error;
  (*relay)->Stop();
  auto events = LogContents();
  std::set<int64_t> in_log;
  int64_t prev = -1;
  for (const auto& [key, n] : events) {
    EXPECT_TRUE(in_log.insert(n).second) << "duplicate " << n;
    EXPECT_GT(n, prev) << "out of commit order";  // one writer: commit order is n order
    prev = n;
    EXPECT_TRUE(acked.count(n) || ambiguous.count(n)) << n << " was never committed";
  }
  for (int64_t n : acked) EXPECT_TRUE(in_log.count(n)) << "acknowledged " << n << " lost";
  EXPECT_GE((*relay)->stats().failures, 1u);  // it did see the restart
}

// A dropped slot: the relay refuses with a clear error; it never re-creates the slot (which
// would skip what was committed meanwhile).
TEST_F(WalOutboxTest, DroppedSlotIsAClearErrorNotSilentLoss) {
  auto db = Connect();
  ASSERT_TRUE(db.ok());
  ASSERT_OK(EmitOne(**db, "k", 0));
  {
    auto relay = pipeline_->NewRelay(WalOptions());
    ASSERT_TRUE(relay.ok());
    ASSERT_TRUE(RelayUntil(**relay, 1));
  }
  ASSERT_OK(DropWalSlot(Conninfo(), slot_));
  EXPECT_EQ(DropWalSlot(Conninfo(), slot_).code(), StatusCode::kNotFound);
  ASSERT_OK(EmitOne(**db, "k", 1));
  auto relay = pipeline_->NewRelay(WalOptions());
  ASSERT_TRUE(relay.ok());
  auto r = (*relay)->RunOnce();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(r.status().message().find("does not exist"), std::string_view::npos)
      << r.status().ToString();
  EXPECT_NE(r.status().message().find("lost"), std::string_view::npos);
  // Creating it again is an explicit act; it starts at the current end of WAL.
  ASSERT_OK(CreateWalSlot(Conninfo(), slot_, "converge_outbox"));
  EXPECT_EQ(CreateWalSlot(Conninfo(), slot_, "converge_outbox").code(), StatusCode::kAlreadyExists);
}

// The permissions docs/formats/wal-outbox.md names: a service role with no privilege beyond
// LOGIN emits; a relay role with only LOGIN REPLICATION relays.
TEST_F(WalOutboxTest, OrdinaryRoleEmitsAndReplicationRoleRelays) {
  auto admin = Connect();
  ASSERT_TRUE(admin.ok());
  ASSERT_OK(
      (*admin)->ExecuteScript("DO $$ BEGIN CREATE ROLE app LOGIN; EXCEPTION WHEN duplicate_object "
                              "THEN NULL; END $$; DO $$ BEGIN CREATE ROLE relay_only LOGIN "
                              "REPLICATION; EXCEPTION WHEN duplicate_object THEN NULL; END $$;"));
  sql::PostgresOptions o;
  o.conninfo = Conninfo() + " user=app";
  auto app = sql::Database::ConnectPostgres(o);
  ASSERT_TRUE(app.ok()) << app.status().ToString();
  ASSERT_OK(EmitOne(**app, "k", 7));
  pipeline_->service_target.location = Conninfo() + " user=relay_only";
  auto relay = pipeline_->NewRelay(WalOptions());
  ASSERT_TRUE(relay.ok());
  ASSERT_TRUE(RelayUntil(**relay, 1)) << (*relay)->stats().last_error;
  auto events = LogContents();
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].second, 7);
}

// A second relay of the same slot stands by while the first streams.
TEST_F(WalOutboxTest, SecondRelayOfASlotStandsBy) {
  auto a = pipeline_->NewRelay(WalOptions());
  auto b = pipeline_->NewRelay(WalOptions());
  ASSERT_TRUE(a.ok() && b.ok());
  ASSERT_TRUE((*a)->RunOnce().ok());
  auto rb = (*b)->RunOnce();
  ASSERT_TRUE(rb.ok()) << rb.status().ToString();
  EXPECT_EQ(*rb, 0u);
  EXPECT_FALSE((*b)->stats().active);
  EXPECT_TRUE((*a)->stats().active);
}

// An invalidated slot (it fell behind max_slot_wal_keep_size): a clear error naming it.
TEST(WalOutboxInvalidationTest, InvalidatedSlotIsAClearError) {
  testing::PostgresServerOptions o = LogicalServerOptions();
  o.settings.push_back("max_slot_wal_keep_size=16MB");
  o.settings.push_back("max_wal_size=64MB");
  auto server = testing::PostgresServer::Start(o);
  ASSERT_TRUE(server.ok()) << server.status().ToString();
  const std::string conninfo = (*server)->ConnInfo("postgres");
  ASSERT_OK(CreateWalSlot(conninfo, "lagging", "converge_outbox"));
  // Write WAL past the limit, then a checkpoint invalidates the slot.
  for (int i = 0; i < 6; ++i) {
    ASSERT_TRUE((*server)
                    ->Query("postgres",
                            "SELECT pg_logical_emit_message(false, 'filler', repeat('x', "
                            "8000000))")
                    .ok());
    ASSERT_TRUE((*server)->Query("postgres", "SELECT pg_switch_wal()").ok());
  }
  ASSERT_TRUE((*server)->Query("postgres", "CHECKPOINT").ok());
  auto status = (*server)->Query(
      "postgres", "SELECT wal_status FROM pg_replication_slots WHERE slot_name = 'lagging'");
  ASSERT_TRUE(status.ok());
  ASSERT_EQ(*status, "lost") << "the slot was not invalidated; the test cannot check the error";
  Pipeline p(sql::DatabaseTarget{sql::Engine::kPostgres, conninfo},
             sql::DatabaseTarget{sql::Engine::kPostgres, conninfo});
  ASSERT_OK(p.Open(1));
  RelayOptions ro = p.DefaultRelayOptions();
  ro.mode = "wal";
  ro.wal_slot = "lagging";
  auto relay = p.NewRelay(ro);
  ASSERT_TRUE(relay.ok());
  auto r = (*relay)->RunOnce();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(r.status().message().find("invalidated"), std::string_view::npos)
      << r.status().ToString();
}

}  // namespace
}  // namespace converge::outbox_test
