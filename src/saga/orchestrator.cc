// SagaOrchestrator: the runtime around SagaMachine. One batch at a time (leader/follower, like
// the log's group commit): take the queued requests, read replies, fire due timers, make the
// resulting records durable with one sync, then send the commands and arm the next timer.
#include <boost/json.hpp>
#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <set>

#include "converge/ids.h"
#include "converge/saga.h"
#include "saga/machine.h"
#include "saga/messages.h"
#include "saga/saga_log.h"

namespace converge {
namespace {

using saga_internal::MachineOutput;
using saga_internal::SagaMachine;

// After a batch that could not be written, replies and timers are tried again this much later.
constexpr int64_t kRetryAfterWriteErrorMicros = 1'000'000;

struct Waiter {
  bool done = false;
  Status status;
  std::string id;
};

struct Request {
  enum class Kind : uint8_t { kStart, kCancel, kRegister, kReschedule, kCancelTimer };
  Kind kind = Kind::kStart;
  SagaStartRequest start;
  std::string id;
  std::string reason;
  SagaDefinition def;
  SagaTimerKind timer_kind = SagaTimerKind::kStepTimeout;
  int64_t due = 0;
  // Exactly one of these reports the outcome.
  Waiter* waiter = nullptr;  // set under mu_
  std::function<void(Status, const std::string&)> callback;
  // Filled by the batch.
  Status status;
  std::string result_id;
};

}  // namespace

Status ValidateSagaOrchestratorOptions(const SagaOrchestratorOptions& o) {
  if (o.dir.empty() && o.postgres_conninfo.empty()) {
    return InvalidArgumentError("saga orchestrator: dir (or postgres_conninfo) is required");
  }
  if (o.reply_topic.empty())
    return InvalidArgumentError("saga orchestrator: reply_topic is required");
  if (o.postgres_connect_timeout_ms <= 0 || o.postgres_statement_timeout_ms < 0) {
    return InvalidArgumentError(
        "saga orchestrator: postgres_connect_timeout_ms must be > 0 and "
        "postgres_statement_timeout_ms >= 0");
  }
  if (o.max_in_flight == 0 || o.max_queued_inputs == 0 || o.batch_max_inputs == 0 ||
      o.reply_read_max_records == 0 || o.segment_max_bytes == 0 || o.compact_after_bytes == 0) {
    return InvalidArgumentError(
        "saga orchestrator: max_in_flight, max_queued_inputs, batch_max_inputs, "
        "reply_read_max_records, segment_max_bytes and compact_after_bytes must be > 0");
  }
  if (o.finished_retain_ms < 0) {
    return InvalidArgumentError("saga orchestrator: finished_retain_ms must be >= 0");
  }
  if (o.max_attempt_timeout_ms < 1 || o.max_attempt_timeout_ms > SagaLimits::kMaxTimeoutMs) {
    return InvalidArgumentError("saga orchestrator: max_attempt_timeout_ms must be in [1, " +
                                std::to_string(SagaLimits::kMaxTimeoutMs) + "]");
  }
  // Open creates the reply topic with topic_options (and command topics on demand): a name or
  // options the log would refuse must fail here.
  if (Status s = ValidateTopicName(o.reply_topic); !s.ok()) {
    return InvalidArgumentError("saga orchestrator: reply_topic: " + std::string(s.message()));
  }
  if (Status s = ValidateTopicOptions(o.topic_options); !s.ok()) {
    return InvalidArgumentError("saga orchestrator: topic_options: " + std::string(s.message()));
  }
  return Status::Ok();
}

namespace {

Status ValidateData(std::string_view data, uint32_t max_bytes) {
  if (data.size() > max_bytes) {
    return InvalidArgumentError("saga data has " + std::to_string(data.size()) +
                                " bytes, more than max_data_bytes (" + std::to_string(max_bytes) +
                                ")");
  }
  if (data.empty()) return Status::Ok();
  boost::system::error_code ec;
  boost::json::parse(data, ec);
  if (ec) return InvalidArgumentError("saga data must be one JSON value: " + ec.message());
  return Status::Ok();
}

class OrchestratorImpl : public SagaOrchestrator {
 public:
  struct Token {
    std::mutex mu;
    OrchestratorImpl* impl = nullptr;
  };

  OrchestratorImpl(Env& env, Log& log, SagaOrchestratorOptions options)
      : env_(env),
        log_(log),
        options_(std::move(options)),
        executor_(options_.executor ? *options_.executor : env.executor()),
        machine_(NewMachine()),
        ids_(env.clock(), env.random()),
        token_(std::make_shared<Token>()) {
    token_->impl = this;
  }

  ~OrchestratorImpl() override {
    Close();
    std::lock_guard<std::mutex> g(token_->mu);
    token_->impl = nullptr;
  }

  std::unique_ptr<SagaMachine> NewMachine() {
    return std::make_unique<SagaMachine>(
        env_.random(),
        saga_internal::MachineOptions{options_.history_max_entries, options_.finished_retain_max,
                                      options_.finished_retain_ms, options_.max_in_flight,
                                      options_.max_data_bytes, options_.max_attempt_timeout_ms,
                                      /*report_steps=*/options_.on_step_finished != nullptr});
  }

  Status Stopped() override {
    std::lock_guard<std::mutex> lock(mu_);
    return failed_;
  }

  Status Health() override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!failed_.ok()) return failed_;
    }
    std::lock_guard<std::mutex> g(state_mu_);
    if (write_error_.ok()) return Status::Ok();
    // The last batch could not be written (and was undone). Ready again once the saga log's
    // directory takes a write: probe it as the next batch would use it.
    if (options_.postgres_conninfo.empty()) {
      FileSystem& fs = env_.fs();
      const std::string probe = options_.dir + "/probe.tmp";
      Status s;
      {
        Result<std::unique_ptr<WritableFile>> f = fs.NewWritableFile(probe, OpenMode::kTruncate);
        s = f.status();
        if (s.ok()) s = (*f)->Append(std::string(4096, '\0'));
        if (s.ok()) s = (*f)->Sync();
        if (f.ok()) (*f)->Close().IgnoreError();
      }
      fs.DeleteFile(probe).IgnoreError();
      if (s.ok()) {
        write_error_ = Status::Ok();
        return s;
      }
    }
    return UnavailableError("the saga log cannot write: " + write_error_.ToString() +
                            " (the batch was undone; sagas work again once it can)");
  }

  Status Init() {
    saga_internal::RecordLogOptions lo;
    lo.dir = options_.dir;
    lo.file_prefix = "saga-";
    lo.segment_max_bytes = options_.segment_max_bytes;
    saga_internal::RecordLogRecovery rec;
    {
      std::lock_guard<std::mutex> g(state_mu_);
      auto replay = [this](std::string_view payload) -> Status {
        Result<saga_internal::RecordView> r = saga_internal::DecodePayload(payload);
        if (!r.ok()) return r.status();  // DataLoss: damage from here on
        // A record that does not fit the state is reported and skipped.
        if (!machine_->Replay(*r).ok()) ++replay_errors_;
        return Status::Ok();
      };
      if (options_.postgres_conninfo.empty()) {
        auto opened = saga_internal::RecordLog::Open(env_, lo, replay, &rec);
        // Every repair and damage is told, also when it stops the start.
        if (options_.report_recovery) {
          for (const std::string& line : rec.reports) options_.report_recovery(line);
        }
        log_damaged_segments_ = rec.damaged_segments;
        log_truncated_bytes_ = rec.truncated_bytes;
        if (!opened.ok()) return opened.status();
        wal_ = std::move(*opened);
      } else {
        saga_internal::PostgresRecordStoreOptions po;
        po.conninfo = options_.postgres_conninfo;
        po.table = options_.postgres_table;
        po.connect_timeout_ms = options_.postgres_connect_timeout_ms;
        po.statement_timeout_ms = options_.postgres_statement_timeout_ms;
        CONVERGE_ASSIGN_OR_RETURN(wal_, saga_internal::NewPostgresRecordStore(po, replay));
      }
    }
    Status created = log_.CreateTopic(options_.reply_topic, options_.topic_options);
    if (!created.ok() && created.code() != StatusCode::kAlreadyExists) return created;
    CONVERGE_ASSIGN_OR_RETURN(TopicInfo info, log_.DescribeTopic(options_.reply_topic));
    for (const PartitionInfo& p : info.partitions) reply_offsets_.push_back(p.end_offset);
    known_topics_.insert(options_.reply_topic);
    // Resume: the first batch resends outstanding commands and arms the timers.
    {
      std::lock_guard<std::mutex> g(state_mu_);
      out_.Clear();
      // The key of the reply tokens first, so that the commands sent again carry tokens.
      machine_->EnsureReplyKey(env_.clock().NowWallMicros(), &out_);
      // Participant topics exist from the registration on (a participant may subscribe before
      // the first command); definitions registered by an older version get theirs here.
      for (const SagaDefinition& d : machine_->Definitions()) CreateParticipantTopics(d);
      machine_->Resume(env_.clock().NowWallMicros(), &out_);
      if (out_.records > 0) {
        CONVERGE_RETURN_IF_ERROR(wal_->Append(out_.wal));
        CONVERGE_RETURN_IF_ERROR(wal_->Sync());
      }
      SendCommands();
      ArmTimer();
    }
    OrchestratorImpl* self = this;
    CONVERGE_ASSIGN_OR_RETURN(
        watch_,
        log_.WatchAppends(options_.reply_topic, [self](uint32_t, uint64_t) { self->Wake(false); }));
    return Status::Ok();
  }

  // ---- API ----

  Status RegisterDefinition(const SagaDefinition& definition) override {
    CONVERGE_RETURN_IF_ERROR(definition.Validate());
    auto req = std::make_unique<Request>();
    req->kind = Request::Kind::kRegister;
    req->def = definition;
    return SubmitAndWait(std::move(req)).status();
  }

  std::vector<SagaDefinition> ListDefinitions() override {
    std::lock_guard<std::mutex> g(state_mu_);
    return machine_->Definitions();
  }

  Result<std::string> Start(const SagaStartRequest& request) override {
    CONVERGE_RETURN_IF_ERROR(ValidateData(request.data, options_.max_data_bytes));
    auto req = std::make_unique<Request>();
    req->kind = Request::Kind::kStart;
    req->start = request;
    return SubmitAndWait(std::move(req));
  }

  void StartAsync(const SagaStartRequest& request, StartCallback done) override {
    Status valid = ValidateData(request.data, options_.max_data_bytes);
    if (!valid.ok()) {
      done(valid);
      return;
    }
    auto req = std::make_unique<Request>();
    req->kind = Request::Kind::kStart;
    req->start = request;
    req->callback = [done = std::move(done)](Status s, const std::string& id) {
      if (s.ok()) {
        done(id);
      } else {
        done(s);
      }
    };
    SubmitAsync(std::move(req));
  }

  Status Cancel(const std::string& id, const std::string& reason) override {
    auto req = std::make_unique<Request>();
    req->kind = Request::Kind::kCancel;
    req->id = id;
    req->reason = reason;
    return SubmitAndWait(std::move(req)).status();
  }

  void CancelAsync(const std::string& id, const std::string& reason, DoneCallback done) override {
    auto req = std::make_unique<Request>();
    req->kind = Request::Kind::kCancel;
    req->id = id;
    req->reason = reason;
    req->callback = [done = std::move(done)](Status s, const std::string&) { done(s); };
    SubmitAsync(std::move(req));
  }

  std::vector<SagaTimerInfo> ListTimers(size_t limit) override {
    std::lock_guard<std::mutex> g(state_mu_);
    return machine_->Timers(limit);
  }

  Status RescheduleTimer(const std::string& id, SagaTimerKind kind, int64_t due_micros) override {
    auto req = std::make_unique<Request>();
    req->kind = Request::Kind::kReschedule;
    req->id = id;
    req->timer_kind = kind;
    req->due = due_micros;
    return SubmitAndWait(std::move(req)).status();
  }

  Status CancelTimer(const std::string& id, SagaTimerKind kind) override {
    auto req = std::make_unique<Request>();
    req->kind = Request::Kind::kCancelTimer;
    req->id = id;
    req->timer_kind = kind;
    return SubmitAndWait(std::move(req)).status();
  }

  Result<SagaInfo> Describe(const std::string& id) override {
    std::lock_guard<std::mutex> g(state_mu_);
    return machine_->Describe(id);
  }

  std::vector<SagaSummary> List(const SagaListFilter& filter) override {
    std::lock_guard<std::mutex> g(state_mu_);
    return machine_->List(filter, env_.clock().NowWallMicros());
  }

  SagaOrchestratorStats stats() override {
    std::lock_guard<std::mutex> g(state_mu_);
    SagaOrchestratorStats s = stats_;
    const saga_internal::MachineStats& m = machine_->stats();
    s.started = m.started;
    s.completed = m.completed;
    s.compensated = m.compensated;
    s.failed = m.failed;
    s.replies = m.replies;
    s.replies_ignored = m.replies_ignored;
    s.timeouts = m.timeouts;
    s.in_flight = machine_->in_flight();
    s.log_bytes = wal_ ? wal_->total_bytes() : 0;
    s.send_errors = stats_send_errors_;
    s.read_errors = stats_read_errors_;
    s.bad_replies = bad_replies_;
    using saga_internal::ReplyRejection;
    s.replies_stale = m.rejected[static_cast<size_t>(ReplyRejection::kStale)];
    s.replies_unknown_saga = m.rejected[static_cast<size_t>(ReplyRejection::kUnknownSaga)];
    s.replies_bad_token = m.rejected[static_cast<size_t>(ReplyRejection::kBadToken)];
    s.replies_malformed = m.rejected[static_cast<size_t>(ReplyRejection::kMalformed)];
    s.replay_errors = replay_errors_;
    s.log_damaged_segments = log_damaged_segments_;
    s.log_truncated_bytes = log_truncated_bytes_;
    return s;
  }

  Result<size_t> RunOnce() override {
    std::unique_lock<std::mutex> lock(mu_);
    if (closed_) return FailedPreconditionError("saga orchestrator is closed");
    if (!failed_.ok()) return failed_;
    if (pumping_) return size_t{0};
    more_work_ = true;
    pumping_ = true;
    const size_t n = OneBatch(lock);
    pumping_ = false;
    cv_.notify_all();
    if (!failed_.ok()) return failed_;
    if (!queue_.empty() || more_work_) SchedulePumpLocked();
    return n;
  }

  void Close() override {
    std::deque<std::unique_ptr<Request>> dropped;
    {
      std::unique_lock<std::mutex> lock(mu_);
      if (closed_) return;
      closed_ = true;
      while (pumping_) cv_.wait(lock);
      dropped.swap(queue_);
      for (auto& r : dropped) {
        if (r->waiter != nullptr) {
          r->waiter->done = true;
          r->waiter->status = CancelledError("saga orchestrator closed");
        }
      }
      cv_.notify_all();
    }
    for (auto& r : dropped) {
      if (r->callback) r->callback(CancelledError("saga orchestrator closed"), "");
    }
    watch_.reset();
    if (timer_armed_) {
      executor_.Cancel(timer_id_);
      timer_armed_ = false;
    }
  }

 private:
  // ---- queueing and leadership ----

  Status Admit(std::unique_lock<std::mutex>& lock) {
    if (closed_) return FailedPreconditionError("saga orchestrator is closed");
    if (!failed_.ok()) return failed_;
    if (queue_.size() >= options_.max_queued_inputs) {
      return ResourceExhaustedError("saga orchestrator: max_queued_inputs (" +
                                    std::to_string(options_.max_queued_inputs) +
                                    ") requests are waiting");
    }
    return Status::Ok();
  }

  Result<std::string> SubmitAndWait(std::unique_ptr<Request> req) {
    Waiter w;
    std::unique_lock<std::mutex> lock(mu_);
    CONVERGE_RETURN_IF_ERROR(Admit(lock));
    req->waiter = &w;
    queue_.push_back(std::move(req));
    while (!w.done) {
      if (!pumping_ && !closed_) {
        Lead(lock, &w);
      } else {
        cv_.wait(lock);
      }
    }
    if (!w.status.ok()) return w.status;
    return w.id;
  }

  void SubmitAsync(std::unique_ptr<Request> req) {
    Status admitted;
    {
      std::unique_lock<std::mutex> lock(mu_);
      admitted = Admit(lock);
      if (admitted.ok()) {
        queue_.push_back(std::move(req));
        SchedulePumpLocked();
        return;
      }
    }
    req->callback(admitted, "");
  }

  // From the reply watch (any thread) or the timer.
  void Wake(bool timer) {
    std::lock_guard<std::mutex> lock(mu_);
    more_work_ = true;
    if (timer) timer_fired_ = true;
    SchedulePumpLocked();
  }

  void SchedulePumpLocked() {
    if (closed_ || pump_posted_ || pumping_ || !failed_.ok()) return;
    pump_posted_ = true;
    std::weak_ptr<Token> weak = token_;
    executor_.Post([weak] {
      if (auto t = weak.lock()) {
        std::lock_guard<std::mutex> g(t->mu);
        if (t->impl != nullptr) t->impl->PumpTask();
      }
    });
  }

  void PumpTask() {
    std::unique_lock<std::mutex> lock(mu_);
    pump_posted_ = false;
    if (pumping_ || closed_) return;
    Lead(lock, nullptr);
  }

  // Runs batches while there is work; a caller waiting for its own request stops once it is
  // done and leaves the rest to the executor (or to another waiting caller).
  void Lead(std::unique_lock<std::mutex>& lock, Waiter* mine) {
    pumping_ = true;
    int rounds = 0;
    while (!closed_ && failed_.ok() && (!queue_.empty() || more_work_)) {
      OneBatch(lock);
      if (mine != nullptr && mine->done) break;
      if (mine == nullptr && ++rounds >= 8) break;  // let other executor work run
    }
    pumping_ = false;
    cv_.notify_all();
    if (!queue_.empty() || more_work_) SchedulePumpLocked();
  }

  // One batch; called with mu_ held and pumping_ set. Returns the inputs handled.
  size_t OneBatch(std::unique_lock<std::mutex>& lock) {
    std::vector<std::unique_ptr<Request>> reqs;
    const size_t take = std::min<size_t>(queue_.size(), options_.batch_max_inputs);
    reqs.reserve(take);
    for (size_t i = 0; i < take; ++i) {
      reqs.push_back(std::move(queue_.front()));
      queue_.pop_front();
    }
    more_work_ = false;
    const bool timer_fired = timer_fired_;
    timer_fired_ = false;
    lock.unlock();

    size_t handled = 0;
    Status failure = RunBatch(reqs, timer_fired, &handled);
    Status fatal;
    {
      std::lock_guard<std::mutex> g(state_mu_);
      fatal = fatal_;
    }

    // Callbacks outside the lock.
    for (auto& r : reqs) {
      if (r->callback) {
        r->callback(failure.ok() ? r->status : failure, r->result_id);
      }
    }
    if (failure.ok() && options_.on_finished) {
      for (const SagaSummary& s : finished_) options_.on_finished(s);
    }
    finished_.clear();
    if (failure.ok() && options_.on_step_finished) {
      for (const SagaStepOutcome& o : steps_settled_) options_.on_step_finished(o);
    }
    steps_settled_.clear();

    lock.lock();
    if (!fatal.ok() && failed_.ok()) failed_ = fatal;
    for (auto& r : reqs) {
      if (r->waiter != nullptr) {
        r->waiter->done = true;
        r->waiter->status = failure.ok() ? r->status : failure;
        r->waiter->id = r->result_id;
      }
    }
    if (!failed_.ok()) {
      // Nothing more can be made durable: fail whatever waits.
      std::deque<std::unique_ptr<Request>> rest;
      rest.swap(queue_);
      for (auto& r : rest) {
        if (r->waiter != nullptr) {
          r->waiter->done = true;
          r->waiter->status = failed_;
        } else if (r->callback) {
          Status s = failed_;
          lock.unlock();
          r->callback(s, "");
          lock.lock();
        }
      }
    }
    if (read_more_) more_work_ = true;
    cv_.notify_all();
    return handled;
  }

  // ---- the batch ----

  Status RunBatch(std::vector<std::unique_ptr<Request>>& reqs, bool timer_fired, size_t* handled) {
    std::lock_guard<std::mutex> g(state_mu_);
    out_.Clear();
    registered_.clear();
    const int64_t now = env_.clock().NowWallMicros();
    // Where the batch started reading replies: a batch that cannot be written reads them again.
    const std::vector<uint64_t> reply_offsets_before = reply_offsets_;
    const saga_internal::MachineStats stats_before = machine_->stats();
    for (auto& r : reqs) HandleRequest(*r, now);
    *handled = reqs.size() + ReadReplies(now);
    *handled += machine_->Tick(now, &out_);
    if (timer_fired) timer_armed_ = false;
    ++stats_.batches;
    if (out_.records > 0) {
      Status s = wal_->Append(out_.wal);
      if (s.ok()) s = wal_->Sync();
      if (!s.ok()) return UndoBatch(s, reply_offsets_before, stats_before, now);
      ++stats_.syncs;
      write_error_ = Status::Ok();
    }
    SendCommands();
    for (const SagaDefinition* d : registered_) CreateParticipantTopics(*d);
    registered_.clear();
    if (wal_->bytes_since_base() > options_.compact_after_bytes) {
      std::string base;
      machine_->Snapshot(now, &base);
      Status s = wal_->Rebase(base);
      if (s.ok()) {
        ++stats_.compactions;
      } else {
        // The batch is durable already (its requests succeed); the compaction is tried again
        // after the next batch. Only the unfinished snapshot is removed.
        write_error_ = s;
        Status undone = wal_->UndoUnsynced();
        if (!undone.ok()) {
          fatal_ = UnavailableError("saga orchestrator stopped: a saga log compaction failed (" +
                                    s.ToString() +
                                    ") and removing the unfinished snapshot failed too (" +
                                    undone.ToString() + "); restart the server to resume sagas");
        }
      }
    }
    ArmTimer();
    finished_.swap(out_.finished);
    steps_settled_.swap(out_.steps);
    return Status::Ok();
  }

  // The batch could not be made durable: nothing of it may stay. Cuts the saga log back to
  // where the batch began, rebuilds the machine from the durable records (event sourcing:
  // they are exactly the state before the batch), reads the batch's replies again later and
  // fails its requests with a retryable Unavailable. If that is not possible the orchestrator
  // stops (fatal_): its memory would be ahead of its log.
  Status UndoBatch(const Status& write, const std::vector<uint64_t>& reply_offsets_before,
                   const saga_internal::MachineStats& stats_before, int64_t now) {
    ++stats_.write_errors;
    write_error_ = write;
    Status undone = wal_->UndoUnsynced();
    if (undone.ok()) undone = RebuildMachine(stats_before);
    if (!undone.ok()) {
      fatal_ = UnavailableError("saga orchestrator stopped: the saga log could not be written (" +
                                write.ToString() + ") and undoing the batch failed (" +
                                undone.ToString() + "); restart the server to resume sagas");
      return fatal_;
    }
    reply_offsets_ = reply_offsets_before;
    read_more_ = false;
    registered_.clear();
    out_.Clear();
    // Retry the replies and due timers in a second (not at once: the disk is likely full).
    if (timer_armed_) {
      executor_.Cancel(timer_id_);
      timer_armed_ = false;
    }
    ArmTimer(now + kRetryAfterWriteErrorMicros);
    return UnavailableError("the saga log could not be written (" + write.ToString() +
                            "); nothing was changed; retry later");
  }

  Status RebuildMachine(const saga_internal::MachineStats& stats) {
    std::unique_ptr<SagaMachine> fresh = NewMachine();
    Status replayed = wal_->ReplayDurable([&fresh](std::string_view payload) -> Status {
      Result<saga_internal::RecordView> r = saga_internal::DecodePayload(payload);
      if (!r.ok()) return r.status();
      // A record that did not fit was reported (replay_errors) when the log was opened.
      fresh->Replay(*r).IgnoreError();
      return Status::Ok();
    });
    CONVERGE_RETURN_IF_ERROR(replayed);
    // Counters go on from where they were before the batch (they count since the start of
    // the process, and the batch did not happen).
    fresh->mutable_stats() = stats;
    machine_ = std::move(fresh);
    return Status::Ok();
  }

  void HandleRequest(Request& r, int64_t now) {
    switch (r.kind) {
      case Request::Kind::kStart: {
        if (r.start.id.empty()) r.start.id = ids_.NextString();
        Result<std::string> id = machine_->Start(r.start, now, &out_);
        r.status = id.status();
        if (id.ok()) r.result_id = *id;
        break;
      }
      case Request::Kind::kCancel:
        r.status = machine_->Cancel(r.id, r.reason, now, &out_);
        break;
      case Request::Kind::kRegister:
        r.status = machine_->AddDefinition(r.def, now, &out_);
        // Its topics are created once the registration is durable.
        if (r.status.ok()) registered_.push_back(&r.def);
        break;
      case Request::Kind::kReschedule:
        r.status = machine_->RescheduleTimer(r.id, r.timer_kind, r.due, now, &out_);
        break;
      case Request::Kind::kCancelTimer:
        r.status = machine_->CancelTimer(r.id, r.timer_kind, now, &out_);
        break;
    }
  }

  // Reads up to reply_read_max_records replies per partition (a read may return fewer records
  // than are there, e.g. at a segment boundary: read until empty or the bound).
  size_t ReadReplies(int64_t now) {
    read_more_ = false;
    size_t n = 0;
    for (uint32_t p = 0; p < reply_offsets_.size(); ++p) {
      size_t budget = options_.reply_read_max_records;
      while (budget > 0) {
        Result<ReadBatch> batch =
            log_.Read(options_.reply_topic, p, reply_offsets_[p], budget, budget * 1024);
        if (!batch.ok()) {
          if (std::optional<uint64_t> resume = DataLossResumeOffset(batch.status())) {
            reply_offsets_[p] = *resume;
            read_more_ = true;
          }
          ++stats_read_errors_;
          break;
        }
        if (batch->records.empty()) break;
        for (const StoredRecord& rec : batch->records) {
          HandleReplyRecord(rec.value, now);
          ++n;
        }
        reply_offsets_[p] = batch->next_offset;
        budget -= std::min(budget, batch->records.size());
      }
      if (budget == 0) read_more_ = true;
    }
    return n;
  }

  // One record of the reply topic. Nothing is dropped silently: a reply that is not used is
  // counted by reason and, when it names a saga, recorded in that saga's history.
  void HandleReplyRecord(std::string_view value, int64_t now) {
    using saga_internal::ReplyRejection;
    Result<SagaReply> reply = saga_internal::DecodeReply(value);
    if (!reply.ok()) {
      std::optional<std::string> id = saga_internal::ReplySagaId(value);
      if (!id) {
        ++bad_replies_;  // not a saga reply at all: no saga to tell
        return;
      }
      ++bad_replies_;
      machine_->RejectReply(*id, std::nullopt, SagaCommandKind::kAction, 0,
                            ReplyRejection::kMalformed, reply.status().message(), now, &out_);
      return;
    }
    std::string why;
    if (!machine_->ReplyAuthentic(*reply, &why)) {
      machine_->RejectReply(reply->saga_id, reply->step, reply->kind, reply->attempt,
                            ReplyRejection::kBadToken, why, now, &out_);
      return;
    }
    machine_->OnReply(*reply, now, &out_);
  }

  // Creates a topic the orchestrator sends commands to, once per process.
  Status EnsureTopic(const std::string& name) {
    if (known_topics_.count(name) != 0) return Status::Ok();
    Status s = log_.CreateTopic(name, options_.topic_options);
    if (!s.ok() && s.code() != StatusCode::kAlreadyExists) return s;
    known_topics_.insert(name);
    return Status::Ok();
  }

  void CreateParticipantTopics(const SagaDefinition& d) {
    for (const SagaStepDefinition& step : d.steps) {
      // A failure is counted; the topic is created again before the first command to it.
      if (!EnsureTopic(step.participant).ok()) ++stats_send_errors_;
    }
  }

  void SendCommands() {
    if (out_.commands.empty()) return;
    // Encode every command into one buffer, then append per topic in one call each.
    encoded_.clear();
    std::vector<std::pair<size_t, size_t>> spans;
    spans.reserve(out_.commands.size());
    for (const saga_internal::OutCommand& c : out_.commands) {
      const size_t at = encoded_.size();
      saga_internal::EncodeCommand(c, options_.source, options_.reply_topic, &encoded_);
      spans.emplace_back(at, encoded_.size() - at);
    }
    std::map<std::string_view, std::vector<RecordView>> by_topic;
    for (size_t i = 0; i < out_.commands.size(); ++i) {
      const saga_internal::OutCommand& c = out_.commands[i];
      RecordView v;
      v.key = c.saga_id;
      v.value = std::string_view(encoded_).substr(spans[i].first, spans[i].second);
      by_topic[c.def->steps[c.step].participant].push_back(v);
    }
    for (auto& [topic, views] : by_topic) {
      const std::string name(topic);
      if (!EnsureTopic(name).ok()) {
        ++stats_send_errors_;
        continue;
      }
      Result<std::vector<AppendResult>> r = log_.Append(name, views);
      if (r.ok()) {
        stats_.commands_sent += views.size();
      } else {
        // Lost commands are sent again when their step times out.
        ++stats_send_errors_;
        last_send_error_ = r.status();
      }
    }
  }

  // Arms the executor timer for the machine's next due time, not before `not_before` (a retry
  // after a failed write; then armed even without a due time, to read replies again).
  void ArmTimer(int64_t not_before = 0) {
    std::optional<int64_t> due = machine_->next_due();
    if (not_before > 0) due = std::max(due.value_or(not_before), not_before);
    if (!due) return;
    if (timer_armed_ && armed_due_ <= *due) return;
    if (timer_armed_) {
      executor_.Cancel(timer_id_);
      timer_armed_ = false;
    }
    const int64_t now = env_.clock().NowWallMicros();
    const int64_t delay_ns = std::max<int64_t>(0, (*due - now) * 1000);
    std::weak_ptr<Token> weak = token_;
    timer_id_ = executor_.Schedule(delay_ns, [weak] {
      if (auto t = weak.lock()) {
        std::lock_guard<std::mutex> g(t->mu);
        if (t->impl != nullptr) t->impl->Wake(true);
      }
    });
    timer_armed_ = true;
    armed_due_ = *due;
  }

  Env& env_;
  Log& log_;
  SagaOrchestratorOptions options_;
  Executor& executor_;

  std::mutex mu_;  // queue and leadership
  std::condition_variable cv_;
  std::deque<std::unique_ptr<Request>> queue_;
  bool pumping_ = false;
  bool pump_posted_ = false;
  bool more_work_ = false;
  bool timer_fired_ = false;
  bool closed_ = false;
  Status failed_;  // fatal_ once seen: every call is refused until a restart

  // Owned by the batch leader; state_mu_ also lets readers in.
  std::mutex state_mu_;
  std::unique_ptr<SagaMachine> machine_;
  std::unique_ptr<saga_internal::RecordStore> wal_;
  MachineOutput out_;
  std::vector<SagaSummary> finished_;
  std::vector<SagaStepOutcome> steps_settled_;  // of the last batch, reported after it
  std::string encoded_;
  std::vector<uint64_t> reply_offsets_;
  std::set<std::string> known_topics_;
  std::vector<const SagaDefinition*> registered_;  // in this batch (the requests own them)
  bool read_more_ = false;
  Status write_error_;  // the last failed saga-log write, until one succeeds (or a probe)
  Status fatal_;        // a failed write that could not be undone
  bool timer_armed_ = false;
  int64_t armed_due_ = 0;
  TimerId timer_id_ = 0;
  UuidV7Generator ids_;
  SagaOrchestratorStats stats_;
  uint64_t replay_errors_ = 0;
  uint64_t log_damaged_segments_ = 0;  // found by the saga log's recovery at Init
  uint64_t log_truncated_bytes_ = 0;
  uint64_t bad_replies_ = 0;
  uint64_t stats_read_errors_ = 0;
  uint64_t stats_send_errors_ = 0;
  Status last_send_error_;

  std::unique_ptr<Log::Watch> watch_;
  std::shared_ptr<Token> token_;
};

class SnapshotImpl : public SagaLogSnapshot {
 public:
  explicit SnapshotImpl(Env& env)
      : machine_(env.random(),
                 saga_internal::MachineOptions{1'000'000, UINT32_MAX, INT64_MAX / 2000, UINT32_MAX,
                                               UINT32_MAX, 300'000}) {}
  Status Load(Env& env, const std::string& dir) {
    saga_internal::RecordLogOptions lo;
    lo.dir = dir;
    lo.file_prefix = "saga-";
    return saga_internal::RecordLog::ReadOnly(env, lo, [this](std::string_view payload) {
      Result<saga_internal::RecordView> r = saga_internal::DecodePayload(payload);
      if (!r.ok()) return r.status();
      machine_.Replay(*r).IgnoreError();
      return Status::Ok();
    });
  }
  Result<SagaInfo> Describe(const std::string& id) override { return machine_.Describe(id); }
  std::vector<SagaSummary> List(const SagaListFilter& filter, int64_t now_micros) override {
    return machine_.List(filter, now_micros);
  }
  std::vector<SagaTimerInfo> ListTimers(size_t limit) override { return machine_.Timers(limit); }
  std::vector<SagaDefinition> ListDefinitions() override { return machine_.Definitions(); }

 private:
  SagaMachine machine_;
};

}  // namespace

Result<std::unique_ptr<SagaLogSnapshot>> SagaLogSnapshot::Load(Env& env, const std::string& dir) {
  auto s = std::make_unique<SnapshotImpl>(env);
  CONVERGE_RETURN_IF_ERROR(s->Load(env, dir));
  return std::unique_ptr<SagaLogSnapshot>(std::move(s));
}

Result<std::unique_ptr<SagaOrchestrator>> SagaOrchestrator::Open(Env& env, Log& log,
                                                                 SagaOrchestratorOptions options) {
  CONVERGE_RETURN_IF_ERROR(ValidateSagaOrchestratorOptions(options));
  auto impl = std::make_unique<OrchestratorImpl>(env, log, std::move(options));
  CONVERGE_RETURN_IF_ERROR(impl->Init());
  return std::unique_ptr<SagaOrchestrator>(std::move(impl));
}

}  // namespace converge
