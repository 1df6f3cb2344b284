// The relay driver: performs the steps RelayCore asks for with an OutboxSource (database) and
// a RelaySink (log), on its lane (outbox/lane.h) or one cycle at a time (RunOnce). Waits are
// timers of the Env's executor and wake-ups posted to the lane; nothing sleeps.
#include "converge/relay.h"

#include <atomic>
#include <mutex>

#include "cdc/replication.h"
#include "converge/event.h"
#include "outbox/lane.h"
#include "outbox/outbox_row.h"
#include "outbox/relay_core.h"
#include "outbox/relay_source.h"
#include "outbox/wakeup.h"

namespace converge {

namespace outbox_internal {

void BuildClaimedRow(const sql::Row& row, ClaimedRow* out) {
  Result<int64_t> seq = row.Int(kSeq);
  out->seq = seq.ok() ? *seq : 0;
  out->topic.assign(row.Bytes(kTopic));
  out->key.assign(row.Bytes(kPartitionKey));
  out->id.assign(row.Bytes(kId));
  out->value.clear();
  out->timestamp_micros = 0;
  out->malformed = false;
  out->reason.clear();
  out->row_json.clear();
  Status s = CheckTopicName(out->topic);
  if (s.ok()) {
    Event event;
    s = RowToEvent(row, &event);
    if (s.ok()) s = CheckAttributeLimits(event);
    if (s.ok()) s = EncodeBinary(event, &out->value);
    if (s.ok()) {
      // The log record id is the event's identity (source, id), as for an HTTP publish: the
      // same event through either path is stored once, and equal ids of different sources
      // stay distinct events.
      out->id.clear();
      AppendEventIdentity(event, &out->id);
    }
  }
  if (!s.ok()) {
    out->malformed = true;
    out->value.clear();
    out->reason = std::string(s.message());
    out->row_json = RowToJson(row);
  }
}

}  // namespace outbox_internal

namespace {

using outbox_internal::Batch;
using outbox_internal::ClaimedRow;
using outbox_internal::Lane;
using outbox_internal::LaneSlot;
using outbox_internal::OutboxSource;
using outbox_internal::RelayCore;
using outbox_internal::Waker;

// The dead letter of one row (docs/formats/outbox.md, "Dead letters").
std::string DeadLetterJson(const ClaimedRow& row, const std::string& relay, int64_t now_micros) {
  using outbox_internal::AppendJsonString;
  std::string out = "{\"reason\":";
  AppendJsonString(row.reason, &out);
  out += ",\"relay\":";
  AppendJsonString(relay, &out);
  out += ",\"dead_lettered_at_micros\":" + std::to_string(now_micros);
  out += ",\"seq\":" + std::to_string(row.seq);
  if (!row.row_json.empty()) {
    out += ",\"row\":";
    out += row.row_json;
  } else {
    out += ",\"topic\":";
    AppendJsonString(row.topic, &out);
    out += ",\"event_base64\":";
    AppendJsonString(outbox_internal::Base64Encode(row.value), &out);
  }
  out += '}';
  return out;
}

// Unique per row, so a retried dead letter is stored once and two rows never share one:
// the relay and the row's seq. (Not the event: one event may be written to several topics,
// ids repeat across sources and seqs across the databases sharing the dead-letter topic.)
std::string DeadLetterId(const ClaimedRow& row, const std::string& relay) {
  return "outbox-row:" + std::to_string(relay.size()) + ":" + relay + std::to_string(row.seq);
}

Status ValidateOptions(const RelayOptions& o) {
  if (o.batch_max_events < 1 || o.batch_max_events > 100'000) {
    return InvalidArgumentError("relay: batch_max_events must be 1..100000");
  }
  if (o.batch_max_bytes < 1) return InvalidArgumentError("relay: batch_max_bytes must be > 0");
  if (o.publish_chunk_max_events < 1) {
    return InvalidArgumentError("relay: publish_chunk_max_events must be > 0");
  }
  if (o.poll_interval_ms < 1 || o.poll_interval_ms > 3'600'000) {
    return InvalidArgumentError("relay: poll_interval_ms must be 1..3600000");
  }
  if (o.retry_base_delay_ms < 1 || o.retry_max_delay_ms < o.retry_base_delay_ms ||
      o.retry_max_delay_ms > 3'600'000) {
    return InvalidArgumentError(
        "relay: need 1 <= retry_base_delay_ms <= retry_max_delay_ms <= 3600000");
  }
  if (o.batch_linger_us < 0 || o.batch_linger_us > 1'000'000) {
    return InvalidArgumentError("relay: batch_linger_us must be 0..1000000");
  }
  if (o.standby_retry_ms < 1 || o.rebalance_interval_ms < 1) {
    return InvalidArgumentError("relay: standby_retry_ms and rebalance_interval_ms must be > 0");
  }
  if (o.postgres_buckets < 1 || o.postgres_buckets > 4096) {
    return InvalidArgumentError("relay: postgres_buckets must be 1..4096");
  }
  if (o.mode != "table" && o.mode != "wal") {
    return InvalidArgumentError("relay: mode must be 'table' or 'wal', got '" + o.mode + "'");
  }
  if (o.wal_capture_tables && o.mode != "wal") {
    return InvalidArgumentError("relay: wal_capture_tables needs mode 'wal'");
  }
  if (o.mode == "wal") {
    CONVERGE_RETURN_IF_ERROR(cdc::CheckSlotName(o.wal_slot, "relay: wal_slot"));
    CONVERGE_RETURN_IF_ERROR(cdc::CheckSlotName(o.wal_publication, "relay: wal_publication"));
  }
  if (o.postgres_connect_timeout_ms <= 0 || o.postgres_statement_timeout_ms < 0) {
    return InvalidArgumentError(
        "relay: postgres_connect_timeout_ms must be > 0 and postgres_statement_timeout_ms >= 0");
  }
  return Status::Ok();
}

class RelayImpl final : public Relay {
 public:
  RelayImpl(Env& env, RelaySink& sink, RelayOptions options)
      : env_(env),
        sink_(sink),
        options_(std::move(options)),
        slot_(std::make_shared<LaneSlot>()),
        waker_(std::make_shared<Waker>([slot = slot_, this] { slot->Post([this] { OnWake(); }); })),
        core_(env.clock(), env.random(),
              outbox_internal::RelayCoreOptions{
                  options_.poll_interval_ms, options_.retry_base_delay_ms,
                  options_.retry_max_delay_ms, options_.standby_retry_ms,
                  options_.rebalance_interval_ms, options_.batch_linger_us,
                  options_.batch_linger_min_rows}) {}

  ~RelayImpl() override { Stop(); }

  // The waker the source registers for in-process wake-ups (SQLite writers' commits).
  const std::shared_ptr<Waker>& waker() const { return waker_; }
  void set_source(std::unique_ptr<OutboxSource> source) { source_ = std::move(source); }

  Status Start() override {
    std::lock_guard<std::mutex> lock(lifecycle_mu_);
    if (lane_ != nullptr) return FailedPreconditionError("relay: already started");
    stopping_ = false;
    lane_ = options_.steps_on_env_executor ? outbox_internal::NewExecutorLane(env_.executor())
                                           : outbox_internal::NewThreadLane("cv-relay");
    slot_->Set(lane_);
    lane_->Post([this] { Resume(); });
    return Status::Ok();
  }

  void Stop() override {
    std::lock_guard<std::mutex> lock(lifecycle_mu_);
    if (lane_ == nullptr) return;
    stopping_ = true;
    slot_->Set(nullptr);  // wake-ups and timers from now on are dropped
    lane_->Shutdown();    // waits for the running step
    lane_.reset();
    std::lock_guard<std::mutex> step(step_mu_);
    if (waiting_) env_.executor().Cancel(timer_);
    waiting_ = false;
    pending_wake_ = false;
  }

  void Wake() override { waker_->Signal(); }

  Result<size_t> RunOnce() override {
    std::lock_guard<std::mutex> lock(step_mu_);
    if (!dead_.ok()) return dead_;
    // Rebalancing each cycle costs one query (PostgreSQL) and keeps RunOnce-driven relays fair.
    Result<bool> active = source_->Acquire(/*rebalance=*/true);
    if (!active.ok()) return Failed(active.status());
    SetActive(*active);
    if (!*active) return size_t{0};
    size_t good = 0, malformed = 0;
    CONVERGE_RETURN_IF_ERROR(Failed(Claim(&good, &malformed)));
    if (batch_.rows.empty()) return size_t{0};
    if (good > 0) {
      size_t newly = 0;
      CONVERGE_RETURN_IF_ERROR(Failed(Publish(&newly)));
      malformed += newly;
    }
    if (malformed > 0) CONVERGE_RETURN_IF_ERROR(Failed(DeadLetter()));
    CONVERGE_RETURN_IF_ERROR(Failed(Remove()));
    return batch_.rows.size();
  }

  Result<size_t> Drain(size_t max_batches) override {
    size_t total = 0;
    for (size_t i = 0; i < max_batches; ++i) {
      CONVERGE_ASSIGN_OR_RETURN(size_t n, RunOnce());
      total += n;
      if (n == 0) break;
    }
    return total;
  }

  RelayStats stats() const override {
    RelayStats out;
    {
      std::lock_guard<std::mutex> lock(stats_mu_);
      out = stats_;
    }
    out.wal_lag_bytes = source_->wal_lag_bytes();
    const int64_t oldest = source_->wal_oldest_pending_micros();
    if (oldest > 0) {
      out.wal_lag_ms = std::max<int64_t>(0, (env_.clock().NowWallMicros() - oldest) / 1000);
    }
    return out;
  }

 private:
  // Records a failure in the stats; returns `s` unchanged.
  Status Failed(Status s) {
    if (!s.ok()) {
      std::lock_guard<std::mutex> lock(stats_mu_);
      ++stats_.failures;
      stats_.last_error = s.ToString();
    }
    return s;
  }

  void SetActive(bool active) {
    std::lock_guard<std::mutex> lock(stats_mu_);
    stats_.active = active;
    stats_.buckets = source_->buckets_held();
  }

  // Runs the fault hook at `point`; a non-OK answer kills the relay.
  bool Fault(std::string_view point) {
    if (!options_.fault_point) return false;
    Status s = options_.fault_point(point);
    if (s.ok()) return false;
    dead_ = s;
    return true;
  }

  Status Claim(size_t* good, size_t* malformed) {
    CONVERGE_RETURN_IF_ERROR(
        source_->Claim(options_.batch_max_events, options_.batch_max_bytes, &batch_));
    *good = 0;
    *malformed = 0;
    for (const ClaimedRow& r : batch_.rows) (r.malformed ? *malformed : *good) += 1;
    if (!batch_.rows.empty() && Fault("relay.claimed")) return dead_;
    return Status::Ok();
  }

  Status Publish(size_t* newly_malformed) {
    *newly_malformed = 0;
    records_.clear();
    index_.clear();
    for (size_t i = 0; i < batch_.rows.size(); ++i) {
      const ClaimedRow& r = batch_.rows[i];
      if (r.malformed) continue;
      records_.push_back(SinkRecord{r.topic, RecordView{r.id, r.key, r.value, 0}});
      index_.push_back(i);
    }
    const size_t chunk = options_.publish_chunk_max_events;
    for (size_t from = 0; from < records_.size(); from += chunk) {
      size_t n = std::min(chunk, records_.size() - from);
      rejected_.clear();
      CONVERGE_RETURN_IF_ERROR(
          sink_.Publish(std::span<const SinkRecord>(records_.data() + from, n), &rejected_));
      for (const SinkRejection& rej : rejected_) {
        CONVERGE_CHECK(rej.index < n);
        ClaimedRow& row = batch_.rows[index_[from + rej.index]];
        row.malformed = true;
        row.reason = rej.reason;
        ++*newly_malformed;
      }
      {
        std::lock_guard<std::mutex> lock(stats_mu_);
        stats_.published += n - rejected_.size();
      }
      if (Fault("relay.chunk_published")) return dead_;
    }
    if (Fault("relay.published")) return dead_;
    return Status::Ok();
  }

  Status DeadLetter() {
    const int64_t now = env_.clock().NowWallMicros();
    dead_values_.clear();
    dead_ids_.clear();
    for (const ClaimedRow& r : batch_.rows) {
      if (!r.malformed) continue;
      dead_values_.push_back(DeadLetterJson(r, options_.name, now));
      dead_ids_.push_back(DeadLetterId(r, options_.name));
    }
    std::vector<RecordView> views;
    views.reserve(dead_values_.size());
    for (size_t i = 0; i < dead_values_.size(); ++i) {
      views.push_back(RecordView{dead_ids_[i], {}, dead_values_[i], 0});
    }
    CONVERGE_RETURN_IF_ERROR(sink_.DeadLetter(views));
    std::lock_guard<std::mutex> lock(stats_mu_);
    stats_.dead_lettered += views.size();
    return Status::Ok();
  }

  Status Remove() {
    CONVERGE_RETURN_IF_ERROR(source_->Remove(batch_));
    {
      std::lock_guard<std::mutex> lock(stats_mu_);
      ++stats_.batches;
    }
    if (Fault("relay.removed")) return dead_;
    return Status::Ok();
  }

  // ---- the relay on its lane ----

  // Runs steps until the relay waits, stops or dies (on the simulator's executor, one step per
  // event, so that other components interleave with the relay's steps).
  void Resume() {
    std::lock_guard<std::mutex> lock(step_mu_);
    Pump();
  }

  void Pump() {
    while (!stopping_ && dead_.ok()) {
      switch (core_.next()) {
        case RelayCore::Op::kAcquire: {
          Result<bool> active = source_->Acquire(core_.rebalance());
          Failed(active.status()).IgnoreError();
          if (active.ok()) SetActive(*active);
          core_.AcquireDone(active.status(), active.ok() && *active);
          break;
        }
        case RelayCore::Op::kClaim: {
          size_t good = 0, malformed = 0;
          Status s = Failed(Claim(&good, &malformed));
          if (!dead_.ok()) return;
          core_.ClaimDone(s, batch_.rows.size(), good, malformed, batch_.full);
          break;
        }
        case RelayCore::Op::kPublish: {
          size_t newly = 0;
          Status s = Failed(Publish(&newly));
          if (!dead_.ok()) return;
          core_.PublishDone(s, newly);
          break;
        }
        case RelayCore::Op::kDeadLetter:
          core_.DeadLetterDone(Failed(DeadLetter()));
          break;
        case RelayCore::Op::kRemove: {
          Status s = Failed(Remove());
          if (!dead_.ok()) return;
          core_.RemoveDone(s);
          break;
        }
        case RelayCore::Op::kWait:
          if (!BeginWait()) return;
          break;
      }
      if (options_.steps_on_env_executor && core_.next() != RelayCore::Op::kWait) {
        slot_->Post([this] { Resume(); });
        return;
      }
    }
  }

  // Starts the wait the core asks for. Returns true if it ended at once (a wake-up was
  // pending or the deadline has passed; the core has moved on), false if the relay now waits
  // for its timer, a wake-up or a notification.
  bool BeginWait() {
    const bool ignore = core_.ignores_wakeups();  // a backoff or a linger runs to its end
    if (!ignore && (pending_wake_ || source_->DrainNotifications())) {
      pending_wake_ = false;
      CountWakeup();
      core_.WaitDone(true);
      return true;
    }
    if (core_.in_backoff()) pending_wake_ = false;  // the cycle after a backoff looks anyway
    const int64_t remaining = core_.wait_until_ns() - env_.clock().NowMonotonicNanos();
    if (remaining <= 0) {
      CountPoll(ignore);
      core_.WaitDone(false);
      return true;
    }
    waiting_ = true;
    ++wait_generation_;
    ArmTimer(remaining);
    if (!ignore) WatchNotifications();
    return false;
  }

  void ArmTimer(int64_t delay_ns) {
    timer_ = env_.executor().Schedule(delay_ns, [slot = slot_, this, gen = wait_generation_] {
      slot->Post([this, gen] { OnTimer(gen); });
    });
  }

  // PostgreSQL: the lane watches the connection's socket while the relay waits.
  void WatchNotifications() {
    const int fd = source_->wait_fd();
    if (fd < 0) return;
    lane_->WatchFd(fd, [this, gen = wait_generation_] { OnReadable(gen); });
  }

  // Ends the current wait (the timer is cancelled, the socket no longer watched) and goes on.
  void EndWait(bool notified) {
    waiting_ = false;
    env_.executor().Cancel(timer_);
    lane_->WatchFd(-1, nullptr);
    if (notified) CountWakeup();
    core_.WaitDone(notified);
    Pump();
  }

  void OnTimer(uint64_t generation) {
    std::lock_guard<std::mutex> lock(step_mu_);
    if (!waiting_ || generation != wait_generation_ || stopping_) return;
    const int64_t remaining = core_.wait_until_ns() - env_.clock().NowMonotonicNanos();
    if (remaining > 0) return ArmTimer(remaining);  // fired early: wait for the rest
    CountPoll(core_.ignores_wakeups());
    EndWait(/*notified=*/false);
  }

  void OnWake() {
    std::lock_guard<std::mutex> lock(step_mu_);
    if (stopping_) return;
    if (!waiting_) {
      pending_wake_ = true;  // between steps: the next wait ends at once
      return;
    }
    if (core_.ignores_wakeups()) return;
    EndWait(/*notified=*/true);
  }

  void OnReadable(uint64_t generation) {
    std::lock_guard<std::mutex> lock(step_mu_);
    if (!waiting_ || generation != wait_generation_ || stopping_) return;
    if (source_->DrainNotifications()) return EndWait(/*notified=*/true);
    WatchNotifications();  // not a notification (e.g. a parameter status): keep waiting
  }

  void CountPoll(bool ignored_wakeups) {
    if (ignored_wakeups) return;
    std::lock_guard<std::mutex> lock(stats_mu_);
    ++stats_.polls;
  }

  void CountWakeup() {
    std::lock_guard<std::mutex> lock(stats_mu_);
    ++stats_.wakeups;
  }

  Env& env_;
  RelaySink& sink_;
  RelayOptions options_;
  std::shared_ptr<LaneSlot> slot_;  // shared with the waker and timers
  std::shared_ptr<Waker> waker_;
  std::unique_ptr<OutboxSource> source_;
  RelayCore core_;

  std::mutex lifecycle_mu_;
  std::shared_ptr<Lane> lane_;  // while started; guarded by lifecycle_mu_, read by steps
  std::mutex step_mu_;          // one step at a time (lane or RunOnce); guards the wait state
  std::atomic<bool> stopping_{false};
  Status dead_;  // set when a fault point fired

  // The wait in progress (lane only).
  bool waiting_ = false;
  bool pending_wake_ = false;  // a wake-up arrived between steps
  uint64_t wait_generation_ = 0;
  TimerId timer_ = 0;

  Batch batch_;
  std::vector<SinkRecord> records_;
  std::vector<size_t> index_;
  std::vector<SinkRejection> rejected_;
  std::vector<std::string> dead_values_;
  std::vector<std::string> dead_ids_;

  mutable std::mutex stats_mu_;
  RelayStats stats_;
};

}  // namespace

namespace outbox_internal {
Result<std::unique_ptr<Relay>> NewRelayWithSource(Env& env, RelaySink& sink, RelayOptions options,
                                                  std::unique_ptr<OutboxSource> source) {
  CONVERGE_RETURN_IF_ERROR(ValidateOptions(options));
  auto relay = std::make_unique<RelayImpl>(env, sink, std::move(options));
  relay->set_source(std::move(source));
  return std::unique_ptr<Relay>(std::move(relay));
}
}  // namespace outbox_internal

Result<std::unique_ptr<Relay>> Relay::Create(Env& env, const sql::DatabaseTarget& source,
                                             RelaySink& sink, RelayOptions options) {
  CONVERGE_RETURN_IF_ERROR(ValidateOptions(options));
  outbox_internal::SourceOptions so;
  so.name = options.name;
  so.sqlite_synchronous = options.sqlite_synchronous;
  so.sqlite_busy_timeout_ms = options.sqlite_busy_timeout_ms;
  so.sqlite_lock_path = options.sqlite_lock_path;
  so.postgres_buckets = options.postgres_buckets;
  so.postgres_connect_timeout_ms = options.postgres_connect_timeout_ms;
  so.postgres_statement_timeout_ms = options.postgres_statement_timeout_ms;
  so.create_schema = options.create_schema;
  so.wal_slot = options.wal_slot;
  so.wal_publication = options.wal_publication;
  so.wal_capture_tables = options.wal_capture_tables;
  so.wal_capture_topic_prefix = options.wal_capture_topic_prefix;
  if (source.location.empty()) {
    return InvalidArgumentError(source.engine == sql::Engine::kSqlite ? "relay: empty SQLite path"
                                                                      : "relay: empty conninfo");
  }
  const bool wal = options.mode == "wal";
  if (wal && source.engine != sql::Engine::kPostgres) {
    return InvalidArgumentError("relay: mode 'wal' needs a PostgreSQL database");
  }
  auto relay = std::make_unique<RelayImpl>(env, sink, std::move(options));
  if (wal) {
    relay->set_source(outbox_internal::NewWalSource(env, source.location, so));
  } else if (source.engine == sql::Engine::kSqlite) {
    relay->set_source(outbox_internal::NewSqliteSource(env, source.location, so, relay->waker()));
  } else {
    relay->set_source(outbox_internal::NewPostgresSource(env, source.location, so));
  }
  return std::unique_ptr<Relay>(std::move(relay));
}

}  // namespace converge
