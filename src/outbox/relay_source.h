// The database side of the relay: claim a batch of committed outbox rows, delete them once
// published, hold the lease that makes several relays safe, and expose the wake-up channel.
// One implementation per engine (relay_sqlite.cc, relay_postgres.cc).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "converge/env.h"
#include "converge/relay.h"
#include "converge/sql.h"
#include "converge/status.h"
#include "outbox/wakeup.h"

namespace converge::outbox_internal {

// One claimed row, already turned into a log record or marked malformed.
struct ClaimedRow {
  int64_t seq = 0;
  std::string topic;
  std::string key;
  std::string id;
  std::string value;  // binary CloudEvent (empty if malformed)
  int64_t timestamp_micros = 0;
  bool malformed = false;
  std::string reason;    // why it is malformed
  std::string row_json;  // the row's content, for its dead letter
};

struct Batch {
  std::vector<ClaimedRow> rows;
  size_t bytes = 0;
  bool full = false;  // the claim stopped at a bound: more rows are probably waiting
  // Appends a row for BuildClaimedRow, reusing the strings of an earlier batch's row (their
  // buffers), so a steady relay allocates little per row.
  ClaimedRow& Add() {
    if (spare_.empty()) return rows.emplace_back();
    rows.push_back(std::move(spare_.back()));
    spare_.pop_back();
    return rows.back();
  }
  void Clear() {
    while (!rows.empty()) {
      ClaimedRow& row = rows.back();
      // Keep small buffers only, so a few large events do not pin memory in the pool.
      for (std::string* buffer : {&row.value, &row.row_json, &row.reason}) {
        if (buffer->capacity() > kMaxKeptBufferBytes) std::string().swap(*buffer);
      }
      spare_.push_back(std::move(row));
      rows.pop_back();
    }
    bytes = 0;
    full = false;
  }

 private:
  static constexpr size_t kMaxKeptBufferBytes = 16 << 10;
  std::vector<ClaimedRow> spare_;
};

// Turns a relay SELECT row ("seq, " + kColumns) into a ClaimedRow (every field overwritten).
void BuildClaimedRow(const sql::Row& row, ClaimedRow* out);

class OutboxSource {
 public:
  virtual ~OutboxSource() = default;
  // Connects if needed and takes/renews this relay's lease. Returns true if this relay may
  // publish now (holds the SQLite lock, or at least one PostgreSQL bucket), false on standby.
  // `rebalance` asks PostgreSQL relays to adjust their share of buckets.
  virtual Result<bool> Acquire(bool rebalance) = 0;
  // Reads up to max_rows committed rows (about max_bytes) in sequence order into `out`.
  virtual Status Claim(size_t max_rows, size_t max_bytes, Batch* out) = 0;
  // Marks every row of `batch` done: they are never claimed again by this source and are
  // deleted, at once or (SQLite, when the writers hold the lock) before a later claim. Rows
  // already gone are fine.
  virtual Status Remove(const Batch& batch) = 0;
  // A descriptor that becomes readable on a notification (PostgreSQL), or -1.
  virtual int wait_fd() = 0;
  // Consumes pending notifications; true if there were any.
  virtual bool DrainNotifications() = 0;
  // Drops the connection and lease after an error that may have broken them.
  virtual void Reset() = 0;
  virtual uint32_t buckets_held() const = 0;
  // WAL mode (read from other threads): the slot's lag in bytes, and the commit time (Unix
  // micros) of the oldest transaction read but not confirmed, 0 if none.
  virtual int64_t wal_lag_bytes() const { return 0; }
  virtual int64_t wal_oldest_pending_micros() const { return 0; }
};

struct SourceOptions {
  std::string name;
  std::string sqlite_synchronous;
  int64_t sqlite_busy_timeout_ms = 5'000;
  std::string sqlite_lock_path;
  uint32_t postgres_buckets = 64;
  int64_t postgres_connect_timeout_ms = 5'000;
  int64_t postgres_statement_timeout_ms = 30'000;
  bool create_schema = true;
  std::string wal_slot;
  std::string wal_publication;
  bool wal_capture_tables = false;
  std::string wal_capture_topic_prefix;
};

// SQLite: `path` is the database file; wake-ups from in-process writers signal `waker`.
std::unique_ptr<OutboxSource> NewSqliteSource(Env& env, const std::string& path,
                                              const SourceOptions& options,
                                              std::shared_ptr<Waker> waker);
// PostgreSQL: `conninfo` as libpq takes it.
std::unique_ptr<OutboxSource> NewPostgresSource(Env& env, const std::string& conninfo,
                                                const SourceOptions& options);
// PostgreSQL WAL outbox (relay_wal.cc): logical messages from the slot options.wal_slot.
std::unique_ptr<OutboxSource> NewWalSource(Env& env, const std::string& conninfo,
                                           const SourceOptions& options);
}  // namespace converge::outbox_internal

namespace converge::cdc {
class ReplicationStream;
}

namespace converge::outbox_internal {
// The same over connections `connect` opens (each call: a new session); for the simulator.
using WalConnector = std::function<Result<std::unique_ptr<cdc::ReplicationStream>>()>;
std::unique_ptr<OutboxSource> NewWalSourceWith(Env& env, WalConnector connect,
                                               const SourceOptions& options);

// A relay over a given source (Relay::Create's checks of `options` first); for the simulator.
Result<std::unique_ptr<Relay>> NewRelayWithSource(Env& env, RelaySink& sink, RelayOptions options,
                                                  std::unique_ptr<OutboxSource> source);

}  // namespace converge::outbox_internal
