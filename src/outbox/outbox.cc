// The outbox writer: validates events, orders PostgreSQL writers per key with advisory locks,
// inserts rows in multi-row statements and arranges the relay wake-up.
#include "converge/outbox.h"

#include <sqlite3.h>

#include <algorithm>
#include <string>
#include <vector>

#include "outbox/outbox_row.h"
#include "outbox/wakeup.h"

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

// A PostgreSQL text[] literal.
std::string TextArrayLiteral(const std::vector<std::string_view>& items) {
  std::string out = "{";
  for (size_t i = 0; i < items.size(); ++i) {
    if (i > 0) out.push_back(',');
    out.push_back('"');
    for (char c : items[i]) {
      if (c == '"' || c == '\\') out.push_back('\\');
      out.push_back(c);
    }
    out.push_back('"');
  }
  out.push_back('}');
  return out;
}

size_t ApproximateSize(std::string_view topic, const Event& e) {
  size_t n = topic.size() + e.id().size() + e.source().size() + e.type().size() +
             e.data().size();
  for (const auto* s : {&e.subject(), &e.time(), &e.datacontenttype(), &e.dataschema()}) {
    if (*s) n += (*s)->size();
  }
  for (const Extension& x : e.extensions()) n += x.name.size() + x.value.size();
  return n;
}

std::string IndexPrefix(size_t i) { return "event[" + std::to_string(i) + "]: "; }

}  // namespace

Outbox::Outbox(Env& env, OutboxOptions options)
    : env_(env), options_(std::move(options)), ids_(env.clock(), env.random()) {}

Status Outbox::CreateSchema(sql::Database& db) {
  return db.ExecuteScript(db.engine() == sql::Engine::kSqlite ? outbox_internal::SqliteSchema()
                                                              : outbox_internal::PostgresSchema());
}

Status Outbox::Write(sql::Transaction& tx, std::string_view topic, std::span<Event> events) {
  std::vector<OutboxEntry> entries;
  entries.reserve(events.size());
  for (Event& e : events) entries.push_back(OutboxEntry{topic, &e});
  return Write(tx, entries);
}

Status Outbox::Write(sql::Transaction& tx, std::span<const OutboxEntry> entries) {
  if (entries.empty()) return Status::Ok();
  if (entries.size() > options_.max_events_per_write) {
    return InvalidArgumentError("outbox: " + std::to_string(entries.size()) +
                                " events exceed max_events_per_write (" +
                                std::to_string(options_.max_events_per_write) + ")");
  }
  // Validate everything (and fill ids and times) before writing anything.
  const int64_t now_nanos = env_.clock().NowWallNanos();
  std::string now_text;
  for (size_t i = 0; i < entries.size(); ++i) {
    const OutboxEntry& entry = entries[i];
    if (entry.event == nullptr) return InvalidArgumentError(IndexPrefix(i) + "null event");
    Status topic_ok = outbox_internal::CheckTopicName(entry.topic);
    if (!topic_ok.ok()) return InvalidArgumentError(IndexPrefix(i) + std::string(topic_ok.message()));
    Event& e = *entry.event;
    if (e.id().empty()) e.set_id(ids_.NextString());
    if (!e.time()) {
      if (now_text.empty()) now_text = FormatRfc3339(now_nanos);
      e.set_time(now_text);
    }
    Status valid = e.Validate();
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

  const bool postgres = tx.engine() == sql::Engine::kPostgres;
  if (postgres) {
    // Per-key advisory locks, in hash order so that two writers never wait on each other in a
    // cycle. Held until this transaction ends: the sequence numbers drawn below are then in
    // commit order for each key.
    std::vector<std::string_view> keys;
    for (const OutboxEntry& entry : entries) {
      auto key = entry.event->partitionkey();
      if (key && !key->empty()) keys.push_back(*key);
    }
    if (!keys.empty()) {
      std::sort(keys.begin(), keys.end());
      keys.erase(std::unique(keys.begin(), keys.end()), keys.end());
      std::string array = TextArrayLiteral(keys);
      sql::Value params[] = {sql::Value::Int(outbox_format::kKeyLockClass),
                             sql::Value::Text(array)};
      CONVERGE_RETURN_IF_ERROR(
          tx.Query("SELECT pg_advisory_xact_lock($1::int4, h) FROM "
                   "(SELECT DISTINCT hashtext(k) AS h FROM unnest($2::text[]) AS k "
                   "ORDER BY 1 OFFSET 0) AS s",
                   params, [](const sql::Row&) { return Status::Ok(); })
              .status());
    }
  }

  const int64_t created_at = now_nanos / 1000;
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

  if (postgres) {
    if (options_.notify) {
      CONVERGE_RETURN_IF_ERROR(
          tx.Query("SELECT pg_notify('converge_outbox', '')", {},
                   [](const sql::Row&) { return Status::Ok(); })
              .status());
    }
  } else {
    const char* file = sqlite3_db_filename(static_cast<sqlite3*>(tx.native_handle()), "main");
    if (file != nullptr && *file != '\0') {
      // SQLite reports the absolute path; the relay registers under the same string.
      tx.OnCommit([key = std::string(file)] {
        outbox_internal::WakeupRegistry::Global().Notify(key);
      });
    }
  }
  return Status::Ok();
}

}  // namespace converge
