// SqlSagaLedger: a saga participant's ledger in its own SQLite or PostgreSQL database, committed
// together with the handler's effect (converge/saga.h).
#include <libpq-fe.h>

#include <cstdio>
#include <cstring>
#include <mutex>

#include "converge/saga.h"
#include "saga/sqlite_db.h"

namespace converge {
namespace {

using Row = std::vector<std::optional<std::string>>;
using RowFn = std::function<void(const Row&)>;

// "?3" / "$3" (snprintf: GCC 12 warns falsely on short std::string concatenations).
std::string Placeholder(char sigil, int i) {
  char buf[16];
  std::snprintf(buf, sizeof(buf), "%c%d", sigil, i);
  return buf;
}

// The few things the ledger needs from a database.
class Backend {
 public:
  virtual ~Backend() = default;
  virtual Status Exec(const std::string& sql) = 0;
  virtual Status Run(const SqlStatement& st, const RowFn& row) = 0;
  virtual std::string Param(int i) const = 0;  // "?1" or "$1"
  virtual const char* BeginSql() const = 0;
  // Serializes transactions on one (saga, step) (PostgreSQL; SQLite has one writer anyway).
  virtual Status LockKey(std::string_view saga, uint32_t step) = 0;
  virtual const char* Ddl() const = 0;
};

class SqliteBackend : public Backend {
 public:
  Status Open(const std::string& path, int64_t busy_ms) { return db_.Open(path, busy_ms); }
  Status Exec(const std::string& sql) override { return db_.Exec(sql.c_str()); }
  Status Run(const SqlStatement& st, const RowFn& row) override {
    return db_.Run(st.sql, st.params, [&](sqlite3_stmt* s) {
      if (!row) return;
      Row r;
      for (int i = 0; i < sqlite3_column_count(s); ++i) {
        if (sqlite3_column_type(s, i) == SQLITE_NULL) {
          r.emplace_back(std::nullopt);
        } else {
          r.emplace_back(std::string(reinterpret_cast<const char*>(sqlite3_column_blob(s, i)),
                                     static_cast<size_t>(sqlite3_column_bytes(s, i))));
        }
      }
      row(r);
    });
  }
  std::string Param(int i) const override { return Placeholder('?', i); }
  const char* BeginSql() const override { return "BEGIN IMMEDIATE"; }
  Status LockKey(std::string_view, uint32_t) override { return Status::Ok(); }
  const char* Ddl() const override {
    return "CREATE TABLE IF NOT EXISTS converge_saga_ledger(saga_id TEXT NOT NULL, step INTEGER "
           "NOT NULL, state INTEGER NOT NULL, result BLOB, updated_micros INTEGER NOT NULL, "
           "PRIMARY KEY(saga_id, step)); CREATE INDEX IF NOT EXISTS converge_saga_ledger_updated "
           "ON converge_saga_ledger(updated_micros)";
  }

 private:
  saga_internal::Db db_;
};

class PostgresBackend : public Backend {
 public:
  explicit PostgresBackend(std::string conninfo) : conninfo_(std::move(conninfo)) {}
  ~PostgresBackend() override {
    if (conn_ != nullptr) PQfinish(conn_);
  }
  Status Connect() {
    if (conn_ != nullptr && PQstatus(conn_) == CONNECTION_OK) return Status::Ok();
    if (conn_ != nullptr) PQfinish(conn_);
    conn_ = PQconnectdb(conninfo_.c_str());
    if (PQstatus(conn_) != CONNECTION_OK) {
      return UnavailableError(std::string("saga ledger: connect: ") + PQerrorMessage(conn_));
    }
    PQsetNoticeProcessor(
        conn_, [](void*, const char*) {}, nullptr);
    return Status::Ok();
  }
  Status Exec(const std::string& sql) override { return Run(SqlStatement{sql, {}}, nullptr); }
  Status Run(const SqlStatement& st, const RowFn& row) override {
    CONVERGE_RETURN_IF_ERROR(Connect());
    std::vector<const char*> values;
    for (const auto& p : st.params) values.push_back(p ? p->c_str() : nullptr);
    PGresult* r = st.params.empty()
                      ? PQexec(conn_, st.sql.c_str())
                      : PQexecParams(conn_, st.sql.c_str(), static_cast<int>(values.size()),
                                     nullptr, values.data(), nullptr, nullptr, 0);
    const ExecStatusType status = PQresultStatus(r);
    Status s;
    if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK) {
      std::string msg = PQresultErrorMessage(r);
      while (!msg.empty() && (msg.back() == '\n' || msg.back() == ' ')) msg.pop_back();
      const char* state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
      const std::string code = state ? state : "";
      if (PQstatus(conn_) != CONNECTION_OK || code == "40001" || code == "40P01" ||
          code.rfind("08", 0) == 0 || code.rfind("53", 0) == 0 || code.rfind("57", 0) == 0) {
        s = UnavailableError(msg);
      } else if (code.rfind("23", 0) == 0 || code.rfind("22", 0) == 0 || code.rfind("42", 0) == 0 ||
                 code.rfind("P0", 0) == 0) {
        s = AbortedError(msg);
      } else {
        s = InternalError(msg);
      }
    } else if (row) {
      for (int i = 0; i < PQntuples(r); ++i) {
        Row out;
        for (int c = 0; c < PQnfields(r); ++c) {
          if (PQgetisnull(r, i, c)) {
            out.emplace_back(std::nullopt);
          } else {
            out.emplace_back(
                std::string(PQgetvalue(r, i, c), static_cast<size_t>(PQgetlength(r, i, c))));
          }
        }
        row(out);
      }
    }
    PQclear(r);
    return s;
  }
  std::string Param(int i) const override { return Placeholder('$', i); }
  const char* BeginSql() const override { return "BEGIN"; }
  Status LockKey(std::string_view saga, uint32_t step) override {
    return Run(SqlStatement{"SELECT pg_advisory_xact_lock(hashtext($1), $2)",
                            {std::string(saga), std::to_string(step)}},
               nullptr);
  }
  const char* Ddl() const override {
    return "CREATE TABLE IF NOT EXISTS converge_saga_ledger(saga_id TEXT NOT NULL, step INTEGER "
           "NOT NULL, state SMALLINT NOT NULL, result TEXT, updated_micros BIGINT NOT NULL, "
           "PRIMARY KEY(saga_id, step)); CREATE INDEX IF NOT EXISTS converge_saga_ledger_updated "
           "ON converge_saga_ledger(updated_micros)";
  }

 private:
  std::string conninfo_;
  PGconn* conn_ = nullptr;
};

class SqlLedgerImpl : public SqlSagaLedger {
 public:
  SqlLedgerImpl(Env& env, std::unique_ptr<Backend> db, Options options)
      : env_(env), db_(std::move(db)), options_(options) {}

  Status Init() { return db_->Exec(db_->Ddl()); }

  Status Transact(std::string_view saga_id, uint32_t step,
                  const std::function<Status(SagaLedgerEntry&, bool*)>& fn) override {
    std::lock_guard<std::mutex> lock(mu_);
    CONVERGE_RETURN_IF_ERROR(db_->Exec(db_->BeginSql()));
    Status s = TransactLocked(saga_id, step, fn);
    in_tx_ = false;
    if (!s.ok()) {
      db_->Exec("ROLLBACK").IgnoreError();
      return s;
    }
    s = db_->Exec("COMMIT");
    if (!s.ok()) {
      db_->Exec("ROLLBACK").IgnoreError();
      return UnavailableError("saga ledger: commit failed: " + s.ToString());
    }
    if (options_.cleanup_every > 0 && ++transactions_ % options_.cleanup_every == 0) Cleanup();
    return Status::Ok();
  }

  Status Execute(std::span<const SqlStatement> statements) override {
    if (!in_tx_) return FailedPreconditionError("SqlSagaLedger::Execute outside Transact");
    CONVERGE_RETURN_IF_ERROR(db_->Exec("SAVEPOINT converge_exec"));
    for (size_t i = 0; i < statements.size(); ++i) {
      Status s = db_->Run(statements[i], nullptr);
      if (!s.ok()) {
        db_->Exec("ROLLBACK TO SAVEPOINT converge_exec").IgnoreError();
        db_->Exec("RELEASE SAVEPOINT converge_exec").IgnoreError();
        return s.WithContext("statement " + std::to_string(i));
      }
    }
    return db_->Exec("RELEASE SAVEPOINT converge_exec");
  }

  Result<std::vector<std::vector<std::optional<std::string>>>> Query(
      const SqlStatement& statement) override {
    if (!in_tx_) return FailedPreconditionError("SqlSagaLedger::Query outside Transact");
    std::vector<Row> rows;
    CONVERGE_RETURN_IF_ERROR(db_->Run(statement, [&](const Row& r) { rows.push_back(r); }));
    return rows;
  }

 private:
  Status TransactLocked(std::string_view saga_id, uint32_t step,
                        const std::function<Status(SagaLedgerEntry&, bool*)>& fn) {
    CONVERGE_RETURN_IF_ERROR(db_->LockKey(saga_id, step));
    const std::string saga(saga_id);
    const std::string step_text = std::to_string(step);
    SagaLedgerEntry entry;
    CONVERGE_RETURN_IF_ERROR(db_->Run(
        SqlStatement{"SELECT state, result, updated_micros FROM converge_saga_ledger WHERE "
                     "saga_id = " +
                         db_->Param(1) + " AND step = " + db_->Param(2),
                     {saga, step_text}},
        [&](const Row& r) {
          const int state = r[0] ? std::atoi(r[0]->c_str()) : 0;
          if (state >= 0 && state <= static_cast<int>(SagaLedgerEntry::State::kCompensated)) {
            entry.state = static_cast<SagaLedgerEntry::State>(state);
          }
          entry.result = r[1].value_or("");
          entry.updated_micros = r[2] ? std::atoll(r[2]->c_str()) : 0;
        }));
    const SagaLedgerEntry::State before = entry.state;
    CONVERGE_RETURN_IF_ERROR(db_->Exec("SAVEPOINT converge_effect"));
    bool write = false;
    in_tx_ = true;
    Status s = fn(entry, &write);
    in_tx_ = false;
    CONVERGE_RETURN_IF_ERROR(s);
    // A refusal or a fence applies nothing: drop whatever the handler did.
    const bool nothing_applied = entry.state == SagaLedgerEntry::State::kRefused ||
                                 entry.state == SagaLedgerEntry::State::kFenced;
    if (nothing_applied && before == SagaLedgerEntry::State::kNone) {
      CONVERGE_RETURN_IF_ERROR(db_->Exec("ROLLBACK TO SAVEPOINT converge_effect"));
    }
    CONVERGE_RETURN_IF_ERROR(db_->Exec("RELEASE SAVEPOINT converge_effect"));
    if (!write) return Status::Ok();
    const std::string p1 = db_->Param(1), p2 = db_->Param(2), p3 = db_->Param(3),
                      p4 = db_->Param(4), p5 = db_->Param(5);
    return db_->Run(
        SqlStatement{"INSERT INTO converge_saga_ledger(saga_id, step, state, result, "
                     "updated_micros) VALUES(" +
                         p1 + ", " + p2 + ", " + p3 + ", " + p4 + ", " + p5 +
                         ") ON CONFLICT(saga_id, step) DO UPDATE SET state = excluded.state, "
                         "result = excluded.result, updated_micros = excluded.updated_micros",
                     {saga, step_text, std::to_string(static_cast<int>(entry.state)), entry.result,
                      std::to_string(env_.clock().NowWallMicros())}},
        nullptr);
  }

  // Deletes up to 1000 expired entries (failures are retried at the next cleanup).
  void Cleanup() {
    const std::string cutoff =
        std::to_string(env_.clock().NowWallMicros() - options_.retention_ms * 1000);
    db_->Run(SqlStatement{"DELETE FROM converge_saga_ledger WHERE (saga_id, step) IN (SELECT "
                          "saga_id, step FROM converge_saga_ledger WHERE updated_micros < " +
                              db_->Param(1) + " LIMIT 1000)",
                          {cutoff}},
             nullptr)
        .IgnoreError();
  }

  Env& env_;
  std::unique_ptr<Backend> db_;
  Options options_;
  std::mutex mu_;
  bool in_tx_ = false;
  uint64_t transactions_ = 0;
};

}  // namespace

Result<std::unique_ptr<SqlSagaLedger>> SqlSagaLedger::OpenSqlite(Env& env, const std::string& path,
                                                                 Options options) {
  auto backend = std::make_unique<SqliteBackend>();
  CONVERGE_RETURN_IF_ERROR(backend->Open(path, options.busy_timeout_ms));
  auto ledger = std::make_unique<SqlLedgerImpl>(env, std::move(backend), options);
  CONVERGE_RETURN_IF_ERROR(ledger->Init());
  return std::unique_ptr<SqlSagaLedger>(std::move(ledger));
}

Result<std::unique_ptr<SqlSagaLedger>> SqlSagaLedger::OpenPostgres(Env& env,
                                                                   const std::string& conninfo,
                                                                   Options options) {
  auto backend = std::make_unique<PostgresBackend>(conninfo);
  CONVERGE_RETURN_IF_ERROR(backend->Connect());
  auto ledger = std::make_unique<SqlLedgerImpl>(env, std::move(backend), options);
  CONVERGE_RETURN_IF_ERROR(ledger->Init());
  return std::unique_ptr<SqlSagaLedger>(std::move(ledger));
}

}  // namespace converge
