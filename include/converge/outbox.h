// Transactional outbox: a service writes the events of a state change into its own database,
// in the same local transaction as the change, so that both commit or neither does. A relay
// (converge/relay.h) later moves committed rows to the event log.
//
// The table layout is a public format (docs/formats/outbox.md): a service in any language can
// write the same rows with plain SQL and converge's relay publishes them.
//
// Contract
// - Write(tx, ...) inserts one row per event inside `tx` and nothing else durable; the events
//   are committed exactly when `tx` commits. Before inserting, every event is validated
//   (CloudEvents rules, topic name, size bound) and the whole call fails with InvalidArgument
//   naming the index if one is invalid: nothing is written.
// - Events without an id get a UUIDv7 (written back into the span), events without a time get
//   the Env's wall clock, so the caller learns what was written.
// - Order: rows carry a sequence number; the relay publishes rows of one partition key in
//   sequence order. On SQLite the sequence is commit order (one writer at a time). On
//   PostgreSQL, the insert statement first takes a transaction-scoped advisory lock per distinct
//   partition key (in hash order, so writers never deadlock on them), which makes the sequence
//   commit order per key (docs/formats/outbox.md, "Ordering"). A transaction writing a key
//   therefore waits for another open transaction that wrote the same key.
// - Wake-up: on PostgreSQL, unless options.notify is false, pg_notify('converge_outbox') is sent
//   right after the transaction commits (without waiting for its answer; a NOTIFY inside the
//   transaction would serialize commits); on SQLite the relays of the same file in this process
//   are woken after the commit. Relays also poll, so a missed wake-up only delays.
// - Cost: PostgreSQL: one statement for all events of a call; SQLite: one statement per 64.
//
// Thread-safety: an Outbox is thread-safe (it holds only options and an id generator); the
// Transaction it writes to is used by one thread at a time.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "converge/env.h"
#include "converge/event.h"
#include "converge/ids.h"
#include "converge/sql.h"
#include "converge/status.h"

namespace converge {

struct OutboxOptions {
  // PostgreSQL: pg_notify('converge_outbox') after each writing transaction commits (the
  // low-latency wake-up of the relay; a tiny asynchronous-commit transaction on the same
  // connection, whose answer is read by the connection's next call).
  bool notify = true;
  // Bounds on one Write call.
  size_t max_events_per_write = 10'000;
  size_t max_event_bytes = 1u << 20;  // encoded size of one event (attributes + data)
};

// One event and the topic it is published to.
struct OutboxEntry {
  std::string_view topic;
  Event* event = nullptr;
};

class Outbox {
 public:
  // `env` (ids and time) must outlive the Outbox.
  explicit Outbox(Env& env, OutboxOptions options = {});

  // Creates the outbox table, its sequence and indexes if missing (idempotent, safe to run
  // from several processes). OK when present. Errors of the database (see sql.h).
  static Status CreateSchema(sql::Database& db);

  // Writes `events` to `topic` inside `tx` (see the file comment). InvalidArgument (nothing
  // written) for a bad topic, an invalid event, more than max_events_per_write events or an
  // event over max_event_bytes; database errors as sql.h (the caller's transaction then fails).
  Status Write(sql::Transaction& tx, std::string_view topic, std::span<Event> events);
  Status Write(sql::Transaction& tx, std::string_view topic, Event& event) {
    return Write(tx, topic, std::span<Event>(&event, 1));
  }
  // Events to several topics in one call; rows are sequenced in the order given.
  Status Write(sql::Transaction& tx, std::span<const OutboxEntry> entries);

  // WAL outbox (docs/formats/wal-outbox.md; PostgreSQL only): the same validation, ids and
  // times as Write, then one transactional logical message per event
  // (pg_logical_emit_message(true, 'converge:<topic>', <the event as CloudEvents JSON>)) inside
  // `tx`. No table is written; a relay in mode "wal" publishes the events once `tx` commits,
  // in commit order. InvalidArgument (nothing emitted) as Write, also for SQLite.
  Status Emit(sql::Transaction& tx, std::string_view topic, std::span<Event> events);
  Status Emit(sql::Transaction& tx, std::string_view topic, Event& event) {
    return Emit(tx, topic, std::span<Event>(&event, 1));
  }
  Status Emit(sql::Transaction& tx, std::span<const OutboxEntry> entries);

  const OutboxOptions& options() const { return options_; }

 private:
  // Checks every entry and fills ids and times; InvalidArgument naming the index.
  Status Prepare(std::span<const OutboxEntry> entries, int64_t now_nanos);

  Env& env_;
  OutboxOptions options_;
  UuidV7Generator ids_;
};

// Names and constants of the table format (docs/formats/outbox.md).
namespace outbox_format {
inline constexpr std::string_view kTable = "converge_outbox";
inline constexpr std::string_view kNotifyChannel = "converge_outbox";
// PostgreSQL advisory lock classes (first int4 of the two-key form).
inline constexpr int32_t kKeyLockClass = 0x63766B31;     // writers: per partition key
inline constexpr int32_t kBucketLockClass = 0x63766231;  // relays: per bucket
inline constexpr int32_t kMemberLockClass = 0x63766D31;  // relays: presence

// The WAL outbox (docs/formats/wal-outbox.md): a service emits an event with
//   SELECT pg_logical_emit_message(true, 'converge:' || <topic>, <CloudEvents JSON>)
// inside its transaction. kEmitSql takes the two parameters EmitParams builds.
inline constexpr std::string_view kWalPrefix = "converge:";
inline constexpr std::string_view kEmitSql = "SELECT pg_logical_emit_message(true, $1, $2)";
struct EmitParams {
  std::string prefix;   // "converge:<topic>"
  std::string content;  // the event in JSON structured mode
};
// InvalidArgument for a bad topic or an event that fails Validate().
Result<EmitParams> BuildEmitParams(std::string_view topic, const Event& event);
}  // namespace outbox_format

}  // namespace converge
