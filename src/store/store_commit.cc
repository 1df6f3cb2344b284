// StoreImpl: group commit, the change-feed publisher and the periodic timer.
#include <algorithm>
#include <charconv>
#include <utility>

#include "core/record_log.h"
#include "store/store_impl.h"

namespace converge::store_internal {

// ---------------------------------------------------------------------------------------
// The timer

void StoreImpl::ScheduleTimerLocked() {
  int64_t period_ms = opt_.ttl_sweep_interval_ms;
  if (opt_.durability == Durability::kInterval) {
    period_ms = period_ms > 0 ? std::min(period_ms, opt_.sync_interval_ms) : opt_.sync_interval_ms;
  }
  if (period_ms <= 0) return;
  std::shared_ptr<TimerState> t = timer_;
  t->id = env_.executor().Schedule(period_ms * 1'000'000, [t]() {
    std::lock_guard<std::mutex> g(t->mu);
    if (t->store == nullptr) return;
    t->store->OnTimer();
    t->store->ScheduleTimerLocked();
  });
}

void StoreImpl::OnTimer() {
  if (opt_.ttl_sweep_interval_ms > 0) ExpireDue().status().IgnoreError();
  bool feed_waiting = false;
  bool unsynced = false;
  {
    Lock lock(mu_);
    if (!bg_error_.ok()) return;
    feed_waiting = !feed_queue_.empty();
    unsynced = wal_unsynced_ || !pending_.empty();
  }
  if (opt_.durability == Durability::kInterval && unsynced) Sync().IgnoreError();
  if (feed_waiting) FlushFeed().IgnoreError();
}

// ---------------------------------------------------------------------------------------
// Group commit

void StoreImpl::NotifyWaitersLocked() {
  if (rare_waiters_ > 0) cv_.notify_all();
}

void StoreImpl::WaitForStateLocked(Lock& lock) {
  ++rare_waiters_;
  cv_.wait(lock);
  --rare_waiters_;
}

void StoreImpl::AddCompletionLocked(uint64_t seq, Completion done) {
  if (leader_active_ && seq <= inflight_upto_) {
    inflight_completions_.push_back(std::move(done));
  } else {
    completions_.push_back(std::move(done));
  }
}

void StoreImpl::RunCompletions(Lock& lock, std::vector<Completion>& done, const Status& status) {
  if (done.empty()) return;
  lock.unlock();
  for (Completion& c : done) c(status);
  done.clear();
  lock.lock();
}

void StoreImpl::FailLocked(Lock& lock, const Status& error) {
  if (bg_error_.ok()) bg_error_ = error;
  std::vector<Completion> failed = std::move(completions_);
  completions_.clear();
  for (Completion& c : inflight_completions_) failed.push_back(std::move(c));
  inflight_completions_.clear();
  NotifyWaitersLocked();
  RunCompletions(lock, failed, bg_error_);
}

bool StoreImpl::UndoNotDurableLocked(Lock& lock, uint64_t wal_size, const Status& error) {
  // Cut the WAL back first: a partly written record must not stay in front of later ones.
  // Truncate makes the kept bytes durable as well.
  FileSystem& fs = env_.fs();
  const std::string path = Path(WalFileName(wal_files_.back()));
  wal_->Close().IgnoreError();  // its state is what is being repaired
  wal_.reset();
  Status cut = fs.Truncate(path, wal_size);
  if (cut.ok()) {
    Result<std::unique_ptr<WritableFile>> f = fs.NewWritableFile(path, OpenMode::kAppend);
    if (f.ok() && (*f)->Size() == wal_size) {
      wal_ = std::move(*f);
    } else {
      cut = f.ok() ? InternalError("WAL " + path + " has the wrong size after truncation")
                   : f.status();
    }
  }
  if (!cut.ok()) {
    // Keep a WAL object so that later calls fail cleanly; the store is failed by the caller.
    Result<std::unique_ptr<WritableFile>> f = fs.NewWritableFile(path, OpenMode::kAppend);
    if (f.ok()) wal_ = std::move(*f);
    return false;
  }
  // Undo every change after durable_seq_, newest first: the failed group's and those queued
  // behind it (they were checked against the failed ones).
  while (!undo_.empty()) {
    Undo& u = undo_.back();
    if (u.seq <= durable_seq_) break;
    if (u.catalog) {
      auto it = colls_.find(u.collection);
      if (!u.coll.has_value()) {
        if (it != colls_.end()) {
          for (const auto& [key, doc] : it->second.docs) {
            if (doc.expires_at_ms != 0) expiry_.erase(ExpiryKey(doc.expires_at_ms, it->first, key));
          }
          total_bytes_ -= it->second.bytes;
          total_docs_ -= it->second.docs.size();
          colls_.erase(it);
        }
      } else if (it != colls_.end()) {
        it->second.config = std::move(u.coll->config);
        it->second.created_seq = u.coll->created_seq;
      } else {
        CollectionState& coll = colls_[u.collection] = std::move(*u.coll);
        for (const auto& [key, doc] : coll.docs) {
          if (doc.expires_at_ms != 0) expiry_.emplace(doc.expires_at_ms, u.collection, key);
        }
        total_bytes_ += coll.bytes;
        total_docs_ += coll.docs.size();
      }
      last_catalog_seq_ = u.last_catalog_seq;
    } else {
      auto cit = colls_.find(u.collection);
      CONVERGE_CHECK(cit != colls_.end());
      CollectionState& coll = cit->second;
      auto it = coll.docs.find(u.key);
      if (it != coll.docs.end()) {
        const uint64_t old = it->first.size() + it->second.value->size();
        coll.bytes -= old;
        total_bytes_ -= old;
        --total_docs_;
        if (it->second.expires_at_ms != 0) {
          expiry_.erase(ExpiryKey(it->second.expires_at_ms, u.collection, u.key));
        }
        coll.docs.erase(it);
      }
      if (u.doc.has_value()) {
        StoredDoc& doc = coll.docs[u.key] = std::move(*u.doc);
        const uint64_t added = u.key.size() + doc.value->size();
        coll.bytes += added;
        total_bytes_ += added;
        ++total_docs_;
        if (doc.expires_at_ms != 0) expiry_.emplace(doc.expires_at_ms, u.collection, u.key);
      }
      coll.last_delete_seq = u.last_delete_seq;
    }
    undo_.pop_back();
  }
  // Their change events are not published (they never happened).
  while (!feed_queue_.empty() && feed_queue_.back().seq > durable_seq_) {
    feed_queue_events_ -= feed_queue_.back().ops.size();
    feed_queue_.pop_back();
  }
  pending_.clear();
  // Every sequence number handed out is now durable or undone; the undone ones stay unused.
  durable_seq_ = last_seq_;
  inflight_upto_ = last_seq_;
  leader_active_ = false;
  ++undone_groups_;
  std::vector<Completion> failed = std::move(inflight_completions_);
  inflight_completions_.clear();
  for (Completion& c : completions_) failed.push_back(std::move(c));
  completions_.clear();
  NotifyWaitersLocked();
  RunCompletions(lock, failed, error);
  return true;
}

void StoreImpl::DoWorkLocked(Lock& lock) {
  bool feed_failed = false;
  while (bg_error_.ok()) {
    if (!leader_active_ && (!pending_.empty() || !completions_.empty())) {
      leader_active_ = true;
      LeadGroup(lock, /*force_sync=*/false);
      continue;
    }
    if (!feed_failed && !feed_active_ && FeedPublishableLocked()) {
      feed_active_ = true;
      feed_failed = !PublishFeedLocked(lock).ok();  // stays queued; retried later
      feed_active_ = false;
      NotifyWaitersLocked();
      continue;
    }
    return;
  }
}

Status StoreImpl::WaitDurable(Lock& lock, uint64_t seq) {
  if (!bg_error_.ok()) return bg_error_;
  if (durable_seq_ >= seq) return Status::Ok();
  // Woken by exactly the group that makes `seq` durable: no thundering herd.
  struct Waiter {
    std::mutex mu;
    std::condition_variable cv;
    bool done = false;
    Status status;
  } w;
  AddCompletionLocked(seq, [&w](const Status& s) {
    std::lock_guard<std::mutex> g(w.mu);
    w.status = s;
    w.done = true;
    w.cv.notify_one();
  });
  DoWorkLocked(lock);
  lock.unlock();
  {
    std::unique_lock<std::mutex> l(w.mu);
    w.cv.wait(l, [&w] { return w.done; });
  }
  lock.lock();
  return w.status;
}

void StoreImpl::TakeGroupLocked(std::string* batch, uint64_t* upto) {
  *batch = std::move(pending_);
  pending_ = std::move(spare_);
  pending_.clear();
  *upto = last_seq_;
  inflight_upto_ = last_seq_;
  inflight_completions_ = std::move(completions_);
  completions_.clear();
}

void StoreImpl::FinishGroupLocked(Lock& lock, uint64_t upto, std::string& batch) {
  batch.clear();
  if (spare_.capacity() < batch.capacity()) spare_ = std::move(batch);
  durable_seq_ = std::max(durable_seq_, upto);
  while (!undo_.empty() && undo_.front().seq <= durable_seq_) undo_.pop_front();
  ++group_commits_;
  std::vector<Completion> done = std::move(inflight_completions_);
  inflight_completions_.clear();
  leader_active_ = false;
  NotifyWaitersLocked();
  if (opt_.background && done.size() > 1 && (!pending_.empty() || !completions_.empty())) {
    // Another group is waiting: acknowledge this one on another thread, so that the next
    // group's write and sync start now rather than after every acknowledgement.
    auto acks = std::make_shared<std::vector<Completion>>(std::move(done));
    lock.unlock();
    opt_.background([acks] {
      for (Completion& c : *acks) c(Status::Ok());
    });
    lock.lock();
    return;
  }
  RunCompletions(lock, done, Status::Ok());
}

void StoreImpl::LeadGroup(Lock& lock, bool force_sync) {
  std::string batch;
  uint64_t upto = 0;
  TakeGroupLocked(&batch, &upto);
  const int64_t now_nanos = env_.clock().NowMonotonicNanos();
  const bool sync = force_sync || opt_.durability == Durability::kFsync ||
                    (opt_.durability == Durability::kInterval &&
                     now_nanos - last_sync_nanos_ >= opt_.sync_interval_ms * 1'000'000);
  const bool dirty = wal_unsynced_ || !batch.empty();
  const uint64_t wal_before = wal_->Size();
  lock.unlock();
  Status s;
  if (!batch.empty()) s = internal::record_log::AppendFrames(*wal_, batch);
  if (s.ok() && sync && dirty) s = wal_->Sync();
  const uint64_t wal_size = wal_->Size();
  lock.lock();
  if (!s.ok()) {
    // A full disk (or a failed sync): nothing of this group may count. Cut the WAL back and
    // undo the changes in memory, so the writes are refused with nothing changed and the next
    // ones are tried again, without a reopen.
    const Status error = UnavailableError(
        "the store could not write its WAL, the change was not made (retry later): " +
        s.ToString());
    if (UndoNotDurableLocked(lock, wal_before, error)) return;
    leader_active_ = false;
    FailLocked(lock,
               InternalError("store failed writing its WAL (reopen to recover): " + s.ToString()));
    return;
  }
  if (sync) {
    wal_unsynced_ = false;
    last_sync_nanos_ = now_nanos;
  } else if (dirty) {
    wal_unsynced_ = true;
  }
  wal_bytes_ = wal_size;
  if (wal_size >= opt_.checkpoint_wal_bytes) want_checkpoint_ = true;
  FinishGroupLocked(lock, upto, batch);
}

Status StoreImpl::AdmitLocked(Lock& lock, size_t record_bytes) {
  if (!bg_error_.ok()) return bg_error_;
  if (opt_.feed_log != nullptr && feed_queue_events_ >= opt_.feed_backlog_max_events) {
    while (feed_active_ && bg_error_.ok()) WaitForStateLocked(lock);
    DoWorkLocked(lock);
    if (feed_queue_events_ >= opt_.feed_backlog_max_events) {
      return UnavailableError(
          "the change feed is behind by " + std::to_string(feed_queue_events_) +
          " events; writes resume when it catches up (last error: " + feed_error_.ToString() + ")");
    }
  }
  while (!pending_.empty() && pending_.size() + record_bytes > opt_.commit_buffer_max_bytes) {
    if (!leader_active_) {
      leader_active_ = true;
      LeadGroup(lock, false);
    } else {
      WaitForStateLocked(lock);
    }
    if (!bg_error_.ok()) return bg_error_;
  }
  return Status::Ok();
}

Result<uint64_t> StoreImpl::NextSeqLocked() {
  const uint64_t seq = last_seq_ + 1;
  if (seq >= seq_reserved_) {
    // Reserve a block durably so that no sequence number is handed out twice, whatever a crash
    // loses (unsynced changes under kNone included).
    const uint64_t reserved = seq + kSeqReserveBlock;
    Status s = env_.fs().WriteFileAtomically(Path(kSeqFileName), std::to_string(reserved) + "\n");
    if (!s.ok()) return InternalError("reserving sequence numbers: " + s.ToString());
    seq_reserved_ = reserved;
  }
  last_seq_ = seq;
  return seq;
}

// ---------------------------------------------------------------------------------------
// The change feed

Status StoreImpl::PublishFeedLocked(Lock& lock) {
  std::vector<FeedTxn> txns;
  while (!feed_queue_.empty() && feed_queue_.front().seq <= durable_seq_) {
    txns.push_back(std::move(feed_queue_.front()));
    feed_queue_.pop_front();
  }
  if (txns.empty()) return Status::Ok();
  feed_inflight_first_seq_ = txns.front().seq;
  lock.unlock();
  size_t published = 0;
  Status s = PublishTxns(txns, &published);
  lock.lock();
  feed_inflight_first_seq_ = 0;
  for (size_t i = txns.size(); i > published; --i) feed_queue_.push_front(std::move(txns[i - 1]));
  for (size_t i = 0; i < published; ++i) feed_queue_events_ -= txns[i].ops.size();
  if (published > 0) feed_published_seq_ = std::max(feed_published_seq_, txns[published - 1].seq);
  feed_error_ = s;
  return s;
}

Status StoreImpl::PublishTxns(const std::vector<FeedTxn>& txns, size_t* published) {
  return PublishFeedTxns(opt_, txns, published);
}

Status StoreImpl::FlushFeed() {
  if (opt_.feed_log == nullptr) return Status::Ok();
  Lock lock(mu_);
  const uint64_t target = last_seq_;
  CONVERGE_RETURN_IF_ERROR(WaitDurable(lock, target));
  while (true) {
    if (!bg_error_.ok()) return bg_error_;
    if (feed_active_) {
      WaitForStateLocked(lock);
      continue;
    }
    if (feed_queue_.empty() || feed_queue_.front().seq > target) return Status::Ok();
    feed_active_ = true;
    Status s = PublishFeedLocked(lock);
    feed_active_ = false;
    NotifyWaitersLocked();
    if (!s.ok()) return s;
  }
}

}  // namespace converge::store_internal
