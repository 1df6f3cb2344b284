// SqlSagaLedger: a saga participant's ledger in its own database through converge's SQL layer,
// committed together with the handler's effect (converge/saga.h).
#include <mutex>

#include "converge/saga.h"

namespace converge {
namespace {

using Rows = std::vector<std::vector<std::optional<std::string>>>;

constexpr const char* kSqliteSchema =
    "CREATE TABLE IF NOT EXISTS converge_saga_ledger(saga_id TEXT NOT NULL, step INTEGER NOT "
    "NULL, state INTEGER NOT NULL, result BLOB, updated_micros INTEGER NOT NULL, PRIMARY "
    "KEY(saga_id, step)); CREATE INDEX IF NOT EXISTS converge_saga_ledger_updated ON "
    "converge_saga_ledger(updated_micros)";
constexpr const char* kPostgresSchema =
    "CREATE TABLE IF NOT EXISTS converge_saga_ledger(saga_id TEXT NOT NULL, step INTEGER NOT "
    "NULL, state SMALLINT NOT NULL, result BYTEA, updated_micros BIGINT NOT NULL, PRIMARY "
    "KEY(saga_id, step)); CREATE INDEX IF NOT EXISTS converge_saga_ledger_updated ON "
    "converge_saga_ledger(updated_micros)";

// Serialization failures and deadlocks are worth a retry, not a refusal.
Status Transient(Status s) {
  if (s.code() == StatusCode::kAborted) return UnavailableError(s.message());
  return s;
}

class SqlLedgerImpl : public SqlSagaLedger {
 public:
  SqlLedgerImpl(Env& env, std::unique_ptr<sql::Database> db, Options options)
      : env_(env), db_(std::move(db)), options_(options) {}

  Status Init() {
    return db_->ExecuteScript(db_->engine() == sql::Engine::kPostgres ? kPostgresSchema
                                                                      : kSqliteSchema);
  }

  Status Transact(std::string_view saga_id, uint32_t step,
                  const std::function<Status(SagaLedgerEntry&, bool*)>& fn) override {
    std::lock_guard<std::mutex> lock(mu_);
    if (!db_->healthy()) CONVERGE_RETURN_IF_ERROR(db_->Reconnect());
    Status inner;
    Status s = db_->Transact([&](sql::Transaction& tx) {
      inner = TransactIn(tx, saga_id, step, fn);
      tx_ = nullptr;
      return inner;
    });
    if (!s.ok()) {
      // A failure of COMMIT itself: nothing is known to be stored; retry.
      return inner.ok() ? UnavailableError("saga ledger: " + s.ToString()) : s;
    }
    if (options_.cleanup_every > 0 && ++transactions_ % options_.cleanup_every == 0) Cleanup();
    return Status::Ok();
  }

  sql::Transaction* transaction() override { return tx_; }

  Status Execute(std::span<const SqlStatement> statements) override {
    if (tx_ == nullptr) return FailedPreconditionError("SqlSagaLedger::Execute outside Transact");
    CONVERGE_RETURN_IF_ERROR(tx_->Execute("SAVEPOINT converge_exec").status());
    for (size_t i = 0; i < statements.size(); ++i) {
      std::vector<sql::Value> params = Params(statements[i]);
      Result<int64_t> r = tx_->Execute(statements[i].sql, params);
      if (!r.ok()) {
        tx_->Execute("ROLLBACK TO SAVEPOINT converge_exec").status().IgnoreError();
        tx_->Execute("RELEASE SAVEPOINT converge_exec").status().IgnoreError();
        return Transient(r.status().WithContext("statement " + std::to_string(i)));
      }
    }
    return tx_->Execute("RELEASE SAVEPOINT converge_exec").status();
  }

  Result<Rows> Query(const SqlStatement& statement) override {
    if (tx_ == nullptr) return FailedPreconditionError("SqlSagaLedger::Query outside Transact");
    std::vector<sql::Value> params = Params(statement);
    Rows rows;
    Result<int64_t> r = tx_->Query(statement.sql, params, [&](const sql::Row& row) {
      std::vector<std::optional<std::string>> out;
      for (size_t c = 0; c < row.size(); ++c) {
        if (row.IsNull(c)) {
          out.emplace_back(std::nullopt);
        } else {
          out.emplace_back(std::string(row.Bytes(c)));
        }
      }
      rows.push_back(std::move(out));
      return Status::Ok();
    });
    if (!r.ok()) return Transient(r.status());
    return rows;
  }

 private:
  static std::vector<sql::Value> Params(const SqlStatement& st) {
    std::vector<sql::Value> params;
    params.reserve(st.params.size());
    for (const auto& p : st.params) params.push_back(p ? sql::Value::Text(*p) : sql::Value::Null());
    return params;
  }

  Status TransactIn(sql::Transaction& tx, std::string_view saga_id, uint32_t step,
                    const std::function<Status(SagaLedgerEntry&, bool*)>& fn) {
    const sql::Value key[2] = {sql::Value::Text(saga_id), sql::Value::Int(step)};
    if (tx.engine() == sql::Engine::kPostgres) {
      CONVERGE_RETURN_IF_ERROR(Transient(
          tx.Query("SELECT pg_advisory_xact_lock(hashtext($1), $2::int)", key, [](const sql::Row&) {
              return Status::Ok();
            }).status()));
    }
    SagaLedgerEntry entry;
    Status read = tx.Query(
                        "SELECT state, result, updated_micros FROM converge_saga_ledger WHERE "
                        "saga_id = $1 AND step = $2",
                        key,
                        [&](const sql::Row& row) -> Status {
                          CONVERGE_ASSIGN_OR_RETURN(int64_t state, row.Int(0));
                          if (state < 0 ||
                              state > static_cast<int64_t>(SagaLedgerEntry::State::kCompensated)) {
                            return DataLossError("saga ledger: bad state " + std::to_string(state));
                          }
                          entry.state = static_cast<SagaLedgerEntry::State>(state);
                          entry.result = std::string(row.Bytes(1));
                          CONVERGE_ASSIGN_OR_RETURN(entry.updated_micros, row.Int(2));
                          return Status::Ok();
                        })
                      .status();
    CONVERGE_RETURN_IF_ERROR(Transient(read));
    const SagaLedgerEntry::State before = entry.state;
    CONVERGE_RETURN_IF_ERROR(tx.Execute("SAVEPOINT converge_effect").status());
    bool write = false;
    tx_ = &tx;
    Status s = fn(entry, &write);
    tx_ = nullptr;
    CONVERGE_RETURN_IF_ERROR(s);
    // A refusal or a fence applies nothing: drop whatever the handler did.
    const bool nothing_applied = entry.state == SagaLedgerEntry::State::kRefused ||
                                 entry.state == SagaLedgerEntry::State::kFenced;
    if (nothing_applied && before == SagaLedgerEntry::State::kNone) {
      CONVERGE_RETURN_IF_ERROR(tx.Execute("ROLLBACK TO SAVEPOINT converge_effect").status());
    }
    CONVERGE_RETURN_IF_ERROR(tx.Execute("RELEASE SAVEPOINT converge_effect").status());
    if (!write) return Status::Ok();
    const sql::Value row[5] = {key[0], key[1], sql::Value::Int(static_cast<int64_t>(entry.state)),
                               sql::Value::Blob(entry.result),
                               sql::Value::Int(env_.clock().NowWallMicros())};
    return Transient(tx.Execute("INSERT INTO converge_saga_ledger(saga_id, step, state, result, "
                                "updated_micros) VALUES($1, $2, $3, $4, $5) ON CONFLICT(saga_id, "
                                "step) DO UPDATE SET state = excluded.state, result = "
                                "excluded.result, updated_micros = excluded.updated_micros",
                                row)
                         .status());
  }

  // Deletes up to 1000 expired entries (a failure is retried at the next cleanup).
  void Cleanup() {
    const sql::Value cutoff[1] = {
        sql::Value::Int(env_.clock().NowWallMicros() - options_.retention_ms * 1000)};
    db_->Execute(
           "DELETE FROM converge_saga_ledger WHERE (saga_id, step) IN (SELECT saga_id, "
           "step FROM converge_saga_ledger WHERE updated_micros < $1 LIMIT 1000)",
           cutoff)
        .status()
        .IgnoreError();
  }

  Env& env_;
  std::unique_ptr<sql::Database> db_;
  Options options_;
  std::mutex mu_;
  sql::Transaction* tx_ = nullptr;
  uint64_t transactions_ = 0;
};

}  // namespace

Result<std::unique_ptr<SqlSagaLedger>> SqlSagaLedger::Open(Env& env,
                                                           std::unique_ptr<sql::Database> db,
                                                           Options options) {
  if (db == nullptr) return InvalidArgumentError("saga ledger: a database is required");
  auto ledger = std::make_unique<SqlLedgerImpl>(env, std::move(db), options);
  CONVERGE_RETURN_IF_ERROR(ledger->Init());
  return std::unique_ptr<SqlSagaLedger>(std::move(ledger));
}

Result<std::unique_ptr<SqlSagaLedger>> SqlSagaLedger::OpenSqlite(Env& env, const std::string& path,
                                                                 Options options) {
  sql::SqliteOptions o;
  o.path = path;
  CONVERGE_ASSIGN_OR_RETURN(std::unique_ptr<sql::Database> db, sql::Database::OpenSqlite(o));
  return Open(env, std::move(db), options);
}

Result<std::unique_ptr<SqlSagaLedger>> SqlSagaLedger::OpenPostgres(Env& env,
                                                                   const std::string& conninfo,
                                                                   Options options) {
  sql::PostgresOptions o;
  o.conninfo = conninfo;
  CONVERGE_ASSIGN_OR_RETURN(std::unique_ptr<sql::Database> db, sql::Database::ConnectPostgres(o));
  return Open(env, std::move(db), options);
}

}  // namespace converge
