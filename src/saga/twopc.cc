// TwoPhaseCoordinator: phase 1 on the caller's thread, the commit decision group-committed to a
// RecordLog, phase 2 tried once inline and then by Recover (scheduled on the Env's executor).
#include "converge/twopc.h"

#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <set>
#include <unordered_set>

#include "converge/ids.h"
#include "saga/records.h"
#include "saga/saga_log.h"

namespace converge {
namespace {

using saga_internal::ByteReader;
using saga_internal::PutString;
using saga_internal::PutVarint;

// Decision-log payload types (11 and 12 are the RecordLog's compaction markers).
constexpr uint8_t kCommitType = 21;   // gid, branch participant names
constexpr uint8_t kEndType = 22;      // gid: phase 2 reached every branch
constexpr uint8_t kDecidedType = 23;  // gid: a completed commit kept for Decision (snapshots)

constexpr size_t kFlushPendingBytes = 1 << 20;

bool ValidCoordinatorId(std::string_view id) {
  if (id.empty() || id.size() > 32) return false;
  for (char c : id) {
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'))) return false;
  }
  return true;
}

std::string Frame(uint8_t type, std::string_view gid, const std::vector<std::string>* names) {
  std::string payload;
  payload.push_back(static_cast<char>(type));
  if (type != saga_internal::kBaseBeginType && type != saga_internal::kBaseEndType) {
    PutString(&payload, gid);
  }
  if (names != nullptr) {
    PutVarint(&payload, names->size());
    for (const std::string& n : *names) PutString(&payload, n);
  }
  std::string framed;
  saga_internal::AppendFrame(payload, &framed);
  return framed;
}

class CoordinatorImpl : public TwoPhaseCoordinator {
 public:
  struct Token {
    std::mutex mu;
    CoordinatorImpl* impl = nullptr;
  };

  CoordinatorImpl(Env& env, TwoPhaseOptions options)
      : env_(env),
        options_(std::move(options)),
        prefix_(options_.coordinator_id + "-"),
        ids_(env.clock(), env.random()),
        token_(std::make_shared<Token>()) {
    token_->impl = this;
  }

  ~CoordinatorImpl() override {
    {
      std::lock_guard<std::mutex> g(token_->mu);
      token_->impl = nullptr;
    }
    std::unique_lock<std::mutex> lock(mu_);
    while (syncing_) cv_.wait(lock);
    if (recover_armed_) env_.executor().Cancel(recover_timer_);
  }

  Status Init(std::vector<TxParticipant*> participants) {
    for (TxParticipant* p : participants) {
      if (p == nullptr) return InvalidArgumentError("two-phase commit: null participant");
      if (!by_name_.emplace(p->name(), p).second) {
        return InvalidArgumentError("two-phase commit: duplicate participant '" + p->name() + "'");
      }
    }
    saga_internal::RecordLogOptions lo;
    lo.dir = options_.dir;
    lo.file_prefix = "2pc-";
    auto replay = [this](std::string_view payload) -> Status { return Replay(payload); };
    CONVERGE_ASSIGN_OR_RETURN(log_, saga_internal::RecordLog::Open(env_, lo, replay, nullptr));
    return Status::Ok();
  }

  Result<TwoPhaseResult> Execute(std::span<const TwoPhaseBranch> branches) override {
    if (branches.empty() || branches.size() > options_.max_branches) {
      return InvalidArgumentError("two-phase commit: 1.." + std::to_string(options_.max_branches) +
                                  " branches");
    }
    std::vector<std::string> names;
    std::set<TxParticipant*> seen;
    for (const TwoPhaseBranch& b : branches) {
      if (b.participant == nullptr || by_name_.count(b.participant->name()) == 0 ||
          by_name_.at(b.participant->name()) != b.participant) {
        return InvalidArgumentError(
            "two-phase commit: a branch's participant was not registered "
            "at Open");
      }
      if (!seen.insert(b.participant).second) {
        return InvalidArgumentError("two-phase commit: participant '" + b.participant->name() +
                                    "' appears twice");
      }
      names.push_back(b.participant->name());
    }
    TwoPhaseResult result;
    result.gid = prefix_ + ids_.NextString();
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!log_failed_.ok()) return log_failed_;
      active_.insert(result.gid);
    }
    struct Unmark {
      CoordinatorImpl* self;
      std::string gid;  // a copy: `result` is moved out by the return
      ~Unmark() {
        std::lock_guard<std::mutex> lock(self->mu_);
        self->active_.erase(gid);
      }
    } unmark{this, result.gid};

    // Phase 1.
    const int64_t deadline_ns =
        env_.clock().NowMonotonicNanos() + options_.prepare_timeout_ms * 1'000'000;
    std::vector<TxParticipant*> touched;
    std::string abort_reason;
    for (const TwoPhaseBranch& b : branches) {
      const int64_t left_ms = (deadline_ns - env_.clock().NowMonotonicNanos()) / 1'000'000;
      if (left_ms <= 0) {
        abort_reason = "prepare timeout (" + std::to_string(options_.prepare_timeout_ms) + " ms)";
        break;
      }
      touched.push_back(b.participant);
      Status s = b.participant->Prepare(result.gid, b.work, left_ms);
      if (!s.ok()) {
        abort_reason = b.participant->name() + ": " + s.ToString();
        break;
      }
    }
    if (abort_reason.empty() && env_.clock().NowMonotonicNanos() > deadline_ns) {
      abort_reason = "prepare timeout (" + std::to_string(options_.prepare_timeout_ms) + " ms)";
    }
    if (abort_reason.empty()) CONVERGE_RETURN_IF_ERROR(Fault("prepared"));
    if (!abort_reason.empty()) {
      // Presumed abort: nothing is logged. A rollback that fails is left to Recover.
      for (TxParticipant* p : touched) p->RollbackPrepared(result.gid).IgnoreError();
      std::lock_guard<std::mutex> lock(mu_);
      ++stats_.aborted;
      result.outcome = TxOutcome::kAborted;
      result.reason = abort_reason;
      return result;
    }

    // The commit point.
    CONVERGE_RETURN_IF_ERROR(Append(Frame(kCommitType, result.gid, &names), true,
                                    [&] { pending_[result.gid] = names; }));
    CONVERGE_RETURN_IF_ERROR(Fault("decided"));
    result.outcome = TxOutcome::kCommitted;

    // Phase 2: one try each; what fails is finished by Recover.
    bool all = true;
    bool first = true;
    for (const TwoPhaseBranch& b : branches) {
      Status s = b.participant->CommitPrepared(result.gid);
      if (!s.ok()) {
        all = false;
        continue;
      }
      if (first) {
        first = false;
        CONVERGE_RETURN_IF_ERROR(Fault("committed-one"));
      }
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      ++stats_.committed;
    }
    if (all) {
      Finish(result.gid);
    } else {
      result.completed = false;
      ScheduleRecover();
    }
    return result;
  }

  Result<TwoPhaseRecovery> Recover() override {
    std::lock_guard<std::mutex> one(recover_mu_);
    std::map<std::string, std::vector<std::string>> pending;
    std::unordered_set<std::string> active;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!log_failed_.ok()) return log_failed_;
      pending = pending_;
      active = active_;
    }
    TwoPhaseRecovery rec;
    // In-doubt branches at every participant.
    for (auto& [name, p] : by_name_) {
      Result<std::vector<std::string>> prepared = p->ListPrepared(prefix_);
      if (!prepared.ok()) {
        ++rec.failed;
        continue;
      }
      for (const std::string& gid : *prepared) {
        if (active.count(gid)) continue;
        const bool committed = pending.count(gid) > 0 || IsRecentCommit(gid);
        Status s = committed ? p->CommitPrepared(gid) : p->RollbackPrepared(gid);
        if (!s.ok()) {
          ++rec.failed;
        } else if (committed) {
          ++rec.committed;
        } else {
          ++rec.rolled_back;
        }
      }
    }
    // Logged commits whose phase 2 did not reach every branch.
    for (const auto& [gid, names] : pending) {
      if (active.count(gid)) continue;
      bool all = true;
      for (const std::string& name : names) {
        auto it = by_name_.find(name);
        if (it == by_name_.end()) {
          all = false;  // a participant not registered now: cannot finish
          ++rec.failed;
          continue;
        }
        Status s = it->second->CommitPrepared(gid);
        if (!s.ok()) {
          all = false;
          ++rec.failed;
        }
      }
      if (all) Finish(gid);
    }
    if (rec.failed > 0) ScheduleRecover();
    return rec;
  }

  Result<TxOutcome> Decision(const std::string& gid) override {
    std::lock_guard<std::mutex> lock(mu_);
    if (active_.count(gid)) {
      return FailedPreconditionError("transaction '" + gid + "' is in flight");
    }
    if (pending_.count(gid) || recent_set_.count(gid)) return TxOutcome::kCommitted;
    return TxOutcome::kAborted;
  }

  TwoPhaseStats stats() override {
    std::lock_guard<std::mutex> lock(mu_);
    TwoPhaseStats s = stats_;
    s.in_doubt = pending_.size();
    return s;
  }

 private:
  Status Fault(std::string_view point) {
    if (!options_.fault_point) return Status::Ok();
    return options_.fault_point(point);
  }

  bool IsRecentCommit(const std::string& gid) {
    std::lock_guard<std::mutex> lock(mu_);
    return recent_set_.count(gid) > 0;
  }

  void RememberCommit(const std::string& gid) {
    if (!recent_set_.insert(gid).second) return;
    recent_.push_back(gid);
    while (recent_.size() > kRecentMax) {
      recent_set_.erase(recent_.front());
      recent_.pop_front();
    }
  }

  // Phase 2 reached every branch: an unsynced end record (losing it repeats idempotent commits).
  void Finish(const std::string& gid) {
    Append(Frame(kEndType, gid, nullptr), false, [&] {
      pending_.erase(gid);
      RememberCommit(gid);
    }).IgnoreError();
  }

  Status Replay(std::string_view payload) {
    ByteReader in(payload);
    uint8_t type = 0;
    if (!in.U8(&type)) return DataLossError("decision log: empty record");
    if (type == saga_internal::kBaseBeginType || type == saga_internal::kBaseEndType) {
      return Status::Ok();
    }
    std::string_view gid;
    if (!in.String(&gid)) return DataLossError("decision log: malformed record");
    if (type == kCommitType) {
      uint64_t n = 0;
      if (!in.Varint(&n) || n > 1024) return DataLossError("decision log: malformed commit");
      std::vector<std::string> names;
      for (uint64_t i = 0; i < n; ++i) {
        std::string_view name;
        if (!in.String(&name)) return DataLossError("decision log: malformed commit");
        names.emplace_back(name);
      }
      pending_[std::string(gid)] = std::move(names);
    } else if (type == kEndType) {
      pending_.erase(std::string(gid));
      RememberCommit(std::string(gid));
    } else if (type == kDecidedType) {
      RememberCommit(std::string(gid));
    } else {
      return DataLossError("decision log: unknown record type");
    }
    return Status::Ok();
  }

  // Appends a record and applies `apply` to the state (under mu_). With `sync`, returns once
  // the record is durable; concurrent callers share one sync.
  template <typename Fn>
  Status Append(std::string framed, bool sync, Fn apply) {
    std::unique_lock<std::mutex> lock(mu_);
    if (!log_failed_.ok()) return log_failed_;
    unwritten_ += framed;
    apply();
    const uint64_t mine = ++appended_seq_;
    if (!sync && unwritten_.size() < kFlushPendingBytes) return Status::Ok();
    while (synced_seq_ < mine) {
      if (!log_failed_.ok()) return log_failed_;
      if (syncing_) {
        cv_.wait(lock);
        continue;
      }
      syncing_ = true;
      std::string batch;
      batch.swap(unwritten_);
      const uint64_t upto = appended_seq_;
      lock.unlock();
      Status s = log_->Append(batch);
      if (s.ok()) s = log_->Sync();
      if (s.ok() && log_->bytes_since_base() > options_.log_compact_after_bytes) {
        s = Compact();
      }
      lock.lock();
      syncing_ = false;
      if (s.ok()) {
        synced_seq_ = upto;
        ++stats_.syncs;
      } else {
        log_failed_ = s.WithContext("decision log");
      }
      cv_.notify_all();
    }
    return Status::Ok();
  }

  // Called by the syncing leader: the log becomes a snapshot of the state.
  Status Compact() {
    std::string base = Frame(saga_internal::kBaseBeginType, "", nullptr);
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (const std::string& gid : recent_) base += Frame(kDecidedType, gid, nullptr);
      for (const auto& [gid, names] : pending_) base += Frame(kCommitType, gid, &names);
    }
    base += Frame(saga_internal::kBaseEndType, "", nullptr);
    return log_->Rebase(base);
  }

  void ScheduleRecover() {
    std::lock_guard<std::mutex> lock(mu_);
    if (recover_armed_) return;
    recover_armed_ = true;
    const int64_t delay_ms = std::max<int64_t>(options_.complete_retry.base_delay_ms, 1);
    std::weak_ptr<Token> weak = token_;
    recover_timer_ = env_.executor().Schedule(delay_ms * 1'000'000, [weak] {
      if (auto t = weak.lock()) {
        std::lock_guard<std::mutex> g(t->mu);
        if (t->impl == nullptr) return;
        {
          std::lock_guard<std::mutex> lock(t->impl->mu_);
          t->impl->recover_armed_ = false;
        }
        t->impl->Recover().status().IgnoreError();
      }
    });
  }

  static constexpr size_t kRecentMax = 100'000;

  Env& env_;
  TwoPhaseOptions options_;
  const std::string prefix_;
  std::map<std::string, TxParticipant*> by_name_;
  UuidV7Generator ids_;

  std::mutex mu_;
  std::condition_variable cv_;
  std::unique_ptr<saga_internal::RecordLog> log_;
  std::string unwritten_;
  uint64_t appended_seq_ = 0;
  uint64_t synced_seq_ = 0;
  bool syncing_ = false;
  Status log_failed_;
  std::map<std::string, std::vector<std::string>> pending_;  // committed, phase 2 not finished
  std::deque<std::string> recent_;                           // completed commits, oldest first
  std::unordered_set<std::string> recent_set_;
  std::unordered_set<std::string> active_;
  TwoPhaseStats stats_;
  bool recover_armed_ = false;
  TimerId recover_timer_ = 0;

  std::mutex recover_mu_;  // one Recover at a time
  std::shared_ptr<Token> token_;
};

}  // namespace

Result<std::unique_ptr<TwoPhaseCoordinator>> TwoPhaseCoordinator::Open(
    Env& env, TwoPhaseOptions options, std::vector<TxParticipant*> participants) {
  if (options.dir.empty()) return InvalidArgumentError("two-phase commit: dir is required");
  if (!ValidCoordinatorId(options.coordinator_id)) {
    return InvalidArgumentError("two-phase commit: coordinator_id must be 1..32 of [a-z0-9]");
  }
  if (options.prepare_timeout_ms < 1 || options.max_branches < 1) {
    return InvalidArgumentError(
        "two-phase commit: prepare_timeout_ms and max_branches must be > 0");
  }
  CONVERGE_RETURN_IF_ERROR(options.complete_retry.Validate());
  auto impl = std::make_unique<CoordinatorImpl>(env, std::move(options));
  CONVERGE_RETURN_IF_ERROR(impl->Init(std::move(participants)));
  impl->Recover().status().IgnoreError();
  return std::unique_ptr<TwoPhaseCoordinator>(std::move(impl));
}

}  // namespace converge
