// Unit tests of the database layer that need no database server: option checks and the
// connect timeout against a server that never answers. (The SQLite engine and the helpers are
// covered by outbox_test; the PostgreSQL engine by sql_pg_test on a real server.)
#include "converge/sql.h"

#include <gtest/gtest.h>

#include "support/black_hole.h"

namespace converge {
namespace {

constexpr int64_t kConnectTimeoutMs = 2'000;  // libpq's smallest
// Generous for a loaded machine; far below the give-up bound.
constexpr int64_t kWithinMs = kConnectTimeoutMs + 6'000;
constexpr int64_t kGiveUpMs = 20'000;

void ExpectConnectTimesOut(const std::string& form) {
  testing::BlackHoleListener hole;
  ASSERT_TRUE(hole.ok());
  sql::PostgresOptions o;
  o.conninfo = form == "uri" ? hole.Uri() : hole.ConnInfo();
  o.connect_timeout_ms = kConnectTimeoutMs;
  Status status;
  const int64_t ms = testing::MillisUntilGivenUp(
      hole, kGiveUpMs, [&] { status = sql::Database::ConnectPostgres(o).status(); });
  EXPECT_LT(ms, kWithinMs) << form << ": the connect attempt was not bounded by its timeout";
  EXPECT_EQ(status.code(), StatusCode::kUnavailable) << status.ToString();
}

TEST(SqlConnectTimeoutTest, KeyValueConninfoToAServerThatNeverAnswersFailsInTime) {
  ExpectConnectTimesOut("keyvalue");
}

TEST(SqlConnectTimeoutTest, UriToAServerThatNeverAnswersFailsInTime) {
  ExpectConnectTimesOut("uri");
}

TEST(SqlOptionsTest, RejectsTimeoutsOutOfRange) {
  sql::PostgresOptions o;
  o.conninfo = "host=127.0.0.1 port=1 dbname=x";
  o.connect_timeout_ms = 0;
  EXPECT_EQ(sql::Database::ConnectPostgres(o).status().code(), StatusCode::kInvalidArgument);
  o.connect_timeout_ms = 1'000;
  o.statement_timeout_ms = -1;
  EXPECT_EQ(sql::Database::ConnectPostgres(o).status().code(), StatusCode::kInvalidArgument);
  sql::SqliteOptions so;
  so.path = "/nonexistent-dir-for-converge/x.db";
  so.busy_timeout_ms = -1;
  EXPECT_EQ(sql::Database::OpenSqlite(so).status().code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace converge
