#include "server/push_delivery.h"

#include <algorithm>
#include <charconv>
#include <ctime>

#include "server/metrics.h"

namespace converge::server {

namespace {

constexpr int64_t kMsNs = 1'000'000;

bool IsDigits(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

}  // namespace

std::optional<int64_t> ParseRetryAfterMs(std::string_view value, int64_t now_wall_micros) {
  while (!value.empty() && (value.front() == ' ' || value.front() == '\t')) value.remove_prefix(1);
  while (!value.empty() && (value.back() == ' ' || value.back() == '\t')) value.remove_suffix(1);
  if (IsDigits(value)) {
    int64_t seconds = 0;
    auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), seconds);
    if (ec != std::errc() || end != value.data() + value.size()) {
      return int64_t{24} * 3600 * 1000;  // too large to read: as long as allowed
    }
    return std::min<int64_t>(seconds, int64_t{24} * 3600) * 1000;
  }
  // IMF-fixdate ("Sun, 06 Nov 1994 08:49:37 GMT"), the form RFC 9110 says senders use.
  std::tm tm{};
  const std::string text(value);
  const char* end = strptime(text.c_str(), "%a, %d %b %Y %H:%M:%S GMT", &tm);
  if (end == nullptr || *end != '\0') return std::nullopt;
  const int64_t at_ms = static_cast<int64_t>(timegm(&tm)) * 1000;
  return std::max<int64_t>(0, at_ms - now_wall_micros / 1000);
}

PushDecision DecidePush(const PushOutcome& outcome, uint32_t attempt, const PushPolicy& policy,
                        int64_t max_delay_ms, Random& random) {
  PushDecision d;
  auto backoff = [&] {
    const uint32_t doublings = std::min<uint32_t>(attempt > 0 ? attempt - 1 : 0, 40);
    int64_t ms = policy.initial_backoff_ms;
    for (uint32_t i = 0; i < doublings && ms < policy.max_backoff_ms; ++i) ms *= 2;
    ms = std::min(ms, policy.max_backoff_ms);
    return ms / 2 + random.UniformRange(0, ms - ms / 2);
  };
  switch (outcome.kind) {
    case PushOutcome::Kind::kConnectError:
      d.action = PushDecision::Action::kRetry;
      d.reason = "endpoint unreachable: " + outcome.detail;
      d.delay_ms = backoff();
      break;
    case PushOutcome::Kind::kTimeout:
      d.action = PushDecision::Action::kRetry;
      d.reason = "endpoint timed out after " + std::to_string(policy.timeout_ms) + " ms";
      d.delay_ms = backoff();
      break;
    case PushOutcome::Kind::kHttp: {
      const unsigned s = outcome.status;
      if (s >= 200 && s < 300) {
        d.action = PushDecision::Action::kAck;
        return d;
      }
      d.reason = "endpoint answered " + std::to_string(s);
      if (!outcome.detail.empty()) d.reason += ": " + outcome.detail;
      if (s >= 400 && s < 500 && s != 408 && s != 429) {
        d.action = PushDecision::Action::kDeadLetter;
        return d;
      }
      d.action = PushDecision::Action::kRetry;
      d.delay_ms = (s == 408 || s == 429 || s == 503) && outcome.retry_after_ms.has_value()
                       ? *outcome.retry_after_ms
                       : backoff();
      break;
    }
  }
  d.delay_ms = std::clamp<int64_t>(d.delay_ms, 0, max_delay_ms);
  return d;
}

// What callbacks from other threads reach: the runner while it lives, on the executor thread.
struct PushRunner::Shared {
  PushRunner* runner = nullptr;  // touched on the executor thread only
  Executor* executor = nullptr;
  std::atomic<bool> pump_posted{false};
};

PushRunner::PushRunner(Env& env, Executor& executor, ConsumerGroups& groups,
                       PushTransport& transport, PushRunnerOptions options, PushStats* stats)
    : env_(env),
      executor_(executor),
      groups_(groups),
      transport_(transport),
      options_(std::move(options)),
      stats_(stats),
      member_("push." + options_.name),
      shared_(std::make_shared<Shared>()) {
  shared_->runner = this;
  shared_->executor = &executor_;
}

PushRunner::~PushRunner() { Stop(/*leave=*/false); }

Status PushRunner::Start() {
  CONVERGE_ASSIGN_OR_RETURN(GroupDescription described,
                            groups_.DescribeGroup(options_.topic, options_.group));
  max_delay_ms_ = described.options.max_nack_delay_ms;
  keep_alive_ns_ = std::max<int64_t>(10, described.options.session_timeout_ms / 3) * kMsNs;
  std::weak_ptr<Shared> weak = shared_;
  CONVERGE_ASSIGN_OR_RETURN(watch_, groups_.WatchReady(options_.topic, options_.group, [weak] {
    std::shared_ptr<Shared> s = weak.lock();
    if (s == nullptr || s->pump_posted.exchange(true)) return;
    s->executor->Post([s] {
      s->pump_posted.store(false);
      if (s->runner != nullptr) s->runner->Pump();
    });
  }));
  running_ = true;
  Pump();
  return Status::Ok();
}

void PushRunner::Stop(bool leave) {
  if (shared_->runner == nullptr) return;
  shared_->runner = nullptr;
  running_ = false;
  if (timer_ != 0) executor_.Cancel(timer_);
  timer_ = 0;
  watch_.reset();
  if (stats_ != nullptr) stats_->in_flight.fetch_sub(in_flight_);
  in_flight_ = 0;
  if (leave && joined_ && !pending_acks_.empty()) {
    // Answered 2xx: ack rather than send them again after the restart.
    Result<AckBatchResult> acked =
        groups_.AckBatch(options_.topic, options_.group, member_, pending_acks_);
    if (acked.ok() && stats_ != nullptr) {
      stats_->delivered.fetch_add(pending_acks_.size() - acked->lost.size());
    }
  }
  pending_acks_.clear();
  if (leave && joined_) {
    Status s = groups_.Leave(options_.topic, options_.group, member_);
    if (!s.ok() && options_.log) options_.log("leaving the group: " + s.ToString());
  }
  joined_ = false;
}

void PushRunner::SchedulePump(int64_t delay_ns) {
  const int64_t due = env_.clock().NowMonotonicNanos() + delay_ns;
  if (timer_ != 0) {
    if (timer_due_ns_ <= due) return;
    executor_.Cancel(timer_);
  }
  timer_due_ns_ = due;
  std::weak_ptr<Shared> weak = shared_;
  timer_ = executor_.Schedule(delay_ns, [weak] {
    std::shared_ptr<Shared> s = weak.lock();
    if (s == nullptr || s->runner == nullptr) return;
    s->runner->timer_ = 0;
    s->runner->Pump();
  });
}

void PushRunner::Pump() {
  if (!running_) return;
  auto fail = [this](const Status& s, const char* what) {
    if (stats_ != nullptr) stats_->errors.fetch_add(1);
    if (options_.log) options_.log(std::string(what) + ": " + s.ToString());
    SchedulePump(options_.error_retry_ms * kMsNs);
  };
  if (!joined_) {
    Result<Assignment> joined = groups_.Join(options_.topic, options_.group, member_);
    if (!joined.ok()) return fail(joined.status(), "joining the group");
    joined_ = true;
  }
  const uint32_t limit = std::max<uint32_t>(1, options_.policy.max_concurrency);
  if (in_flight_ >= limit) {
    // Nothing to fetch: only keep the membership alive.
    Result<Assignment> alive = groups_.Heartbeat(options_.topic, options_.group, member_);
    if (!alive.ok()) {
      joined_ = false;  // expired (a long stall): join again
      return fail(alive.status(), "heartbeat");
    }
  }
  while (in_flight_ < limit) {
    Result<FetchResult> fetched = groups_.Fetch(options_.topic, options_.group, member_,
                                                limit - in_flight_, options_.max_fetch_bytes);
    if (!fetched.ok()) {
      if (fetched.status().code() == StatusCode::kFailedPrecondition) joined_ = false;
      return fail(fetched.status(), "fetching");
    }
    if (fetched->deliveries.empty()) break;
    for (const Delivery& d : fetched->deliveries) {
      PushRequest request;
      request.partition = d.partition;
      request.offset = d.offset;
      request.attempt = d.attempt;
      request.key.assign(d.key);
      request.value.assign(d.value);
      ++in_flight_;
      if (stats_ != nullptr) stats_->in_flight.fetch_add(1);
      const int64_t started = env_.clock().NowMonotonicNanos();
      const uint64_t lease_id = d.lease_id;
      std::weak_ptr<Shared> weak = shared_;
      PushRequest sent = request;
      transport_.Send(sent, [weak, request = std::move(request), lease_id,
                             started](PushOutcome outcome) mutable {
        std::shared_ptr<Shared> s = weak.lock();
        if (s == nullptr) return;
        s->executor->Post([s, request = std::move(request), lease_id, started,
                           outcome = std::move(outcome)]() mutable {
          if (s->runner != nullptr)
            s->runner->OnDone(request, lease_id, started, std::move(outcome));
        });
      });
    }
  }
  int64_t next = keep_alive_ns_;
  Result<std::optional<int64_t>> due =
      groups_.NextDueMonotonicNanos(options_.topic, options_.group);
  if (due.ok() && due->has_value()) {
    next = std::min(next, std::max<int64_t>(0, **due - env_.clock().NowMonotonicNanos()) + kMsNs);
  }
  SchedulePump(next);
}

void PushRunner::OnDone(const PushRequest& request, uint64_t lease_id, int64_t started_ns,
                        PushOutcome outcome) {
  if (!running_) return;
  --in_flight_;
  if (stats_ != nullptr) {
    stats_->in_flight.fetch_sub(1);
    if (stats_->latency != nullptr) {
      stats_->latency->Observe(static_cast<double>(env_.clock().NowMonotonicNanos() - started_ns) *
                               1e-9);
    }
  }
  const PushDecision decision =
      DecidePush(outcome, request.attempt, options_.policy, max_delay_ms_, env_.random());
  const LeaseRef lease{request.partition, request.offset, lease_id};
  Status s;
  switch (decision.action) {
    case PushDecision::Action::kAck:
      pending_acks_.push_back(lease);
      if (!flush_posted_) {
        // After the answers already queued on the executor: they join this batch.
        flush_posted_ = true;
        std::weak_ptr<Shared> weak = shared_;
        executor_.Post([weak] {
          std::shared_ptr<Shared> sh = weak.lock();
          if (sh != nullptr && sh->runner != nullptr) sh->runner->FlushAcks();
        });
      }
      return;
    case PushDecision::Action::kRetry:
    case PushDecision::Action::kDeadLetter: {
      NackOptions nack;
      nack.permanent = decision.action == PushDecision::Action::kDeadLetter;
      nack.delay_ms = decision.delay_ms;
      nack.reason = decision.reason;
      s = groups_.Nack(options_.topic, options_.group, member_, lease, nack);
      if (s.ok() && stats_ != nullptr) {
        (nack.permanent ? stats_->dead_lettered : stats_->retried).fetch_add(1);
      }
      break;
    }
  }
  // A lost lease (the group redelivered it, or was seeked) needs nothing more; any other
  // failure leaves the lease to expire, and the event is delivered again.
  if (!s.ok() && s.code() != StatusCode::kFailedPrecondition) {
    if (stats_ != nullptr) stats_->errors.fetch_add(1);
    if (options_.log)
      options_.log("settling " + std::to_string(request.partition) + ":" +
                   std::to_string(request.offset) + ": " + s.ToString());
  }
  Pump();
}

void PushRunner::FlushAcks() {
  flush_posted_ = false;
  if (!running_ || pending_acks_.empty()) return;
  std::vector<LeaseRef> leases;
  leases.swap(pending_acks_);
  Result<AckBatchResult> acked = groups_.AckBatch(options_.topic, options_.group, member_, leases);
  if (acked.ok()) {
    if (stats_ != nullptr) stats_->delivered.fetch_add(leases.size() - acked->lost.size());
  } else {
    // The leases expire and their events are delivered again.
    if (stats_ != nullptr) stats_->errors.fetch_add(1);
    if (options_.log)
      options_.log("acking " + std::to_string(leases.size()) +
                   " events: " + acked.status().ToString());
  }
  Pump();
}

}  // namespace converge::server
