// Unit tests of the outbox module on SQLite: the SQL layer, the outbox writer, the relay's state
// machine, the relay against the real log, the inbox and its consumer, crashes at every step.
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <future>
#include <random>
#include <set>
#include <thread>

#include "converge/sim_env.h"
#include "outbox/lane.h"
#include "outbox/outbox_row.h"
#include "outbox/outbox_test_util.h"
#include "outbox/relay_core.h"
#include "sql/sql_internal.h"

namespace converge::outbox_test {
namespace {

// ---------------------------------------------------------------------------------------
// SQL layer

TEST(SqlTest, RewritesPlaceholdersOutsideQuotesAndComments) {
  EXPECT_EQ(sql::internal::ToSqlitePlaceholders("SELECT $1, '$2', \"$3\" -- $4\n, $10"),
            "SELECT ?1, '$2', \"$3\" -- $4\n, ?10");
  EXPECT_EQ(sql::internal::ToSqlitePlaceholders("x = 'it''s $1' AND y = $2"),
            "x = 'it''s $1' AND y = ?2");
}

TEST(SqlTest, ParsesDatabaseTargets) {
  auto a = sql::ParseDatabaseTarget("sqlite:/tmp/x.db");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->engine, sql::Engine::kSqlite);
  EXPECT_EQ(a->location, "/tmp/x.db");
  auto b = sql::ParseDatabaseTarget("postgres://u@127.0.0.1:5/db");
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->engine, sql::Engine::kPostgres);
  auto c = sql::ParseDatabaseTarget("host=127.0.0.1 dbname=x");
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->engine, sql::Engine::kPostgres);
  EXPECT_EQ(sql::ParseDatabaseTarget("what").status().code(), StatusCode::kInvalidArgument);
}

TEST(SqlTest, SqliteTransactionsCommitOrRollBackWhole) {
  ScratchDir dir;
  sql::SqliteOptions o;
  o.path = dir.Sub("t.db");
  auto db = sql::Database::OpenSqlite(o);
  ASSERT_TRUE(db.ok()) << db.status().ToString();
  ASSERT_OK((*db)->ExecuteScript("CREATE TABLE t (k TEXT PRIMARY KEY, v BLOB)"));
  int committed = 0;
  ASSERT_OK((*db)->Transact([&](sql::Transaction& tx) -> Status {
    sql::Value p[] = {sql::Value::Text("a"), sql::Value::Blob(std::string_view("\0x", 2))};
    CONVERGE_RETURN_IF_ERROR(tx.Execute("INSERT INTO t VALUES ($1, $2)", p).status());
    tx.OnCommit([&] { ++committed; });
    return Status::Ok();
  }));
  EXPECT_EQ(committed, 1);
  Status failed = (*db)->Transact([&](sql::Transaction& tx) -> Status {
    sql::Value p[] = {sql::Value::Text("b"), sql::Value::Null()};
    CONVERGE_RETURN_IF_ERROR(tx.Execute("INSERT INTO t VALUES ($1, $2)", p).status());
    tx.OnCommit([&] { ++committed; });
    sql::Value dup[] = {sql::Value::Text("a"), sql::Value::Null()};
    return tx.Execute("INSERT INTO t VALUES ($1, $2)", dup).status();
  });
  EXPECT_EQ(failed.code(), StatusCode::kAlreadyExists) << failed.ToString();
  EXPECT_EQ(committed, 1);             // the callback of the rolled-back transaction never ran
  EXPECT_EQ(CountRows(**db, "t"), 1);  // "b" was rolled back with it
  std::string blob;
  ASSERT_OK((*db)
                ->Query("SELECT v FROM t WHERE k = 'a'", {},
                        [&](const sql::Row& r) {
                          blob = std::string(r.Bytes(0));
                          return Status::Ok();
                        })
                .status());
  EXPECT_EQ(blob, std::string("\0x", 2));
  EXPECT_EQ((*db)->Execute("SELEKT 1").status().code(), StatusCode::kInvalidArgument);
}

TEST(SqlTest, ASqliteLockHeldByAnotherConnectionIsWaitedForUpToTheBusyTimeout) {
  ScratchDir dir;
  sql::SqliteOptions o;
  o.path = dir.Sub("t.db");
  auto holder = sql::Database::OpenSqlite(o);
  ASSERT_TRUE(holder.ok());
  ASSERT_OK((*holder)->ExecuteScript("CREATE TABLE t (k INTEGER PRIMARY KEY)"));
  o.busy_timeout_ms = 30;
  auto waiter = sql::Database::OpenSqlite(o);
  ASSERT_TRUE(waiter.ok());
  ASSERT_OK((*holder)->Transact([&](sql::Transaction&) -> Status {
    // The holder has the write lock: the waiter retries for its busy timeout, then fails
    // with Unavailable (twice: the budget restarts with each busy statement).
    for (int round = 0; round < 2; ++round) {
      Status s = (*waiter)->Execute("INSERT INTO t VALUES (1)").status();
      EXPECT_EQ(s.code(), StatusCode::kUnavailable) << s.ToString();
    }
    // A timeout of 0 fails at once.
    sql::internal::SqliteSetBusyTimeout(**waiter, 0);
    EXPECT_EQ((*waiter)->Execute("INSERT INTO t VALUES (2)").status().code(),
              StatusCode::kUnavailable);
    return Status::Ok();
  }));
  // Once the lock is free the same connection writes.
  sql::internal::SqliteSetBusyTimeout(**waiter, 1000);
  ASSERT_OK((*waiter)->Execute("INSERT INTO t VALUES (3)").status());
  EXPECT_EQ(CountRows(**holder, "t"), 1);
}

// ---------------------------------------------------------------------------------------
// Outbox writer

TEST(OutboxWriterTest, WritesRowsAndFillsIdsAndTimes) {
  Pipeline p;
  ASSERT_OK(p.Open());
  ASSERT_OK(p.Write(10, 3, 4));
  EXPECT_EQ(CountRows(*p.service, "converge_outbox"), 10);
  EXPECT_EQ(CountRows(*p.service, "orders"), 3);  // 4 + 4 + 2 per transaction
  std::set<std::string> unique(p.ids.begin(), p.ids.end());
  EXPECT_EQ(unique.size(), 10u);
  for (const std::string& id : p.ids) EXPECT_TRUE(Uuid::ParseV7(id).ok()) << id;
  // Sequence order is write order.
  std::vector<std::string> stored;
  ASSERT_OK(p.service
                ->Query("SELECT id, time FROM converge_outbox ORDER BY seq", {},
                        [&](const sql::Row& r) {
                          stored.emplace_back(r.Bytes(0));
                          EXPECT_TRUE(ParseRfc3339Nanos(r.Bytes(1)).ok());
                          return Status::Ok();
                        })
                .status());
  EXPECT_EQ(stored, p.ids);
}

TEST(OutboxWriterTest, AnInvalidEventWritesNothing) {
  Pipeline p;
  ASSERT_OK(p.Open());
  std::vector<Event> events = {MakeEvent("a", 0), MakeEvent("a", 1)};
  events[1].set_type("");
  Status s = p.service->Transact([&](sql::Transaction& tx) -> Status {
    sql::Value v[] = {sql::Value::Text("change")};
    CONVERGE_RETURN_IF_ERROR(tx.Execute("INSERT INTO orders (note) VALUES ($1)", v).status());
    return p.outbox.Write(tx, "orders", std::span<Event>(events));
  });
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("event[1]"), std::string_view::npos) << s.ToString();
  EXPECT_EQ(CountRows(*p.service, "converge_outbox"), 0);
  EXPECT_EQ(CountRows(*p.service, "orders"), 0);  // the business change rolled back too

  Event bad_trace = MakeEvent("a", 0, "not-a-traceparent");
  s = p.service->Transact(
      [&](sql::Transaction& tx) { return p.outbox.Write(tx, "orders", bad_trace); });
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  Event ok = MakeEvent("a", 0);
  s = p.service->Transact([&](sql::Transaction& tx) { return p.outbox.Write(tx, "_x", ok); });
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(CountRows(*p.service, "converge_outbox"), 0);
}

TEST(OutboxWriterTest, RowRoundTripsToTheSameEvent) {
  Pipeline p;
  ASSERT_OK(p.Open());
  Event e = MakeEvent("key-1", 7, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
  e.set_subject("order/7");
  e.SetExtension("tenant", "acme");
  e.SetExtensionInteger("priority", 3);
  e.SetExtensionBoolean("replay", false);
  e.set_tracestate("vendor=x");
  Event bin;
  bin.set_source("/s");
  bin.set_type("blob");
  bin.set_datacontenttype("application/octet-stream");
  bin.SetBinaryData(std::string("\0\1\2\xff", 4));
  Event text;
  text.set_source("/s");
  text.set_type("note");
  text.set_datacontenttype("text/plain");
  ASSERT_OK(text.SetTextData("héllo"));
  std::vector<Event> events = {e, bin, text};
  ASSERT_OK(p.service->Transact([&](sql::Transaction& tx) {
    return p.outbox.Write(tx, "orders", std::span<Event>(events));
  }));
  std::string sql = "SELECT seq, " + std::string(outbox_internal::kColumns) +
                    " FROM converge_outbox ORDER BY seq";
  size_t i = 0;
  ASSERT_OK(p.service
                ->Query(sql, {},
                        [&](const sql::Row& row) -> Status {
                          Event decoded;
                          CONVERGE_RETURN_IF_ERROR(outbox_internal::RowToEvent(row, &decoded));
                          EXPECT_EQ(decoded, events[i]) << i;
                          ++i;
                          return Status::Ok();
                        })
                .status());
  EXPECT_EQ(i, 3u);
}

// ---------------------------------------------------------------------------------------
// Lanes (where the relay's and the consumer's steps run)

TEST(LaneTest, AThreadLaneRunsPostsInOrderWatchesADescriptorAndDropsWorkAfterShutdown) {
  auto lane = outbox_internal::NewThreadLane("test-lane");
  std::mutex mu;
  std::condition_variable cv;
  std::vector<int> ran;
  auto record = [&](int i) {
    std::lock_guard<std::mutex> lock(mu);
    ran.push_back(i);
    cv.notify_all();
  };
  auto wait_for = [&](size_t n) {
    std::unique_lock<std::mutex> lock(mu);
    return cv.wait_for(lock, std::chrono::seconds(30), [&] { return ran.size() >= n; });
  };
  // Posts from another thread and from the lane itself run in order. The lane waits at a
  // gate until both outside posts are queued, so the post made by the first one is third.
  std::promise<void> gate;
  std::shared_future<void> opened = gate.get_future().share();
  lane->Post([opened] { opened.wait(); });
  lane->Post([&] {
    record(1);
    lane->Post([&] { record(3); });
  });
  lane->Post([&] { record(2); });
  gate.set_value();
  ASSERT_TRUE(wait_for(3));
  // A watched descriptor that becomes readable posts its callback once.
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  lane->Post([&] { lane->WatchFd(fds[0], [&] { record(4); }); });
  lane->Post([&] { record(5); });
  ASSERT_TRUE(wait_for(4));
  ASSERT_EQ(write(fds[1], "x", 1), 1);
  ASSERT_TRUE(wait_for(5));
  lane->Post([&] { lane->WatchFd(-1, nullptr); });
  lane->Shutdown();
  lane->Post([&] { record(7); });  // dropped
  {
    std::lock_guard<std::mutex> lock(mu);
    EXPECT_EQ(ran, (std::vector<int>{1, 2, 3, 5, 4}));
  }
  close(fds[0]);
  close(fds[1]);
}

// ---------------------------------------------------------------------------------------
// Relay state machine (simulated clock and random: deterministic)

using Op = outbox_internal::RelayCore::Op;

TEST(RelayCoreTest, WaitsForAWakeUpWhenEmptyAndContinuesAtOnceAfterAFullBatch) {
  sim::SimEnv env(1);
  outbox_internal::RelayCoreOptions o;
  o.poll_interval_ms = 500;
  o.rebalance_interval_ms = 10'000;
  outbox_internal::RelayCore core(env.clock(), env.random(), o);
  EXPECT_EQ(core.next(), Op::kAcquire);
  core.AcquireDone(Status::Ok(), true);
  EXPECT_EQ(core.next(), Op::kClaim);
  core.ClaimDone(Status::Ok(), 0, 0, 0, false);
  ASSERT_EQ(core.next(), Op::kWait);
  EXPECT_FALSE(core.in_backoff());
  EXPECT_EQ(core.wait_until_ns(), env.now_nanos() + 500'000'000);
  core.WaitDone(true);
  EXPECT_EQ(core.next(), Op::kClaim);
  core.ClaimDone(Status::Ok(), 10, 9, 1, /*full=*/true);
  EXPECT_EQ(core.next(), Op::kPublish);
  core.PublishDone(Status::Ok(), 0);
  EXPECT_EQ(core.next(), Op::kDeadLetter);
  core.DeadLetterDone(Status::Ok());
  EXPECT_EQ(core.next(), Op::kRemove);
  core.RemoveDone(Status::Ok());
  EXPECT_EQ(core.next(), Op::kClaim);  // full batch: no wait
  core.ClaimDone(Status::Ok(), 3, 3, 0, false);
  core.PublishDone(Status::Ok(), 0);
  EXPECT_EQ(core.next(), Op::kRemove);
  core.RemoveDone(Status::Ok());
  EXPECT_EQ(core.next(), Op::kWait);  // partial batch: wait (a pending wake-up ends it at once)
}

// An idle relay whose poll wait ends at the rebalance deadline re-takes its lease with a
// rebalance, which sets the next deadline: it must not come back to a deadline already past
// (which made every later idle wait end at once: a relay spinning on empty claims).
TEST(RelayCoreTest, AnIdleRelayKeepsWaitingAfterItsRebalanceDeadline) {
  sim::SimEnv env(1);
  outbox_internal::RelayCoreOptions o;
  o.poll_interval_ms = 500;
  o.rebalance_interval_ms = 1'200;
  outbox_internal::RelayCore core(env.clock(), env.random(), o);
  ASSERT_EQ(core.next(), Op::kAcquire);
  core.AcquireDone(Status::Ok(), true);
  int rebalances = 0;
  for (int i = 0; i < 20; ++i) {
    ASSERT_EQ(core.next(), Op::kClaim);
    core.ClaimDone(Status::Ok(), 0, 0, 0, false);
    ASSERT_EQ(core.next(), Op::kWait);
    ASSERT_GT(core.wait_until_ns(), env.now_nanos()) << "idle wait " << i << " ends at once";
    env.AdvanceTime(core.wait_until_ns() - env.now_nanos());
    core.WaitDone(false);
    if (core.next() == Op::kAcquire) {
      EXPECT_TRUE(core.rebalance());
      ++rebalances;
      core.AcquireDone(Status::Ok(), true);
    }
  }
  EXPECT_GE(rebalances, 5);
}

TEST(RelayCoreTest, LingersAfterABusyPartialBatchOnlyAndIgnoresWakeUpsMeanwhile) {
  sim::SimEnv env(1);
  outbox_internal::RelayCoreOptions o;
  o.poll_interval_ms = 500;
  o.rebalance_interval_ms = 10'000;
  o.linger_us = 2'000;
  o.linger_min_rows = 64;
  outbox_internal::RelayCore core(env.clock(), env.random(), o);
  core.AcquireDone(Status::Ok(), true);
  // A small batch (quiet outbox): the usual wait, which a wake-up ends.
  core.ClaimDone(Status::Ok(), 5, 5, 0, false);
  core.PublishDone(Status::Ok(), 0);
  core.RemoveDone(Status::Ok());
  ASSERT_EQ(core.next(), Op::kWait);
  EXPECT_FALSE(core.ignores_wakeups());
  EXPECT_EQ(core.wait_until_ns(), env.now_nanos() + 500'000'000);
  core.WaitDone(true);
  // A busy partial batch: a short linger that wake-ups do not end.
  core.ClaimDone(Status::Ok(), 64, 64, 0, false);
  core.PublishDone(Status::Ok(), 0);
  core.RemoveDone(Status::Ok());
  ASSERT_EQ(core.next(), Op::kWait);
  EXPECT_TRUE(core.ignores_wakeups());
  EXPECT_FALSE(core.in_backoff());
  EXPECT_EQ(core.wait_until_ns(), env.now_nanos() + 2'000'000);
  core.WaitDone(false);
  EXPECT_EQ(core.next(), Op::kClaim);
  EXPECT_FALSE(core.ignores_wakeups());
  // A full batch never lingers.
  core.ClaimDone(Status::Ok(), 1000, 1000, 0, true);
  core.PublishDone(Status::Ok(), 0);
  core.RemoveDone(Status::Ok());
  EXPECT_EQ(core.next(), Op::kClaim);
}

TEST(RelayCoreTest, FailuresBackOffWithFullJitterUnderADoublingCap) {
  sim::SimEnv env(7);
  outbox_internal::RelayCoreOptions o;
  o.retry_base_delay_ms = 10;
  o.retry_max_delay_ms = 80;
  outbox_internal::RelayCore core(env.clock(), env.random(), o);
  std::vector<int64_t> caps;
  for (int i = 0; i < 6; ++i) {
    caps.push_back(core.current_backoff_cap_ms());
    core.AcquireDone(UnavailableError("db down"), false);
    ASSERT_EQ(core.next(), Op::kWait);
    EXPECT_TRUE(core.in_backoff());
    int64_t delay = core.wait_until_ns() - env.now_nanos();
    EXPECT_GE(delay, 0);
    EXPECT_LE(delay, caps.back() * 1'000'000);
    env.AdvanceTime(delay);
    core.WaitDone(false);
    EXPECT_EQ(core.next(), Op::kAcquire);
    EXPECT_TRUE(core.rebalance());
  }
  EXPECT_EQ(caps, (std::vector<int64_t>{10, 20, 40, 80, 80, 80}));
  core.AcquireDone(Status::Ok(), true);
  core.ClaimDone(Status::Ok(), 0, 0, 0, false);
  EXPECT_EQ(core.current_backoff_cap_ms(), 10);  // a success resets the cap
}

TEST(RelayCoreTest, AStandbyRelayRetriesTheLeaseAndErrorsRestartTheCycle) {
  sim::SimEnv env(3);
  outbox_internal::RelayCoreOptions o;
  o.standby_retry_ms = 250;
  outbox_internal::RelayCore core(env.clock(), env.random(), o);
  core.AcquireDone(Status::Ok(), false);
  ASSERT_EQ(core.next(), Op::kWait);
  EXPECT_EQ(core.wait_until_ns(), env.now_nanos() + 250'000'000);
  core.WaitDone(false);
  EXPECT_EQ(core.next(), Op::kAcquire);
  core.AcquireDone(Status::Ok(), true);
  core.ClaimDone(Status::Ok(), 5, 5, 0, false);
  core.PublishDone(InternalError("log failed"), 0);
  ASSERT_EQ(core.next(), Op::kWait);  // backoff, then re-acquire and re-claim
  env.AdvanceTime(core.wait_until_ns() - env.now_nanos());
  core.WaitDone(false);
  EXPECT_EQ(core.next(), Op::kAcquire);
}

// ---------------------------------------------------------------------------------------
// Relay on SQLite

TEST(RelayTest, PublishesEveryRowInOrderPerKeyAndEmptiesTheOutbox) {
  Pipeline p;
  ASSERT_OK(p.Open());
  ASSERT_OK(p.Write(500, 7, 50));
  RelayOptions ro = p.DefaultRelayOptions();
  ro.batch_max_events = 64;
  auto relay = p.NewRelay(ro);
  ASSERT_TRUE(relay.ok());
  auto n = (*relay)->Drain(1000);
  ASSERT_TRUE(n.ok()) << n.status().ToString();
  EXPECT_EQ(*n, 500u);
  EXPECT_EQ(CountRows(*p.service, "converge_outbox"), 0);
  EXPECT_EQ(*p.LogEventCount(), 500u);
  // Per key, the log holds n = 0, 1, 2, ... in offset order.
  std::map<std::string, int64_t> expect;
  for (uint32_t part = 0; part < 4; ++part) {
    auto batch = p.log->Read(p.topic, part, 0, 10'000, 64u << 20);
    ASSERT_TRUE(batch.ok());
    for (const StoredRecord& r : batch->records) {
      auto e = DecodeBinary(r.value);
      ASSERT_TRUE(e.ok());
      EXPECT_EQ(r.id, EventIdentity(*e));  // (source, id), as an HTTP publish stores it
      EXPECT_EQ(r.key, *e->partitionkey());
      EXPECT_EQ(EventNumber(*e), expect[std::string(r.key)]++) << r.key;
    }
  }
  EXPECT_EQ((*relay)->stats().published, 500u);
}

TEST(RelayTest, AMalformedRowGoesToTheDeadLettersWithItsReasonAndTheRelayKeepsGoing) {
  Pipeline p;
  ASSERT_OK(p.Open());
  ASSERT_OK(p.Write(3, 1, 3));
  // Rows written by hand, as another language might: a bad time and invalid JSON data.
  ASSERT_OK(p.service->ExecuteScript(
      "INSERT INTO converge_outbox (id, topic, partition_key, source, type, time, data_kind, "
      "data) VALUES ('bad-1', 'orders', 'k0', '/s', 't', 'yesterday', NULL, NULL);"
      "INSERT INTO converge_outbox (id, topic, partition_key, source, type, data_kind, data) "
      "VALUES ('bad-2', 'orders', 'k0', '/s', 't', 'json', '{oops');"
      "INSERT INTO converge_outbox (id, topic, source, type) "
      "VALUES ('bad-3', '_internal', '/s', 't');"));
  ASSERT_OK(p.Write(2, 1, 2));
  auto relay = p.NewRelay();
  ASSERT_TRUE(relay.ok());
  auto n = (*relay)->Drain(100);
  ASSERT_TRUE(n.ok()) << n.status().ToString();
  EXPECT_EQ(*n, 8u);
  EXPECT_EQ(CountRows(*p.service, "converge_outbox"), 0);
  EXPECT_EQ(*p.LogEventCount(), 5u);
  EXPECT_EQ((*relay)->stats().dead_lettered, 3u);
  auto dlq = p.log->Read("_dlq.outbox", 0, 0, 100, 1u << 20);
  ASSERT_TRUE(dlq.ok()) << dlq.status().ToString();
  ASSERT_EQ(dlq->records.size(), 3u);
  // One dead letter per row: ids by relay and row, never by the (possibly shared) event id.
  std::set<std::string> dead_ids;
  for (const StoredRecord& r : dlq->records) {
    EXPECT_EQ(r.id.substr(0, 11), "outbox-row:") << r.id;
    dead_ids.insert(std::string(r.id));
  }
  EXPECT_EQ(dead_ids.size(), 3u);
  EXPECT_NE(dlq->records[0].value.find("time"), std::string_view::npos);
  EXPECT_NE(dlq->records[0].value.find("yesterday"), std::string_view::npos);
  EXPECT_NE(dlq->records[1].value.find("data"), std::string_view::npos);
  EXPECT_NE(dlq->records[2].value.find("topic"), std::string_view::npos);
  // The good events of the same key all arrived, in order.
  auto c = p.NewConsumer();
  ASSERT_TRUE(c.ok());
  ASSERT_TRUE(Pipeline::DrainConsumer(**c).ok());
  EffectSummary e = SummarizeEffects(*p.consumer);
  EXPECT_EQ(e.rows, 5);
  EXPECT_EQ(e.violations, 0);
}

// Deduplication identity is (source, id) on every path: the relay's record id is the same as
// an HTTP publish's, and two sources' events with equal ids are two events for the log and the
// inbox.
TEST(RelayTest, EqualIdsOfDifferentSourcesAreDistinctEventsForTheLogAndTheInbox) {
  Pipeline p;
  ASSERT_OK(p.Open());
  std::vector<Event> events = {MakeEvent("", 0), MakeEvent("", 1), MakeEvent("", 2)};
  events[0].set_id("same-id");
  events[0].set_source("/orders");
  events[1].set_id("same-id");
  events[1].set_source("/billing");
  events[2].set_id("same-id");
  events[2].set_source("/orders");  // a true duplicate of events[0]
  ASSERT_OK(p.service->Transact(
      [&](sql::Transaction& tx) { return p.outbox.Write(tx, p.topic, std::span<Event>(events)); }));
  auto relay = p.NewRelay();
  ASSERT_TRUE(relay.ok());
  ASSERT_TRUE((*relay)->Drain(10).ok());
  EXPECT_EQ(*p.LogEventCount(), 2u);

  std::vector<std::string> handled;
  auto c = p.NewConsumer(p.DefaultConsumerOptions(),
                         [&](sql::Transaction&, const InboxMessage& m) -> Status {
                           handled.push_back(m.event.source() + " " + m.event.id());
                           return Status::Ok();
                         });
  ASSERT_TRUE(c.ok());
  ASSERT_TRUE(Pipeline::DrainConsumer(**c).ok());
  std::sort(handled.begin(), handled.end());
  EXPECT_EQ(handled, (std::vector<std::string>{"/billing same-id", "/orders same-id"}));
  EXPECT_EQ(CountRows(*p.consumer, "converge_inbox"), 2);

  // Recorded by identity: the same id of another source is new, the same pair is not.
  InboxOptions by_hand;
  by_hand.consumer = "by-hand";
  Inbox inbox(p.env, by_hand);
  ASSERT_OK(p.consumer->Transact([&](sql::Transaction& tx) -> Status {
    for (const auto& [e, fresh] :
         {std::pair{&events[0], true}, std::pair{&events[1], true}, std::pair{&events[2], false}}) {
      Result<bool> r = inbox.Record(tx, EventIdentity(*e));
      if (!r.ok()) return r.status();
      EXPECT_EQ(*r, fresh) << e->source();
    }
    return Status::Ok();
  }));
}

TEST(RelayTest, ARecordTheLogRefusesIsDeadLetteredAndTheRestPublished) {
  Pipeline p;
  ASSERT_OK(p.Open());
  TopicOptions small;
  small.max_record_bytes = 300;
  ASSERT_OK(p.faulty->CreateTopic("small", small));
  std::vector<Event> events = {MakeEvent("a", 0), MakeEvent("a", 1), MakeEvent("a", 2)};
  ASSERT_OK(events[1].SetJsonData("\"" + std::string(1000, 'x') + "\""));
  ASSERT_OK(p.service->Transact(
      [&](sql::Transaction& tx) { return p.outbox.Write(tx, "small", std::span<Event>(events)); }));
  auto relay = p.NewRelay();
  ASSERT_TRUE(relay.ok());
  ASSERT_TRUE((*relay)->Drain(10).ok());
  auto info = p.log->DescribeTopic("small");
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->partitions[0].end_offset, 2u);
  EXPECT_EQ((*relay)->stats().dead_lettered, 1u);
  EXPECT_EQ(CountRows(*p.service, "converge_outbox"), 0);
}

TEST(RelayTest, ASecondRelayStandsByAndTakesOverWhenTheFirstGoes) {
  Pipeline p;
  ASSERT_OK(p.Open());
  ASSERT_OK(p.Write(20, 2, 10));
  auto first = p.NewRelay();
  auto second = p.NewRelay();
  ASSERT_TRUE(first.ok() && second.ok());
  auto a = (*first)->RunOnce();
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(*a, 20u);
  ASSERT_OK(p.Write(5, 2, 5));
  auto b = (*second)->RunOnce();
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(*b, 0u);  // standby: the first holds the outbox
  EXPECT_FALSE((*second)->stats().active);
  first->reset();  // the first exits (or dies): its lock goes with it
  b = (*second)->RunOnce();
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(*b, 5u);
  EXPECT_EQ(*p.LogEventCount(), 25u);
}

TEST(RelayTest, LogFailuresAreRetriedAndNothingIsLost) {
  Pipeline p;
  ASSERT_OK(p.Open());
  ASSERT_OK(p.Write(10, 2, 10));
  auto relay = p.NewRelay();
  ASSERT_TRUE(relay.ok());
  p.faulty->FailAppends(p.topic, true);
  auto r = (*relay)->RunOnce();
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable);
  EXPECT_EQ(CountRows(*p.service, "converge_outbox"), 10);  // nothing deleted
  p.faulty->FailAppends(p.topic, false);
  r = (*relay)->Drain(10);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(*r, 10u);
  EXPECT_EQ(*p.LogEventCount(), 10u);
}

TEST(RelayTest, AFailingDeadLetterAppendKeepsTheRowUntilItSucceeds) {
  Pipeline p;
  ASSERT_OK(p.Open());
  ASSERT_OK(
      p.service->ExecuteScript("INSERT INTO converge_outbox (id, topic, source, type, time) "
                               "VALUES ('bad', 'orders', '/s', 't', 'never')"));
  auto relay = p.NewRelay();
  ASSERT_TRUE(relay.ok());
  p.faulty->FailAppends("_dlq.outbox", true);
  EXPECT_FALSE((*relay)->RunOnce().ok());
  EXPECT_EQ(CountRows(*p.service, "converge_outbox"), 1);  // blocked, not dropped
  p.faulty->FailAppends("_dlq.outbox", false);
  auto r = (*relay)->Drain(10);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(CountRows(*p.service, "converge_outbox"), 0);
  EXPECT_EQ((*relay)->stats().dead_lettered, 1u);
}

// Waits (bounded) until `done` holds; the relay thread signals through the log watch.
template <typename Pred>
bool WaitUntil(std::mutex& mu, std::condition_variable& cv, Pred done, int64_t timeout_ms) {
  std::unique_lock<std::mutex> lock(mu);
  return cv.wait_for(lock, std::chrono::milliseconds(timeout_ms), done);
}

// An idle relay looks at its outbox once per poll interval, also after its rebalance deadline
// passed (before the fix it then claimed in a busy loop: thousands of polls a second).
TEST(RelayTest, AnIdleRelayPollsAtItsIntervalNotInALoop) {
  Pipeline p;
  ASSERT_OK(p.Open(1));
  RelayOptions ro = p.DefaultRelayOptions();
  ro.poll_interval_ms = 200;
  ro.rebalance_interval_ms = 50;
  auto relay = p.NewRelay(ro);
  ASSERT_TRUE(relay.ok());
  ASSERT_OK((*relay)->Start());
  std::this_thread::sleep_for(std::chrono::milliseconds(1'000));  // only an upper bound is checked
  (*relay)->Stop();
  EXPECT_LE((*relay)->stats().polls, 40u);
}

TEST(RelayTest, AWriterCommitWakesTheRelayWithoutWaitingForThePoll) {
  Pipeline p;
  ASSERT_OK(p.Open(1));
  RelayOptions ro = p.DefaultRelayOptions();
  ro.poll_interval_ms = 3'600'000;  // an hour: only the wake-up can explain fast delivery
  auto relay = p.NewRelay(ro);
  ASSERT_TRUE(relay.ok());
  std::mutex mu;
  std::condition_variable cv;
  uint64_t end = 0;
  auto watch = p.log->WatchAppends(p.topic, [&](uint32_t, uint64_t e) {
    std::lock_guard<std::mutex> lock(mu);
    end = e;
    cv.notify_all();
  });
  ASSERT_TRUE(watch.ok());
  ASSERT_OK((*relay)->Start());
  for (int round = 1; round <= 5; ++round) {
    ASSERT_OK(p.Write(1, 1, 1));
    EXPECT_TRUE(WaitUntil(
        mu, cv, [&] { return end >= static_cast<uint64_t>(round); }, 30'000))
        << "round " << round;
  }
  (*relay)->Stop();
  EXPECT_EQ((*relay)->stats().polls, 0u);
  EXPECT_GE((*relay)->stats().wakeups, 1u);
}

// ---------------------------------------------------------------------------------------
// Inbox

TEST(InboxTest, RecordsEachIdOnceAndCleansUpByAgeAndCount) {
  ScratchDir dir;
  sql::SqliteOptions so;
  so.path = dir.Sub("c.db");
  auto db = sql::Database::OpenSqlite(so);
  ASSERT_TRUE(db.ok());
  ASSERT_OK(Inbox::CreateSchema(**db));
  sim::SimEnv env(5);
  InboxOptions o;
  o.consumer = "c1";
  o.retention_ms = 1000;
  o.retention_max_ids = 50;
  o.cleanup_batch_rows = 7;
  Inbox inbox(env, o);
  std::vector<bool> fresh;
  ASSERT_OK((*db)->Transact([&](sql::Transaction& tx) -> Status {
    for (const char* id : {"a", "b", "a"}) {
      CONVERGE_ASSIGN_OR_RETURN(bool f, inbox.Record(tx, id));
      fresh.push_back(f);
    }
    return Status::Ok();
  }));
  EXPECT_EQ(fresh, (std::vector<bool>{true, true, false}));
  // 100 more ids, one per 10 ms.
  for (int i = 0; i < 100; ++i) {
    env.AdvanceTime(10'000'000);
    ASSERT_OK((*db)->Transact(
        [&](sql::Transaction& tx) { return inbox.Record(tx, Numbered("id", i)).status(); }));
  }
  // Age: "a", "b" and the first ids are older than 1 s; count: at most 50 stay.
  auto deleted = inbox.Cleanup(**db, 1'000'000);
  ASSERT_TRUE(deleted.ok()) << deleted.status().ToString();
  EXPECT_EQ(CountRows(**db, "converge_inbox"), 50);
  EXPECT_EQ(*deleted, 52u);
  // The newest survive.
  bool newest = false;
  ASSERT_OK((*db)->Transact([&](sql::Transaction& tx) -> Status {
    CONVERGE_ASSIGN_OR_RETURN(bool f, inbox.Record(tx, "id99"));
    newest = !f;
    return Status::Ok();
  }));
  EXPECT_TRUE(newest);
  // A bounded round deletes at most its budget.
  env.AdvanceTime(10'000'000'000);
  deleted = inbox.Cleanup(**db, 10);
  ASSERT_TRUE(deleted.ok());
  EXPECT_LE(*deleted, 14u);  // budget reached within one statement of 7 rows
  EXPECT_GE(*deleted, 10u);
}

TEST(InboxTest, RecordBatchTellsNewFromKnownIdsAndKeepsOnlyTheNewOnes) {
  ScratchDir dir;
  sql::SqliteOptions so;
  so.path = dir.Sub("c.db");
  auto db = sql::Database::OpenSqlite(so);
  ASSERT_TRUE(db.ok());
  ASSERT_OK(Inbox::CreateSchema(**db));
  sim::SimEnv env(6);
  InboxOptions o;
  o.consumer = "c1";
  Inbox inbox(env, o);
  // 300 ids (statements of 256 + 32 + 8 + 4 rows), all new: the fast path.
  std::vector<std::string> first;
  for (int i = 0; i < 300; ++i) first.push_back(Numbered("e", i));
  std::vector<std::string_view> views(first.begin(), first.end());
  std::vector<bool> fresh;
  ASSERT_OK(
      (*db)->Transact([&](sql::Transaction& tx) { return inbox.RecordBatch(tx, views, &fresh); }));
  EXPECT_EQ(fresh, std::vector<bool>(300, true));
  EXPECT_EQ(CountRows(**db, "converge_inbox"), 300);
  // Known ids among new ones, the known one in the last statement: the new ones are recorded
  // once, the known ones reported, nothing doubled.
  std::vector<std::string> second;
  for (int i = 290; i < 590; ++i) second.push_back(Numbered("e", i));
  second.push_back("e7");
  views.assign(second.begin(), second.end());
  ASSERT_OK(
      (*db)->Transact([&](sql::Transaction& tx) { return inbox.RecordBatch(tx, views, &fresh); }));
  ASSERT_EQ(fresh.size(), 301u);
  for (size_t i = 0; i < fresh.size(); ++i) {
    EXPECT_EQ(fresh[i], i >= 10 && i < 300) << second[i];
  }
  EXPECT_EQ(CountRows(**db, "converge_inbox"), 590);
  // The same in a transaction that then rolls back: nothing stays.
  views.assign(first.begin(), first.begin() + 5);
  std::string extra = "new-1";
  views.push_back(extra);
  Status s = (*db)->Transact([&](sql::Transaction& tx) -> Status {
    CONVERGE_RETURN_IF_ERROR(inbox.RecordBatch(tx, views, &fresh));
    return AbortedError("roll back");
  });
  EXPECT_EQ(s.code(), StatusCode::kAborted);
  EXPECT_EQ(fresh, (std::vector<bool>{false, false, false, false, false, true}));
  EXPECT_EQ(CountRows(**db, "converge_inbox"), 590);
}

TEST(InboxTest, TheHandlerRunsOnceAndSeesTheTraceparent) {
  Pipeline p;
  ASSERT_OK(p.Open());
  const std::string tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
  ASSERT_OK(p.Write(40, 4, 10, tp));
  auto relay = p.NewRelay();
  ASSERT_TRUE(relay.ok());
  ASSERT_TRUE((*relay)->Drain(100).ok());
  auto c = p.NewConsumer();
  ASSERT_TRUE(c.ok());
  auto n = Pipeline::DrainConsumer(**c);
  ASSERT_TRUE(n.ok()) << n.status().ToString();
  EXPECT_EQ(*n, 40u);
  EffectSummary e = SummarizeEffects(*p.consumer);
  EXPECT_EQ(e.rows, 40);
  EXPECT_EQ(e.max_applied, 1);
  EXPECT_EQ(e.violations, 0);
  int64_t traced = -1;
  sql::Value q[] = {sql::Value::Text(tp)};
  ASSERT_OK(p.consumer
                ->Query("SELECT count(*) FROM effects WHERE traceparent = $1", q,
                        [&](const sql::Row& r) {
                          traced = *r.Int(0);
                          return Status::Ok();
                        })
                .status());
  EXPECT_EQ(traced, 40);
}

TEST(InboxTest, RetryableFailuresAreRetriedAndPermanentOnesDeadLetteredWithoutBlockingOthers) {
  Pipeline p;
  ASSERT_OK(p.Open(1));
  ASSERT_OK(p.Write(12, 3, 12));  // keys k0, k1, k2; 4 events each
  auto relay = p.NewRelay();
  ASSERT_TRUE(relay.ok());
  ASSERT_TRUE((*relay)->Drain(10).ok());
  // k1's first event fails twice (retryable), then works; k2's second event is rejected.
  std::map<std::string, int> attempts;
  InboxHandler handler = [&](sql::Transaction& tx, const InboxMessage& m) -> Status {
    std::string key(m.event.partitionkey().value_or(""));
    int64_t n = EventNumber(m.event);
    if (key == "k1" && n == 0 && ++attempts["k1-0"] <= 2) return UnavailableError("flaky");
    if (key == "k2" && n == 1) return InvalidArgumentError("order 1 of k2 is invalid");
    return ApplyEffect(tx, m);
  };
  InboxConsumerOptions o = p.DefaultConsumerOptions();
  o.group_options.max_deliveries = 5;
  auto c = p.NewConsumer(o, handler);
  ASSERT_TRUE(c.ok());
  // Retries are delayed (up to 10 ms here): run until everything settled.
  for (int i = 0; i < 2000 && SummarizeEffects(*p.consumer).rows < 11; ++i) {
    ASSERT_TRUE((*c)->RunOnce().ok());
  }
  EffectSummary e = SummarizeEffects(*p.consumer);
  EXPECT_EQ(e.rows, 11);  // all but the rejected one
  EXPECT_EQ(e.max_applied, 1);
  EXPECT_EQ(attempts["k1-0"], 3);
  // k2's events after the rejected one still ran (in order: n = 2 follows n = 0 there).
  EXPECT_EQ(e.violations, 1);  // the gap left by the dead-lettered k2/1
  auto dl = p.groups->ListDeadLetters(p.topic, "billing", 0, 10);
  ASSERT_TRUE(dl.ok()) << dl.status().ToString();
  ASSERT_EQ(dl->dead_letters.size(), 1u);
  EXPECT_NE(dl->dead_letters[0].reason.find("order 1 of k2 is invalid"), std::string::npos);
  EXPECT_EQ((*c)->stats().retried, 2u);
  EXPECT_EQ((*c)->stats().dead_lettered, 1u);
}

TEST(InboxTest, APoisonEventIsDeadLetteredAtOnce) {
  Pipeline p;
  ASSERT_OK(p.Open(1));
  RecordView poison{"poison-1", "k0", "\x01garbage", 0};
  ASSERT_TRUE(p.log->Append(p.topic, std::span<const RecordView>(&poison, 1)).ok());
  ASSERT_OK(p.Write(2, 1, 2));
  auto relay = p.NewRelay();
  ASSERT_TRUE(relay.ok());
  ASSERT_TRUE((*relay)->Drain(10).ok());
  auto c = p.NewConsumer();
  ASSERT_TRUE(c.ok());
  ASSERT_TRUE(Pipeline::DrainConsumer(**c).ok());
  EXPECT_EQ(SummarizeEffects(*p.consumer).rows, 2);
  auto dl = p.groups->ListDeadLetters(p.topic, "billing", 0, 10);
  ASSERT_TRUE(dl.ok());
  ASSERT_EQ(dl->dead_letters.size(), 1u);
  EXPECT_EQ(dl->dead_letters[0].id, "poison-1");
  EXPECT_NE(dl->dead_letters[0].reason.find("undecodable"), std::string::npos);
}

TEST(InboxTest, WhenTheDeadLetterCannotBeWrittenTheEventBlocksItsKeyInsteadOfBeingDropped) {
  Pipeline p;
  ASSERT_OK(p.Open(1));
  ASSERT_OK(p.Write(4, 2, 4));  // k0: 0, 1; k1: 0, 1
  auto relay = p.NewRelay();
  ASSERT_TRUE(relay.ok());
  ASSERT_TRUE((*relay)->Drain(10).ok());
  bool reject = true;
  InboxHandler handler = [&](sql::Transaction& tx, const InboxMessage& m) -> Status {
    if (reject && *m.event.partitionkey() == "k0" && EventNumber(m.event) == 0) {
      return FailedPreconditionError("cannot apply");
    }
    return ApplyEffect(tx, m);
  };
  InboxConsumerOptions o = p.DefaultConsumerOptions();
  o.group_options.dead_letter_retry_ms = 1;
  // The group (and its dead-letter topic) exists before the consumer starts.
  ASSERT_OK(p.groups->CreateGroup(p.topic, o.group, o.group_options));
  auto c = p.NewConsumer(o, handler);
  ASSERT_TRUE(c.ok());
  p.faulty->FailAppends(DefaultDeadLetterTopic(p.topic, "billing"), true);
  for (int i = 0; i < 50; ++i) ASSERT_TRUE((*c)->RunOnce().ok());
  EffectSummary e = SummarizeEffects(*p.consumer);
  // k1 went through; k0/0 could not be dead-lettered, so k0/1 waits behind it.
  std::set<std::string> applied;
  ASSERT_OK(p.consumer
                ->Query("SELECT key, n FROM effects", {},
                        [&](const sql::Row& r) {
                          applied.insert(std::string(r.Bytes(0)) + "/" + std::to_string(*r.Int(1)));
                          return Status::Ok();
                        })
                .status());
  EXPECT_EQ(applied, (std::set<std::string>{"k1/0", "k1/1"}));
  auto desc = p.groups->DescribeGroup(p.topic, "billing");
  ASSERT_TRUE(desc.ok());
  EXPECT_EQ(desc->partitions[0].dead_letter_pending, 1u);
  // The dead-letter topic heals: the group appends it and k0/1 flows.
  p.faulty->FailAppends(DefaultDeadLetterTopic(p.topic, "billing"), false);
  reject = false;
  // The dead-letter retry is due 1 ms after the failure on the real clock, so loop until a
  // deadline rather than for a count of rounds (a fast round can take less than 1 ms).
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (SummarizeEffects(*p.consumer).rows < 3 && std::chrono::steady_clock::now() < deadline) {
    ASSERT_OK(p.groups->Tick());
    ASSERT_TRUE((*c)->RunOnce().ok());
  }
  e = SummarizeEffects(*p.consumer);
  EXPECT_EQ(e.rows, 3);
  auto dl = p.groups->ListDeadLetters(p.topic, "billing", 0, 10);
  ASSERT_TRUE(dl.ok());
  EXPECT_EQ(dl->dead_letters.size(), 1u);
}

TEST(InboxTest, ADatabaseFailureHoldsTheEventsAndRetriesThem) {
  Pipeline p;
  ASSERT_OK(p.Open(1));
  ASSERT_OK(p.Write(6, 2, 6));
  auto relay = p.NewRelay();
  ASSERT_TRUE(relay.ok());
  ASSERT_TRUE((*relay)->Drain(10).ok());
  InboxConsumerOptions o = p.DefaultConsumerOptions();
  o.sqlite_busy_timeout_ms = 50;
  auto c = p.NewConsumer(o);
  ASSERT_TRUE(c.ok());
  // Hold the SQLite write lock from another connection: the consumer's BEGIN IMMEDIATE fails
  // with Unavailable (busy) after its busy timeout.
  sql::SqliteOptions lo;
  lo.path = p.consumer_target.location;
  lo.busy_timeout_ms = 0;
  auto locker = sql::Database::OpenSqlite(lo);
  ASSERT_TRUE(locker.ok());
  std::mutex mu;
  std::condition_variable cv;
  bool release = false, locked = false;
  std::thread holder([&] {
    Status s = (*locker)->Transact([&](sql::Transaction&) -> Status {
      std::unique_lock<std::mutex> lock(mu);
      locked = true;
      cv.notify_all();
      cv.wait(lock, [&] { return release; });
      return Status::Ok();
    });
    EXPECT_TRUE(s.ok());
  });
  {
    std::unique_lock<std::mutex> lock(mu);
    cv.wait(lock, [&] { return locked; });
  }
  auto r = (*c)->RunOnce();
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable) << r.status().ToString();
  EXPECT_EQ((*c)->stats().db_failures, 1u);
  {
    std::lock_guard<std::mutex> lock(mu);
    release = true;
    cv.notify_all();
  }
  holder.join();
  auto n = Pipeline::DrainConsumer(**c);
  ASSERT_TRUE(n.ok()) << n.status().ToString();
  EffectSummary e = SummarizeEffects(*p.consumer);
  EXPECT_EQ(e.rows, 6);
  EXPECT_EQ(e.max_applied, 1);
  EXPECT_EQ((*c)->stats().retried, 0u);  // a database failure is not the events' fault
}

// ---------------------------------------------------------------------------------------
// Crashes at every step: every committed change reaches the consumer exactly once.

struct CrashCase {
  const char* point;
  int hit;
};

class CrashTest : public ::testing::TestWithParam<CrashCase> {};

TEST_P(CrashTest, EveryCommittedChangeIsAppliedExactlyOnce) {
  const CrashCase c = GetParam();
  Pipeline p;
  ASSERT_OK(p.Open());
  ASSERT_OK(p.Write(200, 5, 20));
  FaultInjector faults;
  faults.Arm(c.point, c.hit);
  const bool relay_fault = std::string_view(c.point).substr(0, 5) == "relay";

  RelayOptions ro = p.DefaultRelayOptions();
  ro.batch_max_events = 50;
  ro.publish_chunk_max_events = 20;  // several chunks per batch: a crash can land mid-batch
  if (relay_fault) ro.fault_point = faults.Hook();
  auto relay = p.NewRelay(ro);
  ASSERT_TRUE(relay.ok());
  auto drained = (*relay)->Drain(100);
  if (relay_fault) {
    ASSERT_FALSE(drained.ok());
    EXPECT_EQ(faults.fired(), 1);
    EXPECT_FALSE((*relay)->RunOnce().ok());  // dead stays dead
    relay->reset();                          // the process is gone; a new relay starts
    ro.fault_point = nullptr;
    relay = p.NewRelay(ro);
    ASSERT_TRUE(relay.ok());
    drained = (*relay)->Drain(100);
  }
  ASSERT_TRUE(drained.ok()) << drained.status().ToString();
  EXPECT_EQ(CountRows(*p.service, "converge_outbox"), 0);
  EXPECT_EQ(*p.LogEventCount(), 200u);  // republished rows were dropped as duplicates

  InboxConsumerOptions co = p.DefaultConsumerOptions();
  co.fetch_max_events = 32;
  if (!relay_fault) co.fault_point = faults.Hook();
  auto consumer = p.NewConsumer(co);
  ASSERT_TRUE(consumer.ok());
  auto settled = Pipeline::DrainConsumer(**consumer);
  if (!relay_fault) {
    ASSERT_FALSE(settled.ok());
    EXPECT_EQ(faults.fired(), 1);
    // The consumer's process dies; the embedded log and groups restart with it.
    consumer->reset();
    p.CloseLog();
    ASSERT_OK(p.OpenLog());
    co = p.DefaultConsumerOptions();
    consumer = p.NewConsumer(co);
    ASSERT_TRUE(consumer.ok());
    settled = Pipeline::DrainConsumer(**consumer);
  }
  ASSERT_TRUE(settled.ok()) << settled.status().ToString();
  EffectSummary e = SummarizeEffects(*p.consumer);
  EXPECT_EQ(e.rows, 200);
  EXPECT_EQ(e.applied_sum, 200);
  EXPECT_EQ(e.max_applied, 1);
  EXPECT_EQ(e.violations, 0);
}

INSTANTIATE_TEST_SUITE_P(
    Steps, CrashTest,
    ::testing::Values(CrashCase{"relay.claimed", 1},  // after commit, before publish
                      CrashCase{"relay.claimed", 3},
                      CrashCase{"relay.chunk_published", 2},  // killed mid-batch
                      CrashCase{"relay.published", 1},        // published, rows not deleted
                      CrashCase{"relay.published", 2}, CrashCase{"relay.removed", 2},
                      CrashCase{"inbox.handled", 2},    // handled, not committed
                      CrashCase{"inbox.committed", 1},  // committed, not acked
                      CrashCase{"inbox.committed", 3}, CrashCase{"inbox.acked", 2}),
    [](const ::testing::TestParamInfo<CrashCase>& info) {
      std::string name = info.param.point;
      for (char& ch : name) {
        if (ch == '.') ch = '_';
      }
      return name + Numbered("_", info.param.hit);
    });

// Random schedules of crashes on both sides, concurrent writers, restarts of everything.
TEST(CrashTest, RandomCrashSchedulesNeverLoseOrDuplicateAnEffect) {
  const char* kRelayPoints[] = {"relay.claimed", "relay.chunk_published", "relay.published",
                                "relay.removed"};
  const char* kInboxPoints[] = {"inbox.handled", "inbox.committed", "inbox.acked"};
  for (uint64_t seed = 1; seed <= 6; ++seed) {
    SCOPED_TRACE(Numbered("seed ", static_cast<int64_t>(seed)));
    std::mt19937_64 rng(seed);
    Pipeline p;
    ASSERT_OK(p.Open());
    int written = 0;
    for (int round = 0; round < 6; ++round) {
      int n = 20 + static_cast<int>(rng() % 60);
      ASSERT_OK(p.Write(n, 1 + static_cast<int>(rng() % 8), 1 + static_cast<int>(rng() % 25)));
      written += n;
      FaultInjector faults;
      faults.Arm(kRelayPoints[rng() % 4], 1 + static_cast<int>(rng() % 3));
      RelayOptions ro = p.DefaultRelayOptions();
      ro.batch_max_events = 1 + static_cast<uint32_t>(rng() % 40);
      ro.publish_chunk_max_events = 1 + static_cast<uint32_t>(rng() % 10);
      ro.fault_point = faults.Hook();
      for (int life = 0; life < 20; ++life) {
        auto relay = p.NewRelay(ro);
        ASSERT_TRUE(relay.ok());
        auto r = (*relay)->Drain(1000);
        if (r.ok()) break;
      }
      ASSERT_EQ(CountRows(*p.service, "converge_outbox"), 0);
      FaultInjector cfaults;
      cfaults.Arm(kInboxPoints[rng() % 3], 1 + static_cast<int>(rng() % 3));
      for (int life = 0; life < 20; ++life) {
        InboxConsumerOptions co = p.DefaultConsumerOptions();
        co.fetch_max_events = 1 + static_cast<uint32_t>(rng() % 50);
        co.fault_point = cfaults.Hook();
        auto c = p.NewConsumer(co);
        ASSERT_TRUE(c.ok());
        auto r = Pipeline::DrainConsumer(**c);
        if (r.ok()) break;
        c->reset();
        p.CloseLog();  // the consumer process (with its embedded log) restarts
        ASSERT_OK(p.OpenLog());
      }
    }
    EffectSummary e = SummarizeEffects(*p.consumer);
    EXPECT_EQ(e.rows, written);
    EXPECT_EQ(e.applied_sum, written);
    EXPECT_EQ(e.violations, 0);
  }
}

}  // namespace
}  // namespace converge::outbox_test

namespace converge::outbox_test {
namespace {

TEST(RelayProcessTest, KilledWithSigkillMidBatchLosesAndDuplicatesNothing) {
  Pipeline p;
  ASSERT_OK(p.Open());
  KillRelayMidBatchAndVerify(p, p.service_target.location, 600);
}

}  // namespace
}  // namespace converge::outbox_test

namespace converge::outbox_test {
namespace {

TEST(RelayServiceTest, ParsesTheRelaysSection) {
  auto config = ParseRelayServiceConfig(R"yaml(
relays:
  sink:
    partitions: 8
    durability: none
    topic_map: {orders: orders-v2}
  sources:
    - name: orders
      database: sqlite:/var/lib/orders.db
      batch_max_events: 250
      poll_interval_ms: 50
    - name: billing
      database: host=127.0.0.1 dbname=billing
      postgres_buckets: 16
)yaml");
  ASSERT_TRUE(config.ok()) << config.status().ToString();
  EXPECT_EQ(config->sink.topic_options.partitions, 8u);
  EXPECT_EQ(config->sink.topic_options.durability, Durability::kNone);
  EXPECT_EQ(config->sink.topic_map.at("orders"), "orders-v2");
  ASSERT_EQ(config->sources.size(), 2u);
  EXPECT_EQ(config->sources[0].options.batch_max_events, 250u);
  EXPECT_EQ(config->sources[0].options.poll_interval_ms, 50);
  EXPECT_EQ(config->sources[1].options.postgres_buckets, 16u);
  auto timeouts = ParseRelayServiceConfig(
      "relays:\n  sources:\n    - name: x\n      database: host=h dbname=d\n"
      "      postgres_connect_timeout_ms: 2500\n      postgres_statement_timeout_ms: 0\n");
  ASSERT_TRUE(timeouts.ok()) << timeouts.status().ToString();
  EXPECT_EQ(timeouts->sources[0].options.postgres_connect_timeout_ms, 2500);
  EXPECT_EQ(timeouts->sources[0].options.postgres_statement_timeout_ms, 0);
  auto bad = ParseRelayServiceConfig("relays:\n  sources:\n    - name: x\n      databse: y\n");
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("databse"), std::string_view::npos);
}

// The WAL outbox's keys, and the options it refuses before connecting anywhere.
TEST(RelayServiceTest, WalModeKeysAndTheirChecks) {
  auto config = ParseRelayServiceConfig(
      "relays:\n  sources:\n    - name: pay\n      database: host=h dbname=d\n"
      "      mode: wal\n      wal_slot: converge_pay\n      wal_publication: pub1\n");
  ASSERT_TRUE(config.ok()) << config.status().ToString();
  EXPECT_EQ(config->sources[0].options.mode, "wal");
  EXPECT_EQ(config->sources[0].options.wal_slot, "converge_pay");
  EXPECT_EQ(config->sources[0].options.wal_publication, "pub1");

  Pipeline p;
  ASSERT_OK(p.Open());
  RelayOptions o = p.DefaultRelayOptions();
  o.mode = "wal";
  o.wal_slot = "s1";
  auto sqlite = p.NewRelay(o);  // the pipeline's service database is SQLite
  EXPECT_EQ(sqlite.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(sqlite.status().message().find("PostgreSQL"), std::string_view::npos);
  sql::DatabaseTarget pg{sql::Engine::kPostgres, "host=127.0.0.1 port=1 dbname=x"};
  for (const char* slot : {"", "Upper", "has-dash", "x y"}) {
    o.wal_slot = slot;
    auto r = Relay::Create(p.env, pg, *p.sink, o);
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << slot;
  }
  o.wal_slot = "ok_slot";
  o.mode = "logical";
  EXPECT_EQ(Relay::Create(p.env, pg, *p.sink, o).status().code(), StatusCode::kInvalidArgument);
  o.mode = "table";
  o.wal_capture_tables = true;  // capture is a WAL mode feature
  EXPECT_EQ(Relay::Create(p.env, pg, *p.sink, o).status().code(), StatusCode::kInvalidArgument);

  // Emit needs PostgreSQL: on SQLite it refuses and writes nothing.
  Event e = MakeEvent("k", 1);
  Status s =
      p.service->Transact([&](sql::Transaction& tx) { return p.outbox.Emit(tx, p.topic, e); });
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(CountRows(*p.service, "converge_outbox"), 0);

  // The parameters a service with its own driver binds to kEmitSql (of a valid event: the
  // refused Emit filled in nothing).
  EXPECT_EQ(outbox_format::BuildEmitParams("orders", e).status().code(),
            StatusCode::kInvalidArgument);  // no id
  e.set_id("e-1");
  auto params = outbox_format::BuildEmitParams("orders", e);
  ASSERT_TRUE(params.ok());
  EXPECT_EQ(params->prefix, "converge:orders");
  auto back = DecodeJson(params->content);
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(*back, e);
  EXPECT_EQ(outbox_format::BuildEmitParams("_internal", e).status().code(),
            StatusCode::kInvalidArgument);
}

// A TCP listener that completes handshakes (the kernel's backlog) and never answers: a
// PostgreSQL server that hangs during connection start-up.
class SilentListener {
 public:
  SilentListener() {
    fd_ = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(a);
    if (fd_ < 0 || bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0 ||
        listen(fd_, 16) != 0 || getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
      port_ = 0;
    } else {
      port_ = ntohs(a.sin_port);
    }
  }
  ~SilentListener() {
    if (fd_ >= 0) close(fd_);
  }
  std::string ConnInfo() const {
    return "host=127.0.0.1 port=" + std::to_string(port_) + " dbname=x user=x";
  }
  int port() const { return port_; }

 private:
  int fd_ = -1;
  int port_ = 0;
};

// The configured connect timeout reaches the relay's and the inbox's PostgreSQL connections:
// against a server that never answers, the first cycle fails after about 2 s, not the default 5 s.
TEST(PostgresTimeoutTest, TheRelayAndTheInboxUseTheirConfiguredConnectTimeout) {
  SilentListener silent;
  ASSERT_NE(silent.port(), 0);
  Pipeline p;
  ASSERT_OK(p.Open(1));
  RelayOptions bad_relay = p.DefaultRelayOptions();
  bad_relay.postgres_connect_timeout_ms = 0;
  EXPECT_EQ(Relay::Create(p.env, {sql::Engine::kPostgres, silent.ConnInfo()}, *p.sink, bad_relay)
                .status()
                .code(),
            StatusCode::kInvalidArgument);
  RelayOptions ro = p.DefaultRelayOptions();
  ro.postgres_connect_timeout_ms = 2'000;
  auto relay = Relay::Create(p.env, {sql::Engine::kPostgres, silent.ConnInfo()}, *p.sink, ro);
  ASSERT_TRUE(relay.ok()) << relay.status().ToString();
  auto start = std::chrono::steady_clock::now();
  EXPECT_FALSE((*relay)->RunOnce().ok());
  auto took = std::chrono::steady_clock::now() - start;
  EXPECT_GE(took, std::chrono::milliseconds(1'500));
  EXPECT_LT(took, std::chrono::milliseconds(4'500));

  // The inbox connects when it has events to apply.
  ASSERT_OK(p.Write(3, 1, 3));
  auto sqlite_relay = p.NewRelay();
  ASSERT_TRUE(sqlite_relay.ok());
  ASSERT_TRUE((*sqlite_relay)->Drain(10).ok());
  InboxConsumerOptions bad_inbox = p.DefaultConsumerOptions();
  bad_inbox.postgres_statement_timeout_ms = -1;
  EXPECT_EQ(InboxConsumer::Create(p.env, *p.groups, {sql::Engine::kPostgres, silent.ConnInfo()},
                                  InboxHandler(ApplyEffect), bad_inbox)
                .status()
                .code(),
            StatusCode::kInvalidArgument);
  InboxConsumerOptions co = p.DefaultConsumerOptions();
  co.postgres_connect_timeout_ms = 2'000;
  auto consumer = InboxConsumer::Create(p.env, *p.groups,
                                        {sql::Engine::kPostgres, silent.ConnInfo()},
                                        InboxHandler(ApplyEffect), co);
  ASSERT_TRUE(consumer.ok()) << consumer.status().ToString();
  start = std::chrono::steady_clock::now();
  EXPECT_FALSE((*consumer)->RunOnce().ok());
  took = std::chrono::steady_clock::now() - start;
  EXPECT_GE(took, std::chrono::milliseconds(1'500));
  EXPECT_LT(took, std::chrono::milliseconds(4'500));
}

TEST(RelayServiceTest, RunsARelayPerSource) {
  Pipeline p;
  ASSERT_OK(p.Open(1));
  ASSERT_OK(p.Write(30, 3, 10));
  RelayServiceConfig config;
  RelaySourceConfig source;
  source.name = "orders";
  source.database = "sqlite:" + p.service_target.location;
  source.options.poll_interval_ms = 20;
  config.sources.push_back(source);
  auto service = RelayService::Start(p.env, *p.faulty, config);
  ASSERT_TRUE(service.ok()) << service.status().ToString();
  EXPECT_TRUE(Eventually([&] { return *p.LogEventCount() == 30; }, 30'000));
  (*service)->Stop();
  EXPECT_EQ((*service)->stats()[0].second.published, 30u);
}

#ifdef OUTBOX_TEST_HAS_BINARY  // built with the converge binary (CONVERGE_BUILD_TOOLS)
TEST(RelayCommandTest, DrainsAnSqliteOutboxIntoALogDirectory) {
  const char* binary = getenv("CONVERGE_BINARY");
  // Fails, never skips, when the binary is missing (the build makes it before this test).
  ASSERT_TRUE(binary != nullptr && FileExists(binary))
      << "the converge binary (CONVERGE_BINARY=" << (binary ? binary : "unset")
      << ") is missing: run the test through ctest after a full build";
  Pipeline p;
  ASSERT_OK(p.Open(1));
  ASSERT_OK(p.Write(25, 2, 5));
  p.CloseLog();
  pid_t pid = Spawn({binary, "relay", "--source", "sqlite:" + p.service_target.location,
                     "--log-dir", p.dir.Sub("log"), "--drain"});
  ASSERT_GT(pid, 0);
  EXPECT_EQ(WaitExit(pid), 0);
  ASSERT_OK(p.OpenLog());
  EXPECT_EQ(*p.LogEventCount(), 25u);
  EXPECT_EQ(CountRows(*p.service, "converge_outbox"), 0);
}
#endif

}  // namespace
}  // namespace converge::outbox_test

namespace converge::outbox_test {
namespace {

TEST(InboxTest, ABatchHandlerFailureIsNarrowedDownToTheFailingEvent) {
  Pipeline p;
  ASSERT_OK(p.Open(1));
  ASSERT_OK(p.Write(30, 10, 30));
  auto relay = p.NewRelay();
  ASSERT_TRUE(relay.ok());
  ASSERT_TRUE((*relay)->Drain(10).ok());
  int calls = 0;
  InboxBatchHandler handler = [&](sql::Transaction& tx,
                                  std::span<const InboxMessage> messages) -> Status {
    ++calls;
    for (const InboxMessage& m : messages) {
      if (*m.event.partitionkey() == "k3" && EventNumber(m.event) == 1) {
        return InvalidArgumentError("k3/1 is rejected");
      }
      CONVERGE_RETURN_IF_ERROR(ApplyEffect(tx, m));
    }
    return Status::Ok();
  };
  InboxConsumerOptions o = p.DefaultConsumerOptions();
  auto c = InboxConsumer::Create(p.env, *p.groups, p.consumer_target, handler, o);
  ASSERT_TRUE(c.ok());
  auto n = Pipeline::DrainConsumer(**c);
  ASSERT_TRUE(n.ok()) << n.status().ToString();
  EffectSummary e = SummarizeEffects(*p.consumer);
  EXPECT_EQ(e.rows, 29);
  EXPECT_EQ(e.max_applied, 1);
  EXPECT_EQ((*c)->stats().dead_lettered, 1u);
  EXPECT_EQ((*c)->stats().handled, 29u);
  // Three rounds (one event per key each, ten keys): one batch call per round, plus one call
  // per event of the round that had to be narrowed down.
  EXPECT_EQ(calls, 3 + 10);
}

}  // namespace
}  // namespace converge::outbox_test

namespace converge::outbox_test {
namespace {

// The relay never queues behind the service's writers: when they hold SQLite's write lock the
// delete waits for a later cycle, and the published rows are not published again meanwhile.
TEST(RelayTest, DeletesDeferredWhileWritersHoldTheLockAreDoneLaterWithoutRepublishing) {
  Pipeline p;
  ASSERT_OK(p.Open(1));
  ASSERT_OK(p.Write(10, 2, 10));
  auto relay = p.NewRelay();
  ASSERT_TRUE(relay.ok());
  sql::SqliteOptions lo;
  lo.path = p.service_target.location;
  auto locker = sql::Database::OpenSqlite(lo);
  ASSERT_TRUE(locker.ok());
  ASSERT_OK((*locker)->ExecuteScript("BEGIN IMMEDIATE"));  // a writer holds the lock
  auto n = (*relay)->RunOnce();
  ASSERT_TRUE(n.ok()) << n.status().ToString();
  EXPECT_EQ(*n, 10u);
  EXPECT_EQ(*p.LogEventCount(), 10u);
  EXPECT_EQ(CountRows(*p.service, "converge_outbox"), 10);  // not deleted yet
  n = (*relay)->RunOnce();
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 0u);  // nothing new: the published rows are not claimed again
  ASSERT_OK((*locker)->ExecuteScript("COMMIT"));
  n = (*relay)->RunOnce();
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(CountRows(*p.service, "converge_outbox"), 0);
  EXPECT_EQ((*relay)->stats().published, 10u);
}

}  // namespace
}  // namespace converge::outbox_test
