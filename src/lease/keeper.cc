// LeaseKeeper: the holder's side of a lease, on Env timers and the Env's monotonic clock.
//
// One periodic tick (every renew interval) sends one store call at a time: Acquire while the
// lease is not held, Renew while it is. A separate deadline timer ends the lease locally at
// (start of the last successful call) + ttl - margin, whether or not a call is still waiting
// for the database: a renewal that hangs never keeps the work running past its deadline.
#include <algorithm>
#include <condition_variable>
#include <mutex>

#include "lease/lease.h"

namespace converge::lease {

struct LeaseKeeper::Core : std::enable_shared_from_this<LeaseKeeper::Core> {
  Core(Env& e, LeaseStore& s, LeaseKeeperOptions o) : env(e), store(s), options(std::move(o)) {}

  Env& env;
  LeaseStore& store;
  const LeaseKeeperOptions options;
  int64_t interval_ns = 0;
  int64_t ttl_ns = 0;
  int64_t margin_ns = 0;

  mutable std::mutex mu;
  std::condition_variable idle;  // a running store call ended
  bool started = false;
  bool stopped = false;
  bool call_pending = false;  // posted or running
  bool call_running = false;
  bool held = false;
  int64_t token = 0;
  int64_t deadline_ns = 0;  // on env.clock()'s monotonic time; valid while held
  TimerId tick_timer = 0;
  TimerId deadline_timer = 0;
  LeaseKeeperStats stats;

  int64_t Now() { return env.clock().NowMonotonicNanos(); }

  bool HeldLocked() const { return held && env.clock().NowMonotonicNanos() < deadline_ns; }

  void Notify() {
    if (options.on_change) options.on_change();
  }

  void ScheduleTick(int64_t delay_ns) {
    std::weak_ptr<Core> weak = weak_from_this();
    tick_timer = env.executor().Schedule(delay_ns, [weak] {
      if (auto self = weak.lock()) self->Tick();
    });
  }

  // Under mu. Replaces the deadline timer by one at deadline_ns.
  void ArmDeadlineLocked() {
    if (deadline_timer != 0) env.executor().Cancel(deadline_timer);
    std::weak_ptr<Core> weak = weak_from_this();
    const int64_t delay = std::max<int64_t>(0, deadline_ns - Now());
    deadline_timer = env.executor().Schedule(delay, [weak] {
      if (auto self = weak.lock()) self->DeadlineReached();
    });
  }

  void DeadlineReached() {
    bool changed = false;
    {
      std::lock_guard<std::mutex> lock(mu);
      deadline_timer = 0;
      if (stopped || !held) return;
      if (Now() < deadline_ns) {  // extended meanwhile
        ArmDeadlineLocked();
        return;
      }
      held = false;
      token = 0;
      ++stats.losses;
      changed = true;
    }
    if (changed) Notify();
  }

  void Tick() {
    {
      std::lock_guard<std::mutex> lock(mu);
      tick_timer = 0;
      if (stopped) return;
      ScheduleTick(interval_ns);
      // One call at a time: a call still waiting for the database is not doubled; the deadline
      // timer ends the lease if it never returns.
      if (call_pending) return;
      call_pending = true;
    }
    std::weak_ptr<Core> weak = weak_from_this();
    auto call = [weak] {
      if (auto self = weak.lock()) self->Call();
    };
    if (options.run_blocking) {
      options.run_blocking(std::move(call));
    } else {
      env.executor().Post(std::move(call));
    }
  }

  void Call() {
    bool renewing = false;
    int64_t current_token = 0;
    {
      std::lock_guard<std::mutex> lock(mu);
      if (stopped) {
        call_pending = false;
        idle.notify_all();
        return;
      }
      call_running = true;
      renewing = HeldLocked();
      current_token = token;
    }
    const int64_t start = Now();
    bool changed = false;
    if (renewing) {
      Status s = store.Renew(options.name, options.holder, current_token, options.ttl_ms);
      std::lock_guard<std::mutex> lock(mu);
      if (s.ok()) {
        ++stats.renewals;
        // Only a lease still held by the clock is extended: past its deadline the owner has
        // been (or is about to be) told it is lost, and the deadline timer says so.
        if (HeldLocked() && token == current_token && !stopped) {
          deadline_ns = std::max(deadline_ns, start + ttl_ns - margin_ns);
          ArmDeadlineLocked();
        }
      } else {
        ++stats.renew_failures;
        stats.last_error = s.ToString();
        // Lost for certain: stop now rather than at the deadline. Any other error leaves the
        // outcome unknown; the deadline decides.
        if (s.code() == StatusCode::kFailedPrecondition && held && token == current_token) {
          held = false;
          token = 0;
          ++stats.losses;
          changed = true;
        }
      }
      EndCallLocked();
    } else {
      Result<Acquired> got = store.Acquire(options.name, options.holder, options.ttl_ms);
      bool release = false;
      {
        std::lock_guard<std::mutex> lock(mu);
        if (got.ok()) {
          if (stopped) {
            release = true;  // taken while stopping: give it back below
          } else {
            ++stats.acquisitions;
            if (got->takeover) ++stats.takeovers;
            held = true;
            token = got->token;
            deadline_ns = start + ttl_ns - margin_ns;
            ArmDeadlineLocked();
            changed = HeldLocked();
            if (!changed) held = false;  // the call took longer than the lease: useless
          }
        } else if (got.status().code() != StatusCode::kFailedPrecondition) {
          stats.last_error = got.status().ToString();
        }
        if (!release) EndCallLocked();
      }
      if (release) {
        store.Release(options.name, options.holder, got->token).IgnoreError();
        std::lock_guard<std::mutex> lock(mu);
        EndCallLocked();
      }
    }
    if (changed) Notify();
  }

  void EndCallLocked() {
    call_pending = false;
    call_running = false;
    idle.notify_all();
  }
};

Status ValidateKeeperOptions(const LeaseKeeperOptions& o) {
  if (o.name.empty()) return InvalidArgumentError("lease: name must not be empty");
  if (o.holder.empty()) return InvalidArgumentError("lease: holder must not be empty");
  if (o.ttl_ms < 10) return InvalidArgumentError("lease: ttl_ms must be at least 10");
  const int64_t interval = o.renew_interval_ms == 0 ? o.ttl_ms / 3 : o.renew_interval_ms;
  const int64_t margin = o.safety_margin_ms == 0 ? o.ttl_ms / 5 : o.safety_margin_ms;
  if (interval <= 0) return InvalidArgumentError("lease: renew_interval_ms must be positive");
  if (margin <= 0) return InvalidArgumentError("lease: safety_margin_ms must be positive");
  if (interval + margin >= o.ttl_ms) {
    return InvalidArgumentError(
        "lease: renew_interval_ms + safety_margin_ms must be less than ttl_ms (a renewal must "
        "land before the holder's deadline)");
  }
  return Status::Ok();
}

Result<std::unique_ptr<LeaseKeeper>> LeaseKeeper::Create(Env& env, LeaseStore& store,
                                                         LeaseKeeperOptions options) {
  CONVERGE_RETURN_IF_ERROR(ValidateKeeperOptions(options));
  auto core = std::make_shared<Core>(env, store, std::move(options));
  const LeaseKeeperOptions& o = core->options;
  core->ttl_ns = o.ttl_ms * 1'000'000;
  core->interval_ns = (o.renew_interval_ms == 0 ? o.ttl_ms / 3 : o.renew_interval_ms) * 1'000'000;
  core->margin_ns = (o.safety_margin_ms == 0 ? o.ttl_ms / 5 : o.safety_margin_ms) * 1'000'000;
  return std::unique_ptr<LeaseKeeper>(new LeaseKeeper(std::move(core)));
}

LeaseKeeper::~LeaseKeeper() { Stop(); }

void LeaseKeeper::Start() {
  std::lock_guard<std::mutex> lock(core_->mu);
  if (core_->started || core_->stopped) return;
  core_->started = true;
  core_->ScheduleTick(0);
}

void LeaseKeeper::Stop() {
  Core& c = *core_;
  int64_t token = 0;
  {
    std::unique_lock<std::mutex> lock(c.mu);
    if (c.stopped) return;
    c.stopped = true;
    if (c.tick_timer != 0) c.env.executor().Cancel(c.tick_timer);
    if (c.deadline_timer != 0) c.env.executor().Cancel(c.deadline_timer);
    c.tick_timer = c.deadline_timer = 0;
    // A call that is running finishes first (bounded by the store's timeouts), so no acquire
    // lands after the release below. A call only posted sees `stopped` and does nothing.
    c.idle.wait(lock, [&c] { return !c.call_running; });
    if (c.HeldLocked()) token = c.token;
    c.held = false;
    c.token = 0;
  }
  if (token != 0) c.store.Release(c.options.name, c.options.holder, token).IgnoreError();
}

bool LeaseKeeper::held() const {
  std::lock_guard<std::mutex> lock(core_->mu);
  return core_->HeldLocked();
}

int64_t LeaseKeeper::token() const {
  std::lock_guard<std::mutex> lock(core_->mu);
  return core_->HeldLocked() ? core_->token : 0;
}

int64_t LeaseKeeper::remaining_ms() const {
  std::lock_guard<std::mutex> lock(core_->mu);
  if (!core_->HeldLocked()) return 0;
  return (core_->deadline_ns - core_->Now()) / 1'000'000;
}

const std::string& LeaseKeeper::name() const { return core_->options.name; }
const std::string& LeaseKeeper::holder() const { return core_->options.holder; }

LeaseKeeperStats LeaseKeeper::stats() const {
  std::lock_guard<std::mutex> lock(core_->mu);
  return core_->stats;
}

}  // namespace converge::lease
