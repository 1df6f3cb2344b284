// The saga log in a PostgreSQL table (saga/saga_log.h: NewPostgresRecordStore), on one
// connection of the sql layer (converge/sql.h), which bounds the connect and every statement.
#include <string>

#include "converge/sql.h"
#include "saga/records.h"
#include "saga/saga_log.h"

namespace converge::saga_internal {
namespace {

bool ValidTable(std::string_view t) {
  if (t.empty() || t.size() > 60) return false;
  for (char c : t) {
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_')) return false;
  }
  return true;
}

class PostgresRecordStore : public RecordStore {
 public:
  explicit PostgresRecordStore(PostgresRecordStoreOptions options) : options_(std::move(options)) {}
  ~PostgresRecordStore() override {
    if (db_ == nullptr) return;
    Sync().IgnoreError();
    if (locked_ && db_->healthy()) {
      // Released before the session ends, so a successor can take it at once (the server may
      // notice the closed connection only a moment later).
      const sql::Value key[] = {sql::Value::Text(options_.table)};
      db_->Query("SELECT pg_advisory_unlock(hashtext($1))", key, Ignore).status().IgnoreError();
    }
  }

  Status Open(const ReplayFn& replay) {
    sql::PostgresOptions o;
    o.conninfo = options_.conninfo;
    o.connect_timeout_ms = options_.connect_timeout_ms;
    o.statement_timeout_ms = options_.statement_timeout_ms;
    // The advisory lock lives in the session: a new session would write without it.
    o.reconnect = false;
    Result<std::unique_ptr<sql::Database>> db = sql::Database::ConnectPostgres(o);
    if (!db.ok()) return db.status().WithContext("saga log: connect to PostgreSQL");
    db_ = std::move(db).value();

    const sql::Value key[] = {sql::Value::Text(options_.table)};
    bool got = false;
    CONVERGE_RETURN_IF_ERROR(Check(db_->Query("SELECT pg_try_advisory_lock(hashtext($1))", key,
                                              [&](const sql::Row& row) {
                                                got = row.Bytes(0) == "t";
                                                return Status::Ok();
                                              })
                                       .status(),
                                   "advisory lock"));
    if (!got) {
      return FailedPreconditionError("saga log: table '" + options_.table +
                                     "' is used by another orchestrator");
    }
    locked_ = true;
    CONVERGE_RETURN_IF_ERROR(
        Check(db_->ExecuteScript("CREATE TABLE IF NOT EXISTS " + options_.table +
                                 " (seq BIGSERIAL PRIMARY KEY, payload "
                                 "BYTEA NOT NULL)"),
              "create table"));
    return Replay(replay);
  }

  // Calls `replay` for every payload of every row, in order, a bounded number of rows at a time.
  Status Replay(const ReplayFn& replay) {
    total_bytes_ = 0;
    base_bytes_ = 0;
    const std::string select =
        "SELECT seq, payload FROM " + options_.table + " WHERE seq > $1 ORDER BY seq LIMIT 256";
    int64_t last = 0;
    bool first_row = true;
    for (;;) {
      const sql::Value after[] = {sql::Value::Int(last)};
      Result<int64_t> n = db_->Query(select, after, [&](const sql::Row& row) -> Status {
        CONVERGE_ASSIGN_OR_RETURN(last, row.Int(0));
        std::string_view data = row.Bytes(1);
        total_bytes_ += data.size();
        if (first_row && data.size() > kFrameHeaderBytes &&
            static_cast<uint8_t>(data[kFrameHeaderBytes]) == kBaseBeginType) {
          base_bytes_ = data.size();
        }
        first_row = false;
        FrameReader reader(data);
        std::string_view payload;
        while (reader.Next(&payload)) {
          Status s = replay(payload);
          if (s.code() == StatusCode::kDataLoss) break;
          CONVERGE_RETURN_IF_ERROR(s);
        }
        return Status::Ok();
      });
      if (!n.ok()) {
        // A replay error is returned as it is; a database error gets the store's context.
        if (!db_->healthy()) return Check(n.status(), "read");
        return n.status();
      }
      if (*n == 0) break;
    }
    return Status::Ok();
  }

  Status Append(std::string_view framed) override {
    if (failed_) return UnavailableError("saga log: the PostgreSQL session was lost");
    pending_.append(framed.data(), framed.size());
    return Status::Ok();
  }

  Status Sync() override {
    if (pending_.empty()) return Status::Ok();
    CONVERGE_RETURN_IF_ERROR(InsertRow(pending_));
    total_bytes_ += pending_.size();
    pending_.clear();
    return Status::Ok();
  }

  Status Rebase(std::string_view base) override {
    CONVERGE_RETURN_IF_ERROR(Sync());
    if (failed_) return UnavailableError("saga log: the PostgreSQL session was lost");
    const std::string remove = "DELETE FROM " + options_.table;
    const std::string insert = "INSERT INTO " + options_.table + " (payload) VALUES ($1)";
    const sql::Value row[] = {sql::Value::Blob(base)};
    CONVERGE_RETURN_IF_ERROR(Check(db_->Transact([&](sql::Transaction& tx) -> Status {
      CONVERGE_RETURN_IF_ERROR(tx.Execute(remove).status());
      return tx.Execute(insert, row).status();
    }),
                                   "rebase"));
    total_bytes_ = base.size();
    base_bytes_ = base.size();
    return Status::Ok();
  }

  // Every write is one autocommitted statement or one transaction: when it failed on a live
  // session it left nothing behind, so dropping the unsynced bytes is the whole undo. After a
  // lost session the outcome of the last write is unknown (and the lock is gone).
  Status UndoUnsynced() override {
    if (failed_) return UnavailableError("saga log: the PostgreSQL session was lost");
    pending_.clear();
    return Status::Ok();
  }
  Status ReplayDurable(const ReplayFn& replay) override {
    if (failed_) return UnavailableError("saga log: the PostgreSQL session was lost");
    return Replay(replay);
  }

  uint64_t total_bytes() const override { return total_bytes_; }
  uint64_t bytes_since_base() const override { return total_bytes_ - base_bytes_; }

 private:
  static Status Ignore(const sql::Row&) { return Status::Ok(); }

  // Adds the store's context to a database error; a lost session ends the store for good,
  // because the advisory lock that keeps out a second orchestrator went with it.
  Status Check(Status s, const std::string& what) {
    if (s.ok()) return s;
    if (!db_->healthy()) {
      failed_ = true;
      return UnavailableError("saga log: " + what + ": " + std::string(s.message()));
    }
    return s.WithContext("saga log: " + what);
  }

  Status InsertRow(std::string_view bytes) {
    if (failed_) return UnavailableError("saga log: the PostgreSQL session was lost");
    const sql::Value row[] = {sql::Value::Blob(bytes)};
    return Check(
        db_->Execute("INSERT INTO " + options_.table + " (payload) VALUES ($1)", row).status(),
        "insert");
  }

  PostgresRecordStoreOptions options_;
  std::unique_ptr<sql::Database> db_;
  std::string pending_;
  uint64_t total_bytes_ = 0;
  uint64_t base_bytes_ = 0;
  bool failed_ = false;
  bool locked_ = false;
};

}  // namespace

Result<std::unique_ptr<RecordStore>> NewPostgresRecordStore(
    const PostgresRecordStoreOptions& options, const RecordStore::ReplayFn& replay) {
  if (!ValidTable(options.table)) {
    return InvalidArgumentError("saga log: postgres_table must be 1..60 of [a-z0-9_]");
  }
  if (options.conninfo.empty()) return InvalidArgumentError("saga log: conninfo is required");
  auto store = std::make_unique<PostgresRecordStore>(options);
  CONVERGE_RETURN_IF_ERROR(store->Open(replay));
  return std::unique_ptr<RecordStore>(std::move(store));
}

}  // namespace converge::saga_internal
