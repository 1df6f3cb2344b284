#include "reconcile/table_scan.h"

#include <algorithm>
#include <cmath>
#include <memory>
#include <vector>

namespace converge::reconcile {
namespace {

bool ValidIdentifier(std::string_view s, bool allow_schema) {
  if (s.empty() || s.size() > 63 * 2 + 1) return false;
  bool start = true;
  int dots = 0;
  for (char c : s) {
    if (c == '.') {
      if (!allow_schema || start || ++dots > 1) return false;
      start = true;
      continue;
    }
    const bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
    const bool digit = c >= '0' && c <= '9';
    if (!(alpha || (digit && !start))) return false;
    start = false;
  }
  return !start;
}

// "schema"."name": quoted, so reserved words work as names.
std::string Quote(std::string_view s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '.') {
      out += "\".\"";
    } else {
      out += c;
    }
  }
  return out + "\"";
}

}  // namespace

TableScan::TableScan(sql::Database& db, Env& env, TableScanOptions options)
    : db_(&db), env_(&env), options_(std::move(options)) {}

Result<TableScan> TableScan::Create(sql::Database& db, Env& env, TableScanOptions options) {
  if (!ValidIdentifier(options.table, true) || !ValidIdentifier(options.key_column, false) ||
      !ValidIdentifier(options.version_column, false) ||
      (!options.skip_if_column.empty() && !ValidIdentifier(options.skip_if_column, false))) {
    return InvalidArgumentError(
        "table scan: table and column names are letters, digits and underscores");
  }
  if (options.batch_rows == 0 || options.batch_rows > 1'000'000) {
    return InvalidArgumentError("table scan: batch_rows must be in [1, 1000000]");
  }
  if (!(options.rows_per_second >= 0) || std::isinf(options.rows_per_second)) {
    return InvalidArgumentError("table scan: rows_per_second must be >= 0");
  }
  TableScan scan(db, env, options);
  const std::string select = "SELECT " + Quote(options.key_column) + ", " +
                             Quote(options.version_column) + " FROM " + Quote(options.table);
  const std::string tail =
      " ORDER BY " + Quote(options.key_column) + " LIMIT " + std::to_string(options.batch_rows);
  // NOT works on SQLite's 0/1 integers and on PostgreSQL's booleans alike.
  const std::string skip =
      options.skip_if_column.empty() ? "" : "NOT " + Quote(options.skip_if_column);
  scan.first_sql_ = select + (skip.empty() ? "" : " WHERE " + skip) + tail;
  scan.next_sql_ = select + " WHERE " + (skip.empty() ? "" : skip + " AND ") +
                   Quote(options.key_column) + " > $1" + tail;
  return scan;
}

Result<int64_t> TableScan::Step(const std::function<void(std::string_view, uint64_t)>& fn) {
  if (done_) return -1;
  if (!started_) {
    started_ = true;
    started_at_ = env_->clock().NowMonotonicNanos();
  }
  // The batch is read into memory first, so a failed batch hands nothing to `fn` and the
  // cursor stays where it was.
  std::vector<std::pair<std::string, uint64_t>> batch;
  Status bad = Status::Ok();
  auto on_row = [&](const sql::Row& row) -> Status {
    Result<int64_t> v = row.Int(1);
    if (!v.ok() || row.IsNull(1) || row.IsNull(0) || *v < 0) {
      return InvalidArgumentError("table scan: " + options_.table + "." + options_.version_column +
                                  " must be an integer >= 0");
    }
    batch.emplace_back(std::string(row.Bytes(0)), static_cast<uint64_t>(*v));
    return Status::Ok();
  };
  Result<int64_t> n = 0;
  if (rows_ == 0 && last_key_.empty()) {
    n = db_->Query(first_sql_, {}, on_row);
  } else {
    // The parameter has the key column's kind: SQLite orders every blob after every text, and
    // PostgreSQL compares bytea with bytea only.
    const sql::Value p[] = {options_.key_is_blob ? sql::Value::Blob(last_key_)
                                                 : sql::Value::Text(last_key_)};
    n = db_->Query(next_sql_, p, on_row);
  }
  if (!n.ok()) return n.status();
  for (const auto& [key, version] : batch) fn(key, version);
  rows_ += batch.size();
  if (!batch.empty()) last_key_ = batch.back().first;
  if (batch.size() < options_.batch_rows) {
    done_ = true;
    return -1;
  }
  if (options_.rows_per_second <= 0) return 0;
  // The next batch may start once the rows read so far fit the rate.
  const int64_t due = started_at_ + static_cast<int64_t>(static_cast<double>(rows_) /
                                                         options_.rows_per_second * 1e9);
  return std::max<int64_t>(0, due - env_->clock().NowMonotonicNanos());
}

namespace {

// One scan in flight: each scheduled step holds it; the last one lets it go.
class ScanRunner : public std::enable_shared_from_this<ScanRunner> {
 public:
  ScanRunner(TableScan scan, Env& env, ReconcileSet& set,
             std::function<void(Status, uint64_t)> done)
      : scan_(std::move(scan)), env_(env), set_(set), done_(std::move(done)) {}
  void Run() {
    Result<int64_t> wait =
        scan_.Step([this](std::string_view key, uint64_t version) { set_.Put(key, version); });
    if (!wait.ok() || *wait < 0) {
      done_(wait.ok() ? Status::Ok() : wait.status(), scan_.rows());
      return;
    }
    env_.executor().Schedule(*wait, [self = shared_from_this()] { self->Run(); });
  }

 private:
  TableScan scan_;
  Env& env_;
  ReconcileSet& set_;
  std::function<void(Status, uint64_t)> done_;
};

}  // namespace

void ScanInto(sql::Database& db, Env& env, TableScanOptions options, ReconcileSet& set,
              std::function<void(Status, uint64_t rows)> done) {
  Result<TableScan> created = TableScan::Create(db, env, std::move(options));
  if (!created.ok()) {
    done(created.status(), 0);
    return;
  }
  auto runner = std::make_shared<ScanRunner>(std::move(created).value(), env, set, std::move(done));
  env.executor().Post([runner] { runner->Run(); });
}

}  // namespace converge::reconcile
