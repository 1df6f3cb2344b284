// StoreImpl: opening a directory (recovery) and checkpoints (docs/formats/store.md).
#include <algorithm>
#include <charconv>
#include <utility>

#include "core/record_log.h"
#include "store/store_impl.h"

namespace converge::store_internal {

namespace record_log = internal::record_log;

Status StoreImpl::Recover() {
  FileSystem& fs = env_.fs();
  CONVERGE_RETURN_IF_ERROR(fs.CreateDirs(opt_.dir));
  CONVERGE_ASSIGN_OR_RETURN(dir_lock_, fs.LockFile(Path(kLockFileName)));
  CONVERGE_ASSIGN_OR_RETURN(std::vector<std::string> names, fs.ListDir(opt_.dir));

  uint64_t snapshot_seq = 0;
  bool have_snapshot = false;
  std::vector<uint64_t> wal_firsts;
  bool removed_tmp = false;
  for (const std::string& name : names) {
    uint64_t n = 0;
    if (ParseSnapshotFileName(name, &n)) {
      if (!have_snapshot || n > snapshot_seq) snapshot_seq = n;
      have_snapshot = true;
    } else if (ParseWalFileName(name, &n)) {
      wal_firsts.push_back(n);
    } else if (name.size() > 4 && name.substr(name.size() - 4) == ".tmp") {
      CONVERGE_RETURN_IF_ERROR(fs.DeleteFile(Path(name)));  // an unfinished atomic write
      removed_tmp = true;
    }
  }
  if (removed_tmp) CONVERGE_RETURN_IF_ERROR(fs.SyncDir(opt_.dir));
  std::sort(wal_firsts.begin(), wal_firsts.end());

  if (fs.FileExists(Path(kSeqFileName))) {
    CONVERGE_ASSIGN_OR_RETURN(std::string text, fs.ReadFileToString(Path(kSeqFileName)));
    while (!text.empty() && text.back() == '\n') text.pop_back();
    auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), seq_reserved_);
    if (ec != std::errc() || ptr != text.data() + text.size()) {
      return DataLossError("store file SEQ is damaged");
    }
  }

  SnapshotHeader header;
  if (have_snapshot) {
    const std::string name = SnapshotFileName(snapshot_seq);
    CONVERGE_ASSIGN_OR_RETURN(std::string bytes, fs.ReadFileToString(Path(name)));
    CONVERGE_RETURN_IF_ERROR(ReadSnapshot(bytes, name, &header, &colls_));
    if (header.seq != snapshot_seq) return DataLossError("snapshot " + name + " names another seq");
    for (auto& [cname, coll] : colls_) {
      for (const auto& [key, doc] : coll.docs) {
        if (doc.expires_at_ms != 0) expiry_.emplace(doc.expires_at_ms, cname, key);
      }
      total_bytes_ += coll.bytes;
      total_docs_ += coll.docs.size();
      coll.last_delete_seq = snapshot_seq;
      last_catalog_seq_ = std::max(last_catalog_seq_, coll.created_seq);
    }
  }

  // The feed's cursor: the last change found in the topic, else the snapshot's.
  uint64_t feed_cursor = header.feed_cursor;
  if (opt_.feed_log != nullptr) {
    CONVERGE_ASSIGN_OR_RETURN(uint64_t from_log, FeedCursorFromLog());
    feed_cursor = std::max(feed_cursor, from_log);
  }
  feed_cursor_at_open_ = feed_cursor;

  uint64_t prev = 0;
  for (size_t i = 0; i < wal_firsts.size(); ++i) {
    CONVERGE_RETURN_IF_ERROR(
        ReplayWal(wal_firsts[i], i + 1 == wal_firsts.size(), snapshot_seq, &prev));
  }
  const uint64_t last = std::max(snapshot_seq, prev);
  wal_files_ = wal_firsts;
  last_seq_ = std::max(last, seq_reserved_ > 0 ? seq_reserved_ - 1 : 0);
  durable_seq_ = last_seq_;
  undo_enabled_ = true;  // from here on, changes are applied before they are durable
  feed_published_seq_ = feed_queue_.empty() ? std::max(feed_cursor, last) : feed_cursor;
  CONVERGE_RETURN_IF_ERROR(OpenNewWal(last_seq_ + 1));

  {
    std::lock_guard<std::mutex> g(timer_->mu);
    timer_->store = this;
    ScheduleTimerLocked();
  }
  if (!feed_queue_.empty()) {
    Lock lock(mu_);
    DoWorkLocked(lock);  // what fails is retried by later groups and FlushFeed
  }
  return Status::Ok();
}

Result<uint64_t> StoreImpl::FeedCursorFromLog() { return store_internal::FeedCursorFromLog(opt_); }

Status StoreImpl::ReplayWal(uint64_t first_seq, bool last_file, uint64_t snapshot_seq,
                            uint64_t* prev) {
  FileSystem& fs = env_.fs();
  const std::string name = WalFileName(first_seq);
  const std::string path = Path(name);
  CONVERGE_ASSIGN_OR_RETURN(std::string bytes, fs.ReadFileToString(path));
  // WAL files of releases before the record-log header are read in their framing of then.
  record_log::Reader reader = record_log::Reader::ForFile(bytes, record_log::Legacy::kStoreV0);
  WalRecord rec;
  while (true) {
    std::string_view payload;
    const bool have = reader.Next(&payload);
    if (!have && reader.stop() == record_log::Stop::kEnd) break;
    // A record whose frame checks out but whose content does not decode is treated like a bad
    // frame: at the tail, a torn final write; with a valid frame after it, damage.
    const bool undecodable = have && !DecodeWalPayload(payload, &rec);
    if (!have || undecodable) {
      const size_t offset = have ? reader.last_record_offset() : reader.valid_bytes();
      auto damaged = [&](std::string_view why) {
        return DataLossError("store WAL " + name + " is damaged at byte " + std::to_string(offset) +
                             " (" + std::string(why) + ")");
      };
      if (!last_file) return damaged("a record before the last file's tail");
      // A torn final write looks corrupt; a corrupt record followed by a good one does not.
      const bool followed = undecodable ? reader.ValidFrameAt(reader.valid_bytes())
                                        : reader.stop() == record_log::Stop::kCorrupt;
      if (followed) return damaged("corrupt record followed by valid ones");
      // Never acknowledged: cut it off, durably, before anything is appended after it.
      CONVERGE_RETURN_IF_ERROR(fs.Truncate(path, offset));
      return Status::Ok();
    }
    if (rec.seq <= *prev) {
      return DataLossError("store WAL " + name + ": sequence number " + std::to_string(rec.seq) +
                           " after " + std::to_string(*prev));
    }
    if (rec.seq > snapshot_seq) {
      if (rec.type == RecordType::kTxn) {
        for (const WalOp& op : rec.ops) {
          if (colls_.find(op.collection) == colls_.end()) {
            return DataLossError("store WAL " + name + ": change " + std::to_string(rec.seq) +
                                 " names unknown collection '" + op.collection + "'");
          }
        }
      }
      ApplyRecordLocked(rec);
    }
    if (rec.type == RecordType::kTxn && opt_.feed_log != nullptr &&
        rec.seq > feed_cursor_at_open_) {
      feed_queue_events_ += rec.ops.size();
      feed_queue_.push_back(FeedTxn{rec.seq, rec.wall_ms, std::move(rec.ops)});
      rec.ops.clear();
    }
    *prev = rec.seq;
  }
  if (last_file) {
    // The tail may only be in the OS's cache (a process crash): make it durable before anything
    // derived from it (reads, the change feed) is exposed.
    CONVERGE_ASSIGN_OR_RETURN(std::unique_ptr<WritableFile> f,
                              fs.NewWritableFile(path, OpenMode::kAppend));
    CONVERGE_RETURN_IF_ERROR(f->Sync());
    CONVERGE_RETURN_IF_ERROR(f->Close());
  }
  return Status::Ok();
}

Status StoreImpl::OpenNewWal(uint64_t first_seq) {
  FileSystem& fs = env_.fs();
  CONVERGE_ASSIGN_OR_RETURN(std::unique_ptr<WritableFile> f,
                            fs.NewWritableFile(Path(WalFileName(first_seq)), OpenMode::kTruncate));
  CONVERGE_RETURN_IF_ERROR(fs.SyncDir(opt_.dir));
  wal_ = std::move(f);
  if (wal_files_.empty() || wal_files_.back() != first_seq) wal_files_.push_back(first_seq);
  wal_bytes_ = 0;
  return Status::Ok();
}

// ---------------------------------------------------------------------------------------
// Sync and checkpoints

Status StoreImpl::Sync() {
  Lock lock(mu_);
  while (leader_active_ && bg_error_.ok()) WaitForStateLocked(lock);
  if (!bg_error_.ok()) return bg_error_;
  leader_active_ = true;
  LeadGroup(lock, /*force_sync=*/true);
  DoWorkLocked(lock);
  return bg_error_;
}

Status StoreImpl::Checkpoint() {
  FileSystem& fs = env_.fs();
  Lock lock(mu_);
  if (!bg_error_.ok()) return bg_error_;
  if (checkpoint_running_) return Status::Ok();
  while (leader_active_ && bg_error_.ok()) WaitForStateLocked(lock);
  if (!bg_error_.ok()) return bg_error_;
  checkpoint_running_ = true;
  leader_active_ = true;
  std::string batch;
  uint64_t upto = 0;
  TakeGroupLocked(&batch, &upto);
  // Every change up to feed_cursor is in the feed (none queued or being published).
  uint64_t feed_cursor = upto;
  if (!feed_queue_.empty()) feed_cursor = std::min(feed_cursor, feed_queue_.front().seq - 1);
  if (feed_inflight_first_seq_ != 0) {
    feed_cursor = std::min(feed_cursor, feed_inflight_first_seq_ - 1);
  }
  const bool roll = wal_files_.back() != upto + 1;
  Collections copy = colls_;
  const uint64_t wal_before = wal_->Size();
  lock.unlock();

  // Finish the current WAL file and start the next one, still as the only writer.
  Status s;
  if (!batch.empty()) s = internal::record_log::AppendFrames(*wal_, batch);
  if (s.ok()) s = wal_->Sync();
  if (!s.ok()) {
    // As in LeadGroup: the changes not yet durable are undone and the store goes on.
    copy.clear();
    lock.lock();
    checkpoint_running_ = false;
    const Status error = UnavailableError(
        "the store could not write its WAL, the change was not made (retry later): " +
        s.ToString());
    if (UndoNotDurableLocked(lock, wal_before, error)) return error;
    leader_active_ = false;
    FailLocked(lock,
               InternalError("store failed writing its WAL (reopen to recover): " + s.ToString()));
    return bg_error_;
  }
  std::unique_ptr<WritableFile> next;
  if (s.ok() && roll) {
    s = wal_->Close();
    if (s.ok()) {
      Result<std::unique_ptr<WritableFile>> f =
          fs.NewWritableFile(Path(WalFileName(upto + 1)), OpenMode::kTruncate);
      if (f.ok()) {
        next = std::move(*f);
        s = fs.SyncDir(opt_.dir);
      } else {
        s = f.status();
      }
    }
  }
  lock.lock();
  if (!s.ok()) {
    leader_active_ = false;
    checkpoint_running_ = false;
    FailLocked(lock,
               InternalError("store failed rolling its WAL (reopen to recover): " + s.ToString()));
    return bg_error_;
  }
  if (roll) {
    wal_ = std::move(next);
    wal_files_.push_back(upto + 1);
    wal_bytes_ = 0;
  }
  wal_unsynced_ = false;
  FinishGroupLocked(lock, upto, batch);
  DoWorkLocked(lock);
  lock.unlock();

  // The snapshot, outside the mutex: writers continue meanwhile.
  const std::string name = SnapshotFileName(upto);
  if (!fs.FileExists(Path(name))) {
    const std::string tmp = Path(name + ".tmp");
    Result<std::unique_ptr<WritableFile>> f = fs.NewWritableFile(tmp, OpenMode::kTruncate);
    s = f.status();
    if (f.ok()) {
      SnapshotHeader header{upto, feed_cursor};
      s = WriteSnapshot(f->get(), header, copy);
      if (s.ok()) s = (*f)->Close();
      if (s.ok()) s = fs.RenameFile(tmp, Path(name));
      if (s.ok()) s = fs.SyncDir(opt_.dir);
    }
    // A snapshot that could not be written (a full disk) must not keep the space it took.
    if (!s.ok()) fs.DeleteFile(tmp).IgnoreError();
  }
  copy.clear();
  if (s.ok()) s = DeleteObsoleteFiles(upto, feed_cursor);
  lock.lock();
  checkpoint_running_ = false;
  if (s.ok()) ++checkpoints_;
  return s;
}

Status StoreImpl::DeleteObsoleteFiles(uint64_t snapshot_seq, uint64_t feed_cursor) {
  FileSystem& fs = env_.fs();
  const uint64_t keep_from = std::min(snapshot_seq, feed_cursor) + 1;
  std::vector<uint64_t> doomed;
  {
    Lock lock(mu_);
    // File i holds [first_i, first_{i+1}); it is needed while it may hold seq >= keep_from.
    size_t n = 0;
    while (n + 1 < wal_files_.size() && wal_files_[n + 1] <= keep_from) ++n;
    doomed.assign(wal_files_.begin(), wal_files_.begin() + static_cast<std::ptrdiff_t>(n));
    wal_files_.erase(wal_files_.begin(), wal_files_.begin() + static_cast<std::ptrdiff_t>(n));
  }
  for (uint64_t first : doomed) CONVERGE_RETURN_IF_ERROR(fs.DeleteFile(Path(WalFileName(first))));
  CONVERGE_ASSIGN_OR_RETURN(std::vector<std::string> names, fs.ListDir(opt_.dir));
  for (const std::string& name : names) {
    uint64_t seq = 0;
    if (ParseSnapshotFileName(name, &seq) && seq < snapshot_seq) {
      CONVERGE_RETURN_IF_ERROR(fs.DeleteFile(Path(name)));
    }
  }
  return fs.SyncDir(opt_.dir);
}

}  // namespace converge::store_internal
