#include "server/cluster_groups.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <map>
#include <mutex>

#include "converge/sql.h"
#include "groups/state_store.h"
#include "lease/lease.h"
#include "server/blocking_pool.h"
#include "server/group_state_pg.h"
#include "server/leases.h"

namespace converge::server {

namespace {

constexpr std::string_view kNodePrefix = "node:";
constexpr std::string_view kGroupPrefix = "group:";
constexpr int64_t kNanosPerMilli = 1'000'000;
constexpr int64_t kRetryOpenNanos = 500 * kNanosPerMilli;

// The URL a holder string publishes ("<instance>/<random>@<url>"); "" for other holders.
std::string UrlOfHolder(const std::string& holder) {
  const size_t at = holder.find('@');
  return at == std::string::npos ? std::string() : holder.substr(at + 1);
}

// Rendezvous (highest random weight) score of `node` for `key`: every sidecar computes the same
// preferred node from the same live set, and a node joining or leaving moves only the groups
// it wins or held.
uint64_t Score(std::string_view node, std::string_view key) {
  uint64_t h = 14695981039346656037ull;
  auto mix = [&h](std::string_view s) {
    for (unsigned char c : s) {
      h ^= c;
      h *= 1099511628211ull;
    }
  };
  mix(node);
  mix(std::string_view("\n", 1));
  mix(key);
  // A final avalanche (splitmix64) so that similar names spread.
  h ^= h >> 30;
  h *= 0xbf58476d1ce4e5b9ull;
  h ^= h >> 27;
  h *= 0x94d049bb133111ebull;
  h ^= h >> 31;
  return h;
}

struct Running {
  std::shared_ptr<ConsumerGroups> groups;
  int64_t token = 0;
  // Destroyed before `groups` (declared after it).
  std::unique_ptr<ConsumerGroups::ReadyWatch> watch;
};

// Stops a group running here: its last commit is written now, fenced by its lease, so that it
// is durable before the lease is released. In-flight calls may still hold the instance; what
// they commit later is refused by the fence once another sidecar holds the group (and is
// delivered again there).
void CloseRunning(std::shared_ptr<Running> r, const std::string& scope) {
  if (r == nullptr) return;
  if (Status s = r->groups->Flush(); !s.ok()) {
    std::fprintf(stderr, "converge serve: consumer group '%s': last commit: %s\n", scope.c_str(),
                 s.ToString().c_str());
  }
}

struct Entry {
  std::string topic, group, scope, lease_name;
  std::mutex mu;  // keeper and running
  std::unique_ptr<lease::LeaseKeeper> keeper;
  std::shared_ptr<Running> running;
  std::atomic<int64_t> last_wanted_ns{0};
  std::mutex watch_mu;
  // fn(member): as ConsumerGroups::WatchReadyByMember ("" = any member).
  std::map<uint64_t, std::function<void(std::string_view)>> watchers;
  uint64_t next_watch = 1;

  void NotifyWatchers(std::string_view member = {}) {
    std::lock_guard<std::mutex> lock(watch_mu);
    for (auto& [id, fn] : watchers) fn(member);
  }
};

class ClusterWatch final : public ConsumerGroups::ReadyWatch {
 public:
  ClusterWatch(std::shared_ptr<Entry> entry, uint64_t id) : entry_(std::move(entry)), id_(id) {}
  ~ClusterWatch() override {
    std::lock_guard<std::mutex> lock(entry_->watch_mu);
    entry_->watchers.erase(id_);
  }

 private:
  std::shared_ptr<Entry> entry_;
  uint64_t id_;
};

Status NotHere(const std::string& topic, const std::string& group) {
  return UnavailableError("consumer group '" + group + "' on topic '" + topic +
                          "' is not run by this sidecar now (its owner changed); retry");
}

}  // namespace

struct ClusterGroups::Impl {
  Env* env = nullptr;
  Log* log = nullptr;
  ServerConfig config;
  ConsumerGroupsOptions base;
  std::string holder;  // "<instance>/<random>@<url>", set by Start
  std::string url;
  std::unique_ptr<lease::LeaseStore> leases;
  std::mutex db_mu;
  std::unique_ptr<sql::Database> db;          // the list of groups
  std::unique_ptr<BlockingPool> lease_calls;  // the keepers' store calls, in order
  std::unique_ptr<BlockingPool> work;         // opening and closing groups, the rebalance
  std::mutex mu;
  std::map<std::string, std::shared_ptr<Entry>> entries;  // by scope
  std::unique_ptr<lease::LeaseKeeper> node;
  std::condition_variable changed;  // with `mu`: a group started running here
  std::atomic<bool> started{false};
  std::atomic<bool> stopping{false};
  std::shared_ptr<std::atomic<bool>> timer_alive = std::make_shared<std::atomic<bool>>(true);
  TimerId timer{};
  std::mutex timer_mu;

  // The lease table as last read: live holders by lease name.
  std::mutex view_mu;
  std::map<std::string, std::string> view;
  int64_t view_ns = -1;

  std::atomic<uint64_t> forwards{0}, forward_failures{0}, takeovers{0}, releases{0};

  int64_t NowNs() const { return env->clock().NowMonotonicNanos(); }

  lease::LeaseKeeperOptions KeeperOptions(const std::string& name) const {
    lease::LeaseKeeperOptions o = LeaseOptionsFor(config, name);
    o.holder = holder;
    BlockingPool* calls = lease_calls.get();
    o.run_blocking = [calls](std::function<void()> fn) { calls->Post(std::move(fn)); };
    return o;
  }

  std::shared_ptr<Entry> GetEntry(const std::string& topic, const std::string& group, bool create) {
    const std::string scope = topic + "/" + group;
    std::lock_guard<std::mutex> lock(mu);
    auto it = entries.find(scope);
    if (it != entries.end()) {
      // Asked for now: under `mu`, so the rebalance never forgets an entry being used.
      if (create) it->second->last_wanted_ns = NowNs();
      return it->second;
    }
    if (!create) return nullptr;
    auto e = std::make_shared<Entry>();
    e->topic = topic;
    e->group = group;
    e->scope = scope;
    e->lease_name = std::string(kGroupPrefix) + scope;
    e->last_wanted_ns = NowNs();
    entries.emplace(scope, e);
    return e;
  }

  std::shared_ptr<Running> RunningOf(const std::string& topic, const std::string& group) {
    std::shared_ptr<Entry> e = GetEntry(topic, group, false);
    if (e == nullptr) return nullptr;
    std::lock_guard<std::mutex> lock(e->mu);
    if (e->running == nullptr || e->keeper == nullptr || !e->keeper->held()) return nullptr;
    return e->running;
  }

  // The holder of the group's lease by the table when it is another sidecar ("" when none or
  // this one), and the live leases read.
  std::string OtherOwner(const std::shared_ptr<Entry>& e,
                         std::map<std::string, std::string>* live) {
    *live = View(200);
    auto it = live->find(e->lease_name);
    if (it != live->end() && it->second == holder) {
      // Possibly released here since the table was read: read it again.
      *live = View(0);
      it = live->find(e->lease_name);
    }
    if (it == live->end() || it->second == holder) return "";
    return it->second;
  }

  // A keeper here that waits for a lease another sidecar holds is dropped (on the work thread):
  // requests go to that sidecar instead of waiting here.
  void DropStandby(const std::shared_ptr<Entry>& e) {
    {
      std::lock_guard<std::mutex> lock(e->mu);
      if (e->keeper == nullptr || e->keeper->held()) return;
    }
    std::weak_ptr<Entry> weak = e;
    work->Post([this, weak] {
      std::shared_ptr<Entry> entry = weak.lock();
      if (entry == nullptr) return;
      {
        std::lock_guard<std::mutex> lock(entry->mu);
        if (entry->keeper == nullptr || entry->keeper->held()) return;
      }
      Release(entry);
    });
  }

  // Waits up to `ms` for the group to run here.
  std::shared_ptr<Running> WaitRunning(const std::string& topic, const std::string& group,
                                       int64_t ms) {
    const int64_t deadline = NowNs() + ms * kNanosPerMilli;
    for (;;) {
      if (std::shared_ptr<Running> r = RunningOf(topic, group)) return r;
      if (NowNs() >= deadline) return nullptr;
      std::unique_lock<std::mutex> lock(mu);
      changed.wait_for(lock, std::chrono::milliseconds(50));
    }
  }

  // For callers inside this process (push subscriptions, a topic's deletion): the group's
  // instance when it runs here, or after acquiring it when no live sidecar runs it and this one
  // is the one its hash prefers (as a request would); null otherwise.
  std::shared_ptr<Running> RunningOrAcquire(const std::string& topic, const std::string& group) {
    if (std::shared_ptr<Running> r = RunningOf(topic, group)) return r;
    if (!started.load() || stopping.load()) return nullptr;
    std::shared_ptr<Entry> e = GetEntry(topic, group, true);
    e->last_wanted_ns = NowNs();
    std::map<std::string, std::string> live;
    if (!OtherOwner(e, &live).empty()) {
      DropStandby(e);
      return nullptr;  // runs elsewhere
    }
    const std::string preferred = Preferred(live, e->scope);
    if (!preferred.empty() && preferred != holder) return nullptr;
    {
      std::lock_guard<std::mutex> lock(e->mu);
      if (!EnsureKeeperLocked(e).ok()) return nullptr;
    }
    return WaitRunning(topic, group, 1000);
  }

  // Live holders by lease name, read again when older than `max_age_ms`.
  std::map<std::string, std::string> View(int64_t max_age_ms) {
    {
      std::lock_guard<std::mutex> lock(view_mu);
      if (view_ns >= 0 && NowNs() - view_ns <= max_age_ms * kNanosPerMilli) return view;
    }
    Result<std::vector<lease::LeaseRecord>> list = leases->List();
    std::lock_guard<std::mutex> lock(view_mu);
    if (list.ok()) {
      view.clear();
      for (const lease::LeaseRecord& r : *list) {
        if (!r.holder.empty() && r.expires_in_ms > 0) view[r.name] = r.holder;
      }
      view_ns = NowNs();
    }
    return view;
  }

  // The holder of the live node the rendezvous hash prefers for `scope`; "" if none is live.
  static std::string Preferred(const std::map<std::string, std::string>& live,
                               const std::string& scope) {
    std::string best;
    uint64_t best_score = 0;
    for (const auto& [name, who] : live) {
      if (name.compare(0, kNodePrefix.size(), kNodePrefix) != 0) continue;
      const uint64_t s = Score(std::string_view(name).substr(kNodePrefix.size()), scope);
      if (best.empty() || s > best_score) {
        best = who;
        best_score = s;
      }
    }
    return best;
  }

  // Creates and starts the keeper of `e` if it has none (e->mu held).
  Status EnsureKeeperLocked(const std::shared_ptr<Entry>& e) {
    if (e->keeper != nullptr) return Status::Ok();
    // Stop sets `stopping` before it collects the keepers: none may start after that.
    if (stopping.load()) return UnavailableError("the server is shutting down");
    lease::LeaseKeeperOptions o = KeeperOptions(e->lease_name);
    std::weak_ptr<Entry> weak = e;
    BlockingPool* w = work.get();
    o.on_change = [this, weak, w] {
      w->Post([this, weak] {
        if (std::shared_ptr<Entry> entry = weak.lock()) Reconcile(entry);
      });
    };
    CONVERGE_ASSIGN_OR_RETURN(e->keeper, lease::LeaseKeeper::Create(*env, *leases, std::move(o)));
    e->keeper->Start();
    return Status::Ok();
  }

  // Registers the instance's ready watch if the cluster object has watchers (e->mu held).
  void AttachWatchLocked(const std::shared_ptr<Entry>& e) {
    if (e->running == nullptr || e->running->watch != nullptr) return;
    {
      std::lock_guard<std::mutex> lock(e->watch_mu);
      if (e->watchers.empty()) return;
    }
    std::weak_ptr<Entry> weak = e;
    Result<std::unique_ptr<ConsumerGroups::ReadyWatch>> w =
        e->running->groups->WatchReadyByMember(e->topic, e->group, [weak](std::string_view m) {
          if (std::shared_ptr<Entry> entry = weak.lock()) entry->NotifyWatchers(m);
        });
    if (w.ok()) e->running->watch = std::move(w).value();  // NotFound: no group yet
  }

  // Makes the group run here exactly while its lease is held. On the work thread.
  void Reconcile(const std::shared_ptr<Entry>& e) {
    if (stopping.load()) return;
    std::shared_ptr<Running> closed;
    {
      std::lock_guard<std::mutex> lock(e->mu);
      const bool held = e->keeper != nullptr && e->keeper->held();
      const int64_t token = held ? e->keeper->token() : 0;
      if (e->running != nullptr && (!held || e->running->token != token)) {
        closed = std::move(e->running);
      }
      if (held && e->running == nullptr) {
        Result<std::shared_ptr<Running>> r = OpenGroup(*e, token);
        if (r.ok()) {
          e->running = std::move(r).value();
          AttachWatchLocked(e);
          std::fprintf(stderr, "converge serve: consumer group '%s' runs here (lease token %lld)\n",
                       e->scope.c_str(), static_cast<long long>(token));
        } else {
          std::fprintf(stderr, "converge serve: consumer group '%s': cannot open its state: %s\n",
                       e->scope.c_str(), r.status().ToString().c_str());
          std::weak_ptr<Entry> weak = e;
          BlockingPool* w = work.get();
          std::shared_ptr<std::atomic<bool>> alive = timer_alive;
          env->executor().Schedule(kRetryOpenNanos, [this, weak, w, alive] {
            if (!alive->load()) return;
            w->Post([this, weak] {
              if (std::shared_ptr<Entry> entry = weak.lock()) Reconcile(entry);
            });
          });
        }
      }
    }
    if (closed != nullptr) {
      // Its last flush is fenced: refused if another sidecar holds the group already.
      CloseRunning(std::move(closed), e->scope);
      std::fprintf(stderr, "converge serve: consumer group '%s' no longer runs here\n",
                   e->scope.c_str());
    }
    // Long polls wake up: they are answered here, or retried where the group runs now.
    e->NotifyWatchers();
    std::lock_guard<std::mutex> lock(mu);
    changed.notify_all();
  }

  Result<std::shared_ptr<Running>> OpenGroup(const Entry& e, int64_t token) {
    sql::PostgresOptions po;
    po.conninfo = config.cluster.postgres_conninfo;
    po.connect_timeout_ms = config.cluster.postgres_connect_timeout_ms;
    po.statement_timeout_ms = std::max<int64_t>(1000, config.cluster.lease_ttl_ms / 2);
    po.lock_timeout_ms = po.statement_timeout_ms;
    CONVERGE_ASSIGN_OR_RETURN(std::unique_ptr<sql::Database> conn,
                              sql::Database::ConnectPostgres(po));
    PgGroupStateOptions so;
    so.table = config.cluster.group_state_table;
    so.lease_table = config.cluster.lease_table;
    so.scope = e.scope;
    so.lease_name = e.lease_name;
    so.token = token;
    std::string bytes;
    std::vector<std::string_view> records;
    CONVERGE_ASSIGN_OR_RETURN(std::unique_ptr<::converge::internal::groups::StateStore> store,
                              OpenPgGroupState(std::move(conn), so, &bytes, &records));
    ConsumerGroupsOptions o = base;
    o.dir = "postgres:" + config.cluster.group_state_table + "/" + e.scope;
    CONVERGE_ASSIGN_OR_RETURN(std::unique_ptr<ConsumerGroups> groups,
                              ::converge::internal::groups::OpenConsumerGroupsOn(
                                  *env, *log, o, std::move(store), std::move(records)));
    auto r = std::make_shared<Running>();
    r->groups = std::move(groups);
    r->token = token;
    return r;
  }

  // Stops running the group here and releases its lease (on the work thread).
  void Release(const std::shared_ptr<Entry>& e) {
    std::shared_ptr<Running> closed;
    std::unique_ptr<lease::LeaseKeeper> keeper;
    {
      std::lock_guard<std::mutex> lock(e->mu);
      closed = std::move(e->running);
      keeper = std::move(e->keeper);
    }
    // The group stops (its last flush, fenced) before the lease is released, so no other
    // sidecar runs it while it still runs here.
    const bool was_running = closed != nullptr;
    CloseRunning(std::move(closed), e->scope);
    if (keeper != nullptr) keeper->Stop();
    {
      // The table no longer names this sidecar: read it again before the next decision.
      std::lock_guard<std::mutex> lock(view_mu);
      view_ns = -1;
    }
    if (was_running) {
      std::fprintf(stderr, "converge serve: consumer group '%s' released\n", e->scope.c_str());
    }
    e->NotifyWatchers();
  }

  // Whether the group exists in the instance running here (true when unknown).
  static bool Exists(const std::shared_ptr<Entry>& e) {
    std::shared_ptr<Running> r;
    {
      std::lock_guard<std::mutex> lock(e->mu);
      r = e->running;
    }
    if (r == nullptr) return true;
    for (const std::string& g : r->groups->ListGroups(e->topic)) {
      if (g == e->group) return true;
    }
    return false;
  }

  // Gives the groups whose preferred node is another live sidecar to it; forgets keepers of
  // groups this sidecar stopped asking for. On the work thread.
  void Rebalance() {
    if (stopping.load()) return;
    std::map<std::string, std::string> live = View(0);
    const bool me_live = live.count(std::string(kNodePrefix) + config.cluster.instance_id) > 0;
    std::vector<std::shared_ptr<Entry>> all;
    {
      std::lock_guard<std::mutex> lock(mu);
      for (auto& [scope, e] : entries) all.push_back(e);
    }
    const int64_t idle_ns = 2 * config.cluster.lease_ttl_ms * kNanosPerMilli;
    for (const std::shared_ptr<Entry>& e : all) {
      bool held = false, has_keeper = false;
      {
        std::lock_guard<std::mutex> lock(e->mu);
        has_keeper = e->keeper != nullptr;
        held = has_keeper && e->keeper->held();
      }
      if (held) {
        const std::string preferred = Preferred(live, e->scope);
        if (me_live && !preferred.empty() && preferred != holder) {
          releases.fetch_add(1);
          Release(e);
        } else if (NowNs() - e->last_wanted_ns.load() > idle_ns && !Exists(e)) {
          Release(e);  // asked about once (a name that is no group), idle since
        }
      } else if (has_keeper && NowNs() - e->last_wanted_ns.load() > idle_ns) {
        Release(e);  // a standby nobody asks for
      }
    }
    // Forget the groups asked about long ago that hold nothing here (the map would otherwise
    // keep every name ever asked for).
    std::lock_guard<std::mutex> lock(mu);
    for (auto it = entries.begin(); it != entries.end();) {
      Entry& e = *it->second;
      bool idle = NowNs() - e.last_wanted_ns.load() > idle_ns;
      if (idle) {
        std::lock_guard<std::mutex> el(e.mu);
        idle = e.keeper == nullptr && e.running == nullptr;
      }
      if (idle) {
        std::lock_guard<std::mutex> wl(e.watch_mu);
        idle = e.watchers.empty();
      }
      it = idle ? entries.erase(it) : std::next(it);
    }
  }
};

ClusterGroups::ClusterGroups(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

ClusterGroups::~ClusterGroups() { Stop(); }

Result<std::unique_ptr<ClusterGroups>> ClusterGroups::Open(Env& env, Log& log,
                                                           const ServerConfig& config,
                                                           ConsumerGroupsOptions base) {
  auto impl = std::make_unique<Impl>();
  impl->env = &env;
  impl->log = &log;
  impl->config = config;
  impl->base = std::move(base);
  CONVERGE_ASSIGN_OR_RETURN(impl->leases, OpenClusterLeaseStore(config));
  sql::PostgresOptions po;
  po.conninfo = config.cluster.postgres_conninfo;
  po.connect_timeout_ms = config.cluster.postgres_connect_timeout_ms;
  po.statement_timeout_ms = 5'000;
  po.lock_timeout_ms = 5'000;
  Result<std::unique_ptr<sql::Database>> db = sql::Database::ConnectPostgres(po);
  if (!db.ok()) return db.status().WithContext("cluster: the group state table");
  impl->db = std::move(db).value();
  CONVERGE_RETURN_IF_ERROR(CreatePgGroupStateTable(*impl->db, config.cluster.group_state_table));
  impl->lease_calls = std::make_unique<BlockingPool>(1);
  impl->work = std::make_unique<BlockingPool>(1);
  return std::unique_ptr<ClusterGroups>(new ClusterGroups(std::move(impl)));
}

namespace {
void ArmRebalance(ClusterGroups::Impl* m, int64_t delay_ns);
}

void ClusterGroups::Start(const std::string& advertise_url, const std::string& holder,
                          const std::vector<std::string>& taken_over) {
  Impl& m = *impl_;
  if (m.started.load()) return;
  m.url = advertise_url;
  m.holder = holder;
  lease::LeaseKeeperOptions o =
      m.KeeperOptions(std::string(kNodePrefix) + m.config.cluster.instance_id);
  Result<std::unique_ptr<lease::LeaseKeeper>> node =
      lease::LeaseKeeper::Create(*m.env, *m.leases, std::move(o));
  if (node.ok()) {
    m.node = std::move(node).value();
    m.node->Start();
  } else {
    std::fprintf(stderr, "converge serve: node lease: %s\n", node.status().ToString().c_str());
  }
  m.started = true;
  // The groups this sidecar ran before its restart: the table names this process as their
  // holder now, so their keepers acquire them at once and they run here again (the rebalance
  // hands those another live sidecar's hash prefers to it, as for any group).
  for (const std::string& name : taken_over) {
    if (name.compare(0, kGroupPrefix.size(), kGroupPrefix) != 0) continue;
    const std::string scope = name.substr(kGroupPrefix.size());
    const size_t slash = scope.find('/');
    if (slash == std::string::npos) continue;
    std::shared_ptr<Entry> e = m.GetEntry(scope.substr(0, slash), scope.substr(slash + 1), true);
    std::lock_guard<std::mutex> lock(e->mu);
    if (Status s = m.EnsureKeeperLocked(e); !s.ok()) {
      std::fprintf(stderr, "converge serve: consumer group '%s': %s\n", scope.c_str(),
                   s.ToString().c_str());
    }
  }
  ArmRebalance(&m, ClusterRenewIntervalMs(m.config) * kNanosPerMilli);
}

namespace {
void ArmRebalance(ClusterGroups::Impl* m, int64_t delay_ns) {
  std::lock_guard<std::mutex> lock(m->timer_mu);
  if (m->stopping.load()) return;
  std::shared_ptr<std::atomic<bool>> alive = m->timer_alive;
  m->timer = m->env->executor().Schedule(delay_ns, [m, alive, delay_ns] {
    if (!alive->load()) return;
    m->work->Post([m, alive, delay_ns] {
      if (!alive->load()) return;
      m->Rebalance();
      ArmRebalance(m, delay_ns);
    });
  });
}
}  // namespace

void ClusterGroups::Stop() {
  Impl& m = *impl_;
  if (m.stopping.exchange(true)) return;
  {
    std::lock_guard<std::mutex> lock(m.timer_mu);
    m.timer_alive->store(false);
    if (m.started.load()) m.env->executor().Cancel(m.timer);
  }
  m.work->Join();
  std::vector<std::shared_ptr<Entry>> all;
  {
    std::lock_guard<std::mutex> lock(m.mu);
    for (auto& [scope, e] : m.entries) all.push_back(e);
  }
  // Every group stops before any lease is released.
  for (const std::shared_ptr<Entry>& e : all) {
    std::shared_ptr<Running> closed;
    {
      std::lock_guard<std::mutex> lock(e->mu);
      closed = std::move(e->running);
    }
    CloseRunning(std::move(closed), e->scope);
  }
  for (const std::shared_ptr<Entry>& e : all) {
    std::unique_ptr<lease::LeaseKeeper> keeper;
    {
      std::lock_guard<std::mutex> lock(e->mu);
      keeper = std::move(e->keeper);
    }
    if (keeper != nullptr) keeper->Stop();
  }
  if (m.node != nullptr) m.node->Stop();
  m.lease_calls->Join();
}

const std::string& ClusterGroups::advertise_url() const { return impl_->url; }

Result<std::string> ClusterGroups::UrlOfLeaseHolder(const std::string& lease_name) {
  Impl& m = *impl_;
  std::map<std::string, std::string> live = m.View(200);
  auto it = live.find(lease_name);
  if (it == live.end()) {
    return UnavailableError("no sidecar holds the lease '" + lease_name +
                            "' now (GET /v1/leases); retry");
  }
  // A holder string is "<instance>/<random>", with "@<url>" when it publishes its URL; the
  // others are found through their sidecar's node lease, which does.
  std::string url = UrlOfHolder(it->second);
  if (url.empty()) {
    const std::string instance = it->second.substr(0, it->second.find('/'));
    auto node = live.find(std::string(kNodePrefix) + instance);
    if (node != live.end()) url = UrlOfHolder(node->second);
  }
  if (url.empty() || url == m.url) {
    return UnavailableError("the lease '" + lease_name + "' is held by " + it->second +
                            ", whose address is not known here yet; retry");
  }
  return url;
}

void ClusterGroups::CountForward(bool ok) {
  (ok ? impl_->forwards : impl_->forward_failures).fetch_add(1);
}

Result<ClusterGroups::Where> ClusterGroups::Locate(const std::string& topic,
                                                   const std::string& group, bool forwarded) {
  Impl& m = *impl_;
  if (!m.started.load() || m.stopping.load()) {
    return UnavailableError("consumer groups: this sidecar is not serving groups now");
  }
  std::shared_ptr<Entry> e = m.GetEntry(topic, group, true);
  e->last_wanted_ns = m.NowNs();
  if (m.RunningOf(topic, group) != nullptr) return Where{true, ""};
  auto elsewhere = [&](const std::string& owner) -> Result<Where> {
    m.DropStandby(e);
    const std::string url = UrlOfHolder(owner);
    if (!forwarded && !url.empty()) return Where{false, url};
    return UnavailableError("consumer group '" + group + "' on topic '" + topic + "' runs in " +
                            (url.empty() ? owner : url) + "; retry (its ownership is changing)");
  };
  std::map<std::string, std::string> live;
  if (std::string owner = m.OtherOwner(e, &live); !owner.empty()) return elsewhere(owner);
  // No live owner, or this sidecar is acquiring it. The preferred sidecar acquires it; a
  // forwarded request is served here (never forwarded twice).
  bool acquiring = false;
  {
    std::lock_guard<std::mutex> lock(e->mu);
    acquiring = e->keeper != nullptr;
  }
  if (!acquiring && !forwarded) {
    const std::string preferred = Impl::Preferred(live, e->scope);
    if (!preferred.empty() && preferred != m.holder) {
      const std::string url = UrlOfHolder(preferred);
      if (!url.empty()) return Where{false, url};
    }
  }
  {
    std::lock_guard<std::mutex> lock(e->mu);
    CONVERGE_RETURN_IF_ERROR(m.EnsureKeeperLocked(e));
  }
  // Acquiring (at once, then every renew interval).
  const int64_t wait_ms = std::min<int64_t>(3'000, m.config.cluster.lease_ttl_ms);
  if (m.WaitRunning(topic, group, wait_ms) != nullptr) return Where{true, ""};
  if (std::string owner = m.OtherOwner(e, &live); !owner.empty()) return elsewhere(owner);
  return UnavailableError("consumer group '" + group + "' on topic '" + topic +
                          "': no sidecar runs it yet (its lease is being taken over); retry");
}

void ClusterGroups::CollectMetrics(std::vector<MetricsRegistry::Sample>* out) const {
  Impl& m = *impl_;
  std::vector<std::shared_ptr<Entry>> all;
  {
    std::lock_guard<std::mutex> lock(m.mu);
    for (auto& [scope, e] : m.entries) all.push_back(e);
  }
  for (const std::shared_ptr<Entry>& e : all) {
    bool owned = false;
    {
      std::lock_guard<std::mutex> lock(e->mu);
      owned = e->running != nullptr && e->keeper != nullptr && e->keeper->held();
    }
    out->push_back({"converge_group_owned",
                    "1 while this sidecar runs the consumer group (holds its lease).",
                    "gauge",
                    {{"topic", e->topic}, {"group", e->group}},
                    owned ? 1.0 : 0.0});
  }
  out->push_back({"converge_group_forwards_total",
                  "Group requests this sidecar forwarded to the sidecar running the group.",
                  "counter",
                  {{"outcome", "ok"}},
                  static_cast<double>(m.forwards.load())});
  out->push_back({"converge_group_forwards_total",
                  "Group requests this sidecar forwarded to the sidecar running the group.",
                  "counter",
                  {{"outcome", "unreachable"}},
                  static_cast<double>(m.forward_failures.load())});
  out->push_back({"converge_group_releases_total",
                  "Groups this sidecar released to the live sidecar their hash prefers "
                  "(rebalance).",
                  "counter",
                  {},
                  static_cast<double>(m.releases.load())});
}

// ---------------------------------------------------------------------------------------
// ConsumerGroups for the groups running here.

#define CONVERGE_RUNNING_OR_RETURN(r, topic, group)            \
  std::shared_ptr<Running> r = impl_->RunningOf(topic, group); \
  if (r == nullptr) return NotHere(topic, group)
// The calls that start consuming or change a group may also acquire it (RunningOrAcquire).
#define CONVERGE_RUNNING_OR_ACQUIRE(r, topic, group)                  \
  std::shared_ptr<Running> r = impl_->RunningOrAcquire(topic, group); \
  if (r == nullptr) return NotHere(topic, group)

Status ClusterGroups::CreateGroup(const std::string& topic, const std::string& group,
                                  const GroupOptions& options) {
  CONVERGE_RUNNING_OR_ACQUIRE(r, topic, group);
  {
    // Listed for every sidecar (ListGroups) first, so a group that exists is always listed
    // (a row naming a group whose creation then failed is harmless: it is looked up and not
    // found). The group's state is its scope's rows; this row only names it.
    std::lock_guard<std::mutex> lock(impl_->db_mu);
    const std::string scope = topic + "/" + group;
    const sql::Value params[] = {sql::Value::Text(scope)};
    CONVERGE_RETURN_IF_ERROR(
        impl_->db
            ->Execute("INSERT INTO " + impl_->config.cluster.group_state_table +
                          " (scope, generation, seq, data) VALUES ($1, -1, -1, ''::bytea) "
                          "ON CONFLICT DO NOTHING",
                      params)
            .status()
            .WithContext("listing consumer group '" + scope + "'"));
  }
  Status s = r->groups->CreateGroup(topic, group, options);
  if (s.ok()) {
    // Watchers registered before (a group created again) follow the new group.
    if (std::shared_ptr<Entry> e = impl_->GetEntry(topic, group, false)) {
      std::lock_guard<std::mutex> lock(e->mu);
      if (e->running == r) impl_->AttachWatchLocked(e);
    }
  }
  return s;
}

Status ClusterGroups::DeleteGroup(const std::string& topic, const std::string& group, bool force) {
  CONVERGE_RUNNING_OR_ACQUIRE(r, topic, group);
  // The instance's watch belongs to the group being deleted: taken off before the deletion, so
  // that a group created again at once (a waiting fetch makes its group again when woken by
  // the deletion) attaches a watch of its own, which nothing here may drop afterwards.
  std::shared_ptr<Entry> e = impl_->GetEntry(topic, group, false);
  std::unique_ptr<ConsumerGroups::ReadyWatch> detached;
  if (e != nullptr) {
    std::lock_guard<std::mutex> lock(e->mu);
    if (e->running == r) detached = std::move(r->watch);
  }
  Status s = r->groups->DeleteGroup(topic, group, force);
  detached.reset();
  if (!s.ok() && e != nullptr) {
    // Not deleted (refused, or failed): watched again, and the waiting fetches look again in
    // case a record came while it was not watched.
    {
      std::lock_guard<std::mutex> lock(e->mu);
      if (e->running == r) impl_->AttachWatchLocked(e);
    }
    e->NotifyWatchers();
  }
  if (s.ok() || s.code() == StatusCode::kNotFound) {
    // Off the shared list, fenced by the group's lease like its state: a sidecar that lost the
    // group meanwhile cannot unlist a group another one runs (or created again) now. A failure
    // is the deletion's error (retry: the group is then not found, and unlisted).
    std::lock_guard<std::mutex> lock(impl_->db_mu);
    const std::string scope = topic + "/" + group;
    const std::string lease_name = std::string(kGroupPrefix) + scope;
    Status unlisted = impl_->db->Transact([&](sql::Transaction& txn) -> Status {
      CONVERGE_RETURN_IF_ERROR(
          lease::CheckFence(txn, impl_->config.cluster.lease_table, lease_name, r->token));
      const sql::Value params[] = {sql::Value::Text(scope)};
      return txn
          .Execute("DELETE FROM " + impl_->config.cluster.group_state_table +
                       " WHERE scope = $1 AND generation = -1",
                   params)
          .status();
    });
    if (!unlisted.ok()) {
      if (unlisted.code() == StatusCode::kFailedPrecondition) {
        // Fenced: another sidecar runs the group now.
        return NotHere(topic, group);
      }
      return unlisted.WithContext("unlisting consumer group '" + scope + "'");
    }
  }
  return s;
}

std::vector<std::string> ClusterGroups::ListGroups(const std::string& topic) {
  Result<std::vector<std::string>> groups = ListGroupsChecked(topic);
  if (groups.ok()) return std::move(groups).value();
  std::fprintf(stderr, "converge serve: listing the groups of topic '%s': %s\n", topic.c_str(),
               groups.status().ToString().c_str());
  return {};
}

Result<std::vector<std::string>> ClusterGroups::ListGroupsChecked(const std::string& topic) {
  std::vector<std::string> out;
  std::lock_guard<std::mutex> lock(impl_->db_mu);
  const std::string prefix = topic + "/";
  const sql::Value params[] = {sql::Value::Text(prefix),
                               sql::Value::Int(static_cast<int64_t>(prefix.size()))};
  CONVERGE_RETURN_IF_ERROR(impl_->db
      ->Query("SELECT scope FROM " + impl_->config.cluster.group_state_table +
                  " WHERE generation = -1 AND left(scope, $2::int) = $1 ORDER BY scope",
              params,
              [&](const sql::Row& row) -> Status {
                std::string_view scope = row.Bytes(0);
                std::string_view name = scope.substr(prefix.size());
                if (!name.empty() && name.find('/') == std::string_view::npos) {
                  out.emplace_back(name);
                }
                return Status::Ok();
              })
      .status()
      .WithContext("the shared group list"));
  return out;
}

Result<Assignment> ClusterGroups::Join(const std::string& topic, const std::string& group,
                                       const std::string& member) {
  CONVERGE_RUNNING_OR_ACQUIRE(r, topic, group);
  return r->groups->Join(topic, group, member);
}

Status ClusterGroups::Leave(const std::string& topic, const std::string& group,
                            const std::string& member) {
  CONVERGE_RUNNING_OR_RETURN(r, topic, group);
  return r->groups->Leave(topic, group, member);
}

Status ClusterGroups::Abandon(const std::string& topic, const std::string& group,
                              const std::string& member, std::string_view why) {
  CONVERGE_RUNNING_OR_RETURN(r, topic, group);
  return r->groups->Abandon(topic, group, member, why);
}

Result<Assignment> ClusterGroups::Heartbeat(const std::string& topic, const std::string& group,
                                            const std::string& member) {
  CONVERGE_RUNNING_OR_ACQUIRE(r, topic, group);
  return r->groups->Heartbeat(topic, group, member);
}

Result<FetchResult> ClusterGroups::Fetch(const std::string& topic, const std::string& group,
                                         const std::string& member, uint32_t max_records,
                                         uint64_t max_bytes) {
  CONVERGE_RUNNING_OR_ACQUIRE(r, topic, group);
  return r->groups->Fetch(topic, group, member, max_records, max_bytes);
}

Status ClusterGroups::Ack(const std::string& topic, const std::string& group,
                          const std::string& member, const LeaseRef& lease) {
  CONVERGE_RUNNING_OR_RETURN(r, topic, group);
  return r->groups->Ack(topic, group, member, lease);
}

Result<AckBatchResult> ClusterGroups::AckBatch(const std::string& topic, const std::string& group,
                                               const std::string& member,
                                               std::span<const LeaseRef> leases) {
  CONVERGE_RUNNING_OR_RETURN(r, topic, group);
  return r->groups->AckBatch(topic, group, member, leases);
}

void ClusterGroups::AckBatchAsync(const std::string& topic, const std::string& group,
                                  const std::string& member, std::span<const LeaseRef> leases,
                                  AckBatchDone done) {
  std::shared_ptr<Running> r = impl_->RunningOf(topic, group);
  if (r == nullptr) {
    done(NotHere(topic, group));
    return;
  }
  // A group closed meanwhile finishes the commits it accepted before it is destroyed.
  r->groups->AckBatchAsync(topic, group, member, leases, std::move(done));
}

Result<ExtendLeasesResult> ClusterGroups::ExtendLeases(const std::string& topic,
                                                       const std::string& group,
                                                       const std::string& member,
                                                       std::span<const LeaseRef> leases,
                                                       int64_t lease_ms) {
  CONVERGE_RUNNING_OR_RETURN(r, topic, group);
  return r->groups->ExtendLeases(topic, group, member, leases, lease_ms);
}

Status ClusterGroups::Nack(const std::string& topic, const std::string& group,
                           const std::string& member, const LeaseRef& lease,
                           const NackOptions& options) {
  CONVERGE_RUNNING_OR_RETURN(r, topic, group);
  return r->groups->Nack(topic, group, member, lease, options);
}

Status ClusterGroups::Seek(const std::string& topic, const std::string& group,
                           const SeekTarget& target) {
  CONVERGE_RUNNING_OR_ACQUIRE(r, topic, group);
  return r->groups->Seek(topic, group, target);
}

Result<GroupDescription> ClusterGroups::DescribeGroup(const std::string& topic,
                                                      const std::string& group) {
  CONVERGE_RUNNING_OR_RETURN(r, topic, group);
  return r->groups->DescribeGroup(topic, group);
}

Result<DeadLetterPage> ClusterGroups::ListDeadLetters(const std::string& topic,
                                                      const std::string& group,
                                                      uint64_t from_offset, uint32_t max) {
  CONVERGE_RUNNING_OR_RETURN(r, topic, group);
  return r->groups->ListDeadLetters(topic, group, from_offset, max);
}

Result<ReplayResult> ClusterGroups::ReplayDeadLetters(const std::string& topic,
                                                      const std::string& group,
                                                      const ReplayOptions& options) {
  CONVERGE_RUNNING_OR_ACQUIRE(r, topic, group);
  return r->groups->ReplayDeadLetters(topic, group, options);
}

Result<std::unique_ptr<ConsumerGroups::ReadyWatch>> ClusterGroups::WatchReady(
    const std::string& topic, const std::string& group, std::function<void()> fn) {
  return WatchReadyByMember(topic, group, [fn = std::move(fn)](std::string_view) { fn(); });
}

Result<std::unique_ptr<ConsumerGroups::ReadyWatch>> ClusterGroups::WatchReadyByMember(
    const std::string& topic, const std::string& group,
    std::function<void(std::string_view member)> fn) {
  std::shared_ptr<Entry> e = impl_->GetEntry(topic, group, true);
  uint64_t id = 0;
  {
    std::lock_guard<std::mutex> lock(e->watch_mu);
    id = e->next_watch++;
    e->watchers.emplace(id, std::move(fn));
  }
  {
    std::lock_guard<std::mutex> lock(e->mu);
    impl_->AttachWatchLocked(e);
  }
  return std::unique_ptr<ReadyWatch>(new ClusterWatch(e, id));
}

Result<std::optional<int64_t>> ClusterGroups::NextDueMonotonicNanos(const std::string& topic,
                                                                    const std::string& group) {
  CONVERGE_RUNNING_OR_RETURN(r, topic, group);
  return r->groups->NextDueMonotonicNanos(topic, group);
}

namespace {
std::vector<std::shared_ptr<Running>> AllRunning(ClusterGroups::Impl& m) {
  std::vector<std::shared_ptr<Entry>> all;
  {
    std::lock_guard<std::mutex> lock(m.mu);
    for (auto& [scope, e] : m.entries) all.push_back(e);
  }
  std::vector<std::shared_ptr<Running>> out;
  for (const std::shared_ptr<Entry>& e : all) {
    std::lock_guard<std::mutex> lock(e->mu);
    if (e->running != nullptr) out.push_back(e->running);
  }
  return out;
}
}  // namespace

Status ClusterGroups::Tick() {
  Status first;
  for (const auto& r : AllRunning(*impl_)) {
    Status s = r->groups->Tick();
    if (first.ok() && !s.ok()) first = s;
  }
  return first;
}

Status ClusterGroups::Flush() {
  Status first;
  for (const auto& r : AllRunning(*impl_)) {
    Status s = r->groups->Flush();
    if (first.ok() && !s.ok()) first = s;
  }
  return first;
}

Status ClusterGroups::JournalHealth() {
  // A group that lost its lease fails its writes by design (fenced): that is not this
  // sidecar's health. Readiness follows the groups running here.
  for (const auto& r : AllRunning(*impl_)) {
    Status s = r->groups->JournalHealth();
    if (!s.ok()) return s;
  }
  return Status::Ok();
}

}  // namespace converge::server
