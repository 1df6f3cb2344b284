// The outbox writer: validates events, orders PostgreSQL writers per key with advisory locks,
// inserts rows in multi-row statements and arranges the relay wake-up.
#include "converge/outbox.h"

#include <sqlite3.h>

#include <algorithm>
#include <optional>
#include <string>
#include <vector>

#include "outbox/outbox_row.h"
#include "outbox/wakeup.h"
#include "sql/sql_internal.h"
#include "sql/sql_postgres.h"

namespace converge {

using outbox_internal::kColumnCount;

namespace {

// Rows per INSERT statement: powers of two up to this, so at most 7 statements are cached.
constexpr size_t kMaxRowsPerInsert = 64;

const std::string& InsertSql(size_t rows) {
  static const std::vector<std::string> statements = [] {
    std::vector<std::string> all(kMaxRowsPerInsert + 1);
    for (size_t n = 1; n <= kMaxRowsPerInsert; n *= 2) {
      std::string sql = "INSERT INTO converge_outbox (";
      sql += outbox_internal::kColumns;
      sql += ") VALUES ";
      size_t p = 1;
      for (size_t r = 0; r < n; ++r) {
        sql += r == 0 ? "(" : ",(";
        for (size_t c = 0; c < kColumnCount; ++c) {
          if (c > 0) sql += ',';
          sql += '$';
          sql += std::to_string(p++);
        }
        sql += ')';
      }
      all[n] = std::move(sql);
    }
    return all;
  }();
  return statements[rows];
}

size_t ApproximateSize(std::string_view topic, const Event& e) {
  size_t n = topic.size() + e.id().size() + e.source().size() + e.type().size() + e.data().size();
  for (const auto* s : {&e.subject(), &e.time(), &e.datacontenttype(), &e.dataschema()}) {
    if (*s) n += (*s)->size();
  }
  for (const Extension& x : e.extensions()) n += x.name.size() + x.value.size();
  return n;
}

std::string IndexPrefix(size_t i) { return "event[" + std::to_string(i) + "]: "; }

// All rows in one statement: one array per column, unnest()ed in order (sequence numbers are
// drawn in the order of the entries).
Status InsertPostgres(sql::Transaction& tx, std::span<const OutboxEntry> entries,
                      int64_t created_at) {
  std::vector<std::string> scratch(entries.size());
  std::vector<outbox_internal::RowValues> rows(entries.size());
  for (size_t i = 0; i < entries.size(); ++i) {
    outbox_internal::EventToRow(entries[i].topic, *entries[i].event, created_at, &scratch[i],
                                &rows[i]);
  }
  std::vector<std::string> arrays(kColumnCount);
  std::vector<std::optional<std::string_view>> column(entries.size());
  std::vector<int64_t> ints(entries.size());
  for (size_t c = 0; c < kColumnCount; ++c) {
    if (c == kColumnCount - 1) {  // created_at
      for (size_t i = 0; i < rows.size(); ++i) ints[i] = rows[i].values[c].int_value();
      arrays[c] = sql::internal::PgIntArray(ints);
      continue;
    }
    for (size_t i = 0; i < rows.size(); ++i) {
      const sql::Value& v = rows[i].values[c];
      column[i] = v.kind() == sql::Value::Kind::kNull ? std::nullopt
                                                      : std::optional<std::string_view>(v.bytes());
    }
    arrays[c] = c == 10 ? sql::internal::PgByteaArray(column) : sql::internal::PgTextArray(column);
  }
  std::vector<sql::Value> params;
  params.reserve(kColumnCount + 2);
  for (const std::string& a : arrays) params.push_back(sql::Value::Text(a));
  // Per-key advisory locks, in hash order so that two writers never wait on each other in a
  // cycle, taken by the same statement before any row (the uncorrelated sub-select runs once,
  // first). Held until the transaction ends: the sequence numbers drawn for the rows are then
  // in commit order for each key.
  std::vector<std::string_view> keys;
  for (const OutboxEntry& entry : entries) {
    auto key = entry.event->partitionkey();
    if (key && !key->empty()) keys.push_back(*key);
  }
  std::sort(keys.begin(), keys.end());
  keys.erase(std::unique(keys.begin(), keys.end()), keys.end());
  std::string key_array;
  if (!keys.empty()) {
    key_array = sql::internal::PgTextArray(keys);
    params.push_back(sql::Value::Int(outbox_format::kKeyLockClass));
    params.push_back(sql::Value::Text(key_array));
  }
  static const std::string insert = [] {
    std::string sql = "INSERT INTO converge_outbox (";
    sql += outbox_internal::kColumns;
    sql += ") SELECT * FROM unnest(";
    for (size_t c = 0; c < kColumnCount; ++c) {
      if (c > 0) sql += ", ";
      sql += '$';
      sql += std::to_string(c + 1);
      sql += c == 10 ? "::bytea[]" : (c == kColumnCount - 1 ? "::bigint[]" : "::text[]");
    }
    sql += ")";
    return sql;
  }();
  static const std::string locked_insert =
      "WITH locks AS MATERIALIZED (SELECT pg_advisory_xact_lock($16::int4, h) FROM "
      "(SELECT DISTINCT hashtext(k) AS h FROM unnest($17::text[]) AS k ORDER BY 1 OFFSET 0) "
      "AS s) " +
      insert + " WHERE (SELECT count(*) FROM locks) >= 0";
  return tx.Execute(keys.empty() ? insert : locked_insert, params).status();
}

}  // namespace

Outbox::Outbox(Env& env, OutboxOptions options)
    : env_(env), options_(std::move(options)), ids_(env.clock(), env.random()) {}

Status Outbox::CreateSchema(sql::Database& db) {
  // Looking first keeps a relay that reconnects from taking the write lock (SQLite) or a
  // schema lock (PostgreSQL) when the table is already there.
  CONVERGE_ASSIGN_OR_RETURN(bool exists, outbox_internal::TableExists(db, "converge_outbox"));
  if (exists) return Status::Ok();
  return db.ExecuteScript(db.engine() == sql::Engine::kSqlite ? outbox_internal::SqliteSchema()
                                                              : outbox_internal::PostgresSchema());
}

Status Outbox::Prepare(std::span<const OutboxEntry> entries, int64_t now_nanos) {
  if (entries.size() > options_.max_events_per_write) {
    return InvalidArgumentError("outbox: " + std::to_string(entries.size()) +
                                " events exceed max_events_per_write (" +
                                std::to_string(options_.max_events_per_write) + ")");
  }
  // Validate everything (and fill ids and times) before writing anything.
  std::string now_text;
  for (size_t i = 0; i < entries.size(); ++i) {
    const OutboxEntry& entry = entries[i];
    if (entry.event == nullptr) return InvalidArgumentError(IndexPrefix(i) + "null event");
    Status topic_ok = outbox_internal::CheckTopicName(entry.topic);
    if (!topic_ok.ok())
      return InvalidArgumentError(IndexPrefix(i) + std::string(topic_ok.message()));
    Event& e = *entry.event;
    if (e.id().empty()) e.set_id(ids_.NextString());
    if (!e.time()) {
      if (now_text.empty()) now_text = FormatRfc3339(now_nanos);
      e.set_time(now_text);
    }
    Status valid = e.Validate();
    if (valid.ok()) valid = CheckAttributeLimits(e);  // the relay would dead-letter it
    if (!valid.ok()) return InvalidArgumentError(IndexPrefix(i) + std::string(valid.message()));
    if (auto tp = e.traceparent()) {
      Result<TraceParent> parsed = TraceParent::Parse(*tp);
      if (!parsed.ok()) {
        return InvalidArgumentError(IndexPrefix(i) + std::string(parsed.status().message()));
      }
    }
    if (ApproximateSize(entry.topic, e) > options_.max_event_bytes) {
      return InvalidArgumentError(IndexPrefix(i) + "event exceeds max_event_bytes (" +
                                  std::to_string(options_.max_event_bytes) + ")");
    }
  }

  return Status::Ok();
}

Status Outbox::Write(sql::Transaction& tx, std::string_view topic, std::span<Event> events) {
  std::vector<OutboxEntry> entries;
  entries.reserve(events.size());
  for (Event& e : events) entries.push_back(OutboxEntry{topic, &e});
  return Write(tx, entries);
}

Status Outbox::Write(sql::Transaction& tx, std::span<const OutboxEntry> entries) {
  if (entries.empty()) return Status::Ok();
  const int64_t now_nanos = env_.clock().NowWallNanos();
  CONVERGE_RETURN_IF_ERROR(Prepare(entries, now_nanos));

  const bool postgres = tx.engine() == sql::Engine::kPostgres;
  const int64_t created_at = now_nanos / 1000;
  if (postgres) {
    CONVERGE_RETURN_IF_ERROR(InsertPostgres(tx, entries, created_at));
    if (options_.notify) {
      // NOTIFY inside this transaction would serialize it with every other notifying commit
      // (PostgreSQL holds a global lock across the commit's WAL flush). Notify right after the
      // commit instead, without waiting, in a tiny transaction that does not wait for its own
      // flush: a lost notification only delays the relay until its next poll.
      sql::internal::PgSendAfterCommit(
          tx,
          "BEGIN; SET LOCAL synchronous_commit TO OFF; SELECT pg_notify('converge_outbox', ''); "
          "COMMIT");
    }
    return Status::Ok();
  }

  std::vector<sql::Value> params;
  std::vector<std::string> scratch(std::min(entries.size(), kMaxRowsPerInsert));
  size_t i = 0;
  while (i < entries.size()) {
    size_t remaining = entries.size() - i;
    size_t chunk = kMaxRowsPerInsert;
    while (chunk > remaining) chunk /= 2;
    params.clear();
    params.reserve(chunk * kColumnCount);
    for (size_t r = 0; r < chunk; ++r) {
      outbox_internal::RowValues row;
      outbox_internal::EventToRow(entries[i + r].topic, *entries[i + r].event, created_at,
                                  &scratch[r], &row);
      params.insert(params.end(), std::begin(row.values), std::end(row.values));
    }
    CONVERGE_RETURN_IF_ERROR(tx.Execute(InsertSql(chunk), params).status());
    i += chunk;
  }
  const char* file = sqlite3_db_filename(static_cast<sqlite3*>(tx.native_handle()), "main");
  if (file != nullptr && *file != '\0') {
    // SQLite reports the absolute path; the relay registers under the same string.
    tx.OnCommit(
        [key = std::string(file)] { outbox_internal::WakeupRegistry::Global().Notify(key); });
  }
  return Status::Ok();
}

Status Outbox::Emit(sql::Transaction& tx, std::string_view topic, std::span<Event> events) {
  std::vector<OutboxEntry> entries;
  entries.reserve(events.size());
  for (Event& e : events) entries.push_back(OutboxEntry{topic, &e});
  return Emit(tx, entries);
}

Status Outbox::Emit(sql::Transaction& tx, std::span<const OutboxEntry> entries) {
  if (tx.engine() != sql::Engine::kPostgres) {
    return InvalidArgumentError("outbox: the WAL outbox (Emit) needs PostgreSQL");
  }
  if (entries.empty()) return Status::Ok();
  CONVERGE_RETURN_IF_ERROR(Prepare(entries, env_.clock().NowWallNanos()));
  std::vector<outbox_format::EmitParams> built;
  built.reserve(entries.size());
  for (size_t i = 0; i < entries.size(); ++i) {
    Result<outbox_format::EmitParams> p =
        outbox_format::BuildEmitParams(entries[i].topic, *entries[i].event);
    if (!p.ok()) return InvalidArgumentError(IndexPrefix(i) + std::string(p.status().message()));
    built.push_back(std::move(p).value());
  }
  if (built.size() == 1) {
    const sql::Value params[] = {sql::Value::Text(built[0].prefix),
                                 sql::Value::Text(built[0].content)};
    return tx.Execute(outbox_format::kEmitSql, params).status();
  }
  // Several events: one statement, the messages emitted in the order given (a function scan
  // of unnest yields its rows in array order; ORDER BY makes it explicit).
  std::vector<std::string_view> prefixes, contents;
  for (const auto& b : built) {
    prefixes.push_back(b.prefix);
    contents.push_back(b.content);
  }
  const std::string prefix_array = sql::internal::PgTextArray(prefixes);
  const std::string content_array = sql::internal::PgTextArray(contents);
  const sql::Value params[] = {sql::Value::Text(prefix_array), sql::Value::Text(content_array)};
  return tx
      .Execute(
          "SELECT count(pg_logical_emit_message(true, m.p, m.c)) FROM (SELECT p, c FROM "
          "unnest($1::text[], $2::text[]) WITH ORDINALITY AS u(p, c, n) ORDER BY n) AS m",
          params)
      .status();
}

namespace outbox_format {

Result<EmitParams> BuildEmitParams(std::string_view topic, const Event& event) {
  CONVERGE_RETURN_IF_ERROR(outbox_internal::CheckTopicName(topic));
  EmitParams out;
  out.prefix.assign(kWalPrefix);
  out.prefix.append(topic);
  CONVERGE_RETURN_IF_ERROR(AppendJson(event, &out.content));
  return out;
}

}  // namespace outbox_format

}  // namespace converge
