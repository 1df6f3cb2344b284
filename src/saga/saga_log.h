// A durable record log: record-log files (core/record_log.h) as segment files
// "<prefix><20-digit sequence>.log" under one directory, through the Env's FileSystem; segments
// of releases before the record-log header are read in their old framing (and never appended
// to: Open starts a new segment after one). The saga orchestrator's saga log and the
// two-phase-commit coordinator's decision log are both one. A payload's first byte is its type;
// kBaseBeginType and kBaseEndType are reserved for compaction markers.
//
// - Append writes a batch of records (many sagas at once) to the active segment; Sync makes
//   everything appended durable with one fdatasync: the caller group-commits a whole batch.
// - A segment is rolled (a new file, directory synced) at a batch boundary once it exceeds
//   segment_max_bytes.
// - Rebase writes a snapshot of the whole retained state (kBaseBegin ... kBaseEnd) as a new
//   segment, makes it durable, then deletes every older segment: compaction. A crash before the
//   snapshot is complete leaves a segment without kBaseEnd, which Open deletes.
// - A failed Append, Sync or Rebase is undone by UndoUnsynced: a segment the batch created is
//   deleted and the active one cut back to its durable size, so the caller can drop the batch
//   and go on (a full disk is not fatal).
// - Open replays from the newest complete base segment (or the first segment) onward. A damaged
//   or torn tail of the last segment is cut (it was never acknowledged: acknowledged bytes were
//   synced) and reported. Damage inside an older segment (a record that fails its checksum or
//   does not decode, with records after it in the same segment) stops Open with DataLoss
//   naming the file and the byte range: those records were acknowledged, and replaying past
//   them would resume sagas (or 2PC transactions) from decisions that are gone. To accept the
//   loss an operator cuts the file at the named offset (`truncate -s OFFSET FILE`).
//
// Thread-safety: none; the orchestrator serializes calls.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "converge/env.h"
#include "converge/status.h"
#include "core/record_log.h"
#include "saga/records.h"

namespace converge::saga_internal {

inline constexpr uint8_t kBaseBeginType = 11;
inline constexpr uint8_t kBaseEndType = 12;

struct RecordLogOptions {
  std::string dir;
  std::string file_prefix = "saga-";
  uint64_t segment_max_bytes = 64ull << 20;
};

struct RecordLogRecovery {
  uint64_t records = 0;
  uint64_t segments = 0;
  uint64_t damaged_segments = 0;  // segments whose damaged tail was cut (or refused, see Open)
  uint64_t truncated_bytes = 0;
  // One line per repair or damage found ("<file>: bytes [FROM, TO) ..."), for the operator.
  std::vector<std::string> reports;
};

// Where a saga log (or decision log) keeps its framed records: files (RecordLog) or a
// PostgreSQL table (NewPostgresRecordStore). Not synchronized; the owner serializes calls.
class RecordStore {
 public:
  using ReplayFn = std::function<Status(std::string_view payload)>;
  virtual ~RecordStore() = default;
  // Buffers or writes a batch of framed records; durable only after Sync.
  virtual Status Append(std::string_view framed_records) = 0;
  // Makes everything appended durable.
  virtual Status Sync() = 0;
  // Replaces the whole content with `base` (kBaseBegin ... kBaseEnd) atomically and durably.
  virtual Status Rebase(std::string_view base) = 0;
  virtual uint64_t total_bytes() const = 0;
  virtual uint64_t bytes_since_base() const = 0;
  // After a failed Append, Sync or Rebase: cuts the store back to what the last successful
  // Sync (or Open, or Rebase) left, so that the next Append starts from there. An error when
  // that is not possible: the owner must then stop (its memory is ahead of the store).
  virtual Status UndoUnsynced() {
    return FailedPreconditionError("this record store cannot undo a failed write");
  }
  // Calls `replay` for every durable record payload, as Open would (after UndoUnsynced: the
  // state before the failed batch).
  virtual Status ReplayDurable(const ReplayFn& replay) {
    (void)replay;
    return FailedPreconditionError("this record store cannot replay while open");
  }
};

struct PostgresRecordStoreOptions {
  std::string conninfo;                     // key=value or a postgres:// URI (converge/sql.h)
  std::string table = "converge_saga_log";  // [a-z0-9_]{1,60}; created if missing
  int64_t connect_timeout_ms = 5'000;       // as sql::PostgresOptions
  int64_t statement_timeout_ms = 30'000;    // as sql::PostgresOptions; 0 = none
};

// A RecordStore in a PostgreSQL table: one row per synced batch (seq BIGSERIAL, payload BYTEA),
// written with synchronous_commit as the server has it (on by default: durable at commit).
// Rebase replaces all rows in one transaction. A session-level advisory lock on the table name
// keeps out a second orchestrator (FailedPrecondition). Replays every row at open.
// Unavailable when the server cannot be reached (within connect_timeout_ms) or the session was
// lost (then for good: the lock went with it); a failed write on a live session changed
// nothing, so UndoUnsynced and ReplayDurable work.
Result<std::unique_ptr<RecordStore>> NewPostgresRecordStore(
    const PostgresRecordStoreOptions& options, const RecordStore::ReplayFn& replay);

class RecordLog : public RecordStore {
 public:
  // Locks and recovers `options.dir`, calling `replay` for each record payload in order.
  // `replay` returns DataLoss for a payload it cannot decode: the segment is treated as damaged
  // from there. The last segment is cut there (reported in `recovery`); in an older segment it
  // stops Open with DataLoss naming the file and byte range (`recovery->reports` has the same
  // line). Any other non-OK status stops Open with it.
  // FailedPrecondition if another process holds the directory.
  static Result<std::unique_ptr<RecordLog>> Open(Env& env, const RecordLogOptions& options,
                                                 const ReplayFn& replay,
                                                 RecordLogRecovery* recovery);
  ~RecordLog() override;

  // Reads the log in `options.dir` the way Open would replay it, without locking, repairing or
  // deleting anything (for tools looking at a live or stopped log). NotFound if the directory
  // does not exist.
  static Status ReadOnly(Env& env, const RecordLogOptions& options, const ReplayFn& replay);

  Status Append(std::string_view framed_records) override;
  Status Sync() override;
  Status Rebase(std::string_view base) override;
  Status UndoUnsynced() override;
  Status ReplayDurable(const ReplayFn& replay) override;

  uint64_t total_bytes() const override { return total_bytes_; }
  uint64_t bytes_since_base() const override { return total_bytes_ - base_bytes_; }

 private:
  RecordLog(Env& env, RecordLogOptions options) : env_(env), options_(std::move(options)) {}
  Status OpenNewSegment(uint64_t seq);
  std::string SegmentPath(uint64_t seq) const;
  // Remembers the current end as the one UndoUnsynced goes back to (everything before is
  // durable).
  void MarkDurable();

  Env& env_;
  RecordLogOptions options_;
  std::unique_ptr<FileLock> lock_;
  std::unique_ptr<internal::record_log::Writer> active_;
  uint64_t active_seq_ = 0;
  std::vector<uint64_t> segments_;  // live segment sequence numbers, ascending
  uint64_t total_bytes_ = 0;
  uint64_t base_bytes_ = 0;  // size of the base snapshot the log starts with
  bool dirty_ = false;
  // The durable end: the active segment and its size, and total_bytes_, at the last Sync,
  // Open or Rebase.
  uint64_t durable_seq_ = 0;
  uint64_t durable_size_ = 0;
  uint64_t durable_total_ = 0;
};

}  // namespace converge::saga_internal
