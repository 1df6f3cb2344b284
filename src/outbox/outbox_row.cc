// Event <-> outbox row conversions and the table DDL (docs/formats/outbox.md).
#include "outbox/outbox_row.h"
#include "core/event_internal.h"

#include <boost/json.hpp>
#include <string>

namespace converge::outbox_internal {

namespace json = boost::json;

std::string_view SqliteSchema() {
  return R"sql(
CREATE TABLE IF NOT EXISTS converge_outbox (
  seq             INTEGER PRIMARY KEY AUTOINCREMENT,
  id              TEXT NOT NULL,
  topic           TEXT NOT NULL,
  partition_key   TEXT NOT NULL DEFAULT '',
  source          TEXT NOT NULL,
  type            TEXT NOT NULL,
  subject         TEXT,
  time            TEXT,
  datacontenttype TEXT,
  dataschema      TEXT,
  data_kind       TEXT,
  data            BLOB,
  extensions      TEXT,
  traceparent     TEXT,
  tracestate      TEXT,
  created_at      INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS converge_meta (
  name  TEXT PRIMARY KEY,
  value TEXT NOT NULL
);
INSERT OR IGNORE INTO converge_meta (name, value) VALUES ('outbox_format', '1');
)sql";
}

std::string_view PostgresSchema() {
  // The advisory lock serializes concurrent schema creation from several processes
  // (CREATE ... IF NOT EXISTS alone can race on the catalog).
  return R"sql(
BEGIN;
SELECT pg_advisory_xact_lock(1668706609, 0);
CREATE TABLE IF NOT EXISTS converge_outbox (
  seq             bigserial PRIMARY KEY,
  id              text NOT NULL,
  topic           text NOT NULL,
  partition_key   text NOT NULL DEFAULT '',
  source          text NOT NULL,
  type            text NOT NULL,
  subject         text,
  time            text,
  datacontenttype text,
  dataschema      text,
  data_kind       text,
  data            bytea,
  extensions      text,
  traceparent     text,
  tracestate      text,
  created_at      bigint NOT NULL DEFAULT 0
) WITH (autovacuum_vacuum_scale_factor = 0.0, autovacuum_vacuum_threshold = 5000,
        autovacuum_vacuum_cost_delay = 0);
CREATE TABLE IF NOT EXISTS converge_meta (
  name  text PRIMARY KEY,
  value text NOT NULL
);
INSERT INTO converge_meta (name, value) VALUES ('outbox_format', '1') ON CONFLICT DO NOTHING;
COMMIT;
)sql";
}

Result<bool> TableExists(sql::Database& db, std::string_view table) {
  bool exists = false;
  sql::Value params[] = {sql::Value::Text(table)};
  const char* sql = db.engine() == sql::Engine::kSqlite
                        ? "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = $1"
                        : "SELECT 1 WHERE to_regclass($1) IS NOT NULL";
  CONVERGE_RETURN_IF_ERROR(db.Query(sql, params, [&](const sql::Row&) {
                               exists = true;
                               return Status::Ok();
                             }).status());
  return exists;
}

Status CheckTopicName(std::string_view topic) {
  if (topic.empty() || topic.size() > 200) {
    return InvalidArgumentError("topic name must be 1..200 characters");
  }
  for (char c : topic) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-';
    if (!ok) {
      return InvalidArgumentError("topic name '" + std::string(topic) +
                                  "' may hold only [A-Za-z0-9._-]");
    }
  }
  if (topic[0] == '.' || topic[0] == '_') {
    return InvalidArgumentError("topic name '" + std::string(topic) +
                                "' may not start with '.' or '_'");
  }
  return Status::Ok();
}

void AppendJsonString(std::string_view s, std::string* out) {
  out->push_back('"');
  ::converge::internal::AppendJsonEscaped(s, out);
  out->push_back('"');
}

std::string Base64Encode(std::string_view bytes) {
  std::string out;
  ::converge::internal::AppendBase64(bytes, &out);
  return out;
}

namespace {

bool IsReservedExtension(std::string_view name) {
  return name == Event::kPartitionKey || name == Event::kTraceParent || name == Event::kTraceState;
}

std::string_view DataKindName(DataKind kind) {
  switch (kind) {
    case DataKind::kJson:
      return "json";
    case DataKind::kText:
      return "text";
    case DataKind::kBinary:
      return "binary";
    case DataKind::kNone:
      break;
  }
  return "";
}

std::optional<std::string> OptionalText(const sql::Row& row, size_t column) {
  if (row.IsNull(column)) return std::nullopt;
  return std::string(row.Bytes(column));
}

Status ColumnError(std::string_view column, std::string_view what) {
  return InvalidArgumentError("column '" + std::string(column) + "' " + std::string(what));
}

Status DecodeExtensions(std::string_view text, Event* event) {
  boost::system::error_code ec;
  json::value v = json::parse(json::string_view(text.data(), text.size()), ec);
  if (ec) return ColumnError("extensions", "is not valid JSON: " + ec.message());
  if (!v.is_object()) return ColumnError("extensions", "must be a JSON object");
  for (const auto& member : v.as_object()) {
    std::string name(member.key());
    if (IsReservedExtension(name)) {
      return ColumnError("extensions", "may not hold '" + name + "' (it has its own column)");
    }
    const json::value& x = member.value();
    if (x.is_string()) {
      event->SetExtension(name, std::string(x.as_string()));
    } else if (x.is_bool()) {
      event->SetExtensionBoolean(name, x.as_bool());
    } else if (x.is_int64() && x.as_int64() >= INT32_MIN && x.as_int64() <= INT32_MAX) {
      event->SetExtensionInteger(name, static_cast<int32_t>(x.as_int64()));
    } else if (x.is_uint64() && x.as_uint64() <= INT32_MAX) {
      event->SetExtensionInteger(name, static_cast<int32_t>(x.as_uint64()));
    } else {
      return ColumnError("extensions",
                         "value of '" + name + "' must be a string, a boolean or a 32-bit integer");
    }
  }
  return Status::Ok();
}

}  // namespace

bool IsValidUtf8(std::string_view s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  size_t n = s.size();
  size_t i = 0;
  while (i < n) {
    unsigned char c = p[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t len;
    uint32_t cp;
    if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
      cp = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      cp = c & 0x0F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      cp = c & 0x07;
    } else {
      return false;
    }
    if (i + len > n) return false;
    for (size_t k = 1; k < len; ++k) {
      if ((p[i + k] & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (p[i + k] & 0x3F);
    }
    if ((len == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) ||
        (len == 4 && (cp < 0x10000 || cp > 0x10FFFF))) {
      return false;
    }
    i += len;
  }
  return true;
}

std::string EncodeExtensions(const Event& event) {
  std::string out;
  for (const Extension& ext : event.extensions()) {
    if (IsReservedExtension(ext.name)) continue;
    out.push_back(out.empty() ? '{' : ',');
    AppendJsonString(ext.name, &out);
    out.push_back(':');
    if (ext.kind == ExtensionKind::kString) {
      AppendJsonString(ext.value, &out);
    } else {
      out.append(ext.value);  // canonical integer or true/false
    }
  }
  if (!out.empty()) out.push_back('}');
  return out;
}

void EventToRow(std::string_view topic, const Event& event, int64_t created_at_micros,
                std::string* scratch, RowValues* out) {
  using sql::Value;
  auto opt = [](const std::optional<std::string>& s) {
    return s ? Value::Text(*s) : Value::Null();
  };
  *scratch = EncodeExtensions(event);
  sql::Value* v = out->values;
  v[0] = Value::Text(event.id());
  v[1] = Value::Text(topic);
  v[2] = Value::Text(event.partitionkey().value_or(std::string_view()));
  v[3] = Value::Text(event.source());
  v[4] = Value::Text(event.type());
  v[5] = opt(event.subject());
  v[6] = opt(event.time());
  v[7] = opt(event.datacontenttype());
  v[8] = opt(event.dataschema());
  if (event.data_kind() == DataKind::kNone) {
    v[9] = Value::Null();
    v[10] = Value::Null();
  } else {
    v[9] = Value::Text(DataKindName(event.data_kind()));
    v[10] = Value::Blob(event.data());
  }
  v[11] = scratch->empty() ? Value::Null() : Value::Text(*scratch);
  auto tp = event.traceparent();
  auto ts = event.tracestate();
  v[12] = tp ? Value::Text(*tp) : Value::Null();
  v[13] = ts ? Value::Text(*ts) : Value::Null();
  v[14] = Value::Int(created_at_micros);
}

Status RowToEvent(const sql::Row& row, Event* event) {
  if (row.size() < kCreatedAt + 1) return InvalidArgumentError("outbox row has too few columns");
  std::string_view id = row.Bytes(kId);
  if (id.empty()) return ColumnError("id", "is empty");
  event->set_id(std::string(id));
  event->set_source(std::string(row.Bytes(kSource)));
  event->set_type(std::string(row.Bytes(kType)));
  event->set_subject(OptionalText(row, kSubject));
  event->set_time(OptionalText(row, kTime));
  event->set_datacontenttype(OptionalText(row, kDataContentType));
  event->set_dataschema(OptionalText(row, kDataSchema));
  if (!row.IsNull(kExtensions) && !row.Bytes(kExtensions).empty()) {
    CONVERGE_RETURN_IF_ERROR(DecodeExtensions(row.Bytes(kExtensions), event));
  }
  std::string_view key = row.Bytes(kPartitionKey);
  if (!key.empty()) event->set_partitionkey(std::string(key));
  if (!row.IsNull(kTraceParent)) {
    std::string_view tp = row.Bytes(kTraceParent);
    Result<TraceParent> parsed = TraceParent::Parse(tp);
    if (!parsed.ok()) return ColumnError("traceparent", parsed.status().message());
    event->set_traceparent(std::string(tp));
  }
  if (!row.IsNull(kTraceState)) event->set_tracestate(std::string(row.Bytes(kTraceState)));

  if (!row.IsNull(kData)) {
    std::string_view data = row.Bytes(kData);
    std::string_view kind = row.IsNull(kDataKind) ? std::string_view() : row.Bytes(kDataKind);
    if (kind.empty()) {
      // Not given: derive it from the media type.
      const auto& ct = event->datacontenttype();
      if (!ct || IsJsonContentType(*ct)) {
        kind = "json";
      } else if (ct->rfind("text/", 0) == 0) {
        kind = "text";
      } else {
        kind = "binary";
      }
    }
    if (kind == "json") {
      Status s = event->SetJsonData(data);
      if (!s.ok()) return ColumnError("data", "is not valid JSON: " + std::string(s.message()));
    } else if (kind == "text") {
      Status s = event->SetTextData(std::string(data));
      if (!s.ok()) return ColumnError("data", s.message());
    } else if (kind == "binary") {
      event->SetBinaryData(std::string(data));
    } else {
      return ColumnError("data_kind",
                         "must be json, text, binary or NULL, got '" + std::string(kind) + "'");
    }
  }
  Status valid = event->Validate();
  if (!valid.ok()) return InvalidArgumentError(std::string(valid.message()));
  return Status::Ok();
}

std::string RowToJson(const sql::Row& row) {
  static constexpr std::string_view kNames[] = {
      "seq",        "id",          "topic",           "partition_key", "source",    "type",
      "subject",    "time",        "datacontenttype", "dataschema",    "data_kind", "data",
      "extensions", "traceparent", "tracestate",      "created_at"};
  std::string out = "{";
  for (size_t c = 0; c < row.size() && c < std::size(kNames); ++c) {
    if (c > 0) out.push_back(',');
    if (c == kData) {
      AppendJsonString("data_base64", &out);
      out.push_back(':');
      if (row.IsNull(c)) {
        out.append("null");
      } else {
        AppendJsonString(Base64Encode(row.Bytes(c)), &out);
      }
      continue;
    }
    AppendJsonString(kNames[c], &out);
    out.push_back(':');
    if (row.IsNull(c)) {
      out.append("null");
    } else if (c == kSeq || c == kCreatedAt) {
      Result<int64_t> v = row.Int(c);
      out.append(v.ok() ? std::to_string(*v) : "null");
    } else {
      // Invalid UTF-8 would make the dead letter itself invalid JSON: base64 it instead.
      std::string_view text = row.Bytes(c);
      if (IsValidUtf8(text)) {
        AppendJsonString(text, &out);
      } else {
        AppendJsonString("base64:" + Base64Encode(text), &out);
      }
    }
  }
  out.push_back('}');
  return out;
}

}  // namespace converge::outbox_internal
