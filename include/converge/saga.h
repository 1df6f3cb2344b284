// Sagas: long-running business transactions across services, made of steps that each have an
// action and (before the pivot) a compensation, run by a durable orchestrator.
//
// Model
// - A saga definition (SagaDefinition) is a named, versioned list of steps. Each step names a
//   participant (the log topic its commands go to), an action command type, a compensation
//   command type, a per-attempt timeout and a retry policy. One step may be the pivot:
//     steps before the pivot   compensatable: on a failure they are undone in reverse order;
//     the pivot                the go/no-go point: once it succeeded the saga will complete;
//     steps after the pivot    retriable: retried until they succeed, never compensated.
//   Without an explicit pivot, a last step without a compensation is the pivot; otherwise every
//   step is compensatable.
// - Definitions come from the C++ builder (SagaDefinitionBuilder) or from JSON/YAML
//   (ParseSagaDefinition). They are versioned: an instance in flight keeps the version it
//   started with, even after a newer version is registered.
// - An instance ends in exactly one of two states: kCompleted (every step applied, nothing
//   compensated) or kCompensated (every step that was or may have been applied is undone; the
//   pivot and later steps were never applied).
//
// Participants (SagaParticipant) receive commands as CloudEvents on their topic and reply on
// the orchestrator's reply topic; replies are correlated by saga id, step, command kind and
// attempt, and carry the command's token (sagatoken), which proves they come from a reader of
// the participant's topic: any other reply is rejected, counted and recorded in the saga's
// history. A participant remembers per (saga, step) what it did (SagaLedger), atomically with
// the effect, so duplicate and late commands are harmless: a repeated action returns the
// remembered outcome, a compensation that arrives before its action fences the action (it will
// never apply), and a late action after its compensation is refused. The command-event format
// is in docs/formats/saga.md.
//
// Handler outcome convention (participants): OK = applied. A status that RetryPolicy considers
// retryable (Unavailable, DeadlineExceeded, ResourceExhausted) = nothing applied, try again.
// Any other status = a definitive refusal: nothing applied and nothing ever will be for that
// step (the participant remembers it), which makes the orchestrator compensate.
//
// Thread-safety and lifetime: see each class.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "converge/env.h"
#include "converge/log.h"
#include "converge/retry.h"
#include "converge/sql.h"
#include "converge/sql_statement.h"
#include "converge/status.h"

namespace converge {

// ---------------------------------------------------------------------------------------
// Definitions

struct SagaLimits {
  static constexpr size_t kMaxSteps = 100;
  static constexpr size_t kMaxNameBytes = 200;  // definition, step, participant, command type
  static constexpr uint32_t kMaxVersion = 1'000'000;
  static constexpr int64_t kMaxTimeoutMs = 7LL * 24 * 3600 * 1000;  // one week
  static constexpr size_t kMaxIdBytes = 128;                        // saga ids
};

struct SagaStepDefinition {
  std::string name;             // unique in the saga: 1..200 of [A-Za-z0-9._-]
  std::string participant;      // the command topic (a log topic name)
  std::string action;           // CloudEvents type of the action command
  std::string compensation;     // CloudEvents type of the compensation; empty = none
  int64_t timeout_ms = 30'000;  // per attempt, 1..kMaxTimeoutMs: no reply in time = a failure
  // Backoff between attempts; max_attempts and deadline_ms bound the attempts of an action at
  // or before the pivot. Compensations and actions after the pivot use its backoff but are
  // retried until they succeed (the saga is flagged stuck once the bounds are exceeded).
  RetryPolicy retry;
  bool pivot = false;

  bool operator==(const SagaStepDefinition& other) const;
};

struct SagaDefinition {
  std::string name;      // 1..200 of [A-Za-z0-9._-]
  uint32_t version = 1;  // 1..kMaxVersion
  // Whole-saga deadline from the start: if the pivot has not succeeded by then the saga is
  // aborted and compensated. 0 = none.
  int64_t deadline_ms = 0;
  std::vector<SagaStepDefinition> steps;  // 1..kMaxSteps

  // OK, or InvalidArgument naming the first problem: a bad name, duplicate step names, a timeout
  // or retry policy out of bounds, more than one pivot, a step before the pivot without a
  // compensation, a compensation on or after the pivot.
  Status Validate() const;
  // Index of the pivot step; steps.size() when every step is compensatable. Meaningful only for
  // a valid definition.
  size_t PivotIndex() const;
  // Canonical JSON (every field, fixed member order); ParseSagaDefinition(ToJson()) == *this.
  std::string ToJson() const;

  bool operator==(const SagaDefinition& other) const;
};

// Parses a definition from JSON or YAML (YAML is a superset of JSON):
//   name: order            version: 2           deadline_ms: 600000   (optional)
//   steps:
//     - name: reserve-stock
//       participant: inventory
//       action: inventory.reserve
//       compensation: inventory.release
//       timeout_ms: 5000                          (optional, default 30000)
//       retry: {max_attempts: 3, base_delay_ms: 100, multiplier: 2, max_delay_ms: 1000,
//               deadline_ms: 60000}               (optional, every field optional)
//     - {name: charge, participant: payments, action: payments.charge, pivot: true}
// Unknown keys are rejected. InvalidArgument (with the line when known) for malformed text,
// a wrong type or a definition that fails Validate().
Result<SagaDefinition> ParseSagaDefinition(std::string_view text);

// Builds a definition in code:
//   SagaDefinitionBuilder("order", 1)
//       .Step("reserve-stock", "inventory", "inventory.reserve", "inventory.release")
//       .Timeout(5000)
//       .Step("charge", "payments", "payments.charge").Pivot()
//       .Step("ship", "shipping", "shipping.schedule")
//       .Build();
// Timeout, Retry and Pivot apply to the last step added (ignored before the first Step).
class SagaDefinitionBuilder {
 public:
  explicit SagaDefinitionBuilder(std::string name, uint32_t version = 1);
  SagaDefinitionBuilder& Deadline(int64_t deadline_ms);
  SagaDefinitionBuilder& Step(std::string name, std::string participant, std::string action,
                              std::string compensation = "");
  SagaDefinitionBuilder& Timeout(int64_t timeout_ms);
  SagaDefinitionBuilder& Retry(const RetryPolicy& policy);
  SagaDefinitionBuilder& Pivot();
  // The definition, or InvalidArgument from Validate().
  Result<SagaDefinition> Build() const;

 private:
  SagaDefinition def_;
};

// ---------------------------------------------------------------------------------------
// Instances as the orchestrator shows them

enum class SagaState : uint8_t {
  kRunning = 0,       // going forward
  kCompensating = 1,  // a step failed or the saga was cancelled: undoing
  kCompleted = 2,     // final: every step applied
  kCompensated = 3,   // final: everything undone
};
// "running" | "compensating" | "completed" | "compensated".
std::string_view SagaStateName(SagaState state);
inline bool IsFinal(SagaState s) {
  return s == SagaState::kCompleted || s == SagaState::kCompensated;
}

enum class SagaStepState : uint8_t {
  kPending = 0,       // not started
  kActive = 1,        // action sent, outcome not known yet
  kDone = 2,          // applied
  kFailed = 3,        // refused by the participant: never applied
  kCompensating = 4,  // compensation (or, for the pivot, a fence) sent
  kCompensated = 5,   // undone, or fenced before it applied
};
std::string_view SagaStepStateName(SagaStepState state);

enum class SagaTimerKind : uint8_t {
  kStepTimeout = 0,  // the current attempt's reply is due
  kRetry = 1,        // the next attempt starts
  kDeadline = 2,     // the saga's deadline (SagaDefinition::deadline_ms)
};
// "step-timeout" | "retry" | "deadline".
std::string_view SagaTimerKindName(SagaTimerKind kind);
Result<SagaTimerKind> ParseSagaTimerKind(std::string_view name);

// A durable timer of an instance in flight. Times are wall-clock microseconds, so timers keep
// their due time across restarts.
struct SagaTimerInfo {
  std::string saga_id;
  SagaTimerKind kind = SagaTimerKind::kStepTimeout;
  uint32_t step = 0;
  int64_t due_micros = 0;
};

struct SagaStepInfo {
  std::string name;
  SagaStepState state = SagaStepState::kPending;
  uint32_t attempts = 0;  // commands sent for this step (actions and compensations)
};

struct SagaHistoryEntry {
  int64_t time_micros = 0;
  std::string event;  // "started", "attempt", "retry", "done", "failed", "abort", ...
  int32_t step = -1;  // -1 when not about a step
  uint32_t attempt = 0;
  std::string detail;
};

struct SagaSummary {
  std::string id;
  std::string definition;
  uint32_t version = 0;
  SagaState state = SagaState::kRunning;
  uint32_t step = 0;  // the step being worked on (steps.size() once completed)
  // True when a compensation or an action after the pivot keeps failing past its retry bounds
  // (it is still retried), or the instance's definition version is not registered.
  bool stuck = false;
  int64_t started_micros = 0;
  int64_t updated_micros = 0;
};

struct SagaInfo {
  SagaSummary summary;
  std::string data;   // the input the saga was started with
  std::string error;  // why it is compensating, or the last failure being retried
  std::vector<SagaStepInfo> steps;
  std::vector<SagaTimerInfo> timers;
  std::vector<SagaHistoryEntry> history;  // oldest first, the last history_max_entries
  uint64_t history_dropped = 0;           // older entries not kept
  // The saga's W3C trace context ("00-<trace-id>-<parent-id>-<flags>"): the start request's
  // traceparent, or a new trace when it had none (or a malformed one). Every command carries
  // the trace id with a span id of its own. Empty for sagas started by a release without it.
  std::string traceparent;
};

struct SagaListFilter {
  std::optional<SagaState> state;
  std::string definition;  // empty = any
  bool stuck_only = false;
  // Instances in flight whose last change is older than this (0 = no condition): "stuck ones".
  int64_t idle_for_ms = 0;
  size_t limit = 1000;
};

// ---------------------------------------------------------------------------------------
// The orchestrator

enum class SagaCommandKind : uint8_t;  // below, with the participants

// One step's outcome, as SagaOrchestratorOptions::on_step_finished reports it.
struct SagaStepOutcome {
  std::string definition;
  std::string step;  // the step's name
  SagaCommandKind kind{};
  // True: applied (action), undone or fenced (compensate, cancel). False: the action failed
  // for good (refused, or its attempts were exhausted) and the saga compensates.
  bool ok = true;
  // From the first command of (step, kind) to the reply that settled it (retries included).
  int64_t duration_micros = 0;
};

struct SagaOrchestratorOptions {
  std::string dir;  // the saga log; created if missing; one orchestrator per directory (locked)
  // Keep the saga log in PostgreSQL instead of `dir`: a libpq connection string. The log is the
  // table `postgres_table` (created if missing; one row per synced batch, durable at commit),
  // and one orchestrator per table (a session advisory lock).
  // A key=value conninfo or a postgres:// URI; the connection goes through converge/sql.h.
  std::string postgres_conninfo;
  std::string postgres_table = "converge_saga_log";  // [a-z0-9_]{1,60}
  // Bounds on the log's PostgreSQL connection (sql::PostgresOptions): connecting (> 0), and
  // each statement (0 = none). A write that fails stops the batch; its requests get Unavailable.
  int64_t postgres_connect_timeout_ms = 5'000;
  int64_t postgres_statement_timeout_ms = 30'000;
  std::string reply_topic = "saga.replies";          // created if missing
  // Options for the reply topic and for participants' command topics created on demand.
  TopicOptions topic_options;
  std::string source = "/converge/saga";  // CloudEvents source of commands

  uint32_t max_in_flight = 1'000'000;    // running instances; Start beyond: ResourceExhausted
  uint32_t max_queued_inputs = 100'000;  // requests waiting for a batch; beyond: ResourceExhausted
  uint32_t batch_max_inputs = 20'000;    // requests and replies handled per batch (one sync)
  uint32_t reply_read_max_records = 8192;  // replies read per partition per batch
  uint32_t max_data_bytes = 64 << 10;      // saga input data
  uint32_t history_max_entries = 64;       // per instance
  // Commands retried without a bound (compensations, pivot cancels, actions after the pivot)
  // wait timeout_ms * 2^(attempt-1) for a reply, up to this (at least the step's timeout_ms):
  // a participant that is down gets a new command at a falling rate, not at every timeout.
  int64_t max_attempt_timeout_ms = 300'000;
  // Finished instances kept for Describe/List (and across restarts): at most this many, none
  // older than finished_retain_ms.
  uint32_t finished_retain_max = 10'000;
  int64_t finished_retain_ms = 24LL * 3600 * 1000;
  uint64_t segment_max_bytes = 64ull << 20;  // saga-log segment roll size
  // Rewrite the log as a snapshot of the retained instances once it exceeds this.
  uint64_t compact_after_bytes = 256ull << 20;
  // Runs batches triggered by replies and timers; null = the Env's executor.
  Executor* executor = nullptr;
  // Called once per instance when it reaches a final state (after that is durable), on the
  // thread running the batch. Must be quick; it may call StartAsync/CancelAsync (which never
  // block) but none of the blocking methods.
  std::function<void(const SagaSummary&)> on_finished;
  // Called for every step outcome (after it is durable), on the thread running the batch. Must
  // be quick and must not call the orchestrator (metrics).
  std::function<void(const SagaStepOutcome&)> on_step_finished;
  // Told (during Open, on the opening thread) about every repair and damage the saga log's
  // recovery finds, one line each naming the file and byte range (docs/formats/saga.md). Null:
  // not told (the counts are in stats() either way).
  std::function<void(const std::string& message)> report_recovery;
};

// The checks SagaOrchestrator::Open applies to `options` (including the reply topic's name and
// the topic options, as the log would check them), for callers that refuse bad settings
// earlier (e.g. a configuration at start). InvalidArgument names the field.
Status ValidateSagaOrchestratorOptions(const SagaOrchestratorOptions& options);

struct SagaStartRequest {
  std::string definition;
  uint32_t version = 0;  // 0 = the latest registered version
  std::string data;      // the saga's input, passed to every command (usually JSON)
  // Idempotency key: starting an id that exists returns it without starting another instance
  // (AlreadyExists if it exists with another definition). Empty = a new UUIDv7.
  std::string id;
  // The W3C traceparent of whoever starts the saga: the saga's commands continue its trace.
  // Empty or malformed (W3C Trace Context rules) = the saga starts a new trace; never an
  // error.
  std::string traceparent;
};

struct SagaOrchestratorStats {
  uint64_t started = 0;
  uint64_t completed = 0;
  uint64_t compensated = 0;
  // Sagas that turned to compensation because a step failed (refused, or its attempts
  // exhausted) or their deadline passed; a cancel is not a failure.
  uint64_t failed = 0;
  uint64_t in_flight = 0;
  uint64_t commands_sent = 0;
  uint64_t replies = 0;
  uint64_t replies_ignored = 0;  // late, duplicate or unknown
  uint64_t timeouts = 0;
  uint64_t batches = 0;
  uint64_t syncs = 0;
  uint64_t log_bytes = 0;
  uint64_t compactions = 0;
  uint64_t write_errors = 0;  // batches the saga log refused (undone; their requests failed)
  uint64_t send_errors = 0;  // command appends that failed (resent on the step's timeout)
  uint64_t read_errors = 0;  // reply-topic reads that failed
  uint64_t bad_replies = 0;  // records on the reply topic that do not decode as saga replies
  // Replies not used, by reason (each also in the saga's history when it names a known saga):
  uint64_t replies_stale = 0;         // late, duplicate, or for a step not awaited
  uint64_t replies_unknown_saga = 0;  // for no known saga
  uint64_t replies_bad_token = 0;     // sagatoken missing or wrong: not from the participant
  uint64_t replies_malformed = 0;     // a saga reply whose attributes do not decode
  uint64_t replay_errors = 0;         // saga-log records that did not fit the state at recovery
  // What the saga log's recovery at Open found: segments with damage (a damaged tail cut) and
  // the bytes cut off the newest segment (a torn write, or damage there).
  uint64_t log_damaged_segments = 0;
  uint64_t log_truncated_bytes = 0;
};

// Thread-safety: thread-safe. Mutating calls queue a request; whichever caller (or executor
// task) finds no batch running runs one for everybody queued (group commit: one sync per
// batch), so the blocking calls below also work in the single-threaded simulator.
// Durability: a mutating call returns OK once its change is in the saga log and synced.
// Commands are sent only after the records that decided them are durable.
// Failure: a batch whose saga-log write or sync fails (a full disk) is undone: the log is cut
// back to where the batch began and the state rebuilt from the durable records, so nothing of
// it happened; its requests fail with Unavailable (retry later), its replies are read again
// and its timers fire again a second later. The next batch simply tries again. Only if that
// undo fails too does the orchestrator stop: every later call returns Unavailable saying a
// restart is needed (Health() too). Saga logs in PostgreSQL cannot be undone this way: there
// a failed write stops the orchestrator.
class SagaOrchestrator {
 public:
  using StartCallback = std::function<void(Result<std::string>)>;
  using DoneCallback = std::function<void(Status)>;

  // Recovers the saga log in options.dir, then resumes every instance in flight: its current
  // command is sent again and its timers are armed at their logged due times. `env` and `log`
  // must outlive the orchestrator. FailedPrecondition if another orchestrator holds the dir;
  // InvalidArgument for bad options. A damaged tail of the newest saga-log segment is cut and
  // reported; damage inside an older segment (acknowledged records that cannot be replayed)
  // makes Open fail with DataLoss naming the file and byte range.
  static Result<std::unique_ptr<SagaOrchestrator>> Open(Env& env, Log& log,
                                                        SagaOrchestratorOptions options);
  virtual ~SagaOrchestrator() = default;

  // Registers a definition durably. OK if the same (name, version) is already registered with
  // the same content; AlreadyExists if with different content; InvalidArgument if invalid.
  virtual Status RegisterDefinition(const SagaDefinition& definition) = 0;
  // Latest version first per name.
  virtual std::vector<SagaDefinition> ListDefinitions() = 0;

  // Starts an instance; returns its id once its start is durable. NotFound for an unknown
  // definition/version; InvalidArgument for a bad id or data over max_data_bytes;
  // AlreadyExists for an id taken by another definition; ResourceExhausted past max_in_flight
  // or max_queued_inputs.
  virtual Result<std::string> Start(const SagaStartRequest& request) = 0;
  // The same without blocking: `done` runs (on the thread running the batch) once the outcome
  // is known.
  virtual void StartAsync(const SagaStartRequest& request, StartCallback done) = 0;

  // Aborts an instance: it is compensated. OK once the abort is durable (the compensation runs
  // afterwards); OK if it is already compensating or compensated. NotFound if unknown;
  // FailedPrecondition once the pivot has succeeded (or the saga completed). When the pivot's
  // outcome is not known yet, it is fenced first: if it turns out applied, the saga completes.
  virtual Status Cancel(const std::string& id, const std::string& reason) = 0;
  virtual void CancelAsync(const std::string& id, const std::string& reason, DoneCallback done) = 0;

  // Durable timers of instances in flight, earliest due first (at most `limit`).
  virtual std::vector<SagaTimerInfo> ListTimers(size_t limit = 1000) = 0;
  // Moves a timer to `due_micros` (wall clock; a past time fires at once). NotFound if the
  // instance has no such timer.
  virtual Status RescheduleTimer(const std::string& id, SagaTimerKind kind, int64_t due_micros) = 0;
  // Cancels a timer: a step timeout then waits for the reply without bound, a retry waits for
  // a reschedule, a deadline no longer applies. NotFound if there is no such timer.
  virtual Status CancelTimer(const std::string& id, SagaTimerKind kind) = 0;

  // Reads (never block on the log). NotFound for an unknown (or no longer retained) id.
  virtual Result<SagaInfo> Describe(const std::string& id) = 0;
  // Newest first.
  virtual std::vector<SagaSummary> List(const SagaListFilter& filter) = 0;
  virtual SagaOrchestratorStats stats() = 0;
  // For readiness checks. OK while batches can be written; Unavailable after a batch the saga
  // log refused (undone) until a write succeeds again — probing the log's directory with a
  // small write first, so this turns OK by itself once there is space; Unavailable saying a
  // restart is needed once the orchestrator stopped (see Failure above).
  virtual Status Health() { return Status::Ok(); }
  // Cheap: OK unless the orchestrator stopped (Unavailable saying a restart is needed).
  virtual Status Stopped() { return Status::Ok(); }

  // Runs one batch now on the caller's thread (replies, due timers, queued requests) if none is
  // running. Returns the number of inputs handled. For tests and tools; batches otherwise run
  // by themselves.
  virtual Result<size_t> RunOnce() = 0;
  // Stops reacting to replies and timers and waits for a running batch. Further calls fail
  // with FailedPrecondition. Called by the destructor.
  virtual void Close() = 0;
};

// A read-only view of a saga log directory for tools (`converge saga ls --dir`): replays the
// log without locking, repairing or changing it, so it may look at the log of a running
// orchestrator (it sees what had reached the files). Not synchronized.
class SagaLogSnapshot {
 public:
  // NotFound if `dir` does not exist.
  static Result<std::unique_ptr<SagaLogSnapshot>> Load(Env& env, const std::string& dir);
  virtual ~SagaLogSnapshot() = default;
  virtual Result<SagaInfo> Describe(const std::string& id) = 0;
  // `now_micros` (wall clock) is what idle_for_ms compares against.
  virtual std::vector<SagaSummary> List(const SagaListFilter& filter, int64_t now_micros) = 0;
  virtual std::vector<SagaTimerInfo> ListTimers(size_t limit) = 0;
  virtual std::vector<SagaDefinition> ListDefinitions() = 0;
};

// ---------------------------------------------------------------------------------------
// Participants

enum class SagaCommandKind : uint8_t {
  kAction = 0,      // do the step
  kCompensate = 1,  // undo it (or fence it if it never applied)
  kCancel = 2,      // pivot only: fence it if it has not applied; report whether it applied
};
std::string_view SagaCommandKindName(SagaCommandKind kind);  // "action" | "compensate" | "cancel"

// A command as a participant's handler sees it. Views are valid during the call.
struct SagaCommand {
  std::string_view saga_id;
  std::string_view definition;
  uint32_t version = 0;
  uint32_t step = 0;
  std::string_view step_name;
  SagaCommandKind kind = SagaCommandKind::kAction;
  uint32_t attempt = 1;
  std::string_view type;  // the action or compensation type from the definition
  std::string_view data;  // the saga's input
  // True for actions after the pivot: a failure is never remembered as final (it is retried).
  bool retriable = false;
  // The command's reply token (sagatoken): the reply must carry it back, or the orchestrator
  // rejects the reply (only the readers of the participant's topic know it).
  std::string_view token;
  // The command's W3C traceparent: the saga's trace id and this command's span id (empty if
  // the saga has no trace context).
  std::string_view traceparent;
};

// How a participant answered a command (what goes back to the orchestrator).
struct SagaReply {
  enum class Outcome : uint8_t {
    kOk = 0,      // applied (action) / undone or fenced (compensate, cancel)
    kFailed = 1,  // action refused for good: never applied
    kRetry = 2,   // transient failure: nothing applied, try again
  };
  std::string saga_id;
  uint32_t step = 0;
  SagaCommandKind kind = SagaCommandKind::kAction;
  uint32_t attempt = 0;
  Outcome outcome = Outcome::kOk;
  // For compensate/cancel: whether the action had been applied (false: it was fenced).
  bool applied = false;
  Status status;       // the handler's failure for kFailed/kRetry
  std::string result;  // the handler's result for an applied action (replayed on duplicates)
  std::string token;   // the command's token, sent back (SagaParticipantCore copies it)
  // W3C traceparent: the command's trace id with a span id of the reply (SagaParticipantCore
  // sets it from the command's); empty if the command had none.
  std::string traceparent;
};

// What a participant remembers about one (saga, step). Kept by a SagaLedger.
struct SagaLedgerEntry {
  enum class State : uint8_t {
    kNone = 0,         // nothing happened
    kApplied = 1,      // the action applied
    kRefused = 2,      // the action was refused for good
    kFenced = 3,       // compensated/cancelled before the action: the action must never apply
    kCompensated = 4,  // applied, then undone
  };
  State state = State::kNone;
  std::string result;  // of the applied action
  int64_t updated_micros = 0;
};

// A participant's memory of what it did. The handler's effect and the ledger update must commit
// together: Transact runs `fn` inside one transaction of the store that also holds the effect
// (an in-memory store for embedded services; a database table in the service's own database).
// Thread-safety: implementations are thread-safe.
class SagaLedger {
 public:
  virtual ~SagaLedger() = default;
  // Runs `fn(entry)` atomically for (saga_id, step): `entry` holds the current value (kNone if
  // absent); if fn returns OK and set *write, `entry` is stored along with whatever fn did.
  // If fn fails nothing is stored and its status is returned. Errors of the store otherwise.
  virtual Status Transact(std::string_view saga_id, uint32_t step,
                          const std::function<Status(SagaLedgerEntry& entry, bool* write)>& fn) = 0;
};

// A SagaLedger in memory (for services whose state is in memory, tests and benchmarks).
// Entries older than retention_ms are dropped (checked as entries are added), and at most
// max_entries are kept (oldest dropped first): a command for a dropped entry is handled as new.
std::unique_ptr<SagaLedger> NewMemorySagaLedger(Clock& clock, int64_t retention_ms = 86'400'000,
                                                size_t max_entries = 10'000'000);

// A SagaLedger in the participant's own SQL database, through converge's SQL layer
// (converge/sql.h, SQLite or PostgreSQL): the inbox of a saga participant. The handler's effect
// and the ledger entry commit in one transaction: the handler writes through transaction() (or
// the Execute/Query shortcuts) inside the transaction Transact opened. When the outcome is a
// refusal or a fence, the handler's statements are rolled back (to a savepoint) and only the
// ledger entry is written; when the handler fails transiently, nothing is committed.
// The table is `converge_saga_ledger` (created if missing). Transactions on one (saga, step)
// are serialized (PostgreSQL: an advisory transaction lock; SQLite: one writer). Entries older
// than retention_ms are deleted, at most 1000 per cleanup, every cleanup_every transactions.
// Thread-safety: thread-safe; one transaction at a time on the ledger's connection, which the
// service must not use concurrently from elsewhere.
class SqlSagaLedger : public SagaLedger {
 public:
  struct Options {
    int64_t retention_ms = 7LL * 24 * 3600 * 1000;  // forget entries after this
    uint32_t cleanup_every = 1000;                  // transactions between cleanups; 0 = never
  };
  // Over a connection of the SQL layer (the service's own database). Errors of the database
  // while creating the table.
  static Result<std::unique_ptr<SqlSagaLedger>> Open(Env& env, std::unique_ptr<sql::Database> db,
                                                     Options options);
  // Shortcuts: a SQLite file (synchronous=full), or a PostgreSQL conninfo (key=value or URI),
  // with the SQL layer's default timeouts; for other bounds open the sql::Database and use Open.
  static Result<std::unique_ptr<SqlSagaLedger>> OpenSqlite(Env& env, const std::string& path,
                                                           Options options);
  static Result<std::unique_ptr<SqlSagaLedger>> OpenPostgres(Env& env, const std::string& conninfo,
                                                             Options options);
  // The transaction of the Transact running now, or nullptr outside one (valid only on the
  // thread running the handler).
  virtual sql::Transaction* transaction() = 0;
  // Runs statements ($1, $2, ... in both engines; parameters as text or NULL) inside the
  // current Transact, all or none: a failing statement rolls back this call's statements.
  // Returns the sql layer's error: AlreadyExists / FailedPrecondition / InvalidArgument (a
  // refusal, once returned by the handler) or Unavailable (retried; serialization failures and
  // deadlocks are reported as Unavailable too). FailedPrecondition outside Transact.
  virtual Status Execute(std::span<const SqlStatement> statements) = 0;
  // Runs one query inside the current Transact; returns its rows (NULL as nullopt).
  virtual Result<std::vector<std::vector<std::optional<std::string>>>> Query(
      const SqlStatement& statement) = 0;
};

// A participant's handler of one command type. OK = applied (set *result to reply data);
// otherwise see the outcome convention at the top of this file. Compensations get
// kind == kCompensate and must be idempotent only across crashes of the handler's own store
// (the ledger makes them run at most once per step otherwise).
using SagaCommandHandler = std::function<Status(const SagaCommand& command, std::string* result)>;

// The participant logic, without I/O: given a command, consults the ledger, runs the handler
// when needed and says what to reply. Thread-safe if the ledger and handlers are.
class SagaParticipantCore {
 public:
  // `ledger` must outlive the core.
  explicit SagaParticipantCore(SagaLedger& ledger) : ledger_(ledger) {}
  // Handlers by command type (actions and compensations). A type without a handler is refused
  // (action: kFailed, FailedPrecondition) or, for compensations, treated as nothing to undo.
  void Handle(std::string type, SagaCommandHandler handler);
  // The reply to send for `command`. Ledger errors give a kRetry reply with that status.
  SagaReply Process(const SagaCommand& command);

 private:
  SagaLedger& ledger_;
  std::vector<std::pair<std::string, SagaCommandHandler>> handlers_;
};

struct SagaParticipantOptions {
  std::string topic;  // the command topic; created if missing (with topic_options)
  TopicOptions topic_options;
  uint32_t read_max_records = 4096;  // commands read per partition per batch
  // Where to start reading: the end of the topic at Start (commands sent while the participant
  // was down are sent again by the orchestrator's retries) unless start_offsets says otherwise.
  std::vector<uint64_t> start_offsets;  // per partition; empty = the end
  Executor* executor = nullptr;         // where batches run; null = the Env's executor
};

// Reads commands from its topic, processes them through a SagaParticipantCore and appends the
// replies to each command's reply topic. Thread-safety: thread-safe; batches run one at a time
// on the executor (or RunOnce's caller).
class SagaParticipant {
 public:
  // `env`, `log` and `core` must outlive the participant. Starts reacting to appends at once.
  static Result<std::unique_ptr<SagaParticipant>> Start(Env& env, Log& log,
                                                        SagaParticipantCore& core,
                                                        SagaParticipantOptions options);
  virtual ~SagaParticipant() = default;
  // One batch on the caller's thread; returns the commands handled.
  virtual Result<size_t> RunOnce() = 0;
  // Read position per partition (the next offset to read).
  virtual std::vector<uint64_t> positions() = 0;
  virtual void Close() = 0;
};

// ---------------------------------------------------------------------------------------
// The JSON objects the server's saga routes (docs/api/openapi.yaml) return for a summary, an
// instance and a timer; tools reuse them.
std::string SagaSummaryToJson(const SagaSummary& summary);
std::string SagaInfoToJson(const SagaInfo& info);
std::string SagaTimerToJson(const SagaTimerInfo& timer);

}  // namespace converge
