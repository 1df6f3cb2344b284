// PostgreSQL table capture (docs/formats/wal-outbox.md, "Table capture") feeding a replica
// (docs/formats/replica.md): rows written before the slot (the initial snapshot), while the
// snapshot is taken, and after it, with inserts, updates, key changes and deletes, all end up
// in the replica exactly as in the table. Public headers only, on a real PostgreSQL 15.
#include <gtest/gtest.h>

#include <atomic>
#include <map>
#include <random>
#include <thread>

#include "converge/env.h"
#include "converge/log.h"
#include "converge/relay.h"
#include "converge/replica.h"
#include "converge/sql.h"
#include "support/postgres_server.h"
#include "support/temp_dir.h"

namespace converge {
namespace {

using ::converge::testing::TempDir;

#define ASSERT_OK(expr)                                     \
  do {                                                      \
    const ::converge::Status _s = (expr);                   \
    ASSERT_TRUE(_s.ok()) << #expr << ": " << _s.ToString(); \
  } while (0)

class CaptureReplicaTest : public ::testing::Test {
 protected:
  void SetUp() override {
    testing::PostgresServerOptions o;
    o.settings = {"wal_level=logical", "max_replication_slots=8", "max_wal_senders=8"};
    auto s = testing::PostgresServer::Start(o);
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    server_ = std::move(s).value();
    ASSERT_OK(server_->CreateDatabase("shop"));
    conninfo_ = server_->ConnInfo("shop");
    sql::PostgresOptions po;
    po.conninfo = conninfo_;
    auto db = sql::Database::ConnectPostgres(po);
    ASSERT_TRUE(db.ok()) << db.status().ToString();
    db_ = std::move(db).value();
    ASSERT_OK(
        db_->ExecuteScript("CREATE TABLE items (id int PRIMARY KEY, note text, qty int NOT NULL);"
                           "CREATE PUBLICATION shop_capture FOR TABLE items;"));
    LogOptions lo;
    lo.dir = dir_.Sub("log");
    auto log = Log::Open(Env::Default(), lo);
    ASSERT_TRUE(log.ok()) << log.status().ToString();
    log_ = std::move(log).value();
    LogSinkOptions so;
    so.topic_options.partitions = 4;
    auto sink = NewLogSink(*log_, so);
    ASSERT_TRUE(sink.ok());
    sink_ = std::move(sink).value();
  }

  RelayOptions CaptureOptions() {
    RelayOptions o;
    o.name = "capture";
    o.mode = "wal";
    o.wal_slot = "shop_slot";
    o.wal_publication = "shop_capture";
    o.wal_capture_tables = true;
    o.retry_base_delay_ms = 1;
    o.retry_max_delay_ms = 20;
    return o;
  }

  // One random change: insert, update, key change or delete.
  static Status RandomChange(sql::Database& db, std::mt19937& rng) {
    const int id = static_cast<int>(rng() % 300);
    // A Text value is a view (converge/sql.h): the string must outlive the statement.
    const std::string text = "n" + std::to_string(rng() % 1000);
    const sql::Value note = rng() % 5 == 0 ? sql::Value::Null() : sql::Value::Text(text);
    sql::Value params[] = {sql::Value::Int(id), note, sql::Value::Int(rng() % 100)};
    switch (rng() % 4) {
      case 0:
        return db
            .Execute(
                "INSERT INTO items VALUES ($1, $2, $3) ON CONFLICT (id) DO UPDATE SET "
                "note = excluded.note, qty = excluded.qty",
                params)
            .status();
      case 1:
        return db.Execute("UPDATE items SET note = $2, qty = $3 WHERE id = $1", params).status();
      case 2: {
        sql::Value move[] = {sql::Value::Int(id), sql::Value::Int(300 + rng() % 300)};
        // A key change (ignored when the new key is taken).
        return db
            .Execute(
                "UPDATE items SET id = $2 WHERE id = $1 AND NOT EXISTS (SELECT 1 FROM "
                "items WHERE id = $2)",
                move)
            .status();
      }
      default: {
        sql::Value del[] = {sql::Value::Int(id)};
        return db.Execute("DELETE FROM items WHERE id = $1", del).status();
      }
    }
  }

  // id -> the document the capture should produce.
  std::map<std::string, std::string> TableNow() {
    std::map<std::string, std::string> out;
    Status s = db_->Query(
                      "SELECT id::text, coalesce(to_json(note)::text, 'null'), qty::text "
                      "FROM items",
                      {},
                      [&](const sql::Row& row) {
                        out[std::string(row.Bytes(0))] = "{\"id\":" + std::string(row.Bytes(0)) +
                                                         ",\"note\":" + std::string(row.Bytes(1)) +
                                                         ",\"qty\":" + std::string(row.Bytes(2)) +
                                                         "}";
                        return Status::Ok();
                      })
                   .status();
    EXPECT_TRUE(s.ok()) << s.ToString();
    return out;
  }

  std::string Scalar(const std::string& sql) {
    auto r = server_->Query("shop", sql);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? *r : "";
  }

  // Runs the relay until the slot confirmed everything written so far.
  void RelayAll(Relay& relay) {
    const std::string end = Scalar("SELECT pg_current_wal_lsn()::text");
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (Scalar("SELECT confirmed_flush_lsn >= '" + end +
                  "'::pg_lsn FROM pg_replication_slots WHERE slot_name = 'shop_slot'") != "t") {
      ASSERT_LT(std::chrono::steady_clock::now(), deadline) << relay.stats().last_error;
      auto n = relay.RunOnce();
      ASSERT_TRUE(n.ok()) << n.status().ToString();
      if (*n == 0) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  }

  TempDir dir_;
  std::unique_ptr<testing::PostgresServer> server_;
  std::string conninfo_;
  std::unique_ptr<sql::Database> db_;
  std::unique_ptr<Log> log_;
  std::unique_ptr<RelaySink> sink_;
};

TEST_F(CaptureReplicaTest, ReplicaFedByTheCaptureTopicEndsEqualToTheTable) {
  std::mt19937 rng(7);
  for (int i = 0; i < 400; ++i) ASSERT_OK(RandomChange(*db_, rng));
  // Writers keep changing the table while the slot and its snapshot are made.
  std::atomic<bool> stop{false};
  std::atomic<int> errors{0};
  std::thread writer([&] {
    sql::PostgresOptions po;
    po.conninfo = conninfo_;
    auto db = sql::Database::ConnectPostgres(po);
    if (!db.ok()) {
      ++errors;
      return;
    }
    std::mt19937 r(11);
    while (!stop.load()) {
      if (!RandomChange(**db, r).ok()) ++errors;
    }
  });
  ASSERT_OK(CreateCaptureSlot(conninfo_, "shop_slot", "shop_capture", "", *sink_));
  auto relay =
      Relay::Create(Env::Default(), {sql::Engine::kPostgres, conninfo_}, *sink_, CaptureOptions());
  ASSERT_TRUE(relay.ok()) << relay.status().ToString();
  for (int i = 0; i < 200; ++i) {
    auto n = (*relay)->RunOnce();
    ASSERT_TRUE(n.ok()) << n.status().ToString();
  }
  stop = true;
  writer.join();
  ASSERT_EQ(errors.load(), 0);
  for (int i = 0; i < 200; ++i) ASSERT_OK(RandomChange(*db_, rng));
  // Until the slot confirmed everything written: the log then has every change.
  const std::string end = Scalar("SELECT pg_current_wal_lsn()::text");
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (Scalar("SELECT confirmed_flush_lsn >= '" + end +
                "'::pg_lsn FROM pg_replication_slots WHERE slot_name = 'shop_slot'") != "t") {
    ASSERT_LT(std::chrono::steady_clock::now(), deadline) << (*relay)->stats().last_error;
    auto n = (*relay)->RunOnce();
    ASSERT_TRUE(n.ok()) << n.status().ToString();
    if (*n == 0) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  EXPECT_EQ((*relay)->stats().dead_lettered, 0u);

  // The replica, fed by the topic.
  std::unique_ptr<replica::Source> source = replica::NewLogSource(*log_, "public.items");
  replica::MemoryTarget target;
  replica::ApplierOptions ao;
  ao.name = "items";
  auto applier = replica::Applier::Open(Env::Default(), *source, target, ao);
  ASSERT_TRUE(applier.ok()) << applier.status().ToString();
  ASSERT_OK((*applier)->CatchUp());
  std::map<std::string, std::string> copy;
  for (const auto& [key, row] : target.rows()) {
    if (!row.deleted) copy[key] = row.document;
  }
  const std::map<std::string, std::string> table = TableNow();
  EXPECT_GT(table.size(), 50u);
  EXPECT_EQ(copy, table);
  // Every change was applied at most once.
  for (const auto& [key_version, times] : target.applies()) {
    EXPECT_EQ(times, 1u) << key_version.first << "@" << key_version.second;
  }
}

// TRUNCATE (docs/formats/wal-outbox.md, "Table capture"): a converge.change.truncate event on
// the table's topic; replicas remove every row older than it and refuse older changes still to
// come. A replica that had applied the rows before the TRUNCATE, and one that sees everything
// for the first time, on a memory and on a PostgreSQL table target, end equal to the table
// after TRUNCATEs (alone, with changes before and after it in its transaction, rolled back)
// and new changes.
TEST_F(CaptureReplicaTest, ReplicasEndEqualToTheTableAfterATruncate) {
  std::mt19937 rng(3);
  for (int i = 0; i < 300; ++i) ASSERT_OK(RandomChange(*db_, rng));
  ASSERT_OK(CreateCaptureSlot(conninfo_, "shop_slot", "shop_capture", "", *sink_));
  auto relay =
      Relay::Create(Env::Default(), {sql::Engine::kPostgres, conninfo_}, *sink_, CaptureOptions());
  ASSERT_TRUE(relay.ok()) << relay.status().ToString();
  for (int i = 0; i < 200; ++i) ASSERT_OK(RandomChange(*db_, rng));
  RelayAll(**relay);

  ASSERT_OK(server_->CreateDatabase("copy"));
  sql::PostgresOptions po;
  po.conninfo = server_->ConnInfo("copy");
  auto copy_db = sql::Database::ConnectPostgres(po);
  ASSERT_TRUE(copy_db.ok()) << copy_db.status().ToString();
  auto sql_target = replica::NewSqlTarget(**copy_db, {"items", "items_copy", "public.items"});
  ASSERT_TRUE(sql_target.ok()) << sql_target.status().ToString();
  std::unique_ptr<replica::Source> source = replica::NewLogSource(*log_, "public.items");
  replica::MemoryTarget early_target, late_target;
  replica::ApplierOptions ao;
  ao.name = "items";
  auto early = replica::Applier::Open(Env::Default(), *source, early_target, ao);
  auto on_pg = replica::Applier::Open(Env::Default(), *source, **sql_target, ao);
  ASSERT_TRUE(early.ok() && on_pg.ok());
  ASSERT_OK((*early)->CatchUp());
  ASSERT_OK((*on_pg)->CatchUp());
  ASSERT_GT(early_target.rows().size(), 50u);

  // A TRUNCATE with changes before and after it in its transaction, one rolled back, one alone.
  ASSERT_OK(db_->ExecuteScript(
      "BEGIN; INSERT INTO items VALUES (1000, 'gone', 1) ON CONFLICT (id) DO NOTHING; "
      "UPDATE items SET qty = qty + 1; TRUNCATE items; "
      "INSERT INTO items VALUES (1, 'after', 2), (2, 'after', 3); "
      "UPDATE items SET note = 'after2' WHERE id = 2; COMMIT;"));
  ASSERT_OK(db_->ExecuteScript("BEGIN; TRUNCATE items; ROLLBACK;"));
  for (int i = 0; i < 200; ++i) ASSERT_OK(RandomChange(*db_, rng));
  RelayAll(**relay);
  ASSERT_OK((*early)->CatchUp());
  ASSERT_OK((*on_pg)->CatchUp());
  ASSERT_OK(db_->ExecuteScript("TRUNCATE items;"));
  for (int i = 0; i < 100; ++i) ASSERT_OK(RandomChange(*db_, rng));
  RelayAll(**relay);
  EXPECT_EQ((*relay)->stats().dead_lettered, 0u);

  auto late = replica::Applier::Open(Env::Default(), *source, late_target, ao);
  ASSERT_TRUE(late.ok());
  for (auto* a : {&*early, &*on_pg, &*late}) ASSERT_OK((*a)->CatchUp());
  const std::map<std::string, std::string> table = TableNow();
  EXPECT_GT(table.size(), 20u);
  for (replica::MemoryTarget* target : {&early_target, &late_target}) {
    std::map<std::string, std::string> copy;
    for (const auto& [key, row] : target->rows()) {
      if (!row.deleted) copy[key] = row.document;
    }
    EXPECT_EQ(copy, table);
  }
  std::map<std::string, std::string> on_pg_copy;
  ASSERT_OK((*copy_db)
                ->Query("SELECT key, document FROM items_copy WHERE NOT deleted", {},
                        [&](const sql::Row& row) {
                          on_pg_copy[std::string(row.Bytes(0))] = std::string(row.Bytes(1));
                          return Status::Ok();
                        })
                .status());
  EXPECT_EQ(on_pg_copy, table);
}

// A publication that leaves out truncates (or deletes) would drop changes from the capture
// silently: refused when the slot is created and when the relay starts.
TEST_F(CaptureReplicaTest, APublicationThatLeavesOutTruncatesIsRefused) {
  ASSERT_OK(db_->ExecuteScript(
      "ALTER PUBLICATION shop_capture SET (publish = 'insert, update, delete');"));
  Status created = CreateCaptureSlot(conninfo_, "shop_slot", "shop_capture", "", *sink_);
  EXPECT_EQ(created.code(), StatusCode::kFailedPrecondition) << created.ToString();
  EXPECT_NE(created.message().find("truncate"), std::string_view::npos) << created.ToString();
  EXPECT_EQ(Scalar("SELECT count(*) FROM pg_replication_slots"), "0");
  ASSERT_OK(db_->ExecuteScript(
      "ALTER PUBLICATION shop_capture SET (publish = 'insert, update, delete, truncate');"));
  ASSERT_OK(CreateCaptureSlot(conninfo_, "shop_slot", "shop_capture", "", *sink_));
  ASSERT_OK(db_->ExecuteScript("ALTER PUBLICATION shop_capture SET (publish = 'insert, update');"));
  auto relay =
      Relay::Create(Env::Default(), {sql::Engine::kPostgres, conninfo_}, *sink_, CaptureOptions());
  ASSERT_TRUE(relay.ok());
  auto n = (*relay)->RunOnce();
  ASSERT_FALSE(n.ok());
  EXPECT_EQ(n.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(n.status().message().find("publish"), std::string_view::npos) << n.status().ToString();
}

// A capture slot whose snapshot never finished (interrupted: here, a slot made without one)
// is refused with a clear error instead of streaming changes on top of missing rows.
TEST_F(CaptureReplicaTest, ASlotWithoutAFinishedSnapshotIsRefused) {
  ASSERT_OK(CreateWalSlot(conninfo_, "shop_slot", "shop_capture"));
  auto relay =
      Relay::Create(Env::Default(), {sql::Engine::kPostgres, conninfo_}, *sink_, CaptureOptions());
  ASSERT_TRUE(relay.ok());
  auto n = (*relay)->RunOnce();
  ASSERT_FALSE(n.ok());
  EXPECT_EQ(n.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(n.status().message().find("snapshot"), std::string_view::npos) << n.status().ToString();
  // Creating it again for capture is refused while it exists; dropped, it works.
  EXPECT_EQ(CreateCaptureSlot(conninfo_, "shop_slot", "shop_capture", "", *sink_).code(),
            StatusCode::kAlreadyExists);
  ASSERT_OK(DropWalSlot(conninfo_, "shop_slot"));
  ASSERT_OK(CreateCaptureSlot(conninfo_, "shop_slot", "shop_capture", "", *sink_));
  auto again = (*relay)->RunOnce();
  EXPECT_TRUE(again.ok()) << again.status().ToString();
}

}  // namespace
}  // namespace converge
