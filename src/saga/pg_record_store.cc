// The saga log in a PostgreSQL table (saga/saga_log.h: NewPostgresRecordStore), on one
// connection of the sql layer (converge/sql.h), which bounds the connect and every statement.
#include <string>

#include "converge/sql.h"
#include "core/record_log.h"
#include "saga/records.h"
#include "saga/saga_log.h"
#include "sql/identifier.h"

namespace converge::saga_internal {
namespace {

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
        // A row is a record-log file of its own: the header, then the batch's frames (rows of
        // releases before the header hold the frames of then).
        internal::record_log::Reader reader =
            internal::record_log::Reader::ForFile(data, internal::record_log::Legacy::kSagaV0);
        std::string_view payload;
        bool first_record = true;
        while (reader.Next(&payload)) {
          if (first_row && first_record && !payload.empty() &&
              static_cast<uint8_t>(payload[0]) == kBaseBeginType) {
            base_bytes_ = data.size();
          }
          first_record = false;
          Status s = replay(payload);
          if (s.code() == StatusCode::kDataLoss) break;
          CONVERGE_RETURN_IF_ERROR(s);
        }
        first_row = false;
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
    CONVERGE_ASSIGN_OR_RETURN(uint64_t row_bytes, InsertRow(pending_));
    total_bytes_ += row_bytes;
    pending_.clear();
    return Status::Ok();
  }

  Status Rebase(std::string_view base) override {
    CONVERGE_RETURN_IF_ERROR(Sync());
    if (failed_) return UnavailableError("saga log: the PostgreSQL session was lost");
    const std::string remove = "DELETE FROM " + options_.table;
    const std::string insert = "INSERT INTO " + options_.table + " (payload) VALUES ($1)";
    const std::string bytes = Row(base);
    const sql::Value row[] = {sql::Value::Blob(bytes)};
    CONVERGE_RETURN_IF_ERROR(Check(db_->Transact([&](sql::Transaction& tx) -> Status {
      CONVERGE_RETURN_IF_ERROR(tx.Execute(remove).status());
      return tx.Execute(insert, row).status();
    }),
                                   "rebase"));
    total_bytes_ = bytes.size();
    base_bytes_ = bytes.size();
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

  // A row's bytes: the record-log file header, then `frames`.
  static std::string Row(std::string_view frames) {
    std::string bytes;
    bytes.reserve(internal::record_log::kFileHeaderBytes + frames.size());
    internal::record_log::AppendFileHeader(&bytes);
    bytes.append(frames.data(), frames.size());
    return bytes;
  }

  // Inserts one row (header and `frames`). Returns the row's size.
  Result<uint64_t> InsertRow(std::string_view frames) {
    if (failed_) return UnavailableError("saga log: the PostgreSQL session was lost");
    const std::string bytes = Row(frames);
    const sql::Value row[] = {sql::Value::Blob(bytes)};
    CONVERGE_RETURN_IF_ERROR(Check(
        db_->Execute("INSERT INTO " + options_.table + " (payload) VALUES ($1)", row).status(),
        "insert"));
    return uint64_t{bytes.size()};
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
  if (!sql::IsPlainTableName(options.table)) {
    return InvalidArgumentError("saga log: postgres_table must be 1..60 of [a-z0-9_]");
  }
  if (options.conninfo.empty()) return InvalidArgumentError("saga log: conninfo is required");
  auto store = std::make_unique<PostgresRecordStore>(options);
  CONVERGE_RETURN_IF_ERROR(store->Open(replay));
  return std::unique_ptr<RecordStore>(std::move(store));
}

}  // namespace converge::saga_internal
