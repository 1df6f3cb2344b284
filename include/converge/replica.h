// Replicas: a copy of a keyed collection kept in sync in the background from a topic of change
// events (docs/formats/replica.md).
//
// Pieces
// - The change-event convention: a CloudEvent whose subject is the key, with a per-key monotonic
//   `version` extension, an upsert or delete type, the document as data and the source's commit
//   time. The shared store's change feed conforms as it is. ParseChangeEvent reads one;
//   MakeChangeEvent writes one.
// - A Source hands out batches of records of one partition from a position (LogSource: a topic
//   of the local log; later the sidecar channel to another node).
// - A Target holds the copy and the source position in one transactional place: a SQL table
//   (SQLite or PostgreSQL through converge/sql.h, layout in docs/formats/replica.md) or memory
//   (the simulator's target, with crash semantics).
// - The Applier reads from the position the target holds, applies each batch version-gated and
//   per key in order, in one target transaction together with the new position: exactly once
//   across crashes of the source, the applier and the target.
// - Consistency tokens name a source position; WaitFor returns once the replica has applied up
//   to it. CheckStaleness refuses a copy staler than a bound.
//
// Thread-safety: Step, CatchUp and PurgeTombstones are called by one thread at a time (the one
// that drives the replica). Stats, Reached, WaitFor/WaitForAsync and CheckStaleness may be
// called from any thread concurrently with them. Targets and Sources are used by the driving
// thread only.
// Blocking: Step blocks on the source read and the target transaction; WaitFor blocks its
// caller (never call it on the driving thread or under the simulator; use WaitForAsync there).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "converge/env.h"
#include "converge/event.h"
#include "converge/log.h"
#include "converge/sql.h"
#include "converge/status.h"

namespace converge::replica {

// ---------------------------------------------------------------------------------------
// The change-event convention

// kTruncate: every key of the source whose version is below the truncate's is gone (a
// TRUNCATE of a captured PostgreSQL table); it has no key of its own. The applier turns it into
// ApplyBatch::truncate_below; targets never see it among the changes.
enum class ChangeKind : uint8_t { kUpsert, kDelete, kTruncate };

// Event types of the convention. The shared store's feed types are accepted as they are:
// converge.store.put is an upsert, converge.store.delete and converge.store.expire deletes.
inline constexpr std::string_view kUpsertType = "converge.change.upsert";
inline constexpr std::string_view kDeleteType = "converge.change.delete";
inline constexpr std::string_view kTruncateType = "converge.change.truncate";

struct Change {
  std::string collection;  // the `collection` extension; empty when the event has none
  std::string key;         // the subject (truncates: the subject if any, informational)
  uint64_t version = 0;    // the `version` extension, >= 1
  ChangeKind kind = ChangeKind::kUpsert;
  std::string document;  // upserts: the event's data (JSON or text); empty for deletes
  int64_t commit_time_micros = 0;  // the event's `time`, else the record's append time
  uint64_t commitseq = 0;          // the `commitseq` extension; 0 when absent
};

// Reads one change event. InvalidArgument names what breaks the convention.
Result<Change> ParseChangeEvent(const Event& event, int64_t fallback_time_micros = 0);
// Decodes a log record (binary CloudEvent) and parses it; DataLoss / InvalidArgument when the
// record is not an event or not a change event.
Result<Change> ParseChangeRecord(std::string_view record, int64_t record_timestamp_micros);
// A conforming event for `change` (id "<collection>/<key>/<version>", partitionkey the key).
Result<Event> MakeChangeEvent(const Change& change, std::string_view source);

// ---------------------------------------------------------------------------------------
// Consistency tokens: an opaque string naming a position of a source, "ct1~<topic>~<partition>~
// o<offset>" (the record at that offset is applied) or "...~c<commitseq>" (every change up to
// that commit sequence number is applied). Clients treat it as opaque.

struct ConsistencyToken {
  enum class Kind : uint8_t { kOffset, kCommitSeq };
  std::string topic;
  uint32_t partition = 0;
  Kind kind = Kind::kOffset;
  uint64_t value = 0;
};

std::string EncodeToken(const ConsistencyToken& token);
// InvalidArgument for a string that is not a token.
Result<ConsistencyToken> DecodeToken(std::string_view text);

// ---------------------------------------------------------------------------------------
// Sources

struct SourceRecord {
  uint64_t offset = 0;
  int64_t timestamp_micros = 0;  // when it reached the source topic
  std::string_view value;        // a binary CloudEvent; points into SourceBatch::storage
};

struct SourceBatch {
  uint32_t partition = 0;
  uint64_t from_offset = 0;  // the position this batch was read from
  std::vector<SourceRecord> records;
  uint64_t next_offset = 0;  // where the next batch starts
  uint64_t end_offset = 0;   // the partition's end when read (for the lag)
  // Append time of the record at next_offset, when the source knows it (0 = none or unknown).
  int64_t next_timestamp_micros = 0;
  // A damaged range the source could not read, [from_offset or last record + 1, next_offset);
  // its message is reported (DataLoss) under the applier's on_malformed policy.
  std::optional<Status> damage;
  // Records may skip offsets: the source passed records that are not the replica's (another
  // collection, filtered at the source) without handing them out. Then the position moves to
  // next_offset even past the last record, and `passed_commitseq` is the highest commitseq of
  // the records passed (0 = none), so commit-sequence tokens of any write are reached.
  bool sparse = false;
  uint64_t passed_commitseq = 0;
  // Nonzero: the records are a complete listing of the source's live keys as of commit
  // version `snapshot_version` (a re-bootstrap), not feed records: their offsets are not
  // positions, the position moves to next_offset, and the target also deletes every live key
  // the listing lacks whose version is below it (ApplyBatch::snapshot_version).
  uint64_t snapshot_version = 0;
  std::shared_ptr<const void> storage;
};

class Source {
 public:
  virtual ~Source() = default;
  virtual const std::string& topic() const = 0;
  virtual Result<uint32_t> Partitions() = 0;
  // Up to `max_records` records of `partition` at offsets >= `from_offset`.
  virtual Result<SourceBatch> Read(uint32_t partition, uint64_t from_offset,
                                   size_t max_records) = 0;
};

// A topic of a local Log. `log` must outlive the Source.
std::unique_ptr<Source> NewLogSource(Log& log, std::string topic);
// (A store collection of another converge serve node: server/remote_source.h, which pulls
// GET /v1/collections/{collection}/changes of that node and hands out sparse batches.)

// ---------------------------------------------------------------------------------------
// Targets

struct Position {
  uint32_t partition = 0;
  uint64_t next_offset = 0;  // the first record not yet applied
  uint64_t commitseq = 0;    // the highest commit sequence number passed (0 = none seen)
  // The highest version of a tombstone of this partition purged so far. Written by purges
  // only (an Apply keeps the target's value).
  uint64_t purge_watermark = 0;
};

struct TargetState {
  std::vector<Position> positions;  // partitions never applied are absent
};

// One transaction's worth: changes with distinct keys, and the position after them.
struct ApplyBatch {
  std::vector<const Change*> changes;
  // A truncate of the source in this batch (0 = none): before the changes, the target removes
  // every row whose version is below it and raises the purge watermark of each of the source's
  // `partitions` partitions to at least truncate_below - 1, so a change written before the
  // truncate that comes later (from another partition) is refused. Every change of the batch
  // is at or above it.
  uint64_t truncate_below = 0;
  uint32_t partitions = 0;
  // The position the batch was read from: the target refuses the batch (Aborted) when its
  // stored position differs, so two appliers of one replica cannot both apply.
  uint64_t from_offset = 0;
  Position position;
  int64_t applied_time_micros = 0;
  // Nonzero (targets that applies_snapshots() only): `changes` list every live key of the
  // source as of this version; every live row whose key is not among them and whose version
  // is below it becomes a tombstone at this version, through the same version gate.
  uint64_t snapshot_version = 0;
};

struct ApplyOutcome {
  uint64_t applied = 0;          // rows inserted or replaced
  uint64_t stale = 0;            // at or below the row's version
  uint64_t below_watermark = 0;  // no row, version at or below the purge watermark
};

// The rule every target implements, in one transaction with the new position: a change is
// applied when its key has a row with a lower version, or has no row and its version is above
// the purge watermark of the batch's partition. A delete writes a tombstone (deleted, no
// document). Rows remember their source partition (for the purge).
class Target {
 public:
  virtual ~Target() = default;
  virtual Result<TargetState> Load() = 0;
  virtual Result<ApplyOutcome> Apply(const ApplyBatch& batch) = 0;
  // Removes tombstones applied before `applied_before_micros` and raises each partition's purge
  // watermark to the highest version removed from it, in one transaction. Returns how many
  // were removed.
  virtual Result<uint64_t> PurgeTombstones(int64_t applied_before_micros) = 0;
  // Whether Apply honours ApplyBatch::truncate_below. An applier whose target does not stops
  // at a truncate (FailedPrecondition) rather than let the copy diverge.
  virtual bool applies_truncates() const { return false; }
  // Whether Apply honours ApplyBatch::snapshot_version (a re-bootstrap).
  virtual bool applies_snapshots() const { return false; }
};

struct SqlTargetOptions {
  std::string replica;       // the replica's name: its row in converge_replicas
  std::string table;         // [A-Za-z_][A-Za-z0-9_]{0,62}; created if missing
  std::string source_topic;  // recorded; a replica re-pointed at another topic is refused
};

// A table in a SQLite or PostgreSQL database (layout: docs/formats/replica.md). Creates the
// tables if missing. FailedPrecondition if the replica exists with another table or topic.
// `db` must outlive the target and is used by the driving thread only.
Result<std::unique_ptr<Target>> NewSqlTarget(sql::Database& db, const SqlTargetOptions& options);
// The checks NewSqlTarget makes on `options` before touching the database (InvalidArgument).
Status ValidateSqlTargetOptions(const SqlTargetOptions& options);

// The copy as a service reads it.
struct Row {
  uint32_t source_partition = 0;
  uint64_t version = 0;
  bool deleted = false;
  std::string document;
  int64_t commit_time_micros = 0;
  int64_t applied_time_micros = 0;
  bool operator==(const Row&) const = default;
};

// An in-memory target for tests and the simulator. Transactions are atomic; fault injection
// makes the next Apply/Purge fail before committing (nothing applied) or after committing (the
// caller is told it failed): what a crash of the database or of the connection looks like.
class MemoryTarget : public Target {
 public:
  enum class Fault : uint8_t { kNone, kFailBeforeCommit, kFailAfterCommit };
  void InjectFault(Fault fault) { fault_ = fault; }

  Result<TargetState> Load() override;
  Result<ApplyOutcome> Apply(const ApplyBatch& batch) override;
  Result<uint64_t> PurgeTombstones(int64_t applied_before_micros) override;
  bool applies_truncates() const override { return true; }

  const std::map<std::string, Row>& rows() const { return rows_; }
  // How many times each (key, version) was written into the table.
  const std::map<std::pair<std::string, uint64_t>, uint64_t>& applies() const {
    return applies_;
  }
  const TargetState& state() const { return state_; }

 private:
  Status TakeFault(bool* after_commit);
  Fault fault_ = Fault::kNone;
  std::map<std::string, Row> rows_;
  std::map<std::pair<std::string, uint64_t>, uint64_t> applies_;
  TargetState state_;
};

// ---------------------------------------------------------------------------------------
// The applier

enum class OnMalformed : uint8_t {
  kStop,  // the default: apply what comes before it, then stop with FailedPrecondition
  kSkip,  // report it, count it, and go past it
};
std::string_view OnMalformedName(OnMalformed m);  // "stop" | "skip"
Result<OnMalformed> ParseOnMalformed(std::string_view name);

struct ApplierOptions {
  std::string name;        // for messages
  std::string collection;  // only changes of this collection; empty = every change
  size_t max_batch = 1000;  // records read (and applied in one transaction) per partition step
  OnMalformed on_malformed = OnMalformed::kStop;
  // Tombstones older than this (by applied time) are purged; 0 keeps them forever. A purge
  // raises the purge watermark (docs/formats/replica.md, "Tombstones").
  int64_t tombstone_retention_ms = 7LL * 24 * 3600 * 1000;
  // How often Step purges (when retention is on).
  int64_t purge_interval_ms = 60'000;
  // Told about every malformed change, damaged range and refused batch, one line each.
  std::function<void(const std::string& message)> report;
};

struct ReplicaStats {
  uint64_t applied = 0;          // changes written to the target
  uint64_t superseded = 0;       // a later version of the key came in the same batch
  uint64_t stale = 0;            // at or below the row's version
  uint64_t below_watermark = 0;  // refused: unknown key at or below the purge watermark
  uint64_t filtered = 0;         // another collection
  uint64_t malformed = 0;        // not a change event (reported)
  uint64_t damaged_ranges = 0;   // source ranges that could not be read (reported)
  uint64_t batches = 0;          // target transactions committed
  uint64_t refused_batches = 0;  // batches not starting at the position (stale or ahead)
  uint64_t target_errors = 0;    // failed target transactions (then the position is reloaded)
  uint64_t tombstones_purged = 0;
  uint64_t purge_watermark = 0;  // the highest of the partitions'
  uint64_t lag_changes = 0;  // records in the source past the position, as last seen
  int64_t lag_ms = 0;        // age of the oldest unapplied record; 0 when caught up
  int64_t last_apply_latency_us = 0;  // commit time -> apply time of the last applied change
  std::vector<Position> positions;
  Status stopped;  // why the applier stopped (on_malformed = stop); OK while running
};

// The checks Applier::Open makes on `options` (InvalidArgument).
Status ValidateApplierOptions(const ApplierOptions& options);

class Applier {
 public:
  // Loads the position from `target`. `env`, `source` and `target` must outlive the applier.
  static Result<std::unique_ptr<Applier>> Open(Env& env, Source& source, Target& target,
                                               ApplierOptions options);
  ~Applier();

  // Reads one batch per partition and applies each in one target transaction. Returns the
  // number of records read or offsets skipped (0: caught up). After a target error the position is reloaded
  // from the target by the next call (the transaction may or may not have committed).
  // FailedPrecondition once stopped by a malformed change.
  Result<size_t> Step();
  // Steps until a step reads nothing.
  Status CatchUp();
  // Purges tombstones past the retention now (Step does it every purge_interval_ms).
  Status PurgeTombstones();

  ReplicaStats Stats() const;
  // InvalidArgument for a token of another topic or partition the source does not have.
  Result<bool> Reached(std::string_view token) const;
  // Calls `done` once the replica has applied up to `token` (OK), at `deadline_ms` from now
  // (DeadlineExceeded naming the position reached), or at once for a bad token
  // (InvalidArgument). `done` runs on the driving thread or the Env's executor; keep it quick.
  void WaitForAsync(std::string_view token, int64_t deadline_ms,
                    std::function<void(Status)> done);
  // Blocking form of WaitForAsync (not on the driving thread, not under the simulator).
  Status WaitFor(std::string_view token, int64_t deadline_ms);
  // Unavailable naming both figures when the replica is staler than `max_staleness_ms`.
  Status CheckStaleness(int64_t max_staleness_ms) const;

  // The token of a record appended to this replica's source (e.g. from an AppendResult).
  std::string TokenForOffset(uint32_t partition, uint64_t offset) const;

 private:
  struct Impl;
  explicit Applier(std::unique_ptr<Impl> impl);
  // Shared with the deadline timers of waits, which may fire after the Applier is gone.
  std::shared_ptr<Impl> impl_;
};

}  // namespace converge::replica
