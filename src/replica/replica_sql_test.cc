// Replicas into real SQLite and PostgreSQL databases (PostgreSQL started by the test) from a
// real log topic: apply, version gating, delete + purge + a late old upsert, and an applier
// process killed with SIGKILL in the middle of its batches, resumed exactly once.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <thread>

#include "converge/env.h"
#include "converge/log.h"
#include "converge/replica.h"
#include "converge/sql.h"
#include "replica/replica_test_util.h"
#include "support/kill_after_lines.h"
#include "support/postgres_server.h"
#include "support/temp_dir.h"

namespace converge::replica {
namespace {

using replica::testing::MakeChange;
using replica::testing::Record;

// One temporary directory per test (tests/support/temp_dir.h).
using ::converge::testing::TempDir;

std::unique_ptr<converge::testing::PostgresServer> pg_server;
std::string pg_error;
int pg_databases = 0;

// The database of one test: a SQLite file, or a fresh PostgreSQL database.
struct Db {
  std::string spec;  // for sql::ParseDatabaseTarget (and the child process)
  std::unique_ptr<sql::Database> db;
};

class ReplicaSqlTest : public ::testing::TestWithParam<sql::Engine> {
 protected:
  static void SetUpTestSuite() {
    // Integration suites fail, never skip, when their server is missing (postgres_server.h).
    auto pg = converge::testing::PostgresServer::Start();
    if (pg.ok()) {
      pg_server = std::move(pg).value();
    } else {
      pg_error = pg.status().ToString();
    }
  }
  static void TearDownTestSuite() { pg_server.reset(); }

  Db OpenDb() {
    Db out;
    if (GetParam() == sql::Engine::kSqlite) {
      out.spec = "sqlite:" + dir_.Sub("replica.db");
    } else {
      EXPECT_NE(pg_server, nullptr) << "PostgreSQL did not start: " << pg_error;
      if (pg_server == nullptr) return out;
      const std::string name = "replica" + std::to_string(++pg_databases);
      Status s = pg_server->CreateDatabase(name);
      EXPECT_TRUE(s.ok()) << s.ToString();
      out.spec = pg_server->ConnInfo(name);
    }
    auto target = sql::ParseDatabaseTarget(out.spec);
    EXPECT_TRUE(target.ok()) << target.status().ToString();
    auto db = sql::OpenDatabase(*target);
    EXPECT_TRUE(db.ok()) << db.status().ToString();
    if (db.ok()) out.db = std::move(db).value();
    return out;
  }

  std::unique_ptr<Log> OpenLog() {
    LogOptions lo;
    lo.dir = dir_.Sub("log");
    auto log = Log::Open(Env::Default(), lo);
    CONVERGE_CHECK(log.ok());
    return std::move(log).value();
  }

  static std::optional<Row> ReadRow(sql::Database& db, const std::string& table,
                                    const std::string& key) {
    std::optional<Row> out;
    const sql::Value k[] = {sql::Value::Text(key)};
    Status s = db.Query("SELECT version, deleted, document, commit_time_us, applied_us, "
                        "source_partition FROM " + table + " WHERE key = $1",
                        k,
                        [&](const sql::Row& row) {
                          Row r;
                          r.version = static_cast<uint64_t>(*row.Int(0));
                          r.deleted = row.Bytes(1) == "1" || row.Bytes(1) == "t";
                          r.document = std::string(row.Bytes(2));
                          r.commit_time_micros = *row.Int(3);
                          r.applied_time_micros = *row.Int(4);
                          r.source_partition = static_cast<uint32_t>(*row.Int(5));
                          out = r;
                          return Status::Ok();
                        })
                   .status();
    EXPECT_TRUE(s.ok()) << s.ToString();
    return out;
  }

  static std::map<std::string, Row> ReadAll(sql::Database& db, const std::string& table) {
    std::map<std::string, Row> out;
    Status s = db.Query("SELECT key, version, deleted, document FROM " + table, {},
                        [&](const sql::Row& row) {
                          Row r;
                          r.version = static_cast<uint64_t>(*row.Int(1));
                          r.deleted = row.Bytes(2) == "1" || row.Bytes(2) == "t";
                          r.document = std::string(row.Bytes(3));
                          out[std::string(row.Bytes(0))] = r;
                          return Status::Ok();
                        })
                   .status();
    EXPECT_TRUE(s.ok()) << s.ToString();
    return out;
  }

  TempDir dir_;
};

TEST_P(ReplicaSqlTest, TargetConformance) {
  Db db = OpenDb();
  ASSERT_NE(db.db, nullptr);
  auto target = NewSqlTarget(*db.db, {"conf", "conf_copy", "changes"});
  ASSERT_TRUE(target.ok()) << target.status().ToString();
  testing::CheckTargetConformance(
      **target, [&](const std::string& key) { return ReadRow(*db.db, "conf_copy", key); });
}

TEST_P(ReplicaSqlTest, AppliesFromALogTopicWithGatingDeletePurgeAndLateOldUpsert) {
  Db db = OpenDb();
  ASSERT_NE(db.db, nullptr);
  std::unique_ptr<Log> log = OpenLog();
  TopicOptions topic;
  topic.partitions = 2;
  ASSERT_TRUE(log->CreateTopic("customers", topic).ok());
  auto append = [&](const Change& c) {
    const std::string rec = Record(c);
    RecordView rv{"", c.key, rec, 0};
    auto r = log->Append("customers", std::span<const RecordView>(&rv, 1));
    CONVERGE_CHECK(r.ok());
    return (*r)[0];
  };
  append(MakeChange("alice", 1));
  append(MakeChange("alice", 3, false, "{\"name\":\"Alice\"}"));
  append(MakeChange("alice", 2));  // out of order: skipped
  append(MakeChange("bob", 4));
  append(MakeChange("bob", 5, true));
  auto target = NewSqlTarget(*db.db, {"customers", "customers_copy", "customers"});
  ASSERT_TRUE(target.ok()) << target.status().ToString();
  std::unique_ptr<Source> source = NewLogSource(*log, "customers");
  ApplierOptions options;
  options.name = "customers";
  options.max_batch = 2;
  options.tombstone_retention_ms = 1;
  options.purge_interval_ms = 1'000'000;  // purged by the explicit calls below
  auto applier = Applier::Open(Env::Default(), *source, **target, options);
  ASSERT_TRUE(applier.ok()) << applier.status().ToString();
  ASSERT_TRUE((*applier)->CatchUp().ok());
  EXPECT_EQ(ReadRow(*db.db, "customers_copy", "alice")->version, 3u);
  EXPECT_EQ(ReadRow(*db.db, "customers_copy", "alice")->document, "{\"name\":\"Alice\"}");
  EXPECT_TRUE(ReadRow(*db.db, "customers_copy", "bob")->deleted);
  EXPECT_EQ(ReadRow(*db.db, "customers_copy", "bob")->version, 5u);
  // The service reads its copy with plain SQL.
  int64_t live = -1;
  ASSERT_TRUE(db.db->Query(GetParam() == sql::Engine::kPostgres
                               ? "SELECT count(*) FROM customers_copy WHERE NOT deleted"
                               : "SELECT count(*) FROM customers_copy WHERE deleted = 0",
                           {},
                           [&](const sql::Row& row) {
                             live = *row.Int(0);
                             return Status::Ok();
                           })
                  .ok());
  EXPECT_EQ(live, 1);
  // A token of the last append is reached.
  const AppendResult last = append(MakeChange("carol", 6));
  const std::string token = (*applier)->TokenForOffset(last.partition, last.offset);
  EXPECT_FALSE(*(*applier)->Reached(token));
  std::thread driver([&] { EXPECT_TRUE((*applier)->CatchUp().ok()); });
  EXPECT_TRUE((*applier)->WaitFor(token, 10'000).ok());
  driver.join();
  EXPECT_EQ(ReadRow(*db.db, "customers_copy", "carol")->version, 6u);
  EXPECT_EQ((*applier)->WaitFor((*applier)->TokenForOffset(last.partition, last.offset + 5), 50)
                .code(),
            StatusCode::kDeadlineExceeded);

  // Purge bob's tombstone (retention 1 ms), then a late old upsert of bob must stay out.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while ((*applier)->Stats().tombstones_purged == 0) {
    ASSERT_TRUE((*applier)->PurgeTombstones().ok());
    ASSERT_LT(std::chrono::steady_clock::now(), deadline);
  }
  EXPECT_FALSE(ReadRow(*db.db, "customers_copy", "bob").has_value());
  append(MakeChange("bob", 4));
  ASSERT_TRUE((*applier)->CatchUp().ok());
  EXPECT_FALSE(ReadRow(*db.db, "customers_copy", "bob").has_value());
  EXPECT_EQ((*applier)->Stats().below_watermark, 1u);
  append(MakeChange("bob", 9));  // a real re-creation
  ASSERT_TRUE((*applier)->CatchUp().ok());
  EXPECT_EQ(ReadRow(*db.db, "customers_copy", "bob")->version, 9u);

  // A new applier (a restart) resumes from the position in the database: nothing again.
  const ReplicaStats before = (*applier)->Stats();
  applier->reset();
  auto again = Applier::Open(Env::Default(), *source, **target, options);
  ASSERT_TRUE(again.ok());
  ASSERT_TRUE((*again)->CatchUp().ok());
  EXPECT_EQ((*again)->Stats().applied, 0u);
  EXPECT_EQ((*again)->Stats().positions[0].next_offset, before.positions[0].next_offset);
}

TEST_P(ReplicaSqlTest, SigkilledApplierResumesExactlyOnce) {
  Db db = OpenDb();
  ASSERT_NE(db.db, nullptr);
  const bool pg = GetParam() == sql::Engine::kPostgres;
  // The changes: 1200 over 60 keys, upserts, deletes and republished old ones, 3 partitions.
  std::map<std::string, Change> expect;
  {
    std::unique_ptr<Log> log = OpenLog();
    TopicOptions topic;
    topic.partitions = 3;
    ASSERT_TRUE(log->CreateTopic("orders", topic).ok());
    std::vector<std::string> values;
    std::vector<std::string> keys;
    std::map<std::string, std::vector<Change>> history;
    uint64_t version = 0;
    for (int i = 0; i < 1200; ++i) {
      const std::string key = "order-" + std::to_string((i * 7919) % 60);
      Change c;
      if (i % 11 == 5 && !history[key].empty()) {
        c = history[key][i % history[key].size()];
      } else {
        c = MakeChange(key, ++version, i % 9 == 4);
        history[key].push_back(c);
      }
      auto& best = expect[key];
      if (best.version < c.version) best = c;
      values.push_back(Record(c));
      keys.push_back(key);
    }
    std::vector<RecordView> views;
    for (size_t i = 0; i < values.size(); ++i) views.push_back({"", keys[i], values[i], 0});
    ASSERT_TRUE(log->Append("orders", views).ok());
  }
  // The target's tables, and an audit of every row write (a trigger), before the applier runs.
  {
    auto target = NewSqlTarget(*db.db, {"crash", "orders_copy", "orders"});
    ASSERT_TRUE(target.ok()) << target.status().ToString();
  }
  ASSERT_TRUE(db.db
                  ->ExecuteScript(
                      pg ? "CREATE TABLE audit (key TEXT, version BIGINT);"
                           "CREATE FUNCTION audit_fn() RETURNS trigger AS $$ BEGIN "
                           "INSERT INTO audit VALUES (NEW.key, NEW.version); RETURN NEW; END $$ "
                           "LANGUAGE plpgsql;"
                           "CREATE TRIGGER orders_audit AFTER INSERT OR UPDATE ON orders_copy "
                           "FOR EACH ROW EXECUTE FUNCTION audit_fn();"
                         : "CREATE TABLE audit (key TEXT, version BIGINT);"
                           "CREATE TRIGGER orders_ai AFTER INSERT ON orders_copy BEGIN "
                           "INSERT INTO audit VALUES (NEW.key, NEW.version); END;"
                           "CREATE TRIGGER orders_au AFTER UPDATE ON orders_copy BEGIN "
                           "INSERT INTO audit VALUES (NEW.key, NEW.version); END;")
                  .ok());
  const std::vector<std::string> argv = {REPLICA_CRASH_APPLIER, dir_.Sub("log"), "orders",
                                         db.spec, "orders_copy", "--max-batch", "3"};
  size_t kills = 0;
  for (size_t after : {2u, 9u, 23u, 31u}) {
    auto run = converge::testing::RunAndKillAfterLines(argv, after);
    ASSERT_TRUE(run.ok()) << run.status().ToString();
    if (run->killed) {
      EXPECT_TRUE(run->EndedBySigkill());
      ++kills;
    }
  }
  EXPECT_GE(kills, 3u);
  auto last = converge::testing::RunAndKillAfterLines(argv, 1'000'000);
  ASSERT_TRUE(last.ok());
  ASSERT_FALSE(last->lines.empty());
  EXPECT_EQ(last->lines.back(), "done");
  // The copy equals the source; no row write happened twice; the position is at the end.
  std::map<std::string, Row> rows = ReadAll(*db.db, "orders_copy");
  for (const auto& [key, c] : expect) {
    ASSERT_TRUE(rows.count(key)) << key;
    EXPECT_EQ(rows[key].version, c.version) << key;
    EXPECT_EQ(rows[key].deleted, c.kind == ChangeKind::kDelete) << key;
    EXPECT_EQ(rows[key].document, c.document) << key;
  }
  EXPECT_EQ(rows.size(), expect.size());
  int64_t twice = -1, audited = -1;
  ASSERT_TRUE(db.db
                  ->Query("SELECT count(*) FROM (SELECT key, version FROM audit GROUP BY key, "
                          "version HAVING count(*) > 1) d",
                          {},
                          [&](const sql::Row& row) {
                            twice = *row.Int(0);
                            return Status::Ok();
                          })
                  .ok());
  ASSERT_TRUE(db.db
                  ->Query("SELECT count(*) FROM audit", {},
                          [&](const sql::Row& row) {
                            audited = *row.Int(0);
                            return Status::Ok();
                          })
                  .ok());
  EXPECT_EQ(twice, 0);
  EXPECT_GT(audited, 60);
  std::unique_ptr<Log> log = OpenLog();
  auto info = log->DescribeTopic("orders");
  ASSERT_TRUE(info.ok());
  auto target = NewSqlTarget(*db.db, {"crash", "orders_copy", "orders"});
  ASSERT_TRUE(target.ok());
  auto state = (*target)->Load();
  ASSERT_TRUE(state.ok());
  ASSERT_EQ(state->positions.size(), 3u);
  for (const Position& p : state->positions) {
    EXPECT_EQ(p.next_offset, info->partitions[p.partition].end_offset) << p.partition;
  }
}

INSTANTIATE_TEST_SUITE_P(Engines, ReplicaSqlTest,
                         ::testing::Values(sql::Engine::kSqlite, sql::Engine::kPostgres),
                         [](const auto& info) {
                           return std::string(sql::EngineName(info.param));
                         });

}  // namespace
}  // namespace converge::replica
