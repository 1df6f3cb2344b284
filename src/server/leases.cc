#include "server/leases.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <mutex>
#include <set>
#include <string_view>
#include <thread>
#include <utility>

namespace converge::server {
namespace {

// One thread running posted tasks in order. The lease calls (which block on PostgreSQL) and the
// works' starts and stops (which block on their own components) each get one, so a stuck
// database call never delays a stop that a deadline asked for.
class SerialThread {
 public:
  SerialThread() : thread_([this] { Loop(); }) {}
  ~SerialThread() { Join(); }

  void Post(std::function<void()> fn) {
    std::lock_guard<std::mutex> lock(mu_);
    if (closed_) return;
    tasks_.push_back(std::move(fn));
    cv_.notify_one();
  }

  // Runs what is queued, then ends the thread. Idempotent.
  void Join() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      closed_ = true;
      cv_.notify_one();
    }
    if (thread_.joinable()) thread_.join();
  }

 private:
  void Loop() {
    for (;;) {
      std::function<void()> fn;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [this] { return closed_ || !tasks_.empty(); });
        if (tasks_.empty()) return;
        fn = std::move(tasks_.front());
        tasks_.pop_front();
      }
      fn();
    }
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> tasks_;
  bool closed_ = false;
  std::thread thread_;  // last: starts after the members it uses
};

std::string RandomSuffix(Env& env) {
  static const char kHex[] = "0123456789abcdef";
  uint64_t r = env.random().Next64();
  std::string out;
  for (int i = 0; i < 12; ++i) {
    out.push_back(kHex[r & 15]);
    r >>= 4;
  }
  return out;
}

}  // namespace

struct LeasedWork::Impl {
  struct Work {
    std::string name;
    std::function<Status()> start;
    std::function<void()> stop;
    std::unique_ptr<lease::LeaseKeeper> keeper;
    // Written under work_mu; read without it (a view must not wait for a slow start).
    std::atomic<bool> running{false};
    // Taken over from this sidecar's previous incarnation at Start (counted as a takeover).
    bool taken_at_start = false;
  };

  Env* env = nullptr;
  ServerConfig config;
  std::string holder;
  std::unique_ptr<lease::LeaseStore> store;
  std::vector<std::unique_ptr<Work>> works;
  mutable std::mutex work_mu;  // the works' running flags; held while one starts or stops
  bool started = false;
  bool stopping = false;  // under work_mu
  // Declared after `works`, so destroyed (joined) before them. The work thread is shared with
  // retry timers, which post to it (a no-op once it is closed).
  std::unique_ptr<SerialThread> calls;
  std::shared_ptr<SerialThread> work_thread;

  static constexpr int64_t kStartRetryNanos = 500'000'000;

  // Makes the work run exactly while its lease is held. On the work thread.
  void Reconcile(Work& w) {
    std::lock_guard<std::mutex> lock(work_mu);
    if (stopping) return;
    const bool want = w.keeper->held();
    if (want && !w.running) {
      Status s = w.start();
      if (!s.ok()) {
        // E.g. the saga log's advisory lock, still held by a dead holder's session until
        // PostgreSQL notices: tried again while the lease is held.
        std::fprintf(stderr, "converge serve: lease '%s' held, but its work did not start: %s\n",
                     w.name.c_str(), s.ToString().c_str());
        std::shared_ptr<SerialThread> t = work_thread;
        Work* wp = &w;
        env->executor().Schedule(kStartRetryNanos,
                                 [t, this, wp] { t->Post([this, wp] { Reconcile(*wp); }); });
        return;
      }
      w.running = true;
      std::fprintf(stderr, "converge serve: lease '%s' acquired (token %lld): work started\n",
                   w.name.c_str(), static_cast<long long>(w.keeper->token()));
    } else if (!want && w.running) {
      w.stop();
      w.running = false;
      std::fprintf(stderr, "converge serve: lease '%s' lost: work stopped\n", w.name.c_str());
    }
  }
};

std::string ClusterHolder(Env& env, const ServerConfig& config, const std::string& url) {
  std::string holder = config.cluster.instance_id + "/" + RandomSuffix(env);
  if (!url.empty()) holder += "@" + url;
  return holder;
}

namespace {
// "<instance_id>" and "<url>" of a holder string ("" when it has no URL). instance_id has no
// '/' or '@' (config), the random part no '@': the first '@' after the first '/' ends it.
std::pair<std::string_view, std::string_view> SplitHolder(std::string_view holder) {
  const size_t slash = holder.find('/');
  if (slash == std::string_view::npos) return {holder, {}};
  const size_t at = holder.find('@', slash);
  if (at == std::string_view::npos) return {holder.substr(0, slash), {}};
  return {holder.substr(0, slash), holder.substr(at + 1)};
}
}  // namespace

bool IsPreviousIncarnation(const std::string& holder, const std::string& self) {
  if (holder == self) return false;
  const auto [instance, url] = SplitHolder(self);
  if (url.empty()) return false;
  const auto [other_instance, other_url] = SplitHolder(holder);
  return other_instance == instance && other_url == url;
}

Result<std::vector<std::string>> TakeOverPreviousIncarnation(lease::LeaseStore& store,
                                                             const ServerConfig& config,
                                                             const std::string& self) {
  std::vector<std::string> taken;
  if (SplitHolder(self).second.empty()) return taken;  // no URL: nothing proves the old one dead
  CONVERGE_ASSIGN_OR_RETURN(std::vector<lease::LeaseRecord> all, store.List());
  for (const lease::LeaseRecord& r : all) {
    if (r.holder.empty() || !IsPreviousIncarnation(r.holder, self)) continue;
    const int64_t ttl_ms = LeaseOptionsFor(config, r.name).ttl_ms;
    Result<lease::Acquired> a = store.TakeOver(r.name, self, r.holder, ttl_ms);
    if (a.ok()) {
      std::fprintf(stderr,
                   "converge serve: lease '%s' taken over from this sidecar's previous "
                   "incarnation %s (token %lld)\n",
                   r.name.c_str(), r.holder.c_str(), static_cast<long long>(a->token));
      taken.push_back(r.name);
    } else if (a.status().code() != StatusCode::kFailedPrecondition) {
      // Unknown outcome: the keeper's acquire settles it (the row names this holder, or it
      // expires as usual).
      std::fprintf(stderr, "converge serve: taking over lease '%s' from %s: %s\n", r.name.c_str(),
                   r.holder.c_str(), a.status().ToString().c_str());
    }  // FailedPrecondition: expired or released meanwhile
  }
  return taken;
}

int64_t ClusterRenewIntervalMs(const ServerConfig& config) {
  const lease::LeaseKeeperOptions k = LeaseOptionsFor(config, "x");
  return k.renew_interval_ms == 0 ? k.ttl_ms / 3 : k.renew_interval_ms;
}

Result<std::unique_ptr<lease::LeaseStore>> OpenClusterLeaseStore(const ServerConfig& config) {
  lease::PostgresLeaseStoreOptions o;
  o.conninfo = config.cluster.postgres_conninfo;
  o.table = config.cluster.lease_table;
  o.connect_timeout_ms = config.cluster.postgres_connect_timeout_ms;
  // A renewal that takes longer than an interval is worthless: the next one is due.
  o.statement_timeout_ms = std::max<int64_t>(100, ClusterRenewIntervalMs(config));
  Result<std::unique_ptr<lease::LeaseStore>> store = lease::OpenPostgresLeaseStore(o);
  if (!store.ok()) return store.status().WithContext("cluster: the lease table");
  return store;
}

LeasedWork::LeasedWork(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

LeasedWork::~LeasedWork() { Stop(); }

Result<std::unique_ptr<LeasedWork>> LeasedWork::Open(Env& env, const ServerConfig& config) {
  auto impl = std::make_unique<Impl>();
  impl->env = &env;
  impl->config = config;
  CONVERGE_ASSIGN_OR_RETURN(impl->store, OpenClusterLeaseStore(config));
  impl->calls = std::make_unique<SerialThread>();
  impl->work_thread = std::make_shared<SerialThread>();
  return std::unique_ptr<LeasedWork>(new LeasedWork(std::move(impl)));
}

Status LeasedWork::Add(const std::string& name, std::function<Status()> start,
                       std::function<void()> stop) {
  Impl& m = *impl_;
  for (const auto& w : m.works) {
    if (w->name == name) return InvalidArgumentError("lease '" + name + "' added twice");
  }
  if (m.started) return FailedPreconditionError("lease '" + name + "' added after Start");
  // The options are checked now (the keeper is made at Start, once the holder is known).
  lease::LeaseKeeperOptions o = LeaseOptionsFor(m.config, name);
  o.holder = m.config.cluster.instance_id;
  CONVERGE_RETURN_IF_ERROR(lease::ValidateKeeperOptions(o));
  auto work = std::make_unique<Impl::Work>();
  work->name = name;
  work->start = std::move(start);
  work->stop = std::move(stop);
  m.works.push_back(std::move(work));
  return Status::Ok();
}

std::vector<std::string> LeasedWork::Start(const std::string& url) {
  Impl& m = *impl_;
  if (m.started) return {};
  m.started = true;
  m.holder = ClusterHolder(*m.env, m.config, url);
  // Before any keeper acquires: the leases this sidecar's previous incarnation still holds are
  // this process's now (new tokens), so its keepers acquire them at once instead of waiting for
  // them to expire.
  std::vector<std::string> taken;
  Result<std::vector<std::string>> t = TakeOverPreviousIncarnation(*m.store, m.config, m.holder);
  if (t.ok()) {
    taken = std::move(t).value();
  } else {
    std::fprintf(stderr,
                 "converge serve: the leases of this sidecar's previous incarnation: %s (they "
                 "are taken once they expire)\n",
                 t.status().ToString().c_str());
  }
  SerialThread* calls = m.calls.get();
  SerialThread* work_thread = m.work_thread.get();
  Impl* impl = impl_.get();
  for (auto& work : m.works) {
    Impl::Work* w = work.get();
    w->taken_at_start = std::find(taken.begin(), taken.end(), w->name) != taken.end();
    lease::LeaseKeeperOptions o = LeaseOptionsFor(m.config, w->name);
    o.holder = m.holder;
    o.run_blocking = [calls](std::function<void()> fn) { calls->Post(std::move(fn)); };
    o.on_change = [work_thread, impl, w] { work_thread->Post([impl, w] { impl->Reconcile(*w); }); };
    Result<std::unique_ptr<lease::LeaseKeeper>> keeper =
        lease::LeaseKeeper::Create(*m.env, *m.store, std::move(o));
    if (!keeper.ok()) {  // checked by Add: not expected
      std::fprintf(stderr, "converge serve: lease '%s': %s\n", w->name.c_str(),
                   keeper.status().ToString().c_str());
      continue;
    }
    {
      std::lock_guard<std::mutex> lock(m.work_mu);
      w->keeper = std::move(keeper).value();
    }
    w->keeper->Start();
  }
  return taken;
}

lease::LeaseStore& LeasedWork::store() { return *impl_->store; }

void LeasedWork::Stop() {
  Impl& m = *impl_;
  {
    std::lock_guard<std::mutex> lock(m.work_mu);
    if (m.stopping) return;
    m.stopping = true;
    // Every work stops before any lease is released, so no other sidecar starts a work that
    // still runs here.
    for (auto& w : m.works) {
      if (w->running) {
        w->stop();
        w->running = false;
      }
    }
  }
  for (auto& w : m.works) {
    if (w->keeper != nullptr) w->keeper->Stop();
  }
  m.calls->Join();
  m.work_thread->Join();
}

const std::string& LeasedWork::holder() const { return impl_->holder; }

std::vector<LeaseView> LeasedWork::View() const {
  const Impl& m = *impl_;
  std::vector<LeaseView> out;
  for (const auto& w : m.works) {
    if (w->keeper == nullptr) continue;  // before Start
    LeaseView v;
    v.name = w->name;
    v.held = w->keeper->held();
    v.token = w->keeper->token();
    v.remaining_ms = w->keeper->remaining_ms();
    v.stats = w->keeper->stats();
    // The keeper's own acquire found the row already naming this process.
    if (w->taken_at_start) ++v.stats.takeovers;
    v.running = w->running.load();
    out.push_back(std::move(v));
  }
  return out;
}

std::optional<bool> LeasedWork::Running(const std::string& name) const {
  for (const auto& w : impl_->works) {
    if (w->name == name) return w->running.load();
  }
  return std::nullopt;
}

bool LeasedWork::Held(const std::string& name) const {
  for (const auto& w : impl_->works) {
    if (w->name == name) return w->keeper != nullptr && w->keeper->held();
  }
  return false;
}

void LeasedWork::CollectMetrics(std::vector<MetricsRegistry::Sample>* out) const {
  for (const LeaseView& v : View()) {
    Labels labels = {{"name", v.name}};
    out->push_back({"converge_lease_held",
                    "1 while this sidecar holds the lease (by its own deadline).", "gauge", labels,
                    v.held ? 1.0 : 0.0});
    out->push_back({"converge_lease_token", "Fencing token of the held lease (0 when not held).",
                    "gauge", labels, static_cast<double>(v.token)});
    out->push_back({"converge_lease_acquisitions_total", "Times this sidecar acquired the lease.",
                    "counter", labels, static_cast<double>(v.stats.acquisitions)});
    out->push_back({"converge_lease_takeovers_total",
                    "Acquisitions of a lease whose previous holder had not released it (it "
                    "expired: that holder died or was cut off).",
                    "counter", labels, static_cast<double>(v.stats.takeovers)});
    out->push_back({"converge_lease_renew_failures_total",
                    "Renewals that failed (database errors, or the lease was lost).", "counter",
                    labels, static_cast<double>(v.stats.renew_failures)});
    out->push_back({"converge_lease_losses_total",
                    "Times the lease ended here without a shutdown (deadline passed without a "
                    "renewal, or the table said it was lost); its work was stopped.",
                    "counter", labels, static_cast<double>(v.stats.losses)});
  }
}

// ---------------------------------------------------------------------------------------
// Relays, one lease per source.

namespace {

class LeasedRelayService final : public RelayService {
 public:
  LeasedRelayService(Env& env, Log& log, RelayServiceConfig config)
      : env_(env), log_(log), config_(std::move(config)), running_(config_.sources.size()) {}
  ~LeasedRelayService() override { Stop(); }

  Status StartSource(size_t i) {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopped_) return FailedPreconditionError("relays are stopping");
    if (running_[i] != nullptr) return Status::Ok();
    RelayServiceConfig one;
    one.sink = config_.sink;
    one.sources = {config_.sources[i]};
    CONVERGE_ASSIGN_OR_RETURN(running_[i], RelayService::Start(env_, log_, one));
    return Status::Ok();
  }

  void StopSource(size_t i) {
    std::unique_ptr<RelayService> r;
    {
      std::lock_guard<std::mutex> lock(mu_);
      r = std::move(running_[i]);
    }
    // Waits for the step in flight (a batch being published finishes; its rows not yet deleted
    // are published again by the next holder, and dropped by the log's dedup).
    if (r != nullptr) r->Stop();
  }

  void Stop() override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stopped_ = true;
    }
    for (size_t i = 0; i < running_.size(); ++i) StopSource(i);
  }

  std::vector<std::pair<std::string, RelayStats>> stats() const override {
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<std::pair<std::string, RelayStats>> out;
    for (size_t i = 0; i < config_.sources.size(); ++i) {
      RelayStats st;
      if (running_[i] != nullptr) {
        auto inner = running_[i]->stats();
        if (!inner.empty()) st = inner[0].second;
      }
      out.emplace_back(config_.sources[i].name, std::move(st));
    }
    return out;
  }

 private:
  Env& env_;
  Log& log_;
  const RelayServiceConfig config_;
  mutable std::mutex mu_;
  bool stopped_ = false;
  std::vector<std::unique_ptr<RelayService>> running_;  // per source; null when not held
};

}  // namespace

Result<std::shared_ptr<RelayService>> StartLeasedRelays(Env& env, Log& log,
                                                        const RelayServiceConfig& config,
                                                        LeasedWork& leases) {
  std::set<std::string> names;
  for (const RelaySourceConfig& s : config.sources) {
    if (!names.insert(s.name).second) {
      return InvalidArgumentError("relay config: duplicate source name '" + s.name + "'");
    }
    CONVERGE_RETURN_IF_ERROR(sql::ParseDatabaseTarget(s.database).status());
  }
  auto service = std::make_shared<LeasedRelayService>(env, log, config);
  LeasedRelayService* raw = service.get();
  for (size_t i = 0; i < config.sources.size(); ++i) {
    CONVERGE_RETURN_IF_ERROR(leases.Add(
        "relay:" + config.sources[i].name, [raw, i] { return raw->StartSource(i); },
        [raw, i] { raw->StopSource(i); }));
  }
  return std::shared_ptr<RelayService>(std::move(service));
}

// ---------------------------------------------------------------------------------------
// Sagas, one lease for the orchestrator.

namespace {

class LeasedSagas final : public SagaOrchestrator {
 public:
  using OpenFn = std::function<Result<std::unique_ptr<SagaOrchestrator>>()>;
  explicit LeasedSagas(OpenFn open) : open_(std::move(open)) {}
  ~LeasedSagas() override { StopWork(); }

  Status StartWork() {
    std::lock_guard<std::mutex> start_lock(start_mu_);
    if (Get() != nullptr) return Status::Ok();
    // Recovers the saga log and resumes every saga in flight (outside mu_: it blocks).
    CONVERGE_ASSIGN_OR_RETURN(std::unique_ptr<SagaOrchestrator> opened, open_());
    std::lock_guard<std::mutex> lock(mu_);
    inner_ = std::shared_ptr<SagaOrchestrator>(std::move(opened));
    return Status::Ok();
  }

  void StopWork() {
    std::shared_ptr<SagaOrchestrator> inner;
    {
      std::lock_guard<std::mutex> lock(mu_);
      inner = std::move(inner_);
    }
    // No more replies or timers handled here; calls still holding it get FailedPrecondition.
    if (inner != nullptr) inner->Close();
  }

  Status RegisterDefinition(const SagaDefinition& definition) override {
    auto o = Get();
    return o ? o->RegisterDefinition(definition) : NotHere();
  }
  std::vector<SagaDefinition> ListDefinitions() override {
    auto o = Get();
    return o ? o->ListDefinitions() : std::vector<SagaDefinition>{};
  }
  Result<std::string> Start(const SagaStartRequest& request) override {
    auto o = Get();
    if (!o) return NotHere();
    return o->Start(request);
  }
  void StartAsync(const SagaStartRequest& request, StartCallback done) override {
    auto o = Get();
    if (!o) return done(NotHere());
    o->StartAsync(request, std::move(done));
  }
  Status Cancel(const std::string& id, const std::string& reason) override {
    auto o = Get();
    return o ? o->Cancel(id, reason) : NotHere();
  }
  void CancelAsync(const std::string& id, const std::string& reason, DoneCallback done) override {
    auto o = Get();
    if (!o) return done(NotHere());
    o->CancelAsync(id, reason, std::move(done));
  }
  std::vector<SagaTimerInfo> ListTimers(size_t limit) override {
    auto o = Get();
    return o ? o->ListTimers(limit) : std::vector<SagaTimerInfo>{};
  }
  Status RescheduleTimer(const std::string& id, SagaTimerKind kind, int64_t due_micros) override {
    auto o = Get();
    return o ? o->RescheduleTimer(id, kind, due_micros) : NotHere();
  }
  Status CancelTimer(const std::string& id, SagaTimerKind kind) override {
    auto o = Get();
    return o ? o->CancelTimer(id, kind) : NotHere();
  }
  Result<SagaInfo> Describe(const std::string& id) override {
    auto o = Get();
    if (!o) return NotHere();
    return o->Describe(id);
  }
  std::vector<SagaSummary> List(const SagaListFilter& filter) override {
    auto o = Get();
    return o ? o->List(filter) : std::vector<SagaSummary>{};
  }
  SagaOrchestratorStats stats() override {
    auto o = Get();
    return o ? o->stats() : SagaOrchestratorStats{};
  }
  Status Health() override {
    auto o = Get();
    return o ? o->Health() : Status::Ok();
  }
  Status Stopped() override {
    auto o = Get();
    return o ? o->Stopped() : NotHere();
  }
  Result<size_t> RunOnce() override {
    auto o = Get();
    if (!o) return NotHere();
    return o->RunOnce();
  }
  void Close() override { StopWork(); }

 private:
  std::shared_ptr<SagaOrchestrator> Get() {
    std::lock_guard<std::mutex> lock(mu_);
    return inner_;
  }
  static Status NotHere() {
    return UnavailableError(
        "sagas run in the sidecar holding the lease 'sagas', not in this one (GET /v1/leases); "
        "retry through another sidecar, or here once it holds the lease");
  }

  OpenFn open_;
  std::mutex start_mu_;  // one StartWork at a time
  std::mutex mu_;
  std::shared_ptr<SagaOrchestrator> inner_;  // mu_; null while the lease is elsewhere
};

}  // namespace

Result<std::unique_ptr<SagaOrchestrator>> StartLeasedSagas(LeasedSagas::OpenFn open,
                                                           LeasedWork& leases) {
  auto sagas = std::make_unique<LeasedSagas>(std::move(open));
  LeasedSagas* raw = sagas.get();
  CONVERGE_RETURN_IF_ERROR(leases.Add(
      "sagas", [raw] { return raw->StartWork(); }, [raw] { raw->StopWork(); }));
  return std::unique_ptr<SagaOrchestrator>(std::move(sagas));
}

}  // namespace converge::server
