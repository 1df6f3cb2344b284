// The outbox relay: moves committed outbox rows (converge/outbox.h) to the event log.
//
// Contract
// - At-least-once, effectively exactly-once: a row is deleted from the outbox only after its
//   event was appended to the log (or its dead letter was); a crash anywhere in between makes a
//   later relay publish it again, and the log's idempotent publish on the event id drops the
//   copy (within the topic's dedup window; the inbox catches anything older).
// - Order: rows with the same partition key are published in their sequence order, which is
//   their commit order (docs/formats/outbox.md, "Ordering"), also across relay restarts and
//   with several relays running at once.
// - Several relays on one outbox are safe. SQLite: one relay at a time holds a lock file next
//   to the database; the others stand by and take over when it exits or dies. PostgreSQL: the
//   rows are spread over `postgres_buckets` buckets by partition key; each relay holds a share
//   of the buckets through session advisory locks (released by PostgreSQL when the relay's
//   connection ends, so a crashed relay's buckets move at once), and rebalances every
//   rebalance_interval_ms.
// - Bounded table: published rows are deleted right after publishing, one batch per short
//   statement; no transaction is held while publishing.
// - Latency without fixed sleeps: the relay waits until woken by PostgreSQL LISTEN/NOTIFY or,
//   for SQLite, by an in-process writer's commit; it polls every poll_interval_ms as a fallback
//   (writers in another process, lost notifications). After a full batch it continues at once.
//   Its waits and backoffs are timers of the Env's executor, so under a simulated Env the relay
//   runs in virtual time (RelayOptions::steps_on_env_executor).
// - Malformed rows (invalid CloudEvents attributes, bad JSON data, bad traceparent, a record
//   the log refuses) go to the dead-letter topic with the reason and the row's content, and the
//   relay keeps going. If that append fails, the row stays and the relay retries: nothing is
//   dropped.
// - Failures of the database or the log are retried with exponential backoff and full jitter
//   (time and randomness from the Env); the relay never gives up while running.
//
// Thread-safety: Relay is thread-safe. Start runs the relay's steps on a thread of its own (or on
// the Env's executor, see steps_on_env_executor); RunOnce runs one cycle on the caller's thread
// and must not be mixed with Start.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "converge/env.h"
#include "converge/log.h"
#include "converge/sql.h"
#include "converge/status.h"

namespace converge {

// A test hook called at named steps; a non-OK return makes the component stop right there as
// if the process had crashed (nothing after the step runs; the object only reports the status).
// Relay points: "relay.claimed" (rows read, nothing published), "relay.chunk_published" (after
// each chunk of a batch reached the log), "relay.published" (whole batch in the log, rows not
// yet deleted), "relay.removed" (rows deleted).
using FaultPoint = std::function<Status(std::string_view point)>;

// One event for the destination, with the outbox topic it was written to.
struct SinkRecord {
  std::string_view topic;  // outbox topic (the sink maps it)
  RecordView record;       // id = event id, key = partition key, value = binary CloudEvent
};

// A record the destination refused permanently (e.g. too large): it goes to the dead letters.
struct SinkRejection {
  size_t index = 0;
  std::string reason;
};

// Where the relay publishes. Must be idempotent on the record id, and thread-safe: relays
// running at once may share one sink.
class RelaySink {
 public:
  virtual ~RelaySink() = default;
  // Publishes `records`, keeping their order per topic and key. OK: every record not listed in
  // `rejected` is durably published. An error: nothing is known; the relay retries the batch.
  virtual Status Publish(std::span<const SinkRecord> records,
                         std::vector<SinkRejection>* rejected) = 0;
  // Appends dead letters (id = stable per row, value = JSON: reason + row). OK when durable.
  virtual Status DeadLetter(std::span<const RecordView> dead_letters) = 0;
};

struct LogSinkOptions {
  // Outbox topic -> log topic. Topics not listed keep their name.
  std::map<std::string, std::string, std::less<>> topic_map;
  // Create missing log topics with topic_options; if false, records for a missing topic are
  // dead-lettered ("unknown topic").
  bool create_topics = true;
  TopicOptions topic_options;
  // Internal topic for the relay's dead letters (created if missing, fsync, 1 partition).
  // Rows addressed to it are dead-lettered, not published there.
  std::string dead_letter_topic = "_dlq.outbox";
  // If set: for a destination topic that only converge may write (e.g. a store's change
  // feed), what writes it; rows addressed to such a topic are dead-lettered ("topic '...' is
  // written only by ..."). Empty answer: an ordinary topic. Called from relay threads.
  std::function<std::string(std::string_view topic)> system_topic_owner;
};

// A RelaySink appending to `log` (which must outlive it).
Result<std::unique_ptr<RelaySink>> NewLogSink(Log& log, LogSinkOptions options);

struct RelayOptions {
  std::string name = "relay";                   // for messages and PostgreSQL application_name
  uint32_t batch_max_events = 1000;             // rows claimed per batch, 1..100000
  uint64_t batch_max_bytes = 8u << 20;          // about this many bytes of events per batch
  uint32_t publish_chunk_max_events = 100'000;  // records per RelaySink::Publish call
  int64_t poll_interval_ms = 500;               // fallback poll when no wake-up comes, 1..3600000
  int64_t retry_base_delay_ms = 10;             // backoff after a failure: full jitter in
  int64_t retry_max_delay_ms = 5'000;           //   [0, min(max, base * 2^failures)]
  int64_t standby_retry_ms = 1'000;             // a standby relay tries to take over this often
  // Under load, bigger batches: after a batch of at least batch_linger_min_rows rows that did
  // not fill batch_max_events, the relay waits batch_linger_us before claiming again, so the
  // next batch shares one log sync and one delete among more events. A batch smaller than
  // that (a quiet outbox) is followed by no linger: latency at low rates is unchanged.
  // 0..1000000 (0 = never linger).
  int64_t batch_linger_us = 1'000;
  uint32_t batch_linger_min_rows = 64;
  // PostgreSQL: buckets the outbox is split into between relays (all relays of one outbox must
  // use the same value), and how often a relay rebalances its share.
  uint32_t postgres_buckets = 64;  // 1..4096
  int64_t rebalance_interval_ms = 1'000;
  // PostgreSQL: the relay's connection, as sql::PostgresOptions (converge/sql.h): connecting is
  // bounded by connect_timeout_ms (> 0), each statement by statement_timeout_ms (0 = none).
  int64_t postgres_connect_timeout_ms = 5'000;
  int64_t postgres_statement_timeout_ms = 30'000;
  // SQLite: the relay's own connection (it only reads and deletes outbox rows). A delete lost
  // in a power failure only republishes rows (dropped by the log's dedup), so "normal" is safe.
  std::string sqlite_synchronous = "normal";
  int64_t sqlite_busy_timeout_ms = 5'000;
  // SQLite: the lock file that elects one relay; default "<database>.relay-lock".
  std::string sqlite_lock_path;
  // Create the outbox table if it is missing (table mode).
  bool create_schema = true;
  // Where the events come from: "table" (the outbox table, docs/formats/outbox.md) or "wal"
  // (PostgreSQL only: transactional logical messages read from a replication slot with the
  // pgoutput plugin, docs/formats/wal-outbox.md). In WAL mode a batch is whole committed
  // transactions in commit order; "removing" it confirms the slot's position past it, which
  // happens only after the sink made it durable. One relay streams from a slot at a time
  // (others stand by); the postgres_buckets and sqlite_* options do not apply.
  std::string mode = "table";
  // WAL mode: the logical replication slot (created by CreateWalSlot, never by the relay
  // itself: a slot that is missing is an error, since it may have been dropped) and the
  // publication pgoutput is started with. Names: 1..63 of [a-z0-9_].
  std::string wal_slot;
  std::string wal_publication = "converge_outbox";
  // WAL mode, table capture (docs/formats/wal-outbox.md, "Table capture"): the INSERT, UPDATE
  // and DELETE of the publication's tables are published too, as change events
  // (docs/formats/replica.md) on the topic wal_capture_topic_prefix + "<schema>.<table>". The
  // slot must have been created by CreateCaptureSlot (with its initial snapshot).
  bool wal_capture_tables = false;
  std::string wal_capture_topic_prefix;
  // Where Start runs the relay's steps. They block on the database and the log, so by default
  // the relay has a thread of its own for them; its timers still come from the Env's executor.
  // true: on the Env's executor itself, one step per task. For a simulated Env (converge/
  // sim_env.h), whose one thread then runs the relay in virtual time and in seeded order
  // (PostgreSQL notifications cannot be watched there: the relay polls). Not with
  // Env::Default(), whose executor thread the relay's database calls would block.
  bool steps_on_env_executor = false;
  FaultPoint fault_point;  // tests only
};

struct RelayStats {
  uint64_t batches = 0;        // non-empty batches completed (rows removed)
  uint64_t published = 0;      // events appended (including duplicates the log dropped)
  uint64_t dead_lettered = 0;  // malformed rows sent to the dead letters
  uint64_t failures = 0;       // failed steps (each followed by a backoff)
  uint64_t wakeups = 0;        // notifications and in-process wake-ups received
  uint64_t polls = 0;          // claims triggered by the fallback timer
  bool active = false;         // holds the outbox (SQLite) or at least one bucket (PostgreSQL)
  uint32_t buckets = 0;        // PostgreSQL: buckets held now
  std::string last_error;      // the last failure, empty if none
  // WAL mode: WAL bytes between the server's end of WAL (as last reported on the stream) and
  // the slot position the relay confirmed; and milliseconds since the commit of the oldest
  // transaction read but not yet confirmed (0 when none is outstanding).
  int64_t wal_lag_bytes = 0;
  int64_t wal_lag_ms = 0;
};

class Relay {
 public:
  // A relay from the outbox at `source` to `sink`. `env` and `sink` must outlive the Relay.
  // Connects lazily (the first cycle), so a database that is down is retried, not fatal.
  // InvalidArgument for bad options.
  static Result<std::unique_ptr<Relay>> Create(Env& env, const sql::DatabaseTarget& source,
                                               RelaySink& sink, RelayOptions options);
  virtual ~Relay() = default;

  // Runs the relay in the background (see steps_on_env_executor) until Stop. FailedPrecondition
  // if already started.
  virtual Status Start() = 0;
  // Stops the relay (waits for the current step to finish). Idempotent.
  virtual void Stop() = 0;
  // Makes a waiting relay look at the outbox now.
  virtual void Wake() = 0;

  // One cycle on the caller's thread: take the lease if needed, claim one batch, publish it,
  // delete it. Returns the number of rows handled (0 when there was nothing or this relay is on
  // standby). Errors of the step that failed (no backoff here). After a fault point fired, the
  // relay is dead and returns that status forever.
  virtual Result<size_t> RunOnce() = 0;
  // RunOnce until the outbox is empty or `max_batches` ran; returns rows handled.
  virtual Result<size_t> Drain(size_t max_batches) = 0;

  virtual RelayStats stats() const = 0;
};

// ---------------------------------------------------------------------------------------
// WAL mode operations (docs/formats/wal-outbox.md, "Operations"). `conninfo` as libpq takes
// it; the role needs the REPLICATION attribute (and CREATE on the database for a new
// publication).

// Creates the logical replication slot `slot` with the pgoutput plugin, and the publication
// `publication` if it does not exist (with no tables: messages only). The slot starts at the
// current end of WAL: messages committed before are not relayed. AlreadyExists if the slot
// exists; InvalidArgument for bad names.
Status CreateWalSlot(const std::string& conninfo, const std::string& slot,
                     const std::string& publication);
// Table capture: creates the slot exporting its snapshot, publishes every row of the
// publication's tables (which must exist and list them) as of that snapshot through `sink`, as
// upsert change events (version: the slot's start LSN - 1, below every streamed change), then
// records the finished snapshot in the table converge_cdc_snapshot (a relay with
// wal_capture_tables refuses a slot without that record: a snapshot that was interrupted). On
// any failure the slot is dropped again. AlreadyExists if the slot exists.
Status CreateCaptureSlot(const std::string& conninfo, const std::string& slot,
                         const std::string& publication, const std::string& topic_prefix,
                         RelaySink& sink);
// Drops the slot (waiting for a relay that streams from it to let go is not done: it must be
// stopped first, else FailedPrecondition). The WAL it retained is released. NotFound if
// missing. The publication is left alone; a table capture snapshot record is removed.
Status DropWalSlot(const std::string& conninfo, const std::string& slot);

// ---------------------------------------------------------------------------------------
// Several relays in one process, from a configuration: what `converge relay --config` runs, and
// the hook for `converge serve` (a server configured with service databases parses its
// `relays:` section with ParseRelayServiceConfig and starts a RelayService on its own Log).

struct RelaySourceConfig {
  std::string name;      // unique within the service; also the relay's name
  std::string database;  // "sqlite:<path>", a *.db path, or a PostgreSQL conninfo / URI
  RelayOptions options;  // fault_point is ignored
};

struct RelayServiceConfig {
  std::vector<RelaySourceConfig> sources;
  LogSinkOptions sink;
};

// Parses a YAML document (or a `relays:` section) of the form
//   relays:
//     sink:                      # optional
//       create_topics: true
//       partitions: 4            # for created topics
//       durability: fsync        # fsync | interval | none
//       dead_letter_topic: _dlq.outbox
//       topic_map: {orders: orders-v2}
//     sources:
//       - name: orders
//         database: sqlite:/var/lib/orders/orders.db
//         batch_max_events: 1000      # any RelayOptions field by name
//         poll_interval_ms: 500
// Unknown keys are errors. InvalidArgument naming the key or the source.
Result<RelayServiceConfig> ParseRelayServiceConfig(std::string_view yaml);

// Runs one relay per source on its own thread, all publishing to `log` through one sink.
// Thread-safe.
class RelayService {
 public:
  // Creates and starts the relays. `env` and `log` must outlive the service. InvalidArgument for
  // a bad config (duplicate names, unparsable database); the relays connect lazily, so a
  // database that is down is retried, not an error.
  static Result<std::unique_ptr<RelayService>> Start(Env& env, Log& log,
                                                     const RelayServiceConfig& config);
  virtual ~RelayService() = default;
  // Stops every relay (idempotent).
  virtual void Stop() = 0;
  // (name, stats) per source, in configuration order.
  virtual std::vector<std::pair<std::string, RelayStats>> stats() const = 0;
};

}  // namespace converge
