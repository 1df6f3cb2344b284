// PostgreSQL's logical replication stream, as bytes: the CopyData messages of the streaming
// replication protocol (XLogData 'w', primary keepalive 'k', standby status update 'r') and
// the messages of the `pgoutput` output plugin (protocol versions 1 and 2, no streaming of
// in-progress transactions): Begin, Commit, logical Message, Relation, Insert, Update, Delete,
// Truncate, and the ones converge skips (Origin, Type).
//
// Decoders take the input by view and check every bound: malformed or truncated input gives
// DataLoss naming the message and what is wrong, never a read past the end. Decoded views
// (prefix, content, tuple values) point into the input, which must outlive them.
//
// Thread-safety: pure functions.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "converge/status.h"

namespace converge::cdc {

// A WAL position (XLogRecPtr).
using Lsn = uint64_t;

// "16/B374D848", PostgreSQL's text form.
std::string FormatLsn(Lsn lsn);
// InvalidArgument unless `text` is "<hex>/<hex>" with each part at most 8 digits.
Result<Lsn> ParseLsn(std::string_view text);

// PostgreSQL timestamps count microseconds from 2000-01-01 UTC.
inline constexpr int64_t kPgEpochUnixMicros = 946'684'800'000'000;

// ---- the replication stream (CopyData payloads) ----

struct StreamMessage {
  enum class Kind : uint8_t { kXLogData, kKeepalive };
  Kind kind = Kind::kKeepalive;
  Lsn start = 0;                 // XLogData: WAL position of the payload
  Lsn wal_end = 0;               // the server's current end of WAL
  int64_t send_time_pg = 0;      // microseconds since 2000-01-01
  bool reply_requested = false;  // keepalive: answer at once (or be disconnected)
  std::string_view payload;      // XLogData: one pgoutput message
};

Result<StreamMessage> DecodeStreamMessage(std::string_view copy_data);

// The standby status update ('r'): WAL up to `flush` is durably processed, so the slot may
// advance its confirmed position there.
std::string EncodeStandbyStatus(Lsn write, Lsn flush, Lsn apply, int64_t now_pg,
                                bool reply_requested);

// ---- pgoutput messages ----

struct Begin {
  Lsn final_lsn = 0;  // the commit record's LSN
  int64_t commit_time_pg = 0;
  uint32_t xid = 0;
};

struct Commit {
  uint8_t flags = 0;
  Lsn commit_lsn = 0;
  Lsn end_lsn = 0;  // the position after the transaction: what a consumer confirms
  int64_t commit_time_pg = 0;
};

// pg_logical_emit_message(transactional, prefix, content).
struct LogicalMessage {
  bool transactional = false;
  Lsn lsn = 0;
  std::string_view prefix;
  std::string_view content;
};

struct RelationColumn {
  bool key = false;  // part of the replica identity
  std::string name;
  uint32_t type_oid = 0;
  int32_t type_modifier = 0;
};

// Sent before the first change of a table in a session (and after its definition changes).
struct Relation {
  uint32_t id = 0;
  std::string schema;  // "" for pg_catalog
  std::string name;
  char replica_identity = 'd';  // d default (primary key), n nothing, f full, i index
  std::vector<RelationColumn> columns;
};

struct TupleValue {
  // 'n' null, 'u' unchanged TOASTed value (not sent), 't' text, 'b' binary.
  char kind = 'n';
  std::string_view data;
};

struct Change {
  char op = 'I';  // 'I' insert, 'U' update, 'D' delete
  uint32_t relation_id = 0;
  // Update/delete: the old key ('K') or the whole old row ('O', REPLICA IDENTITY FULL); 0 if
  // none was sent (an update that did not change the key).
  char old_kind = 0;
  std::vector<TupleValue> old_tuple;
  std::vector<TupleValue> new_tuple;  // insert/update
};

// TRUNCATE of one or more tables of the publication (sent when it publishes truncate). The
// server sends a Relation message for each of them before it.
struct Truncate {
  bool cascade = false;           // option bit 1
  bool restart_identity = false;  // option bit 2
  std::vector<uint32_t> relation_ids;
};

struct PgOutputMessage {
  // 'B', 'C', 'M', 'R', 'I', 'U', 'D', 'T'; or 'O' (origin), 'Y' (type), which are checked for
  // their tag only and carry nothing here.
  char tag = 0;
  Begin begin;
  Commit commit;
  LogicalMessage message;
  Relation relation;
  Change change;
  Truncate truncate;
};

// Decodes one pgoutput message (an XLogData payload). DataLoss for an unknown tag, a
// truncated message, a bad tuple kind or trailing bytes.
Result<PgOutputMessage> DecodePgOutput(std::string_view payload);

}  // namespace converge::cdc
