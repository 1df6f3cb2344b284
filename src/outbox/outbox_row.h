// The outbox row format (docs/formats/outbox.md): DDL per engine, the column order used by the
// writer and the relay, and the conversions Event <-> row.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "converge/event.h"
#include "converge/sql.h"
#include "converge/status.h"

namespace converge::outbox_internal {

// Columns after `seq`, in the order the writer binds them and the relay selects them.
// The relay selects "seq, " + kColumns.
inline constexpr std::string_view kColumns =
    "id, topic, partition_key, source, type, subject, time, datacontenttype, dataschema, "
    "data_kind, data, extensions, traceparent, tracestate, created_at";
inline constexpr size_t kColumnCount = 15;

// Column indexes in a relay SELECT ("seq, " + kColumns).
enum Col : size_t {
  kSeq = 0,
  kId,
  kTopic,
  kPartitionKey,
  kSource,
  kType,
  kSubject,
  kTime,
  kDataContentType,
  kDataSchema,
  kDataKind,
  kData,
  kExtensions,
  kTraceParent,
  kTraceState,
  kCreatedAt,
};

// DDL, idempotent (CREATE ... IF NOT EXISTS).
std::string_view SqliteSchema();
std::string_view PostgresSchema();

// Whether `table` exists (a read; no lock beyond a snapshot).
Result<bool> TableExists(sql::Database& db, std::string_view table);

// Topic names accepted by the outbox: 1..200 chars of [A-Za-z0-9._-], not starting with '.'
// or '_' (the log's rule for ordinary topics). InvalidArgument otherwise.
Status CheckTopicName(std::string_view topic);

// The values an event occupies in a row (views into `event` and `scratch`).
struct RowValues {
  sql::Value values[kColumnCount];
};
// Fills `out` for `event` on `topic`; `scratch` holds the encoded extensions. The event must
// already be valid. `created_at_micros` is the row's created_at.
void EventToRow(std::string_view topic, const Event& event, int64_t created_at_micros,
                std::string* scratch, RowValues* out);

// Builds the event stored in a relay row. InvalidArgument naming the column for a malformed
// row (the relay dead-letters it with this message).
Status RowToEvent(const sql::Row& row, Event* event);

// The row as a JSON object (all columns; data as data_base64), for dead letters.
std::string RowToJson(const sql::Row& row);

// Extensions other than partitionkey/traceparent/tracestate as a JSON object, "" if none.
std::string EncodeExtensions(const Event& event);

// JSON string literal of `s` (quotes included).
void AppendJsonString(std::string_view s, std::string* out);

std::string Base64Encode(std::string_view bytes);

bool IsValidUtf8(std::string_view s);

}  // namespace converge::outbox_internal
