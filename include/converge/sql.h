// The one SQL access layer over SQLite (the embedded default) and PostgreSQL (libpq): every
// database connection converge opens goes through it (the outbox, the relay, the inbox, the
// saga log and ledger, the two-phase-commit participants), and services use it so that their
// business writes and converge's rows share one local transaction.
//
// Contract
// - A Database is one connection. Statements are prepared once per SQL text and cached (at
//   most `statement_cache_max` per connection; the least recently used is finalized past it).
// - Parameters are written $1, $2, ... in both engines (translated to ?1, ?2 for SQLite).
// - Transact(fn) runs `fn` between BEGIN and COMMIT; if `fn` returns an error, or COMMIT fails,
//   the transaction is rolled back and the error returned: nothing of it is applied. Callbacks
//   registered with Transaction::OnCommit run after a successful COMMIT only.
// - Errors (StatusCode tells the caller what to do):
//     Unavailable        the connection is lost or the database is busy/locked/shutting down;
//                        retry the whole transaction (the next call reconnects).
//     Aborted            serialization failure or deadlock: redo the whole transaction.
//     AlreadyExists      a unique or primary key was violated.
//     FailedPrecondition another constraint (NOT NULL, CHECK, foreign key) was violated.
//     InvalidArgument    the SQL is wrong (syntax, unknown table or column, bad parameter).
//     DeadlineExceeded   statement_timeout / lock timeout hit.
//     ResourceExhausted  the database is out of disk, memory or connections.
//     DataLoss           the database file is corrupt.
//     Internal           anything else; the message carries the engine's text (and SQLSTATE).
// - Durability: an OK from Transact (or an autocommit Execute) means COMMIT returned OK: durable
//   as the engine is configured (SQLite: `synchronous`; PostgreSQL: synchronous_commit).
//
// Thread-safety: a Database and its Transaction are used by one thread at a time. Different
// Database objects (connections) may be used from different threads.
// Blocking: every call blocks on the database (file I/O or a network round trip), bounded by
// busy_timeout_ms (SQLite) and connect/statement/lock timeouts (PostgreSQL).
// Timeouts (PostgreSQL): every connection is opened with connect_timeout_ms (whatever form the
// conninfo has: key=value or a postgres:// URI; a connect_timeout written in the conninfo is
// overridden) and gets statement_timeout and lock_timeout set for its session, so no call
// waits without bound on an unreachable or stuck server.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "converge/status.h"

namespace converge::sql {

enum class Engine : uint8_t { kSqlite, kPostgres };

// "sqlite" | "postgres".
std::string_view EngineName(Engine engine);

// A statement parameter. Text and blob values are views: they must stay valid for the call.
class Value {
 public:
  enum class Kind : uint8_t { kNull, kInt, kDouble, kText, kBlob };

  Value() = default;
  static Value Null() { return Value(); }
  static Value Int(int64_t v) {
    Value x;
    x.kind_ = Kind::kInt;
    x.int_ = v;
    return x;
  }
  static Value Double(double v) {
    Value x;
    x.kind_ = Kind::kDouble;
    x.double_ = v;
    return x;
  }
  static Value Text(std::string_view v) {
    Value x;
    x.kind_ = Kind::kText;
    x.bytes_ = v;
    return x;
  }
  static Value Blob(std::string_view v) {
    Value x;
    x.kind_ = Kind::kBlob;
    x.bytes_ = v;
    return x;
  }
  // Text, or NULL when `v` is empty.
  static Value TextOrNull(std::string_view v) { return v.empty() ? Null() : Text(v); }

  Kind kind() const { return kind_; }
  int64_t int_value() const { return int_; }
  double double_value() const { return double_; }
  std::string_view bytes() const { return bytes_; }

 private:
  Kind kind_ = Kind::kNull;
  int64_t int_ = 0;
  double double_ = 0;
  std::string_view bytes_;
};

// One result row, valid only during the callback it is passed to. Columns are 0-based;
// an index out of range is a bug in the caller (checked).
class Row {
 public:
  virtual ~Row() = default;
  virtual size_t size() const = 0;
  virtual bool IsNull(size_t column) const = 0;
  // The integer value; 0 for NULL. A non-integer text is InvalidArgument.
  virtual Result<int64_t> Int(size_t column) const = 0;
  // The bytes of a text or blob column (PostgreSQL bytea is decoded); empty for NULL.
  virtual std::string_view Bytes(size_t column) const = 0;
};

using RowCallback = std::function<Status(const Row&)>;

// Statements run inside Database::Transact.
class Transaction {
 public:
  virtual ~Transaction() = default;
  virtual Engine engine() const = 0;
  // Runs one statement; returns the number of rows it changed (0 for other statements).
  virtual Result<int64_t> Execute(std::string_view sql, std::span<const Value> params = {}) = 0;
  // Runs a query and calls `on_row` per row; a non-OK status from `on_row` stops the query and
  // is returned. Returns the number of rows seen.
  virtual Result<int64_t> Query(std::string_view sql, std::span<const Value> params,
                                const RowCallback& on_row) = 0;
  // Runs `fn` after the transaction commits successfully (never if it rolls back). Callbacks
  // run on the committing thread in registration order; they must not throw.
  virtual void OnCommit(std::function<void()> fn) = 0;
  // The engine's connection (`sqlite3*` or `PGconn*`) for services that use their own driver
  // inside the transaction. Owned by the Database.
  virtual void* native_handle() = 0;
};

struct SqliteOptions {
  std::string path;                 // database file; created if missing
  int64_t busy_timeout_ms = 5'000;  // wait for another connection's lock, then Unavailable
  // "full" (fsync each commit: survives power loss), "normal" (WAL: survives a process crash,
  // a power loss may lose the last commits), "off".
  std::string synchronous = "full";
  bool wal = true;  // journal_mode=WAL (readers never block the writer)
  size_t statement_cache_max = 256;
};

struct PostgresOptions {
  std::string conninfo;  // libpq connection string or URI; never rewritten by converge
  // Bounds establishing a connection (TCP connect, TLS and authentication) per server address
  // tried; libpq counts whole seconds, rounded up, and at least 2. Then Unavailable.
  int64_t connect_timeout_ms = 5'000;
  // The session's statement_timeout: a statement running longer is cancelled by the server
  // (DeadlineExceeded; the transaction is rolled back). 0 = none.
  int64_t statement_timeout_ms = 30'000;
  int64_t lock_timeout_ms = 10'000;  // the session's lock_timeout (DeadlineExceeded); 0 = none
  size_t statement_cache_max = 256;
  // A call on a lost connection first reconnects (true), or fails with Unavailable until
  // Reconnect() is called (false): for callers whose session holds state that a new session
  // would silently lack (advisory locks, LISTEN, a transaction opened with ExecuteScript).
  // Either way, after a connection was lost inside a transaction the caller opened (BEGIN with
  // ExecuteScript) every call but Transact fails with Unavailable until Reconnect(): the
  // server rolled it back, and its remaining statements must not run autocommitted.
  bool reconnect = true;
};

class Database {
 public:
  virtual ~Database() = default;

  // Opens (creating if missing) a SQLite database. InvalidArgument (bad options),
  // Unavailable (locked), Internal / DataLoss (cannot open or corrupt).
  static Result<std::unique_ptr<Database>> OpenSqlite(const SqliteOptions& options);
  // Connects to PostgreSQL. Unavailable if the server cannot be reached (retry later);
  // InvalidArgument for a malformed conninfo; PermissionDenied / Unauthenticated when refused.
  static Result<std::unique_ptr<Database>> ConnectPostgres(const PostgresOptions& options);

  virtual Engine engine() const = 0;

  // Runs `fn` in one transaction (SQLite: BEGIN IMMEDIATE; PostgreSQL: BEGIN, READ COMMITTED).
  // Returns `fn`'s error or the COMMIT error after rolling back, OK when committed.
  virtual Status Transact(const std::function<Status(Transaction&)>& fn) = 0;

  // A single statement in autocommit mode; returns rows changed.
  virtual Result<int64_t> Execute(std::string_view sql, std::span<const Value> params = {}) = 0;
  // A single query in autocommit mode; returns rows seen.
  virtual Result<int64_t> Query(std::string_view sql, std::span<const Value> params,
                                const RowCallback& on_row) = 0;
  // Runs a script of ';'-separated statements without parameters (schema setup).
  virtual Status ExecuteScript(std::string_view script) = 0;

  // True if the connection looks usable (PostgreSQL: not CONNECTION_BAD).
  virtual bool healthy() const = 0;
  // Re-establishes a broken connection (PostgreSQL; also with reconnect = false); OK if already
  // healthy. Unavailable if the server is still unreachable.
  virtual Status Reconnect() = 0;

  // `sqlite3*` or `PGconn*`, owned by the Database.
  virtual void* native_handle() = 0;
  // The SQLite file path, or the PostgreSQL conninfo (for messages; may hold a password).
  virtual const std::string& target() const = 0;
};

// The database named by a URL-ish string: "sqlite:<path>" or a path ending in .db/.sqlite
// (SQLite), "postgres://..." / "postgresql://..." / "host=... dbname=..." (PostgreSQL).
// InvalidArgument if neither.
struct DatabaseTarget {
  Engine engine = Engine::kSqlite;
  std::string location;  // path or conninfo
};
Result<DatabaseTarget> ParseDatabaseTarget(std::string_view text);
// Opens a DatabaseTarget with default options (SQLite synchronous from `sqlite_synchronous`).
Result<std::unique_ptr<Database>> OpenDatabase(const DatabaseTarget& target,
                                               std::string_view sqlite_synchronous = "full");

}  // namespace converge::sql
