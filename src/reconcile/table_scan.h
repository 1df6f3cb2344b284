// TableScan: the (key, version) rows of a SQL table (SQLite or PostgreSQL, through src/sql),
// read with a keyset cursor and rate-limited, so that building a set for reconciliation never
// starves the service's database.
//
// Each batch is one short autocommitted statement,
//   SELECT key, version FROM table WHERE key > $last ORDER BY key LIMIT batch
// (no transaction held open, no lock kept between batches; an index on the key column makes
// each batch a range read). Between batches the scan waits so that at most rows_per_second
// rows are read on average: Step() says how long, in the Env's time, and ScanInto schedules
// the batches on the Env's executor.
//
// The scan is not a snapshot: a row written while it runs is read as it was before or after
// the write. Reconciliation treats the resulting set like any copy (a difference it reports on
// such a row is re-checked by the caller's version-gated apply, and the next run settles it).
//
// Thread-safety: one strand drives a scan (the one that owns the set it fills).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

#include "converge/env.h"
#include "converge/sql.h"
#include "converge/status.h"
#include "reconcile/reconcile_set.h"

namespace converge::reconcile {

struct TableScanOptions {
  std::string table;               // [schema.]name: letters, digits, underscores
  std::string key_column = "key";  // text, or blob / bytea with key_is_blob
  bool key_is_blob = false;
  std::string version_column = "version";  // integer >= 0
  // When set, rows where this column is true (non-zero) are not read: a replica table's
  // tombstones (`deleted`), which are not part of the copy's live set.
  std::string skip_if_column;
  uint64_t batch_rows = 1000;
  double rows_per_second = 10'000;  // average read rate; 0 = no limit
};

class TableScan {
 public:
  // `db` and `env` outlive the scan. InvalidArgument for a bad identifier or batch size.
  static Result<TableScan> Create(sql::Database& db, Env& env, TableScanOptions options);

  // Reads the next batch, calling fn(key, version) per row. Returns how long to wait before
  // the next Step (nanoseconds, >= 0), or -1 when the table has been read to the end.
  // InvalidArgument for a negative or non-integer version; database errors as src/sql reports
  // them (a failed batch can be retried: the cursor only moves on success).
  Result<int64_t> Step(const std::function<void(std::string_view, uint64_t)>& fn);

  uint64_t rows() const { return rows_; }
  bool done() const { return done_; }

 private:
  TableScan(sql::Database& db, Env& env, TableScanOptions options);
  sql::Database* db_;
  Env* env_;
  TableScanOptions options_;
  std::string first_sql_, next_sql_;
  std::string last_key_;
  bool started_ = false;
  bool done_ = false;
  uint64_t rows_ = 0;
  int64_t started_at_ = 0;
};

// Reads the whole table into `set` (Put per row) through `env`'s executor, one batch per
// scheduled step, and calls `done` with the outcome. `set`, `db` and `env` outlive the scan.
void ScanInto(sql::Database& db, Env& env, TableScanOptions options, ReconcileSet& set,
              std::function<void(Status, uint64_t rows)> done);

}  // namespace converge::reconcile
