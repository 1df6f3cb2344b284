// StoreImpl: the embedded implementation of converge::Store.
//
// Design (docs/formats/store.md has the on-disk side)
// - State lives in memory: an ordered map of documents per collection, plus an expiry index.
// - Every change is one WAL record. Under the mutex a writer checks permissions and
//   preconditions against the latest state, takes the next sequence number, appends its
//   encoded record to the group buffer and applies the change in memory. It then waits until
//   its record is durable. The first waiter finding no leader becomes the leader: it takes the
//   whole buffer, writes and syncs it outside the mutex (group commit), marks it durable and
//   wakes the writers. It then becomes the feed publisher, unless another thread is, and
//   appends the durable changes' events to the log while the next group syncs (pipelining).
// - Because later writers see earlier, not yet durable changes, reads wait until what they
//   return is durable, and a group's durability implies that of every group before it (one WAL
//   file, appended in sequence order).
// - A group that fails to write or sync (a full disk) is undone rather than failing the store:
//   the WAL is cut back, the before-images kept for every change not yet durable are restored
//   (newest first; later changes may depend on the failed ones, so they go too), their feed
//   events are dropped and their writers get Unavailable.
// - Checkpoint: the leader role is taken, the buffer flushed, the state copied, a new WAL file
//   started; the copy is streamed into a snapshot outside the mutex; WAL files the snapshot and
//   the feed no longer need are deleted.
// - Sequence numbers are reserved durably in blocks (file SEQ) so that none is ever reused,
//   whatever a crash loses.
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "converge/store.h"
#include "store/builtin_merge.h"
#include "store/feed.h"
#include "store/format.h"
#include "store/json_util.h"
#include "store/rules.h"
#include "store/state.h"

namespace converge::store_internal {

// Sequence numbers are reserved durably in blocks of this many (file SEQ).
inline constexpr uint64_t kSeqReserveBlock = 1u << 20;
inline constexpr std::string_view kSeqFileName = "SEQ";
inline constexpr std::string_view kLockFileName = "LOCK";

class StoreImpl final : public Store {
 public:
  StoreImpl(Env& env, StoreOptions options);
  ~StoreImpl() override;

  // Recovers the directory; called once by Store::Open before the store is shared.
  Status Recover();

  Status CreateCollection(const Caller& caller, const std::string& name,
                          const CollectionConfig& config) override;
  Status UpdateCollection(const Caller& caller, const std::string& name,
                          const CollectionConfig& config) override;
  Status DeleteCollection(const Caller& caller, const std::string& name) override;
  Status CheckWriteAccess(const Caller& caller, const std::string& collection,
                          bool administer) override;
  Result<CollectionInfo> DescribeCollection(const std::string& name) override;
  std::vector<std::string> ListCollections() override;

  Result<Document> Get(const std::string& collection, const std::string& key) override;
  Result<Document> TryGet(const std::string& collection, const std::string& key) override;
  void GetAsync(const std::string& collection, const std::string& key, GetCallback done) override;
  Result<ListResult> List(const std::string& collection, const ListOptions& options) override;
  Result<WriteResult> Put(const Caller& caller, const std::string& collection,
                          const std::string& key, std::string_view value,
                          const Precondition& precondition, int64_t ttl_ms) override;
  Result<WriteResult> Delete(const Caller& caller, const std::string& collection,
                             const std::string& key, const Precondition& precondition) override;
  Result<CommitResult> Commit(const Caller& caller, std::span<const WriteOp> ops) override;
  void CommitAsync(const Caller& caller, std::vector<WriteOp> ops, CommitCallback done) override;

  Result<size_t> ExpireDue() override;
  Status Checkpoint() override;
  Status Sync() override;
  Status FlushFeed() override;
  StoreStats Stats() override;
  Status Health() override {
    Lock lock(mu_);
    return bg_error_;
  }

 private:
  using Lock = std::unique_lock<std::mutex>;

  // An op after stateless validation.
  struct Prepared {
    WriteOp::Kind kind;
    const WriteOp* op;
    std::shared_ptr<const std::string> value;  // kPut
    bool if_match_any = false;
    std::optional<uint64_t> if_match_version;
    CollectionState* coll = nullptr;  // set by ApplyTxnLocked (under mu_)
  };
  // An expiry index entry.
  using ExpiryKey = std::tuple<int64_t, std::string, std::string>;

  Status ValidateConfig(const CollectionConfig& config) const;
  // Stateless validation; `indexed` prefixes errors with "op <i>: ".
  Result<std::vector<Prepared>> PrepareOps(std::span<const WriteOp> ops, bool indexed) const;
  Result<CommitResult> CommitPrepared(const Caller& caller, std::vector<Prepared>& prepared,
                                      bool indexed);
  // Checks and applies a transaction in memory and queues its WAL record; *wait_seq is what
  // must be durable before it may be acknowledged. Requires mu_ (may release it meanwhile).
  Status ApplyTxnLocked(Lock& lock, const Caller& caller, std::vector<Prepared>& prepared,
                        bool indexed, CommitResult* out, uint64_t* wait_seq);
  Result<Document> GetImpl(const std::string& collection, const std::string& key, bool wait);
  // The answer of a read as of now and the change it depends on (*need: it may be given once
  // everything up to *need is durable). Requires mu_.
  Result<StoredDoc> ReadLocked(const std::string& collection, const std::string& key,
                               int64_t now_ms, uint64_t* need);
  // After a CommitAsync: does the group-commit work here, or hands it to
  // StoreOptions::background: a WAL worker leading group commits and a feed worker publishing
  // change events, at most one of each at a time. Requires mu_ (released while handing work
  // to the background executor).
  void KickLocked(Lock& lock);
  void RunWalWorkerLocked(Lock& lock);
  void RunFeedWorkerLocked(Lock& lock);
  // Durable change events wait to be published.
  bool FeedPublishableLocked() const {
    return opt_.feed_log != nullptr && !feed_queue_.empty() &&
           feed_queue_.front().seq <= durable_seq_;
  }
  // Runs a checkpoint the WAL size asked for. Requires mu_ (released meanwhile).
  void MaybeCheckpoint(Lock& lock);
  // Common checks before a change is admitted. Requires mu_.
  Status AdmitLocked(Lock& lock, size_t record_bytes_hint);
  // Takes the next sequence number (reserving a new block durably when needed). Requires mu_.
  Result<uint64_t> NextSeqLocked();
  // Applies a change in memory. Requires mu_.
  void ApplyOpLocked(const WalOp& op, uint64_t seq);
  void ApplyRecordLocked(const WalRecord& rec);
  // Group commit. A change is acknowledged by a Completion, run (without mu_) by the thread
  // that finishes the group holding it. Threads calling in do the work nobody else is doing
  // (DoWorkLocked) and then wait only for their own completion.
  using Completion = std::function<void(const Status&)>;
  // Registers `done` to run once everything up to `seq` (> durable_seq_) is durable.
  void AddCompletionLocked(uint64_t seq, Completion done);
  // Leads group commits while changes wait for one and no other thread leads, and publishes
  // durable change events while no other thread publishes. Requires mu_ (released meanwhile).
  void DoWorkLocked(Lock& lock);
  // Waits until everything up to `seq` is durable (doing work as above meanwhile).
  Status WaitDurable(Lock& lock, uint64_t seq);
  // Runs one group commit as leader (leader_active_ was set by the caller, who then calls
  // DoWorkLocked so that nothing queued meanwhile is left without a leader).
  void LeadGroup(Lock& lock, bool force_sync);
  // Takes the buffered WAL bytes and their completions for the group in flight.
  void TakeGroupLocked(std::string* batch, uint64_t* upto);
  // Marks the group durable, gives up leadership and runs its completions.
  void FinishGroupLocked(Lock& lock, uint64_t upto, std::string& batch);
  // Sets bg_error_ and fails every waiting completion.
  void FailLocked(Lock& lock, const Status& error);
  // After a group failed to write or sync (a full disk): cuts the WAL back to `wal_size`,
  // undoes in memory every change that is not durable (the failed group's and those queued
  // behind it, which may depend on it), drops their change events and fails their waiters
  // with `error`. The store goes on taking writes. False if the WAL could not be cut back
  // (the caller then fails the store for good).
  bool UndoNotDurableLocked(Lock& lock, uint64_t wal_size, const Status& error);
  // Records the state a change is about to replace, while undo_enabled_.
  void RememberDocLocked(uint64_t seq, const std::string& collection, const std::string& key,
                         const CollectionState& coll);
  void RememberCollectionLocked(uint64_t seq, const std::string& name);
  void RunCompletions(Lock& lock, std::vector<Completion>& done, const Status& status);
  // For the rare waits on state changes (leadership, publishing) rather than on durability.
  void WaitForStateLocked(Lock& lock);
  void NotifyWaitersLocked();
  // Publishes the durable queued feed events (requires feed_active_, set by the caller).
  Status PublishFeedLocked(Lock& lock);
  Status PublishTxns(const std::vector<FeedTxn>& txns, size_t* published);
  Status CollectionChange(const Caller& caller, const std::string& name,
                          const CollectionConfig* config, bool create);
  bool IsExpired(const StoredDoc& doc, int64_t now_ms) const {
    return doc.expires_at_ms != 0 && doc.expires_at_ms <= now_ms;
  }
  Result<FieldMergers> MergersFor(const CollectionConfig& config) const;
  const MergeFunction* FindMergeFunction(const std::string& name) const;
  int64_t NowMs() { return env_.clock().NowWallNanos() / 1'000'000; }
  std::string Path(std::string_view name) const { return opt_.dir + "/" + std::string(name); }

  // Recovery helpers.
  // Replays one WAL file; `prev` is the last sequence number seen (records must increase).
  Status ReplayWal(uint64_t first_seq, bool last_file, uint64_t snapshot_seq, uint64_t* prev);
  Result<uint64_t> FeedCursorFromLog();
  // The largest feed record (id + key + event) a document can make.
  uint64_t FeedRecordBytesNeeded() const { return FeedRecordBytesFor(opt_); }
  Status OpenNewWal(uint64_t first_seq);
  Status DeleteObsoleteFiles(uint64_t snapshot_seq, uint64_t feed_cursor);
  // Requires timer_->mu.
  void ScheduleTimerLocked();
  void OnTimer();

  Env& env_;
  const StoreOptions opt_;
  std::unique_ptr<FileLock> dir_lock_;

  std::mutex mu_;
  std::condition_variable cv_;
  Collections colls_;
  std::set<ExpiryKey> expiry_;
  uint64_t total_bytes_ = 0;
  uint64_t total_docs_ = 0;

  uint64_t last_seq_ = 0;             // last sequence number assigned
  uint64_t durable_seq_ = 0;          // every change <= this is durable
  uint64_t seq_reserved_ = 0;         // sequence numbers < this may have been handed out
  uint64_t last_catalog_seq_ = 0;     // the last collection change
  uint64_t feed_cursor_at_open_ = 0;  // recovery: changes after this go to the feed
  std::string pending_;               // WAL bytes of changes not yet written
  std::string spare_;                 // the previous group's buffer, reused
  bool leader_active_ = false;
  uint64_t inflight_upto_ = 0;                    // last change of the group being synced
  std::vector<Completion> completions_;           // for changes in pending_
  std::vector<Completion> inflight_completions_;  // for the group being synced
  int rare_waiters_ = 0;
  bool checkpoint_running_ = false;
  Status bg_error_;
  // Before-images of the changes applied in memory and not yet durable (seq > durable_seq_),
  // oldest first, so that a group that fails to write can be undone instead of failing the
  // store until it is reopened. Off during recovery (replayed changes are durable).
  struct Undo {
    uint64_t seq = 0;
    std::string collection;
    bool catalog = false;  // a collection change; else a document change
    // Document change: the document before (nullopt: absent) and the collection's
    // last_delete_seq before.
    std::string key;
    std::optional<StoredDoc> doc;
    uint64_t last_delete_seq = 0;
    // Collection change: the collection before (nullopt: absent) and last_catalog_seq_ before.
    std::optional<CollectionState> coll;
    uint64_t last_catalog_seq = 0;
  };
  std::deque<Undo> undo_;
  bool undo_enabled_ = false;
  uint64_t undone_groups_ = 0;
  int64_t last_sync_nanos_ = 0;
  bool wal_unsynced_ = false;
  bool want_checkpoint_ = false;
  bool wal_worker_ = false;   // a background WAL worker is queued or running
  bool feed_worker_ = false;  // a background feed worker is queued or running
  uint64_t wal_bytes_ = 0;

  std::unique_ptr<WritableFile> wal_;
  std::vector<uint64_t> wal_files_;  // first seqs, ascending; the last one is wal_

  // Change feed: committed transactions (in sequence order) not yet published.
  std::deque<FeedTxn> feed_queue_;
  size_t feed_queue_events_ = 0;
  uint64_t feed_published_seq_ = 0;
  bool feed_active_ = false;              // a thread is publishing (one at a time, in order)
  uint64_t feed_inflight_first_seq_ = 0;  // first change being published; 0 = none
  Status feed_error_;

  // Stats.
  uint64_t group_commits_ = 0;
  uint64_t commits_ = 0;
  uint64_t checkpoints_ = 0;

  // The periodic timer (TTL sweep, interval sync) and its lifeline.
  struct TimerState {
    std::mutex mu;
    StoreImpl* store = nullptr;
    TimerId id = 0;
  };
  std::shared_ptr<TimerState> timer_;
};

}  // namespace converge::store_internal
