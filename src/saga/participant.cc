// Saga participants: the dedup logic (SagaParticipantCore), an in-memory ledger, and the runtime
// that reads a command topic and appends replies.
#include <deque>
#include <map>
#include <mutex>
#include <unordered_map>

#include "converge/saga.h"
#include "saga/messages.h"

namespace converge {

// ---------------------------------------------------------------------------------------
// In-memory ledger

namespace {

struct LedgerKey {
  std::string saga;
  uint32_t step = 0;
};

// Looked up without building a std::string.
struct LedgerKeyView {
  std::string_view saga;
  uint32_t step = 0;
};

struct LedgerKeyHash {
  using is_transparent = void;
  size_t operator()(const LedgerKeyView& k) const {
    return std::hash<std::string_view>()(k.saga) * 31 + k.step;
  }
  size_t operator()(const LedgerKey& k) const { return (*this)(LedgerKeyView{k.saga, k.step}); }
};

struct LedgerKeyEq {
  using is_transparent = void;
  static LedgerKeyView V(const LedgerKey& k) { return {k.saga, k.step}; }
  static LedgerKeyView V(const LedgerKeyView& k) { return k; }
  template <typename A, typename B>
  bool operator()(const A& a, const B& b) const {
    return V(a).step == V(b).step && V(a).saga == V(b).saga;
  }
};

class MemoryLedger : public SagaLedger {
 public:
  MemoryLedger(Clock& clock, int64_t retention_ms, size_t max_entries)
      : clock_(clock), retention_micros_(retention_ms * 1000), max_entries_(max_entries) {}

  Status Transact(std::string_view saga_id, uint32_t step,
                  const std::function<Status(SagaLedgerEntry&, bool*)>& fn) override {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = entries_.find(LedgerKeyView{saga_id, step});
    SagaLedgerEntry entry = it == entries_.end() ? SagaLedgerEntry{} : it->second;
    bool write = false;
    CONVERGE_RETURN_IF_ERROR(fn(entry, &write));
    if (!write) return Status::Ok();
    const int64_t now = clock_.NowWallMicros();
    entry.updated_micros = now;
    if (it == entries_.end()) {
      LedgerKey key{std::string(saga_id), step};
      entries_.emplace(key, std::move(entry));
      order_.emplace_back(now, std::move(key));
      Trim(now);
    } else {
      it->second = std::move(entry);
    }
    return Status::Ok();
  }

 private:
  void Trim(int64_t now) {
    while (!order_.empty() &&
           (order_.size() > max_entries_ || order_.front().first < now - retention_micros_)) {
      entries_.erase(order_.front().second);
      order_.pop_front();
    }
  }

  Clock& clock_;
  const int64_t retention_micros_;
  const size_t max_entries_;
  std::mutex mu_;
  std::unordered_map<LedgerKey, SagaLedgerEntry, LedgerKeyHash, LedgerKeyEq> entries_;
  std::deque<std::pair<int64_t, LedgerKey>> order_;  // insertion order
};

}  // namespace

std::unique_ptr<SagaLedger> NewMemorySagaLedger(Clock& clock, int64_t retention_ms,
                                                size_t max_entries) {
  return std::make_unique<MemoryLedger>(clock, retention_ms, max_entries);
}

// ---------------------------------------------------------------------------------------
// The participant logic

void SagaParticipantCore::Handle(std::string type, SagaCommandHandler handler) {
  for (auto& [t, h] : handlers_) {
    if (t == type) {
      h = std::move(handler);
      return;
    }
  }
  handlers_.emplace_back(std::move(type), std::move(handler));
}

SagaReply SagaParticipantCore::Process(const SagaCommand& command) {
  SagaReply reply;
  reply.saga_id.assign(command.saga_id.data(), command.saga_id.size());
  reply.step = command.step;
  reply.kind = command.kind;
  reply.attempt = command.attempt;
  reply.token.assign(command.token.data(), command.token.size());
  // The reply stays in the command's trace: a span of its own under the same trace id.
  reply.traceparent = saga_internal::ChildTraceparent(command.traceparent, "reply");
  const SagaCommandHandler* handler = nullptr;
  for (const auto& [t, h] : handlers_) {
    if (t == command.type) handler = &h;
  }
  auto ok = [&](bool applied, std::string result = {}) {
    reply.outcome = SagaReply::Outcome::kOk;
    reply.applied = applied;
    reply.result = std::move(result);
    reply.status = Status::Ok();
  };
  auto fail = [&](SagaReply::Outcome outcome, Status status) {
    reply.outcome = outcome;
    reply.status = std::move(status);
  };
  bool handler_failed = false;
  using State = SagaLedgerEntry::State;
  Status s = ledger_.Transact(
      command.saga_id, command.step, [&](SagaLedgerEntry& e, bool* write) -> Status {
        switch (command.kind) {
          case SagaCommandKind::kAction:
            switch (e.state) {
              case State::kApplied:
                ok(true, e.result);
                return Status::Ok();
              case State::kRefused:
                fail(SagaReply::Outcome::kFailed,
                     FailedPreconditionError("refused earlier: " + e.result));
                return Status::Ok();
              case State::kFenced:
              case State::kCompensated:
                fail(SagaReply::Outcome::kFailed,
                     AbortedError("step was compensated or cancelled before this action"));
                return Status::Ok();
              case State::kNone:
                break;
            }
            if (handler == nullptr) {
              Status refused = FailedPreconditionError("no handler for command type '" +
                                                       std::string(command.type) + "'");
              if (command.retriable) {
                fail(SagaReply::Outcome::kRetry, refused);
                return Status::Ok();
              }
              e.state = State::kRefused;
              e.result = refused.ToString();
              *write = true;
              fail(SagaReply::Outcome::kFailed, refused);
              return Status::Ok();
            }
            {
              std::string result;
              Status hs = (*handler)(command, &result);
              if (hs.ok()) {
                e.state = State::kApplied;
                e.result = std::move(result);
                *write = true;
                ok(true, e.result);
                return Status::Ok();
              }
              if (command.retriable || RetryPolicy{}.IsRetryable(hs)) {
                handler_failed = true;
                fail(SagaReply::Outcome::kRetry, hs);
                return hs;  // nothing is stored
              }
              e.state = State::kRefused;
              e.result = hs.ToString();
              *write = true;
              fail(SagaReply::Outcome::kFailed, hs);
              return Status::Ok();
            }
          case SagaCommandKind::kCompensate:
            switch (e.state) {
              case State::kNone:
                e.state = State::kFenced;
                *write = true;
                ok(false);
                return Status::Ok();
              case State::kRefused:
              case State::kFenced:
                ok(false);
                return Status::Ok();
              case State::kCompensated:
                ok(true);
                return Status::Ok();
              case State::kApplied:
                break;
            }
            if (handler == nullptr) {
              handler_failed = true;
              Status missing = FailedPreconditionError("no handler for compensation type '" +
                                                       std::string(command.type) + "'");
              fail(SagaReply::Outcome::kRetry, missing);
              return missing;
            }
            {
              std::string result;
              Status hs = (*handler)(command, &result);
              if (!hs.ok()) {
                handler_failed = true;
                fail(SagaReply::Outcome::kRetry, hs);
                return hs;
              }
              e.state = State::kCompensated;
              *write = true;
              ok(true);
              return Status::Ok();
            }
          case SagaCommandKind::kCancel:
            switch (e.state) {
              case State::kNone:
                e.state = State::kFenced;
                *write = true;
                ok(false);
                return Status::Ok();
              case State::kApplied:
                ok(true, e.result);
                return Status::Ok();
              case State::kRefused:
              case State::kFenced:
              case State::kCompensated:
                ok(false);
                return Status::Ok();
            }
            break;
        }
        return InternalError("unknown saga command kind");
      });
  if (!s.ok() && !handler_failed) {
    // The ledger itself failed: nothing is known to have happened.
    fail(SagaReply::Outcome::kRetry, UnavailableError("saga ledger: " + s.ToString()));
  }
  return reply;
}

// ---------------------------------------------------------------------------------------
// The runtime

namespace {

class ParticipantImpl : public SagaParticipant {
 public:
  struct Token {
    std::mutex mu;
    ParticipantImpl* impl = nullptr;
  };

  ParticipantImpl(Env& env, Log& log, SagaParticipantCore& core, SagaParticipantOptions options)
      : env_(env),
        log_(log),
        core_(core),
        options_(std::move(options)),
        executor_(options_.executor ? *options_.executor : env.executor()),
        token_(std::make_shared<Token>()) {
    token_->impl = this;
  }

  ~ParticipantImpl() override {
    Close();
    std::lock_guard<std::mutex> g(token_->mu);
    token_->impl = nullptr;
  }

  Status Init() {
    if (options_.topic.empty()) return InvalidArgumentError("saga participant: topic is required");
    if (options_.read_max_records == 0) {
      return InvalidArgumentError("saga participant: read_max_records must be > 0");
    }
    Status created = log_.CreateTopic(options_.topic, options_.topic_options);
    if (!created.ok() && created.code() != StatusCode::kAlreadyExists) return created;
    CONVERGE_ASSIGN_OR_RETURN(TopicInfo info, log_.DescribeTopic(options_.topic));
    if (!options_.start_offsets.empty() &&
        options_.start_offsets.size() != info.partitions.size()) {
      return InvalidArgumentError(
          "saga participant: start_offsets must have one offset per "
          "partition");
    }
    for (size_t i = 0; i < info.partitions.size(); ++i) {
      offsets_.push_back(options_.start_offsets.empty() ? info.partitions[i].end_offset
                                                        : options_.start_offsets[i]);
    }
    ParticipantImpl* self = this;
    CONVERGE_ASSIGN_OR_RETURN(
        watch_, log_.WatchAppends(options_.topic, [self](uint32_t, uint64_t) { self->Wake(); }));
    return Status::Ok();
  }

  Result<size_t> RunOnce() override {
    std::lock_guard<std::mutex> run(run_mu_);
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (closed_) return FailedPreconditionError("saga participant is closed");
      more_ = false;
    }
    size_t handled = 0;
    bool more = false;
    encoded_.clear();
    pending_.clear();
    for (uint32_t p = 0; p < offsets_.size(); ++p) {
      // A read may return fewer records than are there (e.g. at a segment boundary): read
      // until empty or the bound.
      size_t budget = options_.read_max_records;
      while (budget > 0) {
        Result<ReadBatch> batch =
            log_.Read(options_.topic, p, offsets_[p], budget, budget * size_t{4096});
        if (!batch.ok()) {
          if (std::optional<uint64_t> resume = DataLossResumeOffset(batch.status())) {
            offsets_[p] = *resume;
            more = true;
          }
          break;
        }
        if (batch->records.empty()) break;
        for (const StoredRecord& rec : batch->records) {
          Result<saga_internal::CommandView> cmd = saga_internal::DecodeCommand(rec.value);
          if (!cmd.ok()) continue;  // not a saga command: not ours to answer
          SagaReply reply = core_.Process(cmd->command);
          const size_t at = encoded_.size();
          saga_internal::EncodeReply(reply, &encoded_);
          pending_.push_back(Pending{std::string(cmd->reply_to), std::move(reply.saga_id), at,
                                     encoded_.size() - at});
          ++handled;
        }
        offsets_[p] = batch->next_offset;
        budget -= std::min(budget, batch->records.size());
      }
      if (budget == 0) more = true;
    }
    std::map<std::string_view, std::vector<RecordView>> by_topic;
    for (const Pending& r : pending_) {
      RecordView v;
      v.key = r.saga_id;
      v.value = std::string_view(encoded_).substr(r.at, r.len);
      by_topic[r.reply_to].push_back(v);
    }
    for (auto& [topic, views] : by_topic) {
      // A lost reply is recovered by the orchestrator's retry (the ledger answers the same).
      log_.Append(std::string(topic), views).status().IgnoreError();
    }
    if (more) {
      std::lock_guard<std::mutex> lock(mu_);
      more_ = true;
    }
    return handled;
  }

  std::vector<uint64_t> positions() override {
    std::lock_guard<std::mutex> run(run_mu_);
    return offsets_;
  }

  void Close() override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (closed_) return;
      closed_ = true;
    }
    watch_.reset();
    std::lock_guard<std::mutex> run(run_mu_);  // waits for a running batch
  }

 private:
  struct Pending {
    std::string reply_to;
    std::string saga_id;
    size_t at;
    size_t len;
  };

  void Wake() {
    std::lock_guard<std::mutex> lock(mu_);
    more_ = true;
    if (closed_ || posted_) return;
    posted_ = true;
    std::weak_ptr<Token> weak = token_;
    executor_.Post([weak] {
      if (auto t = weak.lock()) {
        std::lock_guard<std::mutex> g(t->mu);
        if (t->impl != nullptr) t->impl->Pump();
      }
    });
  }

  void Pump() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      posted_ = false;
    }
    for (int round = 0; round < 8; ++round) {
      if (!RunOnce().ok()) return;
      std::lock_guard<std::mutex> lock(mu_);
      if (!more_ || closed_) return;
    }
    Wake();
  }

  Env& env_;
  Log& log_;
  SagaParticipantCore& core_;
  SagaParticipantOptions options_;
  Executor& executor_;
  std::mutex mu_;
  bool closed_ = false;
  bool posted_ = false;
  bool more_ = false;
  std::mutex run_mu_;  // one batch at a time
  std::vector<uint64_t> offsets_;
  std::string encoded_;
  std::vector<Pending> pending_;
  std::unique_ptr<Log::Watch> watch_;
  std::shared_ptr<Token> token_;
};

}  // namespace

Result<std::unique_ptr<SagaParticipant>> SagaParticipant::Start(Env& env, Log& log,
                                                                SagaParticipantCore& core,
                                                                SagaParticipantOptions options) {
  auto impl = std::make_unique<ParticipantImpl>(env, log, core, std::move(options));
  CONVERGE_RETURN_IF_ERROR(impl->Init());
  return std::unique_ptr<SagaParticipant>(std::move(impl));
}

}  // namespace converge
