// The durable, partitioned event log: the event-driven backbone of converge.
//
// A Log is a directory of topics. A topic has N partitions; a record goes to the partition
// chosen by a stable hash of its partition key (records without a key are spread
// round-robin). Each partition is totally ordered with dense offsets 0, 1, 2, ...
//
// Durability, per topic (what an OK from Append promises):
//   kFsync     the records are on disk (fdatasync) before Append returns. Concurrent appenders
//              share one sync (group commit). The default.
//   kInterval  the records are written to the OS and synced within `sync_interval_ms`; a
//              machine crash can lose that window, a process crash cannot.
//   kNone      written to the OS, synced only by Sync()/Close() or segment roll.
//
// Idempotent publish: a record with a non-empty id that was already appended to the same
// topic within the dedup window (which survives restarts) is not appended again; its
// AppendResult says duplicate=true and gives the original partition and offset.
//
// Validation is whole-batch: if any record of an Append is invalid (too large, bad key),
// nothing is appended and InvalidArgument names the record's index. Writing is whole-batch
// too: when writing or syncing fails (ResourceExhausted for a full disk, Internal otherwise),
// the records already written to any partition are cut off again before the call returns, so
// no reader, and no later recovery, sees part of a failed batch. (A machine crash in the
// middle of that write can still leave part of it, like any unacknowledged append.)
//
// Reads never return a corrupt or partial record: a damaged range is reported as DataLoss
// naming the partition and offsets, and the records around it stay readable.
//
// Thread-safety: Log is thread-safe. Append may be called from many threads at once.
// Blocking: Append blocks for the sync under kFsync (AppendAsync does not, with
// LogOptions::background); Read blocks on file I/O only.
// All time, files and randomness come from the Env given at Open.
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
#include "converge/status.h"

namespace converge {

enum class Durability : uint8_t { kFsync, kInterval, kNone };

// "fsync" | "interval" | "none".
std::string_view DurabilityName(Durability d);
Result<Durability> ParseDurability(std::string_view name);

struct TopicOptions {
  uint32_t partitions = 1;                            // 1..1024
  Durability durability = Durability::kFsync;
  int64_t sync_interval_ms = 50;                      // for kInterval
  uint64_t segment_max_bytes = 64ull << 20;           // roll to a new segment past this
  uint64_t retention_max_bytes = 0;                   // per partition; 0 = unlimited
  int64_t retention_max_age_ms = 0;                   // 0 = unlimited; >= dedup window in effect
  int64_t dedup_window_ms = 10 * 60 * 1000;           // idempotent-publish window
  uint64_t dedup_max_ids = 1'000'000;                 // bound on remembered ids per topic
  uint32_t max_record_bytes = 1u << 20;               // id + key + value
  // Internal topics (dead letters, consumer-group state) may use names starting with '_'.
  bool internal = false;
};

// The checks Log::CreateTopic applies, for callers that want to refuse a bad name or options
// before a topic is created (e.g. a configuration at start rather than every auto-created
// topic later). Names: 1..200 of [A-Za-z0-9._-], not starting with '.'; a leading '_' is
// reserved for internal topics (options.internal). InvalidArgument names what is wrong.
Status ValidateTopicName(std::string_view name, bool internal = false);
Status ValidateTopicOptions(const TopicOptions& options);

// A record to append. Views must stay valid for the duration of the Append call.
struct RecordView {
  std::string_view id;     // event id for idempotent publish; empty = no dedup
  std::string_view key;    // partition key; empty = round-robin
  std::string_view value;  // opaque payload (converge stores encoded CloudEvents here)
  int64_t timestamp_micros = 0;  // 0 = the log's wall clock at append
};

struct AppendResult {
  uint32_t partition = 0;
  uint64_t offset = 0;
  bool duplicate = false;
};

// A record read back. Views point into the owning ReadBatch.
struct StoredRecord {
  uint64_t offset = 0;
  int64_t timestamp_micros = 0;
  std::string_view id;
  std::string_view key;
  std::string_view value;
};

// Records read from one partition, in offset order. Owns the memory the views point into.
struct ReadBatch {
  std::vector<StoredRecord> records;
  // Offset to read from next (one past the last record returned, or past a skipped range).
  uint64_t next_offset = 0;
  std::shared_ptr<const void> storage;  // keeps the bytes behind the views alive
};

struct PartitionInfo {
  uint32_t partition = 0;
  uint64_t start_offset = 0;  // oldest offset still retained
  uint64_t end_offset = 0;    // next offset to be assigned
  uint64_t size_bytes = 0;
};

struct TopicInfo {
  std::string name;
  TopicOptions options;
  std::vector<PartitionInfo> partitions;
};

struct LogOptions {
  std::string dir;  // created if missing; one Log per directory (locked)
  // Upper bound on bytes buffered for writes across all topics before appenders wait.
  uint64_t write_buffer_max_bytes = 64ull << 20;
  // How long an appender waits for room in that buffer before ResourceExhausted.
  int64_t write_buffer_wait_ms = 10'000;
  // While a topic has retention_max_age_ms, age retention also runs this often (on the Env's
  // executor), so a partition that receives nothing still drops expired records. 0 = only on
  // segment rolls and EnforceRetention().
  int64_t retention_check_interval_ms = 60'000;
  // Told (during Open, on the opening thread) about everything recovery repaired or found
  // damaged: a torn tail cut off, damaged records inside a segment, segments missing below
  // the retained start, a topic quarantined, the rest of an unfinished create or delete
  // removed. Nothing of this stops Open; the server writes it to its log.
  std::function<void(const std::string& message)> report_recovery;
  // Where the group commits of AppendAsync run: one task per group commit, at most one at a
  // time per topic (each takes every append queued meanwhile; the task calls the group back,
  // after handing the next group to a new task). Every task handed over must run before the
  // Log is destroyed. Unset: on the appending thread that finds no commit running.
  std::function<void(std::function<void()>)> background;
};

// For a DataLoss status returned by Log::Read: the offset to resume reading at (the end of the
// damaged range). nullopt for any other status.
std::optional<uint64_t> DataLossResumeOffset(const Status& status);

class Log {
 public:
  virtual ~Log() = default;

  // Opens (recovering if needed) the log in options.dir. `env` must outlive the Log.
  // FailedPrecondition if another Log holds the directory; DataLoss never stops Open: damaged
  // tails are truncated and damaged ranges reported by Read.
  static Result<std::unique_ptr<Log>> Open(Env& env, const LogOptions& options);

  // Topic names: 1..200 chars of [A-Za-z0-9._-], not starting with '.' or '_' (reserved for
  // internal topics, created with options.internal). AlreadyExists if it exists.
  virtual Status CreateTopic(const std::string& topic, const TopicOptions& options) = 0;
  virtual Status DeleteTopic(const std::string& topic) = 0;
  virtual std::vector<std::string> ListTopics() = 0;
  // NotFound for an unknown topic.
  virtual Result<TopicInfo> DescribeTopic(const std::string& topic) = 0;

  // The partition a key maps to (stable across versions and restarts).
  static uint32_t PartitionForKey(std::string_view key, uint32_t partitions);

  // Appends a batch; results are in the order of `records`. Partition from the key.
  // NotFound (unknown topic), InvalidArgument (a bad record; nothing appended),
  // ResourceExhausted (write buffer full past the wait bound), Internal (I/O failure).
  virtual Result<std::vector<AppendResult>> Append(const std::string& topic,
                                                   std::span<const RecordView> records) = 0;
  // Append without waiting for the sync: `done` is called exactly once with what Append would
  // return. A refused batch (unknown topic, a bad record, no room in the write buffer) is
  // answered on the calling thread before AppendAsync returns; an accepted one when the group
  // commit holding it is durable as the topic's policy promises, on the thread that finished
  // that commit (a LogOptions::background task, or without one possibly the calling thread,
  // which then leads group commits before returning). No thread waits per pending append:
  // every append queued while a commit runs joins the next one. `done` must be quick, must
  // not block and must not call back into the Log (post to an executor instead). The views
  // in `records` must stay valid until `done` is called. AppendAsync itself may wait for room
  // in the write buffer (like Append), nothing else.
  using AppendDone = std::function<void(Result<std::vector<AppendResult>>)>;
  virtual void AppendAsync(const std::string& topic, std::span<const RecordView> records,
                           AppendDone done) {
    done(Append(topic, records));
  }
  // Appends to an explicit partition.
  virtual Result<std::vector<AppendResult>> AppendToPartition(
      const std::string& topic, uint32_t partition, std::span<const RecordView> records) = 0;

  // Reads records at offsets >= `offset` from one partition, at most `max_records` and about
  // `max_bytes` (at least one record if any is available). An offset below the retained start
  // reads from the start; at or past the end returns an empty batch with next_offset = end.
  // DataLoss names a damaged range (the caller may resume at the offset the message gives):
  // "topic 'T' partition P: records [FROM, TO) are damaged (WHY); resume at offset TO";
  // DataLossResumeOffset extracts TO. Records before the range are returned by the read that
  // reaches it, so a reader never skips good records.
  virtual Result<ReadBatch> Read(const std::string& topic, uint32_t partition, uint64_t offset,
                                 size_t max_records, size_t max_bytes) = 0;

  // The first offset whose timestamp is >= `timestamp_micros` (end offset if none).
  virtual Result<uint64_t> OffsetForTime(const std::string& topic, uint32_t partition,
                                         int64_t timestamp_micros) = 0;

  // Calls `fn(partition, end_offset)` whenever a partition of `topic` gains records that are
  // readable (and durable as the topic's policy promises), so consumers wait without polling.
  // `fn` runs on the appending thread: it must be quick, must not block and must not call
  // back into the Log (post to an executor instead). Unregistered when the handle is destroyed.
  class Watch {
   public:
    virtual ~Watch() = default;
  };
  using AppendCallback = std::function<void(uint32_t partition, uint64_t end_offset)>;
  virtual Result<std::unique_ptr<Watch>> WatchAppends(const std::string& topic,
                                                      AppendCallback fn) = 0;

  // Applies retention (by size and age) now: deletes the oldest whole segments past the size
  // limit, and segments whose records are all past the age limit — sealing an active segment
  // first if everything in it is past the limit. Age retention never drops a record younger
  // than the topic's dedup window (so a restart still knows every id inside the window). Also
  // runs on segment rolls and every LogOptions::retention_check_interval_ms.
  virtual Status EnforceRetention() = 0;

  // Makes everything appended so far durable, whatever the topics' policies.
  virtual Status Sync() = 0;

  // Whether appends work. An append that fails to write or sync (a full disk: ResourceExhausted)
  // is undone in every partition it touched, and the next append simply tries again. Until one
  // succeeds, this returns that failure — after first probing whether the disk takes writes
  // again (a small file written, synced and deleted in the log's directory); if it does, the
  // failure is forgotten and OK returned. FailedPrecondition when a topic refuses appends
  // until the log is reopened (a failed write that could not be undone).
  virtual Status WriteHealth() { return Status::Ok(); }
};

}  // namespace converge
