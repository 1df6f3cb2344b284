// One topic of the event log: its partitions' segment files, the group-commit write path, the
// read path, retention and the dedup memory. LogImpl (log.cc) owns the map of topics.
//
// Write path (leveldb-style writer queue): every Append validates and fingerprints its
// records, reserves bytes in the Log's WriteBudget and joins the topic's queue. The writer at
// the head is the leader: it takes the queued batches (up to a group size bound), assigns
// offsets, drops duplicates, encodes everything into one buffer with one region per partition,
// issues one write per segment file, one sync per file under kFsync, publishes the new ends to
// readers, fires watches and wakes the followers. Without contention the caller is its own
// leader, which is how the single-threaded simulation runs it.
//
// Thread-safety: all public methods are thread-safe. Lock order: mu_ (queue) is never held
// while a partition's mutex is taken for I/O; a partition's mutex guards only its published
// state; leader-only state is touched only by the current leader.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include "converge/env.h"
#include "converge/log.h"
#include "log/dedup_table.h"
#include "log/hash.h"
#include "log/segment_reader.h"

namespace converge::internal {

// Deletes a file, or a directory and everything in it. OK if it does not exist.
Status RemoveTree(FileSystem& fs, const std::string& path);

// Bytes in the segment files under `path` (a file or a directory tree).
Result<uint64_t> SegmentBytes(FileSystem& fs, const std::string& path);

// Written (by renaming topic.json) before a topic's files are deleted: a directory with it is
// the rest of an unfinished DeleteTopic, which Log::Open completes.
inline constexpr char kDeletingMarker[] = "DELETING";

// Deletes a topic's directory so that a crash on the way leaves either the whole topic or a
// directory marked for deletion: topic.json becomes the marker, then everything goes.
Status DeleteTopicDir(FileSystem& fs, const std::string& dir);

// Bound on bytes queued for writing, shared by all topics of a Log.
class WriteBudget {
 public:
  WriteBudget(Env& env, uint64_t max_bytes, int64_t max_wait_ms)
      : env_(env), max_bytes_(max_bytes), max_wait_ms_(max_wait_ms) {}
  // Waits (up to max_wait_ms) until `bytes` fit. ResourceExhausted if they never can or the
  // wait runs out.
  Status Acquire(uint64_t bytes);
  void Release(uint64_t bytes);
  uint64_t max_bytes() const { return max_bytes_; }

 private:
  Env& env_;
  const uint64_t max_bytes_;
  const int64_t max_wait_ms_;
  std::mutex mu_;
  std::condition_variable cv_;
  uint64_t used_ = 0;
};

struct Segment {
  uint64_t base_offset = 0;
  std::string path;
  // Published state, guarded by the owning partition's mutex.
  uint64_t size_bytes = 0;  // bytes readers may read
  uint64_t end_offset = 0;  // next segment's base, or the partition's end for the active one
  int64_t max_timestamp = INT64_MIN;
  int64_t max_append_micros = INT64_MIN;
  std::vector<IndexEntry> index;
  std::shared_ptr<RandomAccessFile> reader;  // cached after a read; see ReaderFor
  // Stands for segment files that are gone although retention had not deleted them (found at
  // recovery between the partition's retained start and its oldest file): reads of its range
  // fail with DataLoss.
  bool missing = false;
};

// Per partition directory: the partition's retained start offset (decimal), written atomically
// before retention deletes segments, so that recovery tells segments retention deleted from
// segments that are missing.
inline constexpr char kStartFileName[] = "START";

class Topic : public std::enable_shared_from_this<Topic> {
 public:
  // Creates the directories and empty first segments of a new topic and writes topic.json.
  static Result<std::shared_ptr<Topic>> Create(Env& env, const std::string& dir,
                                               const std::string& name, const TopicOptions& options,
                                               std::shared_ptr<WriteBudget> budget);
  // Opens an existing topic: scans every segment, truncates torn tails, rebuilds indexes and
  // the dedup memory. Fails only on I/O errors.
  // `report` (may be empty) is told what recovery repaired or found damaged.
  static Result<std::shared_ptr<Topic>> Recover(
      Env& env, const std::string& dir, const std::string& name, const TopicOptions& options,
      std::shared_ptr<WriteBudget> budget,
      const std::function<void(const std::string&)>& report = nullptr);
  ~Topic();

  const std::string& name() const { return name_; }
  const TopicOptions& options() const { return options_; }

  // `partition` < 0: from the key. See Log::Append.
  Result<std::vector<AppendResult>> Append(std::span<const RecordView> records, int64_t partition);
  // See Log::AppendAsync. Refused batches are answered on the calling thread.
  void AppendAsync(std::span<const RecordView> records, int64_t partition, Log::AppendDone done);
  // Where group commits of asynchronous appends run (LogOptions::background); empty: on the
  // thread whose append finds no leader. Set once, before the first append.
  void set_background(std::function<void(std::function<void()>)> background) {
    background_ = std::move(background);
  }
  Result<ReadBatch> Read(uint32_t partition, uint64_t offset, size_t max_records, size_t max_bytes);
  Result<uint64_t> OffsetForTime(uint32_t partition, int64_t timestamp_micros);
  TopicInfo Describe();
  std::unique_ptr<Log::Watch> Watch(Log::AppendCallback fn);
  Status EnforceRetention();
  Status Sync();
  // Syncs and closes the files; later appends fail with FailedPrecondition, or NotFound when
  // `deleting`.
  Status Close(bool deleting = false);
  // OK while appends work. Otherwise the failure that stops them: the sticky one (the topic
  // must be reopened) or the last failed write (undone; the next append tries again).
  // `*sticky` tells which.
  Status WriteHealth(bool* sticky);
  // Clears the last failed write (after the caller proved that the disk accepts writes again).
  void ClearWriteError();
  // After Close: DeleteTopicDir.
  Status DeleteFiles();

 private:
  struct Partition;
  struct Piece;
  struct DedupCandidate;
  struct Writer;
  struct WatchRegistry;
  class WatchHandle;

  Topic(Env& env, std::string dir, std::string name, TopicOptions options,
        std::shared_ptr<WriteBudget> budget);

  Status RecoverPartition(uint32_t index, int64_t dedup_cutoff_micros,
                          std::vector<DedupCandidate>* candidates,
                          const std::function<void(const std::string&)>& report);
  // Checks `records` and fills w's partitions, id hashes and bytes.
  Status PrepareWriter(Writer& w, std::span<const RecordView> records, int64_t partition);
  // Queues a synchronous writer and returns its status once its group is done (leading it,
  // and possibly the groups after it, when it reaches the head of the queue).
  Status RunWriter(Writer& w, std::unique_lock<std::mutex>& lock);
  // The leader (leading_ is set, the head of writers_ waits for it; `self` is the synchronous
  // writer leading, or null for an asynchronous one): commits a group from the head. Returns
  // after handing the lead to the synchronous writer or background task that leads next, or
  // when the queue is empty; without background it leads asynchronous heads itself. Calls the
  // asynchronous writers' callbacks with `lock` released.
  void Lead(std::unique_lock<std::mutex>& lock, Writer* self);
  // Calls back and deletes finished asynchronous writers. Called without mu_.
  static void FinishAsync(std::vector<Writer*>& writers);
  Status Commit(std::span<Writer* const> group, bool force_sync);
  // Leader only: after a failed write or sync of a group, before anything was published,
  // puts every touched partition back as it was before the group (files truncated, segments
  // the group created deleted, offsets and dedup memory restored), so a failed append leaves
  // nothing behind and the next one can try again. An error means the files' state is
  // unknown: the topic then refuses appends until it is reopened.
  Status RollbackGroup();
  // Leader only: closes the active file and opens it again cut to write_pos, after deleting
  // `stray` (a segment file a failed roll may have created) if not empty.
  Status ReopenActive(Partition& part, const std::string& stray);
  Status Roll(Partition& part, const Segment& segment);
  // Leader only: syncs the dirty files (only the group's with `only_touched`); several at once
  // with background_ (helpers posted there; this thread syncs whatever no helper has started,
  // so a helper that never runs costs time, not progress).
  Status SyncDirty(bool only_touched);
  void Publish();
  void NotifyWatches();
  Status EnforceRetentionFor(Partition& part);
  // Leader only: seals active segments holding only records past age retention.
  Status SealExpiredActiveSegments(int64_t now_micros);
  // Records appended before this (wall µs) are past age retention.
  int64_t AgeCutoffMicros(int64_t now_micros) const;
  void ScheduleSyncTimerLocked();
  void OnSyncTimer();
  Status CloseFilesLeader();
  Status ClosedStatus() const;  // requires mu_
  Status DataLoss(uint32_t partition, uint64_t from, uint64_t to, std::string_view why) const;
  Result<std::shared_ptr<RandomAccessFile>> ReaderFor(Partition& part, Segment& seg);
  Result<ReadBatch> ReadSegment(uint32_t partition, const RandomAccessFile& file, uint64_t size,
                                uint64_t seg_end, uint64_t pos, uint64_t expected, uint64_t offset,
                                size_t max_records, size_t max_bytes, size_t chunk_target);
  uint8_t* GroupBuffer(size_t bytes);

  Env& env_;
  const std::string dir_;
  const std::string name_;
  const TopicOptions options_;
  std::shared_ptr<WriteBudget> budget_;
  const uint64_t group_max_bytes_;
  std::vector<std::unique_ptr<Partition>> partitions_;
  std::atomic<uint64_t> round_robin_{0};
  std::shared_ptr<WatchRegistry> watches_;
  std::mutex retention_mu_;

  // Queue state, guarded by mu_.
  std::mutex mu_;
  std::deque<Writer*> writers_;
  // A thread leads (or a background task to lead is posted): it owns the head of writers_.
  bool leading_ = false;
  std::function<void(std::function<void()>)> background_;
  bool closed_ = false;
  bool deleted_ = false;
  // Sticky: after a write error that could not be undone nothing more is appended until reopen.
  Status failed_;
  // The last append, sync or roll that failed (and was undone), cleared by the next success:
  // what readiness reports while a disk is full. Guarded by mu_.
  Status last_write_error_;
  bool timer_pending_ = false;
  TimerId timer_id_ = 0;

  // Leader-only state.
  DedupTable dedup_;
  int64_t last_sync_mono_ns_ = 0;
  std::vector<uint32_t> touched_;
  std::vector<uint32_t> rolled_;
  std::unique_ptr<uint8_t[]> group_buf_;
  size_t group_buf_capacity_ = 0;
  std::vector<Writer*> group_;
  struct RememberedId {
    Hash128 hash;
    uint32_t partition;
    uint64_t offset;
  };
  std::vector<RememberedId> group_ids_;  // ids the current group added to dedup_
  bool needs_reopen_ = false;            // a failure could not be undone
};

}  // namespace converge::internal
