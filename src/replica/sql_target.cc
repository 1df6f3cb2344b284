// SQL targets (SQLite and PostgreSQL through converge/sql.h); layout in docs/formats/replica.md.
#include <algorithm>
#include <deque>
#include <map>
#include <string_view>
#include <unordered_set>
#include <vector>

#include "converge/replica.h"

namespace converge::replica {
namespace {

using sql::Value;

bool ValidTableName(std::string_view name) {
  if (name.empty() || name.size() > 63) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    const bool alpha = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_';
    if (!alpha && !(i > 0 && c >= '0' && c <= '9')) return false;
  }
  return true;
}

// A PostgreSQL array literal element: "..." with " and \ escaped.
void AppendQuoted(std::string_view text, std::string* out) {
  out->push_back('"');
  for (char c : text) {
    if (c == '"' || c == '\\') out->push_back('\\');
    out->push_back(c);
  }
  out->push_back('"');
}

class SqlTarget : public Target {
 public:
  SqlTarget(sql::Database& db, SqlTargetOptions options)
      : db_(db), options_(std::move(options)), t_(options_.table) {
    // PostgreSQL, the batch in one statement; the subquery on the table only when a purge
    // has set a watermark.
    const std::string many_head =
        "INSERT INTO " + t_ +
        " AS t (key, version, document, deleted, commit_time_us, applied_us, source_partition) "
        "SELECT u.k, u.v, u.d, u.x, u.s, $6, $8 FROM unnest($1::text[], $2::bigint[], $3::text[], "
        "$4::boolean[], $5::bigint[]) AS u(k, v, d, x, s)";
    const std::string many_tail =
        " ON CONFLICT (key) DO UPDATE SET "
        "version = excluded.version, document = excluded.document, deleted = excluded.deleted, "
        "commit_time_us = excluded.commit_time_us, applied_us = excluded.applied_us, "
        "source_partition = excluded.source_partition WHERE excluded.version > t.version";
    upsert_many_ = many_head + " WHERE u.v > $7 OR EXISTS (SELECT 1 FROM " + t_ +
                   " e WHERE e.key = u.k)" + many_tail;
    upsert_many_fresh_ = many_head + " WHERE $7::bigint >= 0" + many_tail;
    below_many_ = "SELECT count(*) FROM unnest($1::text[], $2::bigint[]) AS u(k, v) WHERE u.v <= "
                  "$3 AND NOT EXISTS (SELECT 1 FROM " + t_ + " e WHERE e.key = u.k)";
  }

  Status Init() {
    const bool pg = db_.engine() == sql::Engine::kPostgres;
    const std::string deleted_type = pg ? "BOOLEAN" : "INTEGER";
    const std::string tombstone_pred = pg ? "deleted" : "deleted = 1";
    CONVERGE_RETURN_IF_ERROR(db_.ExecuteScript(
        "CREATE TABLE IF NOT EXISTS converge_replicas (replica TEXT PRIMARY KEY, "
        "target_table TEXT NOT NULL, source_topic TEXT NOT NULL);"
        "CREATE TABLE IF NOT EXISTS converge_replica_positions (replica TEXT NOT NULL, "
        "source_partition INTEGER NOT NULL, next_offset BIGINT NOT NULL, "
        "commitseq BIGINT NOT NULL, purge_watermark BIGINT NOT NULL DEFAULT 0, "
        "updated_us BIGINT NOT NULL, PRIMARY KEY (replica, source_partition));"
        "CREATE TABLE IF NOT EXISTS " + t_ + " (key TEXT PRIMARY KEY, version BIGINT NOT NULL, "
        "document TEXT, deleted " + deleted_type + " NOT NULL, commit_time_us BIGINT NOT NULL, "
        "applied_us BIGINT NOT NULL, source_partition INTEGER NOT NULL)" +
        // PostgreSQL: room on each page and no index on a column every apply changes, so
        // updates stay HOT (no index writes); the periodic purge scans the table instead.
        // SQLite: an index for the purge.
        (pg ? std::string(" WITH (fillfactor = 80);")
            : ";CREATE INDEX IF NOT EXISTS " + t_ + "_tombstones ON " + t_ +
                  " (applied_us) WHERE " + tombstone_pred + ";")));
    return db_.Transact([&](sql::Transaction& tx) -> Status {
      const Value ins[] = {Value::Text(options_.replica), Value::Text(options_.table),
                           Value::Text(options_.source_topic)};
      CONVERGE_RETURN_IF_ERROR(
          tx.Execute("INSERT INTO converge_replicas (replica, target_table, source_topic) "
                     "VALUES ($1, $2, $3) ON CONFLICT (replica) DO NOTHING",
                     ins)
              .status());
      std::string table, topic;
      const Value key[] = {Value::Text(options_.replica)};
      CONVERGE_RETURN_IF_ERROR(
          tx.Query("SELECT target_table, source_topic FROM converge_replicas WHERE replica = $1",
                   key,
                   [&](const sql::Row& row) {
                     table = std::string(row.Bytes(0));
                     topic = std::string(row.Bytes(1));
                     return Status::Ok();
                   })
              .status());
      if (table != options_.table || topic != options_.source_topic) {
        return FailedPreconditionError(
            "replica '" + options_.replica + "' already exists in this database with table '" +
            table + "' and source topic '" + topic + "' (asked: table '" + options_.table +
            "', topic '" + options_.source_topic + "'); use another replica name");
      }
      return Status::Ok();
    });
  }

  Result<TargetState> Load() override {
    TargetState state;
    const Value key[] = {Value::Text(options_.replica)};
    CONVERGE_RETURN_IF_ERROR(
        db_.Query("SELECT source_partition, next_offset, commitseq, purge_watermark FROM "
                  "converge_replica_positions WHERE replica = $1",
                  key,
                  [&](const sql::Row& row) -> Status {
                    Position p;
                    CONVERGE_ASSIGN_OR_RETURN(int64_t part, row.Int(0));
                    CONVERGE_ASSIGN_OR_RETURN(int64_t next, row.Int(1));
                    CONVERGE_ASSIGN_OR_RETURN(int64_t seq, row.Int(2));
                    CONVERGE_ASSIGN_OR_RETURN(int64_t mark, row.Int(3));
                    p.purge_watermark = static_cast<uint64_t>(mark);
                    p.partition = static_cast<uint32_t>(part);
                    p.next_offset = static_cast<uint64_t>(next);
                    p.commitseq = static_cast<uint64_t>(seq);
                    state.positions.push_back(p);
                    return Status::Ok();
                  })
            .status());
    return state;
  }

  Result<ApplyOutcome> Apply(const ApplyBatch& batch) override {
    ApplyOutcome outcome;
    Status s = db_.Transact([&](sql::Transaction& tx) -> Status {
      outcome = ApplyOutcome();
      CONVERGE_ASSIGN_OR_RETURN(uint64_t watermark, MovePosition(tx, batch));
      if (batch.truncate_below > 0) {
        CONVERGE_RETURN_IF_ERROR(Truncate(tx, batch));
        watermark = std::max(watermark, batch.truncate_below - 1);
      }
      if (batch.snapshot_version > 0) {
        // A re-bootstrap: the live rows the listing lacks become tombstones at its version,
        // through the same gated upsert as every change (so a row at or above it stays).
        std::unordered_set<std::string_view> listed;
        for (const Change* c : batch.changes) listed.insert(c->key);
        const std::string live =
            tx.engine() == sql::Engine::kPostgres ? "NOT deleted" : "deleted = 0";
        const Value below[] = {Value::Int(static_cast<int64_t>(batch.snapshot_version))};
        std::deque<Change> tombstones;
        CONVERGE_RETURN_IF_ERROR(
            tx.Query("SELECT key FROM " + t_ + " WHERE " + live + " AND version < $1", below,
                     [&](const sql::Row& row) -> Status {
                       std::string key(row.Bytes(0));
                       if (listed.contains(key)) return Status::Ok();
                       Change c;
                       c.key = std::move(key);
                       c.version = batch.snapshot_version;
                       c.kind = ChangeKind::kDelete;
                       c.commit_time_micros = batch.applied_time_micros;
                       tombstones.push_back(std::move(c));
                       return Status::Ok();
                     })
                .status());
        ApplyBatch all = batch;
        for (const Change& c : tombstones) all.changes.push_back(&c);
        if (all.changes.empty()) return Status::Ok();
        if (tx.engine() == sql::Engine::kPostgres) return ApplyMany(tx, all, watermark, &outcome);
        return ApplyEach(tx, all, watermark, &outcome);
      }
      if (batch.changes.empty()) return Status::Ok();
      if (tx.engine() == sql::Engine::kPostgres) return ApplyMany(tx, batch, watermark, &outcome);
      return ApplyEach(tx, batch, watermark, &outcome);
    });
    if (!s.ok()) return s;
    return outcome;
  }

  Result<uint64_t> PurgeTombstones(int64_t applied_before_micros) override {
    const std::string pred = db_.engine() == sql::Engine::kPostgres ? "deleted" : "deleted = 1";
    uint64_t purged = 0;
    Status s = db_.Transact([&](sql::Transaction& tx) -> Status {
      const Value cutoff[] = {Value::Int(applied_before_micros)};
      std::vector<std::pair<int64_t, int64_t>> marks;  // (partition, highest version purged)
      CONVERGE_RETURN_IF_ERROR(
          tx.Query("SELECT source_partition, MAX(version) FROM " + t_ + " WHERE " + pred +
                       " AND applied_us < $1 GROUP BY source_partition",
                   cutoff,
                   [&](const sql::Row& row) -> Status {
                     CONVERGE_ASSIGN_OR_RETURN(int64_t part, row.Int(0));
                     CONVERGE_ASSIGN_OR_RETURN(int64_t version, row.Int(1));
                     marks.emplace_back(part, version);
                     return Status::Ok();
                   })
              .status());
      CONVERGE_ASSIGN_OR_RETURN(
          int64_t n, tx.Execute("DELETE FROM " + t_ + " WHERE " + pred + " AND applied_us < $1",
                                cutoff));
      purged = static_cast<uint64_t>(n);
      for (const auto& [part, version] : marks) {
        const Value up[] = {Value::Int(version), Value::Text(options_.replica), Value::Int(part)};
        CONVERGE_RETURN_IF_ERROR(
            tx.Execute("UPDATE converge_replica_positions SET purge_watermark = $1 WHERE "
                       "replica = $2 AND source_partition = $3 AND purge_watermark < $1",
                       up)
                .status());
      }
      return Status::Ok();
    });
    if (!s.ok()) return s;
    return purged;
  }

  bool applies_truncates() const override { return true; }
  bool applies_snapshots() const override { return true; }

 private:
  // A truncate of the source: the rows older than it go, and every partition's purge
  // watermark rises to just below it (a partition never applied gets its position row now,
  // at offset 0), so older changes still to come from any partition are refused.
  Status Truncate(sql::Transaction& tx, const ApplyBatch& batch) {
    const Value below[] = {Value::Int(static_cast<int64_t>(batch.truncate_below))};
    CONVERGE_RETURN_IF_ERROR(
        tx.Execute("DELETE FROM " + t_ + " WHERE version < $1", below).status());
    const uint32_t partitions = std::max(batch.partitions, batch.position.partition + 1);
    for (uint32_t part = 0; part < partitions; ++part) {
      const Value p[] = {Value::Text(options_.replica), Value::Int(part),
                         Value::Int(static_cast<int64_t>(batch.truncate_below - 1)),
                         Value::Int(batch.applied_time_micros)};
      CONVERGE_RETURN_IF_ERROR(
          tx.Execute("INSERT INTO converge_replica_positions (replica, source_partition, "
                     "next_offset, commitseq, purge_watermark, updated_us) VALUES ($1, $2, 0, "
                     "0, $3, $4) ON CONFLICT (replica, source_partition) DO UPDATE SET "
                     "purge_watermark = excluded.purge_watermark WHERE "
                     "converge_replica_positions.purge_watermark < excluded.purge_watermark",
                     p)
              .status());
    }
    return Status::Ok();
  }

  // Moves the position from batch.from_offset to batch.position, or Aborted when it is not at
  // from_offset (another applier of this replica moved it). Returns the partition's purge
  // watermark (in the same statement: one round trip less per batch).
  Result<uint64_t> MovePosition(sql::Transaction& tx, const ApplyBatch& batch) {
    const Value p[] = {Value::Text(options_.replica),
                       Value::Int(batch.position.partition),
                       Value::Int(static_cast<int64_t>(batch.position.next_offset)),
                       Value::Int(static_cast<int64_t>(batch.position.commitseq)),
                       Value::Int(batch.applied_time_micros),
                       Value::Int(static_cast<int64_t>(batch.from_offset))};
    int64_t watermark = 0;
    CONVERGE_ASSIGN_OR_RETURN(
        int64_t n,
        tx.Query("UPDATE converge_replica_positions SET next_offset = $3, commitseq = $4, "
                 "updated_us = $5 WHERE replica = $1 AND source_partition = $2 AND "
                 "next_offset = $6 RETURNING purge_watermark",
                 p, [&](const sql::Row& row) -> Status {
                   CONVERGE_ASSIGN_OR_RETURN(watermark, row.Int(0));
                   return Status::Ok();
                 }));
    if (n == 0 && batch.from_offset == 0) {
      // The partition's first batch: no row yet (a row another applier inserted meanwhile
      // violates the key: the same refusal).
      Result<int64_t> ins = tx.Execute(
          "INSERT INTO converge_replica_positions (replica, source_partition, next_offset, "
          "commitseq, updated_us) VALUES ($1, $2, $3, $4, $5)",
          std::span<const Value>(p, 5));
      if (!ins.ok() && ins.status().code() != StatusCode::kAlreadyExists) return ins.status();
      n = ins.ok() ? *ins : 0;
    }
    if (n != 1) {
      return AbortedError("replica '" + options_.replica + "': the position of partition " +
                          std::to_string(batch.position.partition) + " is no longer " +
                          std::to_string(batch.from_offset) +
                          " (another applier of this replica moved it)");
    }
    return static_cast<uint64_t>(watermark);
  }

  // SQLite: multi-row upserts of up to kRowsPerStatement rows. Changes of unknown keys at or
  // below the watermark are filtered first (rare: only after a purge), so the statement needs
  // no subquery on the table (which would make SQLite materialize the rows first).
  static constexpr size_t kRowsPerStatement = 100;

  const std::string& UpsertRows(size_t rows) {
    std::string& sql = upsert_rows_[rows];
    if (!sql.empty()) return sql;
    sql = "INSERT INTO " + t_ +
          " (key, version, document, deleted, commit_time_us, applied_us, source_partition) "
          "VALUES ";
    for (size_t r = 0; r < rows; ++r) {
      if (r > 0) sql.push_back(',');
      sql.push_back('(');
      for (size_t c = 0; c < 7; ++c) {
        if (c > 0) sql.push_back(',');
        sql.push_back('$');
        sql.append(std::to_string(r * 7 + c + 1));
      }
      sql.push_back(')');
    }
    sql += " ON CONFLICT (key) DO UPDATE SET version = excluded.version, "
           "document = excluded.document, deleted = excluded.deleted, "
           "commit_time_us = excluded.commit_time_us, applied_us = excluded.applied_us, "
           "source_partition = excluded.source_partition WHERE excluded.version > " +
           t_ + ".version";
    return sql;
  }

  Status ApplyEach(sql::Transaction& tx, const ApplyBatch& batch, uint64_t watermark,
                   ApplyOutcome* out) {
    std::vector<const Change*> rows;
    rows.reserve(batch.changes.size());
    for (const Change* c : batch.changes) {
      if (c->version <= watermark) {
        bool exists = false;
        const Value k[] = {Value::Text(c->key)};
        CONVERGE_RETURN_IF_ERROR(tx.Query("SELECT 1 FROM " + t_ + " WHERE key = $1", k,
                                          [&](const sql::Row&) {
                                            exists = true;
                                            return Status::Ok();
                                          })
                                     .status());
        if (!exists) {
          ++out->below_watermark;
          continue;
        }
      }
      rows.push_back(c);
    }
    std::vector<Value> params;
    params.reserve(std::min(rows.size(), kRowsPerStatement) * 7);
    for (size_t at = 0; at < rows.size(); at += kRowsPerStatement) {
      const size_t n = std::min(kRowsPerStatement, rows.size() - at);
      params.clear();
      for (size_t i = at; i < at + n; ++i) {
        const Change* c = rows[i];
        const bool del = c->kind == ChangeKind::kDelete;
        params.push_back(Value::Text(c->key));
        params.push_back(Value::Int(static_cast<int64_t>(c->version)));
        params.push_back(del ? Value::Null() : Value::Text(c->document));
        params.push_back(Value::Int(del ? 1 : 0));
        params.push_back(Value::Int(c->commit_time_micros));
        params.push_back(Value::Int(batch.applied_time_micros));
        params.push_back(Value::Int(batch.position.partition));
      }
      CONVERGE_ASSIGN_OR_RETURN(int64_t changed, tx.Execute(UpsertRows(n), params));
      out->applied += static_cast<uint64_t>(changed);
    }
    out->stale = rows.size() - out->applied;
    return Status::Ok();
  }

  // PostgreSQL: the whole batch in one statement (arrays of keys, versions, documents).
  Status ApplyMany(sql::Transaction& tx, const ApplyBatch& batch, uint64_t watermark,
                   ApplyOutcome* out) {
    std::string keys = "{", versions = "{", docs = "{", dels = "{", times = "{";
    for (size_t i = 0; i < batch.changes.size(); ++i) {
      const Change* c = batch.changes[i];
      if (i > 0) {
        keys.push_back(',');
        versions.push_back(',');
        docs.push_back(',');
        dels.push_back(',');
        times.push_back(',');
      }
      AppendQuoted(c->key, &keys);
      versions.append(std::to_string(c->version));
      if (c->kind == ChangeKind::kDelete) {
        docs.append("NULL");
        dels.push_back('t');
      } else {
        AppendQuoted(c->document, &docs);
        dels.push_back('f');
      }
      times.append(std::to_string(c->commit_time_micros));
    }
    for (std::string* s : {&keys, &versions, &docs, &dels, &times}) s->push_back('}');
    uint64_t below = 0;
    if (watermark > 0) {
      const Value q[] = {Value::Text(keys), Value::Text(versions),
                         Value::Int(static_cast<int64_t>(watermark))};
      CONVERGE_RETURN_IF_ERROR(tx.Query(below_many_, q,
                                        [&](const sql::Row& row) -> Status {
                                          CONVERGE_ASSIGN_OR_RETURN(int64_t n, row.Int(0));
                                          below = static_cast<uint64_t>(n);
                                          return Status::Ok();
                                        })
                                   .status());
    }
    const Value p[] = {Value::Text(keys),  Value::Text(versions),
                       Value::Text(docs),  Value::Text(dels),
                       Value::Text(times), Value::Int(batch.applied_time_micros),
                       Value::Int(static_cast<int64_t>(watermark)),
                       Value::Int(batch.position.partition)};
    CONVERGE_ASSIGN_OR_RETURN(
        int64_t n, tx.Execute(watermark == 0 ? upsert_many_fresh_ : upsert_many_, p));
    out->applied = static_cast<uint64_t>(n);
    out->below_watermark = below;
    out->stale = batch.changes.size() - out->applied - below;
    return Status::Ok();
  }

  sql::Database& db_;
  const SqlTargetOptions options_;
  const std::string t_;
  std::string upsert_many_, upsert_many_fresh_, below_many_;
  std::map<size_t, std::string> upsert_rows_;
};

}  // namespace

Status ValidateSqlTargetOptions(const SqlTargetOptions& options) {
  if (!ValidTableName(options.table)) {
    return InvalidArgumentError("replica table '" + options.table +
                                "' is not a plain SQL name ([A-Za-z_][A-Za-z0-9_]{0,62})");
  }
  if (options.table.starts_with("converge_replica")) {
    return InvalidArgumentError("replica table '" + options.table +
                                "': names starting with converge_replica are converge's own");
  }
  if (options.replica.empty()) return InvalidArgumentError("replica: empty name");
  return ValidateTopicName(options.source_topic, options.source_topic.starts_with('_'));
}

Result<std::unique_ptr<Target>> NewSqlTarget(sql::Database& db, const SqlTargetOptions& options) {
  CONVERGE_RETURN_IF_ERROR(ValidateSqlTargetOptions(options));
  auto target = std::make_unique<SqlTarget>(db, options);
  CONVERGE_RETURN_IF_ERROR(target->Init());
  return std::unique_ptr<Target>(std::move(target));
}

}  // namespace converge::replica
