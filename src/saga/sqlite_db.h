// A thin SQLite connection wrapper shared by the SQLite two-phase-commit participant and the
// SQL saga ledger: open with WAL + synchronous=FULL, exec, and run one statement with text/NULL
// parameters. Errors map to Status: busy/locked -> Unavailable; constraint, SQL error, type
// mismatch, bad parameter index -> Aborted; anything else -> Internal.
// Thread-safety: none; the owner serializes calls.
#pragma once

#include <sqlite3.h>

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "converge/status.h"

namespace converge::saga_internal {

class Db {
 public:
  Db() = default;
  Db(const Db&) = delete;
  Db& operator=(const Db&) = delete;
  ~Db() {
    if (db_ != nullptr) sqlite3_close_v2(db_);
  }
  Status Open(const std::string& path, int64_t busy_timeout_ms) {
    if (sqlite3_open_v2(path.c_str(), &db_,
                        SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                        nullptr) != SQLITE_OK) {
      return InternalError("sqlite open " + path + ": " + Message());
    }
    sqlite3_busy_timeout(db_, static_cast<int>(busy_timeout_ms));
    CONVERGE_RETURN_IF_ERROR(Exec("PRAGMA journal_mode=WAL"));
    return Exec("PRAGMA synchronous=FULL");
  }
  std::string Message() const { return db_ ? sqlite3_errmsg(db_) : "out of memory"; }
  Status Fail(int rc, const std::string& what) const {
    const std::string msg = what + ": " + Message();
    if (rc == SQLITE_BUSY || rc == SQLITE_LOCKED) return UnavailableError(msg);
    if (rc == SQLITE_CONSTRAINT || rc == SQLITE_ERROR || rc == SQLITE_MISMATCH ||
        rc == SQLITE_RANGE) {
      return AbortedError(msg);
    }
    return InternalError(msg);
  }
  Status Exec(const char* sql) {
    const int rc = sqlite3_exec(db_, sql, nullptr, nullptr, nullptr);
    if (rc != SQLITE_OK) return Fail(rc, sql);
    return Status::Ok();
  }
  // Runs one statement with text/NULL parameters; `row` (optional) sees each result row.
  Status Run(const std::string& sql, const std::vector<std::optional<std::string>>& params,
             const std::function<void(sqlite3_stmt*)>& row = nullptr) {
    sqlite3_stmt* st = nullptr;
    int rc = sqlite3_prepare_v2(db_, sql.c_str(), static_cast<int>(sql.size()), &st, nullptr);
    if (rc != SQLITE_OK) return Fail(rc, "prepare");
    for (size_t i = 0; i < params.size() && rc == SQLITE_OK; ++i) {
      const int idx = static_cast<int>(i + 1);
      rc = params[i] ? sqlite3_bind_text(st, idx, params[i]->data(),
                                         static_cast<int>(params[i]->size()), SQLITE_TRANSIENT)
                     : sqlite3_bind_null(st, idx);
    }
    if (rc != SQLITE_OK) {
      Status s = Fail(rc, "bind");
      sqlite3_finalize(st);
      return s;
    }
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
      if (row) row(st);
    }
    Status s = rc == SQLITE_DONE ? Status::Ok() : Fail(rc, "step");
    sqlite3_finalize(st);
    return s;
  }
  bool in_transaction() const { return db_ != nullptr && !sqlite3_get_autocommit(db_); }

 private:
  sqlite3* db_ = nullptr;
};

}  // namespace converge::saga_internal
