// The PostgreSQL participant of two-phase commit (libpq): BEGIN, the work, PREPARE TRANSACTION;
// COMMIT PREPARED / ROLLBACK PREPARED; pg_prepared_xacts for in-doubt transactions.
#include <libpq-fe.h>

#include <condition_variable>
#include <mutex>
#include <vector>

#include "converge/twopc.h"

namespace converge {
namespace {

constexpr const char* kUndefinedObject = "42704";  // no such prepared transaction
constexpr const char* kQueryCanceled = "57014";    // statement_timeout

bool ValidName(std::string_view s, size_t max) {
  if (s.empty() || s.size() > max) return false;
  for (char c : s) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '-' || c == '_' || c == '.';
    if (!ok) return false;
  }
  return true;
}

class PgResult {
 public:
  explicit PgResult(PGresult* r) : r_(r) {}
  ~PgResult() { PQclear(r_); }
  PgResult(const PgResult&) = delete;
  PgResult& operator=(const PgResult&) = delete;
  PGresult* get() const { return r_; }
  bool ok() const {
    const ExecStatusType s = PQresultStatus(r_);
    return s == PGRES_COMMAND_OK || s == PGRES_TUPLES_OK;
  }
  std::string sqlstate() const {
    const char* s = PQresultErrorField(r_, PG_DIAG_SQLSTATE);
    return s ? s : "";
  }

 private:
  PGresult* r_;
};

class PostgresParticipant : public TxParticipant {
 public:
  explicit PostgresParticipant(PostgresParticipantOptions options) : options_(std::move(options)) {}
  ~PostgresParticipant() override {
    for (PGconn* c : idle_) PQfinish(c);
  }

  const std::string& name() const override { return options_.name; }

  Status Prepare(const std::string& gid, std::span<const SqlStatement> work,
                 int64_t timeout_ms) override {
    CONVERGE_RETURN_IF_ERROR(CheckGid(gid));
    CONVERGE_ASSIGN_OR_RETURN(PGconn * conn, Borrow());
    Status s = PrepareOn(conn, gid, work, timeout_ms);
    Return(conn);
    return s;
  }

  Status CommitPrepared(const std::string& gid) override {
    return Finish(gid, "COMMIT PREPARED '");
  }
  Status RollbackPrepared(const std::string& gid) override {
    return Finish(gid, "ROLLBACK PREPARED '");
  }

  Result<std::vector<std::string>> ListPrepared(const std::string& prefix) override {
    CONVERGE_ASSIGN_OR_RETURN(PGconn * conn, Borrow());
    const char* values[1] = {prefix.c_str()};
    PgResult r(PQexecParams(conn,
                            "SELECT gid FROM pg_prepared_xacts WHERE database = "
                            "current_database() AND starts_with(gid, $1) ORDER BY prepared",
                            1, nullptr, values, nullptr, nullptr, 0));
    if (!r.ok()) {
      Status s = Error(conn, r, "list prepared transactions");
      Return(conn);
      return s;
    }
    std::vector<std::string> out;
    for (int i = 0; i < PQntuples(r.get()); ++i) out.emplace_back(PQgetvalue(r.get(), i, 0));
    Return(conn);
    return out;
  }

 private:
  Status CheckGid(const std::string& gid) const {
    if (!ValidName(gid, 200)) {
      return InvalidArgumentError("gid must be 1..200 of [A-Za-z0-9._-]");
    }
    return Status::Ok();
  }

  Status Error(PGconn* conn, const PgResult& r, const std::string& what) {
    std::string msg = options_.name + ": " + what + ": " + PQresultErrorMessage(r.get());
    while (!msg.empty() && (msg.back() == '\n' || msg.back() == ' ')) msg.pop_back();
    if (PQstatus(conn) != CONNECTION_OK) return UnavailableError(msg);
    if (r.sqlstate() == kQueryCanceled) return DeadlineExceededError(msg);
    return AbortedError(msg);
  }

  Status Exec(PGconn* conn, const std::string& sql, const std::string& what) {
    PgResult r(PQexec(conn, sql.c_str()));
    if (!r.ok()) return Error(conn, r, what);
    return Status::Ok();
  }

  Status PrepareOn(PGconn* conn, const std::string& gid, std::span<const SqlStatement> work,
                   int64_t timeout_ms) {
    CONVERGE_RETURN_IF_ERROR(Exec(conn, "BEGIN", "begin"));
    Status s = Exec(conn, "SET LOCAL statement_timeout = " + std::to_string(timeout_ms),
                    "statement_timeout");
    for (size_t i = 0; s.ok() && i < work.size(); ++i) {
      const SqlStatement& st = work[i];
      std::vector<const char*> values;
      for (const auto& p : st.params) values.push_back(p ? p->c_str() : nullptr);
      PgResult r(PQexecParams(conn, st.sql.c_str(), static_cast<int>(values.size()), nullptr,
                              values.data(), nullptr, nullptr, 0));
      if (!r.ok()) s = Error(conn, r, "statement " + std::to_string(i));
    }
    if (!s.ok()) {
      if (PQstatus(conn) == CONNECTION_OK) Exec(conn, "ROLLBACK", "rollback").IgnoreError();
      return s;
    }
    // PREPARE TRANSACTION ends the session's transaction whatever happens; on failure the
    // transaction was rolled back by the server.
    return Exec(conn, "PREPARE TRANSACTION '" + gid + "'", "prepare transaction");
  }

  Status Finish(const std::string& gid, const char* command) {
    CONVERGE_RETURN_IF_ERROR(CheckGid(gid));
    CONVERGE_ASSIGN_OR_RETURN(PGconn * conn, Borrow());
    PgResult r(PQexec(conn, (std::string(command) + gid + "'").c_str()));
    Status s;
    if (!r.ok() && r.sqlstate() != kUndefinedObject) {
      s = Error(conn, r, command);
      if (s.code() == StatusCode::kAborted) s = InternalError(s.message());
    }
    Return(conn);
    return s;
  }

  Result<PGconn*> Borrow() {
    {
      std::unique_lock<std::mutex> lock(mu_);
      while (idle_.empty() && open_ >= options_.max_connections) cv_.wait(lock);
      if (!idle_.empty()) {
        PGconn* c = idle_.back();
        idle_.pop_back();
        return c;
      }
      ++open_;
    }
    const std::string conninfo =
        options_.conninfo + " connect_timeout=" +
        std::to_string(std::max<int64_t>(1, (options_.connect_timeout_ms + 999) / 1000));
    PGconn* c = PQconnectdb(conninfo.c_str());
    if (PQstatus(c) != CONNECTION_OK) {
      std::string msg = options_.name + ": connect: " + PQerrorMessage(c);
      while (!msg.empty() && msg.back() == '\n') msg.pop_back();
      PQfinish(c);
      std::lock_guard<std::mutex> lock(mu_);
      --open_;
      cv_.notify_one();
      return UnavailableError(msg);
    }
    return c;
  }

  void Return(PGconn* c) {
    std::lock_guard<std::mutex> lock(mu_);
    if (PQstatus(c) == CONNECTION_OK && PQtransactionStatus(c) == PQTRANS_IDLE) {
      idle_.push_back(c);
    } else {
      PQfinish(c);
      --open_;
    }
    cv_.notify_one();
  }

  PostgresParticipantOptions options_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<PGconn*> idle_;
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
  return std::unique_ptr<TxParticipant>(new PostgresParticipant(std::move(options)));
}

}  // namespace converge
