// The relay's SQLite side: one relay at a time holds a lock file next to the database; rows
// are read in sequence order (which is commit order: SQLite has one writer at a time) and
// deleted by sequence range. Deletes never queue behind the service's writers: a delete that
// finds the database busy is retried before the next claim (bounded: past kMaxUndeletedRows
// the relay waits for the lock).
#include <sqlite3.h>

#include <algorithm>

#include "converge/outbox.h"
#include "outbox/outbox_row.h"
#include "outbox/relay_source.h"
#include "sql/sql_internal.h"

namespace converge::outbox_internal {
namespace {

constexpr const char* kRelayAutocheckpointPragma = "PRAGMA wal_autocheckpoint=400";

class SqliteSource final : public OutboxSource {
 public:
  SqliteSource(Env& env, std::string path, SourceOptions options, std::shared_ptr<Waker> waker)
      : env_(env), path_(std::move(path)), options_(std::move(options)), waker_(std::move(waker)) {
    if (options_.sqlite_lock_path.empty()) options_.sqlite_lock_path = path_ + ".relay-lock";
  }

  Result<bool> Acquire(bool /*rebalance*/) override {
    if (db_ == nullptr) {
      sql::SqliteOptions o;
      o.path = path_;
      o.synchronous = options_.sqlite_synchronous;
      o.busy_timeout_ms = options_.sqlite_busy_timeout_ms;
      CONVERGE_ASSIGN_OR_RETURN(db_, sql::Database::OpenSqlite(o));
      // Checkpoint from the relay's own commits (its deletes) at a lower WAL size than the
      // writers' default of 1000 pages, so the copying of WAL pages into the database mostly
      // happens on the relay's thread rather than inside a service writer's COMMIT.
      Status pragma = db_->ExecuteScript(kRelayAutocheckpointPragma);
      if (!pragma.ok()) {
        db_.reset();
        return pragma;
      }
      if (options_.create_schema) {
        Status s = Outbox::CreateSchema(*db_);
        if (!s.ok()) {
          db_.reset();
          return s;
        }
      }
      const char* file = sqlite3_db_filename(static_cast<sqlite3*>(db_->native_handle()), "main");
      if (file != nullptr && *file != '\0' && waker_ != nullptr) {
        subscription_ = WakeupRegistry::Global().Subscribe(file, waker_);
      }
    }
    if (lock_ == nullptr) {
      Result<std::unique_ptr<FileLock>> lock = env_.fs().LockFile(options_.sqlite_lock_path);
      if (!lock.ok()) {
        if (lock.status().code() == StatusCode::kFailedPrecondition) return false;  // standby
        return lock.status();
      }
      lock_ = std::move(lock).value();
    }
    return true;
  }

  Status Claim(size_t max_rows, size_t max_bytes, Batch* out) override {
    out->Clear();
    if (db_ == nullptr) return UnavailableError("relay: not connected");
    if (published_upto_ > deleted_upto_) CONVERGE_RETURN_IF_ERROR(DeletePublished(false));
    // Rows up to published_upto_ are published and only wait for their (deferred) delete.
    // Safe on SQLite: sequence numbers are assigned in commit order (one writer at a time)
    // and never reused, so no row at or below it can still appear.
    std::string sql = "SELECT seq, ";
    sql += kColumns;
    sql += " FROM converge_outbox WHERE seq > $2 ORDER BY seq LIMIT $1";
    sql::Value params[] = {sql::Value::Int(static_cast<int64_t>(max_rows)),
                           sql::Value::Int(published_upto_)};
    Result<int64_t> n = db_->Query(sql, params, [&](const sql::Row& row) -> Status {
      if (out->bytes >= max_bytes && !out->rows.empty()) {
        out->full = true;
        return CancelledError("batch full");  // stops the scan
      }
      ClaimedRow& claimed = out->Add();
      BuildClaimedRow(row, &claimed);
      out->bytes += claimed.value.size() + claimed.row_json.size();
      return Status::Ok();
    });
    if (!n.ok() && n.status().code() != StatusCode::kCancelled) return n.status();
    if (out->rows.size() >= max_rows) out->full = true;
    return Status::Ok();
  }

  Status Remove(const Batch& batch) override {
    if (batch.rows.empty()) return Status::Ok();
    if (db_ == nullptr) return UnavailableError("relay: not connected");
    published_upto_ = std::max(published_upto_, batch.rows.back().seq);
    undeleted_rows_ += batch.rows.size();
    // The delete does not wait for the writers' lock (it is retried before the next claim);
    // past a bound of undeleted rows it waits, so the table stays bounded.
    return DeletePublished(undeleted_rows_ > kMaxUndeletedRows);
  }

  int wait_fd() override { return -1; }
  bool DrainNotifications() override { return false; }
  void Reset() override {
    subscription_.reset();
    lock_.reset();
    db_.reset();
    published_upto_ = 0;
    deleted_upto_ = 0;
    undeleted_rows_ = 0;
  }
  uint32_t buckets_held() const override { return lock_ != nullptr ? 1 : 0; }

 private:
  static constexpr uint64_t kMaxUndeletedRows = 100'000;

  // Deletes every published row (a range: the published rows are exactly the prefix up to
  // published_upto_). Without `wait`, a busy database is not an error: the delete is retried
  // later.
  Status DeletePublished(bool wait) {
    if (!wait) sql::internal::SqliteSetBusyTimeout(*db_, 0);
    sql::Value params[] = {sql::Value::Int(published_upto_)};
    Status s = db_->Execute("DELETE FROM converge_outbox WHERE seq <= $1", params).status();
    if (!wait) sql::internal::SqliteSetBusyTimeout(*db_, options_.sqlite_busy_timeout_ms);
    if (s.ok()) {
      deleted_upto_ = published_upto_;
      undeleted_rows_ = 0;
      return Status::Ok();
    }
    if (!wait && s.code() == StatusCode::kUnavailable) return Status::Ok();  // busy: later
    return s;
  }

  Env& env_;
  std::string path_;
  SourceOptions options_;
  std::shared_ptr<Waker> waker_;
  std::unique_ptr<sql::Database> db_;
  std::unique_ptr<FileLock> lock_;
  std::unique_ptr<WakeupRegistry::Subscription> subscription_;
  int64_t published_upto_ = 0;  // every row at or below is published
  int64_t deleted_upto_ = 0;    // every row at or below is deleted
  uint64_t undeleted_rows_ = 0;
};

}  // namespace

std::unique_ptr<OutboxSource> NewSqliteSource(Env& env, const std::string& path,
                                              const SourceOptions& options,
                                              std::shared_ptr<Waker> waker) {
  return std::make_unique<SqliteSource>(env, path, options, std::move(waker));
}

}  // namespace converge::outbox_internal
