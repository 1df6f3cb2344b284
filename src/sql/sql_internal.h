// Helpers shared by the SQLite and PostgreSQL implementations of converge/sql.h.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <list>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "converge/sql.h"

namespace converge::sql::internal {

// PostgreSQL array literals for one-statement bulk operations (unnest($1::text[]) ...).
// Text elements are always quoted (backslash-escaping '"' and '\\'); a nullopt element is NULL.
std::string PgTextArray(const std::vector<std::optional<std::string_view>>& items);
std::string PgTextArray(const std::vector<std::string_view>& items);
// bytea[] with hex elements ("\\x0a0b"); nullopt is NULL.
std::string PgByteaArray(const std::vector<std::optional<std::string_view>>& items);
std::string PgIntArray(const std::vector<int64_t>& items);

// SQLite: how long a statement waits for another connection's lock (0: fail at once with
// Unavailable). No effect on other engines. Use this, not sqlite3_busy_timeout, which would
// replace converge's busy handler.
void SqliteSetBusyTimeout(Database& db, int64_t ms);

// True while `db`'s session is inside a transaction (SQLite: not in autocommit mode; PostgreSQL:
// a transaction open, failed or running, on a healthy connection).
bool InTransaction(Database& db);

// Rewrites $1, $2, ... placeholders (outside quotes and comments) to ?1, ?2 for SQLite.
std::string ToSqlitePlaceholders(std::string_view sql);

// A bounded least-recently-used map from SQL text to a prepared statement handle.
// `Finalize` is called for evicted and remaining entries.
template <typename Handle, typename Finalize>
class StatementCache {
 public:
  StatementCache(size_t max_entries, Finalize finalize)
      : max_entries_(max_entries == 0 ? 1 : max_entries), finalize_(std::move(finalize)) {}
  ~StatementCache() { Clear(); }
  StatementCache(const StatementCache&) = delete;
  StatementCache& operator=(const StatementCache&) = delete;

  // The cached handle for `sql`, or nullptr.
  Handle* Find(std::string_view sql) {
    // Heterogeneous lookup: no copy of the SQL text (multi-row statements run to kilobytes).
    auto it = index_.find(sql);
    if (it == index_.end()) return nullptr;
    order_.splice(order_.begin(), order_, it->second);
    return &it->second->second;
  }
  // Inserts (evicting the least recently used past the bound); returns the stored handle.
  Handle* Insert(std::string sql, Handle handle) {
    if (index_.size() >= max_entries_) {
      auto& victim = order_.back();
      finalize_(victim.second);
      index_.erase(victim.first);
      order_.pop_back();
    }
    order_.emplace_front(std::move(sql), std::move(handle));
    index_[order_.front().first] = order_.begin();
    return &order_.front().second;
  }
  bool Full() const { return index_.size() >= max_entries_; }
  // The handle Insert would evict next. Precondition: not empty.
  const Handle& OldestValue() const { return order_.back().second; }
  // Drops (and finalizes) everything.
  void Clear() {
    for (auto& entry : order_) finalize_(entry.second);
    order_.clear();
    index_.clear();
  }

 private:
  using Entry = std::pair<std::string, Handle>;
  size_t max_entries_;
  Finalize finalize_;
  std::list<Entry> order_;
  struct Hash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>()(s); }
  };
  std::unordered_map<std::string, typename std::list<Entry>::iterator, Hash, std::equal_to<>>
      index_;
};

}  // namespace converge::sql::internal
