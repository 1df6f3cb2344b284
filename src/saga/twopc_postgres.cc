// The PostgreSQL participant of two-phase commit, on pooled connections of the sql layer
// (converge/sql.h, which bounds connecting and every statement): BEGIN, the work, PREPARE
// TRANSACTION; COMMIT PREPARED / ROLLBACK PREPARED; pg_prepared_xacts for in-doubt
// transactions.
#include <condition_variable>
#include <mutex>
#include <vector>

#include "converge/sql.h"
#include "converge/twopc.h"
#include "sql/sql_internal.h"
#include "sql/sql_postgres.h"

namespace converge {
namespace {

constexpr const char* kUndefinedObject = "42704";  // no such prepared transaction

bool ValidName(std::string_view s, size_t max) {
  if (s.empty() || s.size() > max) return false;
  for (char c : s) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '-' || c == '_' || c == '.';
    if (!ok) return false;
  }
  return true;
}

using Connection = std::unique_ptr<sql::Database>;

class PostgresParticipant : public TxParticipant {
 public:
  explicit PostgresParticipant(PostgresParticipantOptions options) : options_(std::move(options)) {}

  const std::string& name() const override { return options_.name; }

  Status Prepare(const std::string& gid, std::span<const SqlStatement> work,
                 int64_t timeout_ms) override {
    CONVERGE_RETURN_IF_ERROR(CheckGid(gid));
    CONVERGE_ASSIGN_OR_RETURN(Connection conn, Borrow());
    Status s = PrepareOn(*conn, gid, work, timeout_ms);
    Return(std::move(conn));
    return s;
  }

  Status CommitPrepared(const std::string& gid) override {
    return Finish(gid, "COMMIT PREPARED '");
  }
  Status RollbackPrepared(const std::string& gid) override {
    return Finish(gid, "ROLLBACK PREPARED '");
  }

  Result<std::vector<std::string>> ListPrepared(const std::string& prefix) override {
    CONVERGE_ASSIGN_OR_RETURN(Connection conn, Borrow());
    const sql::Value params[] = {sql::Value::Text(prefix)};
    std::vector<std::string> out;
    Result<int64_t> r = conn->Query(
        "SELECT gid FROM pg_prepared_xacts WHERE database = current_database() AND "
        "starts_with(gid, $1) ORDER BY prepared",
        params, [&](const sql::Row& row) {
          out.emplace_back(row.Bytes(0));
          return Status::Ok();
        });
    Return(std::move(conn));
    if (!r.ok()) return Error(r.status(), "list prepared transactions");
    return out;
  }

 private:
  Status CheckGid(const std::string& gid) const {
    if (!ValidName(gid, 200)) {
      return InvalidArgumentError("gid must be 1..200 of [A-Za-z0-9._-]");
    }
    return Status::Ok();
  }

  // The participant's vote for a failed statement: a lost connection or a timeout is no vote
  // (Unavailable, DeadlineExceeded); anything the server refused is a no (Aborted).
  Status Error(const Status& s, const std::string& what) const {
    const std::string msg = options_.name + ": " + what + ": " + std::string(s.message());
    if (s.code() == StatusCode::kUnavailable) return UnavailableError(msg);
    if (s.code() == StatusCode::kDeadlineExceeded) return DeadlineExceededError(msg);
    return AbortedError(msg);
  }

  Status PrepareOn(sql::Database& conn, const std::string& gid, std::span<const SqlStatement> work,
                   int64_t timeout_ms) {
    Status s = conn.ExecuteScript("BEGIN");
    if (!s.ok()) return Error(s, "begin");
    // Phase 1's own bound replaces the session's statement timeout inside this transaction.
    s = conn.ExecuteScript("SET LOCAL statement_timeout = " + std::to_string(timeout_ms));
    if (!s.ok()) s = Error(s, "statement_timeout");
    std::vector<sql::Value> values;
    for (size_t i = 0; s.ok() && i < work.size(); ++i) {
      const SqlStatement& st = work[i];
      values.clear();
      for (const auto& p : st.params) {
        values.push_back(p ? sql::Value::Text(*p) : sql::Value::Null());
      }
      Result<int64_t> r = conn.Execute(st.sql, values);
      if (!r.ok()) s = Error(r.status(), "statement " + std::to_string(i));
    }
    if (!s.ok()) {
      if (sql::internal::InTransaction(conn)) conn.ExecuteScript("ROLLBACK").IgnoreError();
      return s;
    }
    // PREPARE TRANSACTION ends the session's transaction whatever happens; on failure the
    // transaction was rolled back by the server.
    s = conn.ExecuteScript("PREPARE TRANSACTION '" + gid + "'");
    if (!s.ok()) return Error(s, "prepare transaction");
    return Status::Ok();
  }

  Status Finish(const std::string& gid, const char* command) {
    CONVERGE_RETURN_IF_ERROR(CheckGid(gid));
    CONVERGE_ASSIGN_OR_RETURN(Connection conn, Borrow());
    Status s = conn->ExecuteScript(std::string(command) + gid + "'");
    if (!s.ok() && sql::internal::PgLastSqlState(*conn) == kUndefinedObject) s = Status::Ok();
    Return(std::move(conn));
    if (s.ok()) return s;
    s = Error(s, command);
    if (s.code() == StatusCode::kAborted) s = InternalError(s.message());
    return s;
  }

  Result<Connection> Borrow() {
    {
      std::unique_lock<std::mutex> lock(mu_);
      while (idle_.empty() && open_ >= options_.max_connections) cv_.wait(lock);
      if (!idle_.empty()) {
        Connection c = std::move(idle_.back());
        idle_.pop_back();
        return c;
      }
      ++open_;
    }
    sql::PostgresOptions o;
    o.conninfo = options_.conninfo;
    o.connect_timeout_ms = options_.connect_timeout_ms;
    o.statement_timeout_ms = options_.statement_timeout_ms;
    o.lock_timeout_ms = 0;  // prepare is bounded by its own timeout; locks wait within it
    // A connection lost mid-branch must fail the branch, never carry on in a new session (its
    // statements would run outside the transaction); the pool drops it instead.
    o.reconnect = false;
    Result<Connection> c = sql::Database::ConnectPostgres(o);
    if (!c.ok()) {
      std::lock_guard<std::mutex> lock(mu_);
      --open_;
      cv_.notify_one();
      return UnavailableError(options_.name + ": connect: " + std::string(c.status().message()));
    }
    return std::move(c).value();
  }

  void Return(Connection c) {
    std::lock_guard<std::mutex> lock(mu_);
    if (c->healthy() && !sql::internal::InTransaction(*c)) {
      idle_.push_back(std::move(c));
    } else {
      c.reset();
      --open_;
    }
    cv_.notify_one();
  }

  PostgresParticipantOptions options_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Connection> idle_;
  uint32_t open_ = 0;
};

}  // namespace

Result<std::unique_ptr<TxParticipant>> NewPostgresParticipant(PostgresParticipantOptions options) {
  if (!ValidName(options.name, 64)) {
    return InvalidArgumentError("postgres participant: name must be 1..64 of [A-Za-z0-9._-]");
  }
  if (options.conninfo.empty() || options.max_connections == 0) {
    return InvalidArgumentError("postgres participant: conninfo and max_connections are required");
  }
  if (options.connect_timeout_ms <= 0 || options.statement_timeout_ms < 0) {
    return InvalidArgumentError(
        "postgres participant: connect_timeout_ms must be > 0 and statement_timeout_ms >= 0");
  }
  return std::unique_ptr<TxParticipant>(new PostgresParticipant(std::move(options)));
}

}  // namespace converge
