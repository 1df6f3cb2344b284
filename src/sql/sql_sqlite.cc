// converge/sql.h on SQLite: one sqlite3 connection, prepared statements cached by SQL text.
#include <sqlite3.h>

#include <algorithm>
#include <string>
#include <vector>

#include "converge/sql.h"
#include "sql/sql_internal.h"

namespace converge::sql {
namespace {

Status SqliteStatus(sqlite3* db, int rc, std::string_view what) {
  std::string message(what);
  message += ": ";
  message += db != nullptr ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
  switch (rc & 0xff) {
    case SQLITE_OK:
    case SQLITE_DONE:
    case SQLITE_ROW:
      return Status::Ok();
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
    case SQLITE_PROTOCOL:
      return UnavailableError(message);
    case SQLITE_CONSTRAINT: {
      int ext = rc;
      if (ext == SQLITE_CONSTRAINT_UNIQUE || ext == SQLITE_CONSTRAINT_PRIMARYKEY) {
        return AlreadyExistsError(message);
      }
      if (ext == SQLITE_CONSTRAINT) {
        // Without extended codes: the message tells.
        if (message.find("UNIQUE") != std::string::npos) return AlreadyExistsError(message);
      }
      return FailedPreconditionError(message);
    }
    case SQLITE_ERROR:
    case SQLITE_RANGE:
    case SQLITE_MISMATCH:
    case SQLITE_TOOBIG:
      return InvalidArgumentError(message);
    case SQLITE_FULL:  // the disk is full
      return StorageFullError(message);
    case SQLITE_NOMEM:
      return ResourceExhaustedError(message);
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
      return DataLossError(message);
    case SQLITE_IOERR:
    case SQLITE_CANTOPEN:
      return UnavailableError(message);
    case SQLITE_INTERRUPT:
      return CancelledError(message);
    default:
      return InternalError(message);
  }
}

class SqliteRow final : public Row {
 public:
  explicit SqliteRow(sqlite3_stmt* stmt) : stmt_(stmt), n_(sqlite3_column_count(stmt)) {}
  size_t size() const override { return static_cast<size_t>(n_); }
  bool IsNull(size_t column) const override {
    Check(column);
    return sqlite3_column_type(stmt_, static_cast<int>(column)) == SQLITE_NULL;
  }
  Result<int64_t> Int(size_t column) const override {
    Check(column);
    int type = sqlite3_column_type(stmt_, static_cast<int>(column));
    if (type == SQLITE_NULL) return int64_t{0};
    if (type != SQLITE_INTEGER) {
      return InvalidArgumentError("column " + std::to_string(column) + " is not an integer");
    }
    return static_cast<int64_t>(sqlite3_column_int64(stmt_, static_cast<int>(column)));
  }
  std::string_view Bytes(size_t column) const override {
    Check(column);
    int c = static_cast<int>(column);
    const void* p = sqlite3_column_blob(stmt_, c);
    int n = sqlite3_column_bytes(stmt_, c);
    if (p == nullptr || n <= 0) return {};
    return std::string_view(static_cast<const char*>(p), static_cast<size_t>(n));
  }

 private:
  void Check(size_t column) const { CONVERGE_CHECK(column < static_cast<size_t>(n_)); }
  sqlite3_stmt* stmt_;
  int n_;
};

struct Finalizer {
  void operator()(sqlite3_stmt* stmt) const { sqlite3_finalize(stmt); }
};

class SqliteDatabase;

class SqliteTransaction final : public Transaction {
 public:
  explicit SqliteTransaction(SqliteDatabase& db) : db_(db) {}
  Engine engine() const override { return Engine::kSqlite; }
  Result<int64_t> Execute(std::string_view sql, std::span<const Value> params) override;
  Result<int64_t> Query(std::string_view sql, std::span<const Value> params,
                        const RowCallback& on_row) override;
  void OnCommit(std::function<void()> fn) override { on_commit_.push_back(std::move(fn)); }
  void* native_handle() override;

  std::vector<std::function<void()>> TakeCallbacks() { return std::move(on_commit_); }

 private:
  SqliteDatabase& db_;
  std::vector<std::function<void()>> on_commit_;
};

class SqliteDatabase final : public Database {
 public:
  SqliteDatabase(sqlite3* db, SqliteOptions options)
      : db_(db), options_(std::move(options)), cache_(options_.statement_cache_max, Finalizer{}) {
    busy_timeout_us_ = options_.busy_timeout_ms * 1000;
    sqlite3_busy_handler(db_, &SqliteDatabase::OnBusy, this);
  }
  ~SqliteDatabase() override {
    cache_.Clear();
    sqlite3_close_v2(db_);
  }

  Engine engine() const override { return Engine::kSqlite; }

  Status Transact(const std::function<Status(Transaction&)>& fn) override {
    // IMMEDIATE takes the write lock now, so a writer never fails later on a lock upgrade.
    CONVERGE_RETURN_IF_ERROR(Exec("BEGIN IMMEDIATE"));
    SqliteTransaction tx(*this);
    Status s = fn(tx);
    if (s.ok()) s = Exec("COMMIT");
    if (!s.ok()) {
      if (!sqlite3_get_autocommit(db_)) Exec("ROLLBACK").IgnoreError();
      return s;
    }
    for (auto& cb : tx.TakeCallbacks()) cb();
    return Status::Ok();
  }

  Result<int64_t> Execute(std::string_view sql, std::span<const Value> params) override {
    return Run(sql, params, nullptr);
  }
  Result<int64_t> Query(std::string_view sql, std::span<const Value> params,
                        const RowCallback& on_row) override {
    return Run(sql, params, &on_row);
  }

  Status ExecuteScript(std::string_view script) override {
    std::string text(script);
    char* err = nullptr;
    int rc = sqlite3_exec(db_, text.c_str(), nullptr, nullptr, &err);
    if (err != nullptr) sqlite3_free(err);
    return SqliteStatus(db_, rc, "sqlite script");
  }

  bool healthy() const override { return true; }
  Status Reconnect() override { return Status::Ok(); }
  void* native_handle() override { return db_; }
  const std::string& target() const override { return options_.path; }

  // Runs one statement; `on_row` null means "no rows expected" (rows are skipped).
  Result<int64_t> Run(std::string_view sql, std::span<const Value> params,
                      const RowCallback* on_row) {
    sqlite3_stmt** slot = cache_.Find(sql);
    if (slot == nullptr) {
      std::string rewritten = internal::ToSqlitePlaceholders(sql);
      sqlite3_stmt* stmt = nullptr;
      int rc = sqlite3_prepare_v3(db_, rewritten.data(), static_cast<int>(rewritten.size()),
                                  SQLITE_PREPARE_PERSISTENT, &stmt, nullptr);
      if (rc != SQLITE_OK) {
        sqlite3_finalize(stmt);
        return SqliteStatus(db_, rc, "prepare");
      }
      if (stmt == nullptr) return InvalidArgumentError("sqlite: empty statement");
      slot = cache_.Insert(std::string(sql), stmt);
    }
    sqlite3_stmt* stmt = *slot;
    struct Reset {
      sqlite3_stmt* s;
      ~Reset() {
        sqlite3_reset(s);
        sqlite3_clear_bindings(s);
      }
    } reset{stmt};
    if (static_cast<int>(params.size()) != sqlite3_bind_parameter_count(stmt)) {
      return InvalidArgumentError("sqlite: statement takes " +
                                  std::to_string(sqlite3_bind_parameter_count(stmt)) +
                                  " parameters, got " + std::to_string(params.size()));
    }
    for (size_t i = 0; i < params.size(); ++i) {
      int idx = static_cast<int>(i + 1);
      const Value& v = params[i];
      int rc = SQLITE_OK;
      switch (v.kind()) {
        case Value::Kind::kNull:
          rc = sqlite3_bind_null(stmt, idx);
          break;
        case Value::Kind::kInt:
          rc = sqlite3_bind_int64(stmt, idx, v.int_value());
          break;
        case Value::Kind::kDouble:
          rc = sqlite3_bind_double(stmt, idx, v.double_value());
          break;
        case Value::Kind::kText:
          // An empty view may have a null pointer, which SQLite would bind as NULL.
          rc = sqlite3_bind_text64(stmt, idx, v.bytes().empty() ? "" : v.bytes().data(),
                                   v.bytes().size(), SQLITE_STATIC, SQLITE_UTF8);
          break;
        case Value::Kind::kBlob:
          // A zero-length blob must not bind as NULL: pass a valid pointer.
          rc = sqlite3_bind_blob64(stmt, idx, v.bytes().empty() ? "" : v.bytes().data(),
                                   v.bytes().size(), SQLITE_STATIC);
          break;
      }
      if (rc != SQLITE_OK) return SqliteStatus(db_, rc, "bind");
    }
    int64_t rows = 0;
    for (;;) {
      int rc = sqlite3_step(stmt);
      if (rc == SQLITE_DONE) break;
      if (rc != SQLITE_ROW) return SqliteStatus(db_, rc, "step");
      ++rows;
      if (on_row != nullptr) {
        SqliteRow row(stmt);
        CONVERGE_RETURN_IF_ERROR((*on_row)(row));
      }
    }
    if (on_row != nullptr) return rows;
    return sqlite3_stmt_readonly(stmt) ? int64_t{0} : static_cast<int64_t>(sqlite3_changes64(db_));
  }

  Status Exec(const char* sql) {
    char* err = nullptr;
    int rc = sqlite3_exec(db_, sql, nullptr, nullptr, &err);
    if (err != nullptr) sqlite3_free(err);
    return SqliteStatus(db_, rc, sql);
  }

  sqlite3* raw() { return db_; }

  // 0 makes a busy database fail at once (Unavailable) instead of waiting.
  void set_busy_timeout_ms(int64_t ms) { busy_timeout_us_ = ms * 1000; }

 private:
  // SQLite's default busy handler sleeps 1, 2, 5, 10, 15, 20, 25, ... ms between attempts. The
  // locks met here (another writer's COMMIT, the relay deleting a published batch) last well
  // under a millisecond to a few, so those steps lose most of the wait: a writer behind the
  // relay's delete slept ~5 ms per collision. This handler retries after 20 us, doubling up to
  // 1 ms, until busy_timeout_ms of sleep has passed; the sleep is the VFS's (SQLite's own OS
  // layer, as for the default handler).
  static int OnBusy(void* self_ptr, int attempts) {
    auto* self = static_cast<SqliteDatabase*>(self_ptr);
    if (attempts == 0) self->busy_slept_us_ = 0;
    const int64_t left = self->busy_timeout_us_ - self->busy_slept_us_;
    if (left <= 0) return 0;  // give up: SQLITE_BUSY
    const int64_t step = int64_t{20} << std::min(attempts, 6);
    const int64_t delay = std::min({step, int64_t{1000}, left});
    sqlite3_vfs* vfs = sqlite3_vfs_find(nullptr);
    if (vfs == nullptr || vfs->xSleep == nullptr) return 0;
    vfs->xSleep(vfs, static_cast<int>(delay));
    self->busy_slept_us_ += delay;
    return 1;
  }

  sqlite3* db_;
  int64_t busy_timeout_us_ = 0;
  int64_t busy_slept_us_ = 0;
  SqliteOptions options_;
  internal::StatementCache<sqlite3_stmt*, Finalizer> cache_;
};

Result<int64_t> SqliteTransaction::Execute(std::string_view sql, std::span<const Value> params) {
  return db_.Run(sql, params, nullptr);
}
Result<int64_t> SqliteTransaction::Query(std::string_view sql, std::span<const Value> params,
                                         const RowCallback& on_row) {
  return db_.Run(sql, params, &on_row);
}
void* SqliteTransaction::native_handle() { return db_.raw(); }

}  // namespace

namespace internal {

void SqliteSetBusyTimeout(Database& db, int64_t ms) {
  if (auto* sqlite = dynamic_cast<SqliteDatabase*>(&db)) sqlite->set_busy_timeout_ms(ms);
}

}  // namespace internal

Result<std::unique_ptr<Database>> Database::OpenSqlite(const SqliteOptions& options) {
  if (options.path.empty()) return InvalidArgumentError("sqlite: empty path");
  if (options.busy_timeout_ms < 0 || options.busy_timeout_ms > 3'600'000) {
    return InvalidArgumentError("sqlite: busy_timeout_ms must be in [0, 3600000]");
  }
  std::string sync = options.synchronous;
  if (sync != "full" && sync != "normal" && sync != "off" && sync != "extra") {
    return InvalidArgumentError("sqlite: synchronous must be full, normal, extra or off");
  }
  sqlite3* db = nullptr;
  int rc =
      sqlite3_open_v2(options.path.c_str(), &db,
                      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nullptr);
  if (rc != SQLITE_OK) {
    Status s = SqliteStatus(db, rc, "open '" + options.path + "'");
    sqlite3_close_v2(db);
    return s;
  }
  sqlite3_extended_result_codes(db, 1);
  auto database = std::make_unique<SqliteDatabase>(db, options);
  std::string pragmas;
  if (options.wal) pragmas += "PRAGMA journal_mode=WAL;";
  pragmas += "PRAGMA synchronous=" + sync + ";";
  CONVERGE_RETURN_IF_ERROR(database->ExecuteScript(pragmas));
  return std::unique_ptr<Database>(std::move(database));
}

}  // namespace converge::sql
