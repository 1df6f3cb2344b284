// The cursor scan of a real SQLite and a real PostgreSQL table (PostgreSQL started by the test,
// tests/support/postgres_server.h): rows inserted, deleted and updated directly in the table,
// behind the copy's back, are found exactly by reconciling the copy's own record of what it
// applied against a scan of the table; the scan keeps to its rate in the Env's time.
#include "reconcile/table_scan.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <set>

#include "converge/sim_env.h"
#include "converge/sql.h"
#include "reconcile/session.h"
#include "support/postgres_server.h"
#include "support/server_process.h"

namespace converge::reconcile {
namespace {

std::string RowKey(int i) {
  char b[32];
  std::snprintf(b, sizeof(b), "order-%06d", i);
  return b;
}

// Runs a session between `local` and `remote` over a perfect link.
ReconcileResult Reconcile(ReconcileSet& local, ReconcileSet& remote, Env& env) {
  Responder responder(remote, env);
  Initiator initiator(local, 7);
  std::string request = initiator.Start();
  for (int i = 0; i < 100 && !initiator.done(); ++i) {
    auto reply = responder.Handle(request);
    EXPECT_TRUE(reply.ok() && reply->has_value());
    auto step = initiator.OnReply(**reply);
    EXPECT_TRUE(step.ok()) << step.status().ToString();
    if (step->kind == Initiator::Step::kSend) request = step->message;
  }
  EXPECT_TRUE(initiator.done());
  return initiator.result();
}

// The drift scenario on one database: `db` holds table `table`.
void DirectWritesAreFoundExactly(sql::Database& db, const std::string& table) {
  const std::string create =
      "CREATE TABLE " + table + " (key TEXT PRIMARY KEY, version BIGINT NOT NULL, doc TEXT)";
  ASSERT_TRUE(db.Execute(create).ok());
  // What the replica applied (and recorded in its set): 1,500 rows.
  ReconcileSet applied;
  ASSERT_TRUE(
      db.Transact([&](sql::Transaction& tx) -> Status {
          for (int i = 0; i < 1500; ++i) {
            const std::string k = RowKey(i);
            const std::string v = std::to_string(i + 1);
            const sql::Value p[] = {sql::Value::Text(k), sql::Value::Int(i + 1)};
            CONVERGE_RETURN_IF_ERROR(
                tx.Execute("INSERT INTO " + table + " (key, version, doc) VALUES ($1, $2, 'x')", p)
                    .status());
            applied.Put(k, static_cast<uint64_t>(i + 1));
          }
          return Status::Ok();
        }).ok());
  // Behind its back: rows deleted, inserted and modified directly in the table.
  ASSERT_TRUE(db.Execute("DELETE FROM " + table + " WHERE key IN ('" + RowKey(3) + "', '" +
                         RowKey(700) + "', '" + RowKey(1499) + "')")
                  .ok());
  ASSERT_TRUE(db.Execute("INSERT INTO " + table + " (key, version) VALUES ('" + RowKey(5000) +
                         "', 9), ('manual-fix', 1)")
                  .ok());
  ASSERT_TRUE(db.Execute("UPDATE " + table + " SET version = version + 100 WHERE key IN ('" +
                         RowKey(10) + "', '" + RowKey(11) + "', '" + RowKey(1200) + "')")
                  .ok());

  sim::SimEnv env(1);
  ReconcileSet table_set;
  TableScanOptions o;
  o.table = table;
  o.batch_rows = 100;
  o.rows_per_second = 2000;
  Status outcome = InternalError("not done");
  uint64_t rows = 0;
  ScanInto(db, env, o, table_set, [&](Status s, uint64_t n) {
    outcome = s;
    rows = n;
  });
  env.RunUntilIdle();
  ASSERT_TRUE(outcome.ok()) << outcome.ToString();
  EXPECT_EQ(rows, 1499u);
  EXPECT_EQ(table_set.size(), 1499u);
  // 1,499 rows at 2,000 rows/s: the last batch starts after 1,400 rows' worth of time.
  EXPECT_GE(env.now_nanos(), 1400 * 1'000'000'000LL / 2000);

  const ReconcileResult r = Reconcile(applied, table_set, env);
  std::set<std::string> inserted, deleted, modified;
  for (const Difference& d : r.missing_local) inserted.insert(d.key);
  for (const Difference& d : r.missing_remote) deleted.insert(d.key);
  for (const Difference& d : r.divergent) {
    modified.insert(d.key);
    EXPECT_EQ(*d.remote_version, *d.local_version + 100) << d.key;
  }
  EXPECT_EQ(inserted, (std::set<std::string>{RowKey(5000), "manual-fix"}));
  EXPECT_EQ(deleted, (std::set<std::string>{RowKey(3), RowKey(700), RowKey(1499)}));
  EXPECT_EQ(modified, (std::set<std::string>{RowKey(10), RowKey(11), RowKey(1200)}));
  EXPECT_TRUE(r.changed_during_run.empty());
}

TEST(TableScanTest, SqliteDirectWritesAreFoundExactly) {
  auto dir = testing::TempDir::Create("reconcile-");
  ASSERT_TRUE(dir.ok());
  sql::SqliteOptions o;
  o.path = dir->path() + "/target.db";
  o.synchronous = "off";
  auto db = sql::Database::OpenSqlite(o);
  ASSERT_TRUE(db.ok()) << db.status().ToString();
  DirectWritesAreFoundExactly(**db, "orders");
}

TEST(TableScanTest, BadInputIsRefusedAndChangesNothing) {
  auto dir = testing::TempDir::Create("reconcile-");
  ASSERT_TRUE(dir.ok());
  sql::SqliteOptions so;
  so.path = dir->path() + "/t.db";
  auto db = sql::Database::OpenSqlite(so);
  ASSERT_TRUE(db.ok());
  sim::SimEnv env(1);
  for (const char* bad : {"", "a;b", "x\"y", "1abc", "a.b.c", "a b"}) {
    TableScanOptions o;
    o.table = bad;
    EXPECT_EQ(TableScan::Create(**db, env, o).status().code(), StatusCode::kInvalidArgument) << bad;
  }
  TableScanOptions o;
  o.table = "t";
  o.batch_rows = 0;
  EXPECT_FALSE(TableScan::Create(**db, env, o).ok());
  // A version that is not a non-negative integer stops the scan with an error.
  ASSERT_TRUE((*db)->Execute("CREATE TABLE t (key TEXT PRIMARY KEY, version TEXT)").ok());
  ASSERT_TRUE((*db)->Execute("INSERT INTO t VALUES ('a', '1'), ('b', 'two')").ok());
  o.batch_rows = 10;
  auto scan = TableScan::Create(**db, env, o);
  ASSERT_TRUE(scan.ok());
  int seen = 0;
  auto step = scan->Step([&](std::string_view, uint64_t) { ++seen; });
  EXPECT_FALSE(step.ok());
  EXPECT_EQ(seen, 0);  // a failed batch hands over nothing
}

// skip_if_column: tombstone rows (a replica table's `deleted`, 0/1 in SQLite) are not read, in
// the first batch and in the later ones; a bad column name is refused.
TEST(TableScanTest, SkipIfColumnLeavesOutTombstones) {
  auto dir = testing::TempDir::Create("reconcile-");
  ASSERT_TRUE(dir.ok());
  sql::SqliteOptions so;
  so.path = dir->path() + "/t.db";
  auto db = sql::Database::OpenSqlite(so);
  ASSERT_TRUE(db.ok());
  ASSERT_TRUE((*db)
                  ->Execute("CREATE TABLE t (key TEXT PRIMARY KEY, version BIGINT NOT NULL, "
                            "deleted INTEGER NOT NULL)")
                  .ok());
  std::set<std::string> live;
  for (int i = 0; i < 25; ++i) {
    const bool deleted = i % 3 == 0;
    const std::string key = RowKey(i);  // a Value holds a view: the string must outlive it
    const sql::Value p[] = {sql::Value::Text(key), sql::Value::Int(i + 1),
                            sql::Value::Int(deleted ? 1 : 0)};
    ASSERT_TRUE((*db)->Execute("INSERT INTO t VALUES ($1, $2, $3)", p).ok());
    if (!deleted) live.insert(RowKey(i));
  }
  sim::SimEnv env(1);
  TableScanOptions o;
  o.table = "t";
  o.batch_rows = 4;
  o.rows_per_second = 0;
  o.skip_if_column = "deleted";
  auto scan = TableScan::Create(**db, env, o);
  ASSERT_TRUE(scan.ok()) << scan.status().ToString();
  std::set<std::string> seen;
  while (true) {
    auto step = scan->Step([&](std::string_view k, uint64_t) { seen.emplace(k); });
    ASSERT_TRUE(step.ok()) << step.status().ToString();
    if (*step < 0) break;
  }
  EXPECT_EQ(seen, live);
  o.skip_if_column = "deleted; DROP TABLE t";
  EXPECT_EQ(TableScan::Create(**db, env, o).status().code(), StatusCode::kInvalidArgument);
}

TEST(TableScanTest, PostgresDirectWritesAreFoundExactly) {
  // Integration suites fail, never skip, when their server is missing (postgres_server.h).
  auto pg = testing::PostgresServer::Start();
  ASSERT_TRUE(pg.ok()) << pg.status().ToString();
  sql::PostgresOptions o;
  o.conninfo = "postgresql://postgres@127.0.0.1:" + std::to_string((*pg)->port()) + "/postgres";
  auto db = sql::Database::ConnectPostgres(o);
  ASSERT_TRUE(db.ok()) << db.status().ToString();
  DirectWritesAreFoundExactly(**db, "public.orders");
}

}  // namespace
}  // namespace converge::reconcile
