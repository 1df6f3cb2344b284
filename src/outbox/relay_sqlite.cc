// The relay's SQLite side: one relay at a time holds a lock file next to the database; rows
// are read in sequence order (which is commit order: SQLite has one writer at a time) and
// deleted by sequence range.
#include <sqlite3.h>

#include "converge/outbox.h"
#include "outbox/outbox_row.h"
#include "outbox/relay_source.h"

namespace converge::outbox_internal {
namespace {

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
    std::string sql = "SELECT seq, ";
    sql += kColumns;
    sql += " FROM converge_outbox ORDER BY seq LIMIT $1";
    sql::Value params[] = {sql::Value::Int(static_cast<int64_t>(max_rows))};
    Result<int64_t> n = db_->Query(sql, params, [&](const sql::Row& row) -> Status {
      if (out->bytes >= max_bytes && !out->rows.empty()) {
        out->full = true;
        return CancelledError("batch full");  // stops the scan
      }
      out->rows.emplace_back();
      BuildClaimedRow(row, &out->rows.back());
      out->bytes += out->rows.back().value.size() + out->rows.back().row_json.size();
      return Status::Ok();
    });
    if (!n.ok() && n.status().code() != StatusCode::kCancelled) return n.status();
    if (out->rows.size() >= max_rows) out->full = true;
    return Status::Ok();
  }

  Status Remove(const Batch& batch) override {
    if (batch.rows.empty()) return Status::Ok();
    if (db_ == nullptr) return UnavailableError("relay: not connected");
    // The batch is a contiguous prefix in sequence order, and sequence numbers are never
    // reused (AUTOINCREMENT), so a range holds exactly the batch's rows.
    sql::Value params[] = {sql::Value::Int(batch.rows.front().seq),
                           sql::Value::Int(batch.rows.back().seq)};
    return db_->Execute("DELETE FROM converge_outbox WHERE seq >= $1 AND seq <= $2", params)
        .status();
  }

  int wait_fd() override { return -1; }
  bool DrainNotifications() override { return false; }
  void Reset() override {
    subscription_.reset();
    lock_.reset();
    db_.reset();
  }
  uint32_t buckets_held() const override { return lock_ != nullptr ? 1 : 0; }

 private:
  Env& env_;
  std::string path_;
  SourceOptions options_;
  std::shared_ptr<Waker> waker_;
  std::unique_ptr<sql::Database> db_;
  std::unique_ptr<FileLock> lock_;
  std::unique_ptr<WakeupRegistry::Subscription> subscription_;
};

}  // namespace

std::unique_ptr<OutboxSource> NewSqliteSource(Env& env, const std::string& path,
                                              const SourceOptions& options,
                                              std::shared_ptr<Waker> waker) {
  return std::make_unique<SqliteSource>(env, path, options, std::move(waker));
}

}  // namespace converge::outbox_internal
