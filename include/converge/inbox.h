// Inbox: the consumer side of transactional messaging. Each event's handler runs inside a local
// transaction (SQLite or PostgreSQL) that also records the event id in the inbox table, so the
// effect of an event happens exactly once whatever redeliveries and crashes occur: a redelivered
// event whose id is already recorded is acknowledged without running the handler again.
//
// Contract
// - Exactly-once effect: the handler's writes and the inbox row commit in one transaction; the
//   consumer-group ack comes after the commit. A crash before the commit redelivers the event
//   and nothing was applied; a crash after the commit and before the ack redelivers it and the
//   inbox row makes it a no-op. Effects outside the transaction are at-least-once.
// - Dedup retention: inbox rows are deleted when older than retention_ms, and past
//   retention_max_ids (oldest first), in small statements of cleanup_batch_rows. A redelivery
//   older than the retention would run the handler again: keep retention above the longest
//   redelivery horizon (log dedup window, nack delays, outages).
// - Order: events with the same partition key are handled one at a time in log order (the
//   consumer group does not deliver a key's next event while one is in flight, retried or
//   delayed); events with different keys proceed in parallel (`workers` transactions at once)
//   and one failing key never blocks the others.
// - Failures of the handler: a status that options.is_retryable accepts (default: the
//   RetryPolicy rules — Unavailable, DeadlineExceeded, ResourceExhausted) is retried after a
//   backoff with full jitter by attempt number; after the group's max_deliveries the event is
//   dead-lettered ("max deliveries"). Any other status is permanent: the event is dead-lettered
//   at once with the status as reason. An event that cannot be decoded (poison) is
//   dead-lettered at once. If the dead-letter append fails, the event stays pending in the group
//   and blocks its key until the append succeeds: nothing is dropped.
// - Failures of the consumer's own database (connection lost, busy, commit failed) are not the
//   event's fault: nothing is acked or nacked, the consumer backs off and retries the same
//   events (blocking rather than dropping), and resumes when the database is back.
// - The W3C traceparent of the outbox row reaches the handler as InboxMessage::traceparent.
//
// - Waiting: the consumer's waits and backoffs are timers of the Env's executor and its wake-ups
//   come from the group (WatchReady); nothing sleeps, so under a simulated Env the consumer runs
//   in virtual time (InboxConsumerOptions::steps_on_env_executor).
//
// Thread-safety: Inbox is thread-safe. InboxConsumer is thread-safe; Start runs it on its own
// thread(s) (or on the Env's executor, see steps_on_env_executor); RunOnce runs one batch on the
// caller's thread and must not be mixed with Start. Handlers run on the consumer's worker
// threads, one transaction per worker.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "converge/consumer_group.h"
#include "converge/env.h"
#include "converge/event.h"
#include "converge/relay.h"
#include "converge/sql.h"
#include "converge/status.h"

namespace converge {

struct InboxOptions {
  std::string consumer;                           // dedup namespace, 1..200 bytes
  int64_t retention_ms = 7LL * 24 * 3600 * 1000;  // keep processed ids this long
  uint64_t retention_max_ids = 10'000'000;        // and at most this many (oldest go first)
  uint32_t cleanup_batch_rows = 1000;             // rows per DELETE statement
  int64_t cleanup_interval_ms = 10'000;           // how often the consumer cleans up
};

// The dedup table. Cheap to construct; holds no connection.
class Inbox {
 public:
  // `env` (wall clock for processed_at) must outlive the Inbox.
  Inbox(Env& env, InboxOptions options);

  // Creates the inbox table and index if missing (idempotent). Errors of the database.
  static Status CreateSchema(sql::Database& db);
  // InvalidArgument for bad options.
  static Status Validate(const InboxOptions& options);

  // Inside `tx`: records `event_id` as processed: the event's identity, EventIdentity(event)
  // (converge/event.h), which the log uses as the record id, not its bare `id` (two sources
  // may share ids). Returns true if it is new (apply the effect
  // in the same transaction), false if it was already recorded (skip the effect). Errors of
  // the database.
  Result<bool> Record(sql::Transaction& tx, std::string_view event_id);
  // Records many ids with one statement per 256 ids; `fresh[i]` tells whether ids[i] is new.
  // Ids must be distinct.
  Status RecordBatch(sql::Transaction& tx, std::span<const std::string_view> ids,
                     std::vector<bool>* fresh);
  // RecordBatch for ids the caller expects to be new (a consumer's first try of a batch; a
  // redelivery is rare): on PostgreSQL one plain INSERT, without the conflict checks and
  // RETURNING of RecordBatch (about 40% less work per row). OK: every id was new and is
  // recorded (`fresh` all true). AlreadyExists: an id was already recorded and the
  // transaction is aborted: roll it back and redo it with RecordBatch. SQLite: RecordBatch
  // (which has its own fast path).
  Status RecordBatchExpectingNew(sql::Transaction& tx, std::span<const std::string_view> ids,
                                 std::vector<bool>* fresh);

  // Deletes expired ids (see the file comment), at most `max_rows`, each DELETE at most
  // cleanup_batch_rows. Returns the number deleted. Errors of the database.
  Result<uint64_t> Cleanup(sql::Database& db, uint64_t max_rows);

  const InboxOptions& options() const { return options_; }

 private:
  Env& env_;
  InboxOptions options_;
  std::atomic<int64_t> estimated_ids_{-1};  // -1 until counted once
};

// What a handler receives. Views are valid during the call.
struct InboxMessage {
  const Event& event;
  std::string_view topic;
  uint32_t partition = 0;
  uint64_t offset = 0;
  uint32_t attempt = 1;          // 1 for the first delivery
  std::string_view traceparent;  // W3C traceparent of the event, empty if none
};

// Applies one event's effect inside `tx`. OK: commit with the inbox row. An error: the
// transaction part of this event is rolled back and the error classified (see file comment).
using InboxHandler = std::function<Status(sql::Transaction& tx, const InboxMessage& message)>;

// Applies the effects of several new events at once inside `tx` (the fast path at high rates:
// one statement for many events). `messages` holds only events the inbox has not seen, in
// delivery order (never two of one key). OK: all commit with their inbox rows. An error: the
// consumer rolls back and re-runs the events one at a time (spans of one, each in a savepoint)
// to find the failing ones, which are then classified as for InboxHandler. A handler may thus
// run more than once for an event; only the committed run has an effect.
using InboxBatchHandler =
    std::function<Status(sql::Transaction& tx, std::span<const InboxMessage> messages)>;

struct InboxConsumerOptions {
  std::string topic;
  std::string group;
  std::string member = "inbox";
  InboxOptions inbox;        // inbox.consumer defaults to `group`
  bool create_group = true;  // create the consumer group if missing
  GroupOptions group_options;
  uint32_t fetch_max_events = 512;  // events per batch, 1..10000
  uint64_t fetch_max_bytes = 4u << 20;
  // Transactions at once (each worker has its own connection). SQLite has one writer at a
  // time: keep 1 there.
  uint32_t workers = 1;  // 1..64
  // Handler retries: delay before redelivery = full jitter in
  // [0, min(max, base * multiplier^(attempt-1))].
  int64_t retry_base_delay_ms = 100;
  double retry_multiplier = 2.0;
  int64_t retry_max_delay_ms = 60'000;
  // Which handler errors are retried; default RetryPolicy{}.IsRetryable.
  std::function<bool(const Status&)> is_retryable;
  // Backoff when the consumer's database fails: full jitter up to this, doubling from base.
  int64_t db_retry_base_delay_ms = 10;
  int64_t db_retry_max_delay_ms = 5'000;
  // Longest wait for new events before looking again (a fallback; wake-ups come from the log).
  int64_t idle_poll_ms = 1'000;
  std::string sqlite_synchronous = "full";  // consumer database durability (see sql.h)
  int64_t sqlite_busy_timeout_ms = 5'000;   // then the transaction fails (Unavailable)
  // PostgreSQL consumer database, as sql::PostgresOptions (converge/sql.h): connecting is
  // bounded by connect_timeout_ms (> 0), each statement (the handler's too) by
  // statement_timeout_ms (0 = none; a cancelled statement fails the batch: DeadlineExceeded).
  int64_t postgres_connect_timeout_ms = 5'000;
  int64_t postgres_statement_timeout_ms = 30'000;
  // Where Start runs the consumer's batches. They block on the database, so by default the
  // consumer has threads of its own for them (one per worker); its timers still come from the
  // Env's executor. true: on the Env's executor itself, one batch per task, the workers'
  // transactions one after another. For a simulated Env (converge/sim_env.h), whose one thread
  // then runs the consumer in virtual time and in seeded order; not with Env::Default(), whose
  // executor thread the database calls would block.
  bool steps_on_env_executor = false;
  // Inbox points: "inbox.handled" (handlers ran, nothing committed), "inbox.committed" (the
  // transaction committed, nothing acked), "inbox.acked".
  FaultPoint fault_point;  // tests only
};

struct InboxStats {
  uint64_t batches = 0;
  uint64_t handled = 0;        // handlers that succeeded and committed
  uint64_t duplicates = 0;     // redeliveries skipped by the inbox
  uint64_t retried = 0;        // retryable handler failures (nacked with a delay)
  uint64_t dead_lettered = 0;  // permanent failures and poison events (nacked permanently)
  uint64_t db_failures = 0;    // failed transactions of the consumer's database
  uint64_t cleaned = 0;        // inbox rows deleted by retention
  std::string last_error;
};

class InboxConsumer {
 public:
  // `env` and `groups` must outlive the consumer. Connects lazily. InvalidArgument for bad
  // options.
  static Result<std::unique_ptr<InboxConsumer>> Create(Env& env, ConsumerGroups& groups,
                                                       const sql::DatabaseTarget& database,
                                                       InboxHandler handler,
                                                       InboxConsumerOptions options);
  // The same with a batch handler.
  static Result<std::unique_ptr<InboxConsumer>> Create(Env& env, ConsumerGroups& groups,
                                                       const sql::DatabaseTarget& database,
                                                       InboxBatchHandler handler,
                                                       InboxConsumerOptions options);
  virtual ~InboxConsumer() = default;

  // Runs in the background (see steps_on_env_executor) until Stop. FailedPrecondition if
  // already started.
  virtual Status Start() = 0;
  // Stops and leaves the group (its leases are released for immediate redelivery).
  virtual void Stop() = 0;

  // One batch on the caller's thread: fetch, handle, commit, ack/nack. Returns the number of
  // deliveries settled (handled, duplicates, retried, dead-lettered); 0 if none was ready.
  // A database failure is returned (nothing acked). After a fault point fired, the consumer is
  // dead and returns that status forever.
  virtual Result<size_t> RunOnce() = 0;

  virtual InboxStats stats() const = 0;
};

}  // namespace converge
