// The relay's PostgreSQL side.
//
// Leases: rows belong to a bucket (partition key hash, or the sequence for rows without a
// key, modulo the bucket count). A relay holds buckets with session-level advisory locks, so
// PostgreSQL itself releases them when the relay's connection ends (crash, kill, network
// loss). Each relay also holds a shared "presence" lock; the number of presence holders is the
// number of live relays, and each aims at ceil(buckets / relays) buckets: it releases extra
// buckets and tries to lock free ones at every rebalance.
//
// Wake-up: LISTEN converge_outbox; writers NOTIFY in their transaction (delivered at commit).
#include <libpq-fe.h>

#include <algorithm>
#include <string>
#include <vector>

#include "converge/outbox.h"
#include "outbox/outbox_row.h"
#include "outbox/relay_source.h"

namespace converge::outbox_internal {
namespace {

using outbox_format::kBucketLockClass;
using outbox_format::kMemberLockClass;

std::string IntArrayLiteral(const std::vector<int64_t>& values) {
  std::string out = "{";
  for (size_t i = 0; i < values.size(); ++i) {
    if (i > 0) out.push_back(',');
    out += std::to_string(values[i]);
  }
  out.push_back('}');
  return out;
}

Status Ignore(const sql::Row&) { return Status::Ok(); }

class PostgresSource final : public OutboxSource {
 public:
  PostgresSource(Env& env, std::string conninfo, SourceOptions options)
      : env_(env), conninfo_(std::move(conninfo)), options_(std::move(options)) {}

  Result<bool> Acquire(bool rebalance) override {
    if (db_ == nullptr || !db_->healthy()) {
      Reset();
      CONVERGE_RETURN_IF_ERROR(Connect());
      rebalance = true;
    }
    if (rebalance || held_.empty()) CONVERGE_RETURN_IF_ERROR(Rebalance());
    return !held_.empty();
  }

  Status Claim(size_t max_rows, size_t max_bytes, Batch* out) override {
    out->Clear();
    if (db_ == nullptr) return UnavailableError("relay: not connected");
    const uint32_t buckets = options_.postgres_buckets;
    std::string sql = "SELECT seq, ";
    sql += kColumns;
    sql += " FROM converge_outbox";
    std::vector<sql::Value> params;
    std::string held_literal;
    if (held_.size() < buckets) {
      sql +=
          " WHERE (CASE WHEN partition_key = '' THEN seq % $2"
          " ELSE (hashtext(partition_key)::bigint & 2147483647) % $2 END) = ANY($3::bigint[])";
    }
    sql += " ORDER BY seq LIMIT $1";
    params.push_back(sql::Value::Int(static_cast<int64_t>(max_rows)));
    if (held_.size() < buckets) {
      held_literal = IntArrayLiteral(held_);
      params.push_back(sql::Value::Int(buckets));
      params.push_back(sql::Value::Text(held_literal));
    }
    Result<int64_t> n = db_->Query(sql, params, [&](const sql::Row& row) -> Status {
      if (out->bytes >= max_bytes && !out->rows.empty()) {
        out->full = true;
        return Status::Ok();  // skip the rest of the (already fetched) result
      }
      ClaimedRow& claimed = out->Add();
      BuildClaimedRow(row, &claimed);
      out->bytes += claimed.value.size() + claimed.row_json.size();
      return Status::Ok();
    });
    if (!n.ok()) return n.status();
    if (out->rows.size() >= max_rows) out->full = true;
    return Status::Ok();
  }

  Status Remove(const Batch& batch) override {
    if (batch.rows.empty()) return Status::Ok();
    if (db_ == nullptr) return UnavailableError("relay: not connected");
    // Exact sequence numbers, never a range: a row with a lower sequence may still be
    // uncommitted (another key's transaction) and must not be deleted unpublished.
    std::vector<int64_t> seqs;
    seqs.reserve(batch.rows.size());
    for (const ClaimedRow& r : batch.rows) seqs.push_back(r.seq);
    std::string literal = IntArrayLiteral(seqs);
    sql::Value params[] = {sql::Value::Text(literal)};
    return db_->Execute("DELETE FROM converge_outbox WHERE seq = ANY($1::bigint[])", params)
        .status();
  }

  int wait_fd() override {
    if (db_ == nullptr || !db_->healthy()) return -1;
    return PQsocket(static_cast<PGconn*>(db_->native_handle()));
  }

  bool DrainNotifications() override {
    if (db_ == nullptr || !db_->healthy()) return false;
    auto* conn = static_cast<PGconn*>(db_->native_handle());
    // A failed read means the connection broke; healthy() turns false and the next Acquire
    // reconnects. Report it as a wake-up so the relay notices now.
    if (PQconsumeInput(conn) == 0) return true;
    bool any = false;
    while (PGnotify* n = PQnotifies(conn)) {
      any = true;
      PQfreemem(n);
    }
    return any;
  }

  void Reset() override {
    held_.clear();
    db_.reset();  // closing the session releases its advisory locks
  }

  uint32_t buckets_held() const override { return static_cast<uint32_t>(held_.size()); }

 private:
  Status Connect() {
    sql::PostgresOptions o;
    o.conninfo = conninfo_;
    o.connect_timeout_ms = options_.postgres_connect_timeout_ms;
    o.statement_timeout_ms = options_.postgres_statement_timeout_ms;
    // The bucket leases, the presence lock and LISTEN live in the session: a call on a lost
    // session must fail (and the next Acquire start over) rather than quietly claim rows on a
    // new session that holds no lease.
    o.reconnect = false;
    CONVERGE_ASSIGN_OR_RETURN(db_, sql::Database::ConnectPostgres(o));
    Status s = Setup();
    if (!s.ok()) Reset();
    return s;
  }

  Status Setup() {
    // The relay's only writes are deletes of published rows. A delete lost in a crash only
    // makes the rows publish again (dropped by the log's dedup), so they need not wait for
    // their WAL flush.
    std::string setup =
        "SET application_name = '" + SafeName(options_.name) + "'; SET synchronous_commit = off";
    CONVERGE_RETURN_IF_ERROR(db_->ExecuteScript(setup));
    if (options_.create_schema) CONVERGE_RETURN_IF_ERROR(Outbox::CreateSchema(*db_));
    CONVERGE_RETURN_IF_ERROR(db_->ExecuteScript("LISTEN converge_outbox"));
    sql::Value params[] = {sql::Value::Int(kMemberLockClass)};
    return db_->Query("SELECT pg_advisory_lock_shared($1::int4, 0)", params, Ignore).status();
  }

  static std::string SafeName(const std::string& name) {
    std::string out;
    for (char c : name) {
      if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
          c == '_' || c == '.') {
        out.push_back(c);
      }
    }
    return out.substr(0, 60);
  }

  Status Rebalance() {
    const int64_t buckets = options_.postgres_buckets;
    // Live relays: holders of the shared presence lock in this database.
    int64_t members = 1;
    sql::Value count_params[] = {sql::Value::Int(kMemberLockClass)};
    CONVERGE_RETURN_IF_ERROR(
        db_->Query("SELECT count(DISTINCT pid) FROM pg_locks WHERE locktype = 'advisory' AND "
                   "classid = $1::int4::oid AND objid = 0 AND objsubid = 2 AND granted AND "
                   "database = (SELECT oid FROM pg_database WHERE datname = current_database())",
                   count_params,
                   [&](const sql::Row& row) -> Status {
                     CONVERGE_ASSIGN_OR_RETURN(members, row.Int(0));
                     return Status::Ok();
                   })
            .status());
    members = std::max<int64_t>(members, 1);
    const int64_t target = (buckets + members - 1) / members;
    while (static_cast<int64_t>(held_.size()) > target) {
      int64_t b = held_.back();
      sql::Value p[] = {sql::Value::Int(kBucketLockClass), sql::Value::Int(b)};
      CONVERGE_RETURN_IF_ERROR(
          db_->Query("SELECT pg_advisory_unlock($1::int4, $2::int4)", p, Ignore).status());
      held_.pop_back();
    }
    if (static_cast<int64_t>(held_.size()) < target) {
      // Try free buckets starting at a random one, so relays do not all fight for bucket 0.
      const int64_t start =
          static_cast<int64_t>(env_.random().Uniform(static_cast<uint64_t>(buckets)));
      for (int64_t i = 0; i < buckets && static_cast<int64_t>(held_.size()) < target; ++i) {
        int64_t b = (start + i) % buckets;
        if (std::find(held_.begin(), held_.end(), b) != held_.end()) continue;
        bool got = false;
        sql::Value p[] = {sql::Value::Int(kBucketLockClass), sql::Value::Int(b)};
        CONVERGE_RETURN_IF_ERROR(db_->Query("SELECT pg_try_advisory_lock($1::int4, $2::int4)", p,
                                            [&](const sql::Row& row) -> Status {
                                              got = row.Bytes(0) == "t";
                                              return Status::Ok();
                                            })
                                     .status());
        if (got) held_.push_back(b);
      }
      std::sort(held_.begin(), held_.end());
    }
    return Status::Ok();
  }

  Env& env_;
  std::string conninfo_;
  SourceOptions options_;
  std::unique_ptr<sql::Database> db_;
  std::vector<int64_t> held_;  // buckets locked by this session
};

}  // namespace

std::unique_ptr<OutboxSource> NewPostgresSource(Env& env, const std::string& conninfo,
                                                const SourceOptions& options) {
  return std::make_unique<PostgresSource>(env, conninfo, options);
}

}  // namespace converge::outbox_internal
