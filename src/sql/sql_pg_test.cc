// The PostgreSQL engine of the database layer on a real server started by the test: conninfo
// in URI form with a connect timeout, the session's statement timeout, and what a lost session
// does (never a silent reconnect inside a transaction or for a caller that asked for none).
#include <gtest/gtest.h>

#include <chrono>
#include <string>
#include <thread>

#include "converge/sql.h"
#include "support/postgres_suite.h"

namespace converge {
namespace {

class SqlPgTest : public testing::PostgresSuite {
 protected:

  static std::string Uri(const std::string& query = "") {
    return "postgresql://postgres@127.0.0.1:" + std::to_string(server_->port()) + "/postgres" +
           query;
  }

  static std::unique_ptr<sql::Database> Connect(sql::PostgresOptions o) {
    Result<std::unique_ptr<sql::Database>> db = sql::Database::ConnectPostgres(o);
    EXPECT_TRUE(db.ok()) << db.status().ToString();
    return db.ok() ? std::move(db).value() : nullptr;
  }

  static std::string One(sql::Database& db, const std::string& sql) {
    std::string out = "?";
    Result<int64_t> n = db.Query(sql, {}, [&](const sql::Row& row) {
      out = std::string(row.Bytes(0));
      return Status::Ok();
    });
    if (!n.ok()) return n.status().ToString();
    return out;
  }

  // Ends `db`'s session from another connection, as a server restart or a network cut would.
  static void Terminate(sql::Database& db) {
    const std::string pid = One(db, "SELECT pg_backend_pid()");
    ASSERT_TRUE(server_->Query("postgres", "SELECT pg_terminate_backend(" + pid + ")").ok());
    // Until the backend is gone (a statement sent before would still be served).
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (server_->Query("postgres", "SELECT count(*) FROM pg_stat_activity WHERE pid = " + pid)
               .value_or("?") != "0") {
      ASSERT_LT(std::chrono::steady_clock::now(), deadline) << "backend " << pid << " lives on";
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }

};

TEST_F(SqlPgTest, UriConninfoWithAConnectTimeoutConnects) {
  sql::PostgresOptions o;
  o.conninfo = Uri();
  o.connect_timeout_ms = 3'000;
  o.statement_timeout_ms = 1'500;
  o.lock_timeout_ms = 700;
  std::unique_ptr<sql::Database> db = Connect(o);
  ASSERT_NE(db, nullptr);
  EXPECT_EQ(One(*db, "SELECT current_database()"), "postgres");
  EXPECT_EQ(One(*db, "SHOW statement_timeout"), "1500ms");
  EXPECT_EQ(One(*db, "SHOW lock_timeout"), "700ms");
  // The caller's conninfo is not rewritten: its own parameters still apply.
  o.conninfo = Uri("?application_name=converge-uri-test&connect_timeout=10");
  db = Connect(o);
  ASSERT_NE(db, nullptr);
  EXPECT_EQ(One(*db, "SHOW application_name"), "converge-uri-test");
}

TEST_F(SqlPgTest, KeyValueConninfoWithAConnectTimeoutConnects) {
  sql::PostgresOptions o;
  o.conninfo = server_->ConnInfo() + " application_name=converge-kv-test";
  o.connect_timeout_ms = 3'000;
  std::unique_ptr<sql::Database> db = Connect(o);
  ASSERT_NE(db, nullptr);
  EXPECT_EQ(One(*db, "SHOW application_name"), "converge-kv-test");
  EXPECT_EQ(One(*db, "SHOW statement_timeout"), "30s");  // the default of the options
}

TEST_F(SqlPgTest, AStatementLongerThanTheStatementTimeoutFailsWithDeadlineExceeded) {
  sql::PostgresOptions o;
  o.conninfo = Uri();
  o.statement_timeout_ms = 300;
  std::unique_ptr<sql::Database> db = Connect(o);
  ASSERT_NE(db, nullptr);
  ASSERT_TRUE(db->ExecuteScript("CREATE TABLE IF NOT EXISTS slow(x INT)").ok());
  Result<int64_t> r = db->Execute("SELECT pg_sleep(5)");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kDeadlineExceeded) << r.status().ToString();
  EXPECT_NE(r.status().message().find("statement timeout"), std::string_view::npos)
      << r.status().ToString();
  // In a transaction: nothing of it is applied; the session stays usable.
  Status s = db->Transact([](sql::Transaction& tx) -> Status {
    CONVERGE_RETURN_IF_ERROR(tx.Execute("INSERT INTO slow(x) VALUES (1)").status());
    return tx.Execute("SELECT pg_sleep(5)").status();
  });
  EXPECT_EQ(s.code(), StatusCode::kDeadlineExceeded) << s.ToString();
  EXPECT_EQ(One(*db, "SELECT count(*) FROM slow"), "0");
  EXPECT_TRUE(db->healthy());
}

TEST_F(SqlPgTest, WithoutReconnectALostSessionFailsUntilReconnect) {
  sql::PostgresOptions o;
  o.conninfo = Uri();
  o.reconnect = false;
  std::unique_ptr<sql::Database> db = Connect(o);
  ASSERT_NE(db, nullptr);
  const std::string before = One(*db, "SELECT pg_backend_pid()");
  Terminate(*db);
  // Session state (advisory locks, LISTEN) is gone: no call may quietly continue elsewhere.
  for (int i = 0; i < 2; ++i) {
    Result<int64_t> r = db->Execute("SELECT 1");
    EXPECT_EQ(r.status().code(), StatusCode::kUnavailable) << r.status().ToString();
  }
  EXPECT_FALSE(db->healthy());
  ASSERT_TRUE(db->Reconnect().ok());
  EXPECT_NE(One(*db, "SELECT pg_backend_pid()"), before);
}

TEST_F(SqlPgTest, ASessionLostInsideAnOpenTransactionIsNeverContinuedInAutocommit) {
  sql::PostgresOptions o;
  o.conninfo = Uri();  // reconnect = true
  std::unique_ptr<sql::Database> db = Connect(o);
  ASSERT_NE(db, nullptr);
  ASSERT_TRUE(db->ExecuteScript("CREATE TABLE IF NOT EXISTS lost(x INT)").ok());
  ASSERT_TRUE(db->ExecuteScript("BEGIN").ok());
  ASSERT_TRUE(db->Execute("INSERT INTO lost(x) VALUES (1)").ok());
  Terminate(*db);
  // The transaction is gone with the session: the rest of it must not run autocommitted on a
  // new session, however often the caller tries.
  for (int i = 2; i < 5; ++i) {
    Result<int64_t> r = db->Execute("INSERT INTO lost(x) VALUES (" + std::to_string(i) + ")");
    EXPECT_EQ(r.status().code(), StatusCode::kUnavailable) << r.status().ToString();
  }
  EXPECT_EQ(db->ExecuteScript("COMMIT").code(), StatusCode::kUnavailable);
  ASSERT_TRUE(db->Reconnect().ok());
  EXPECT_EQ(One(*db, "SELECT count(*) FROM lost"), "0");
  // Transact starts a transaction of its own, so it may start over on a new session.
  ASSERT_TRUE(db->ExecuteScript("BEGIN").ok());
  Terminate(*db);
  EXPECT_FALSE(db->Execute("SELECT 1").ok());
  EXPECT_TRUE(db->Transact([](sql::Transaction& tx) {
                  return tx.Execute("INSERT INTO lost(x) VALUES (9)").status();
                }).ok());
  EXPECT_EQ(One(*db, "SELECT count(*) FROM lost"), "1");
}

}  // namespace
}  // namespace converge
