#include "server/replicas.h"

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <mutex>
#include <thread>

#include "converge/sql.h"
#include "reconcile/reconcile_set.h"
#include "reconcile/session.h"
#include "reconcile/table_scan.h"
#include "server/json_util.h"
#include "server/remote_source.h"
#include "server/store_target.h"

namespace converge::server {
namespace {

std::unique_ptr<sql::Database> OpenTargetDb(const ReplicaConfig& c, Status* error) {
  Result<std::unique_ptr<sql::Database>> db =
      c.engine == sql::Engine::kSqlite
          ? sql::Database::OpenSqlite(sql::SqliteOptions{.path = c.database})
          : sql::Database::ConnectPostgres(sql::PostgresOptions{.conninfo = c.database});
  if (!db.ok()) {
    *error = db.status();
    return nullptr;
  }
  return std::move(db).value();
}

}  // namespace

struct Replicas::Runner {
  Runner(Replicas* o, Env& e, Log& l, Store* s, ReplicaConfig c)
      : owner(o), env(e), log(l), store(s), config(std::move(c)) {}

  Replicas* owner;  // for scheduled reconciliation runs
  Env& env;
  Log& log;
  Store* store;  // for a store collection target (and may be null otherwise)
  const ReplicaConfig config;

  // Owned and used by the thread (the applier's Stats/WaitForAsync/CheckStaleness are
  // thread-safe; the pointer itself is published under mu).
  std::unique_ptr<sql::Database> db;
  std::unique_ptr<replica::Target> target;
  std::unique_ptr<replica::Source> source;
  std::unique_ptr<Log::Watch> watch;

  mutable std::mutex mu;
  std::condition_variable cv;
  bool stop = false;
  bool woken = false;
  // Under a lease held by another sidecar (cluster:): no applier runs here until unparked.
  bool parked = false;
  bool park_done = false;                     // the thread closed everything for the park
  std::shared_ptr<replica::Applier> applier;  // under mu
  Status not_running = UnavailableError("replica '" + config.name + "' is starting");
  bool stop_reported = false;

  // The read connection of the row route, separate from the applier's.
  std::mutex read_mu;
  std::unique_ptr<sql::Database> read_db;

  // Reconciliation: one run at a time (held for the whole run); the last result and the
  // counters of /metrics under drift_mu.
  std::mutex reconcile_mu;
  mutable std::mutex drift_mu;
  std::optional<std::string> drift;
  uint64_t reconcile_runs = 0;
  uint64_t found_missing = 0, found_extra = 0, found_divergent = 0, found_changed = 0;
  uint64_t repaired = 0;
  double last_run_seconds = 0;

  std::thread thread;

  void Say(const std::string& message) const {
    std::fprintf(stderr, "converge serve: replica '%s': %s\n", config.name.c_str(),
                 message.c_str());
  }

  std::shared_ptr<replica::Applier> Current() const {
    std::lock_guard lock(mu);
    return applier;
  }

  // Waits until woken by an append, `ms` pass, or Stop. False once stopping. The time is the
  // Env's (a timer of its executor wakes the thread), so a backoff or poll interval follows
  // the Env's clock (virtual under a simulated Env); Stop and appends end it at once.
  uint64_t pause_generation = 0;  // under mu: which Pause the timer firing belongs to
  bool Pause(int64_t ms) {
    uint64_t generation;
    {
      std::lock_guard lock(mu);
      generation = ++pause_generation;
    }
    std::shared_ptr<Life> life = owner->life_;
    const TimerId timer =
        env.executor().Schedule(std::max<int64_t>(ms, 0) * 1'000'000, [this, life, generation] {
          // Under the lock Stop() takes: once it has returned, no timer touches `this`.
          std::lock_guard life_lock(life->mu);
          if (life->stopped) return;
          {
            std::lock_guard lock(mu);
            if (pause_generation != generation) return;  // that Pause has returned
            woken = true;
          }
          cv.notify_all();
        });
    std::unique_lock lock(mu);
    cv.wait(lock, [this] { return stop || woken; });
    woken = false;
    ++pause_generation;  // a timer firing late wakes nothing
    lock.unlock();
    env.executor().Cancel(timer);
    std::lock_guard lock2(mu);
    return !stop;
  }

  Status OpenApplier() {
    Status error;
    if (!config.target_collection.empty()) {
      if (store == nullptr) return FailedPreconditionError("the store is not enabled");
      if (target == nullptr) {
        Result<std::unique_ptr<replica::Target>> t = NewStoreTarget(
            *store, env, config.name, config.target_collection, config.source_topic);
        if (!t.ok()) return t.status().WithContext("opening the target collection");
        target = std::move(t).value();
      }
    }
    if (db == nullptr && target == nullptr) {
      db = OpenTargetDb(config, &error);
      if (db == nullptr) return error.WithContext("opening the target database");
    }
    if (target == nullptr) {
      Result<std::unique_ptr<replica::Target>> t =
          replica::NewSqlTarget(*db, SqlTargetOptionsFor(config));
      if (!t.ok()) return t.status().WithContext("opening the target table");
      target = std::move(t).value();
    }
    const bool remote = !config.remote_url.empty();
    if (remote && source == nullptr) {
      // Another node's collection: its reads long-poll, nothing local to watch.
      Result<std::unique_ptr<replica::Source>> s =
          NewRemoteSource(env, RemoteSourceOptionsFor(config));
      if (!s.ok()) return s.status().WithContext("the remote source");
      source = std::move(s).value();
    }
    if (!remote && watch == nullptr) {
      // Before the applier reads: an append after this is never missed.
      Result<std::unique_ptr<Log::Watch>> w =
          log.WatchAppends(config.source_topic, [this](uint32_t, uint64_t) {
            {
              std::lock_guard lock(mu);
              woken = true;
            }
            cv.notify_one();
          });
      if (!w.ok()) return w.status().WithContext("watching topic '" + config.source_topic + "'");
      watch = std::move(w).value();
    }
    if (source == nullptr) source = replica::NewLogSource(log, config.source_topic);
    replica::ApplierOptions options = ApplierOptionsFor(config);
    options.report = [this](const std::string& message) { Say(message); };
    Result<std::unique_ptr<replica::Applier>> a =
        replica::Applier::Open(env, *source, *target, std::move(options));
    if (!a.ok()) return a.status().WithContext("opening the applier");
    std::lock_guard lock(mu);
    applier = std::move(a).value();
    not_running = Status::Ok();
    return Status::Ok();
  }

  // A scheduled reconciliation run (reconcile_interval_ms), on this thread between steps: the
  // applier waits meanwhile (a run's repairs and the applier's batches are safe together
  // anyway, see Replicas::Reconcile). The first run is one interval after the start.
  int64_t next_reconcile_nanos = 0;
  std::string last_reconcile_error;
  void MaybeReconcile(int64_t now) {
    if (config.reconcile_interval_ms == 0) return;
    const int64_t interval = config.reconcile_interval_ms * 1'000'000;
    if (next_reconcile_nanos == 0) next_reconcile_nanos = now + interval;
    if (now < next_reconcile_nanos) return;
    next_reconcile_nanos = now + interval;
    Result<std::string> run = owner->Reconcile(config.name, store, /*dry_run=*/false);
    const std::string error = run.ok() ? "" : run.status().ToString();
    if (!error.empty() && error != last_reconcile_error) {
      Say("scheduled reconciliation failed (next in " +
          std::to_string(config.reconcile_interval_ms) + " ms): " + error);
    }
    last_reconcile_error = error;
  }

  // Closes the applier and everything it used; pending waits are answered (Cancelled) by the
  // applier's destructor, on this thread.
  void Close(Status why) {
    std::shared_ptr<replica::Applier> closing;
    {
      std::lock_guard lock(mu);
      closing = std::move(applier);
      not_running = std::move(why);
    }
    closing.reset();
    watch.reset();
    source.reset();
    target.reset();
    db.reset();
  }

  // While parked: closes, says so to SetRunning, and waits to be unparked. False once stopping.
  bool WaitWhileParked() {
    {
      std::lock_guard lock(mu);
      if (!parked) return true;
    }
    const bool was_running = Current() != nullptr;
    Close(UnavailableError("replica '" + config.name +
                           "' runs in the sidecar holding its lease 'replica:" + config.name +
                           "', not in this one"));
    if (was_running) Say("stopped: its lease is held elsewhere");
    std::unique_lock lock(mu);
    park_done = true;
    cv.notify_all();
    cv.wait(lock, [this] { return stop || !parked; });
    park_done = false;
    return !stop;
  }

  void Run() {
    std::string last_error;
    int64_t backoff_ms = 100;
    while (true) {
      {
        std::lock_guard lock(mu);
        if (stop) break;
      }
      if (!WaitWhileParked()) break;
      std::shared_ptr<replica::Applier> a = Current();
      if (a == nullptr) {
        Status s = OpenApplier();
        if (!s.ok()) {
          {
            std::lock_guard lock(mu);
            not_running = UnavailableError("replica '" + config.name +
                                           "' is not running: " + std::string(s.message()));
          }
          if (s.ToString() != last_error) Say("cannot start (retrying): " + s.ToString());
          last_error = s.ToString();
          if (!Pause(backoff_ms)) break;
          backoff_ms = std::min<int64_t>(backoff_ms * 2, 5000);
          continue;
        }
        Say("running: " +
            (config.remote_url.empty()
                 ? config.source_topic
                 : "collection " + config.remote_collection + " of " + config.remote_url) +
            (config.store_collection.empty() ? ""
                                             : " (collection " + config.store_collection + ")") +
            (config.target_collection.empty()
                 ? " -> " + std::string(sql::EngineName(config.engine)) + " table " + config.table
                 : " -> read-only collection " + config.target_collection));
        last_error.clear();
        backoff_ms = 100;
        continue;
      }
      const int64_t step_start = env.clock().NowMonotonicNanos();
      MaybeReconcile(step_start);
      Result<size_t> stepped = a->Step();
      if (!stepped.ok()) {
        const replica::ReplicaStats st = a->Stats();
        if (!st.stopped.ok()) {
          if (!stop_reported) Say("STOPPED: " + st.stopped.ToString());
          stop_reported = true;
          if (!Pause(config.poll_interval_ms)) break;
          continue;
        }
        if (stepped.status().ToString() != last_error) {
          Say("step failed (retrying): " + stepped.status().ToString());
        }
        last_error = stepped.status().ToString();
        if (!Pause(backoff_ms)) break;
        backoff_ms = std::min<int64_t>(backoff_ms * 2, 5000);
        continue;
      }
      last_error.clear();
      backoff_ms = 100;
      // A remote source's read already waited (its long poll) when there was nothing new;
      // one that came back early (the other node is shutting down, or caps its waits) must
      // not make this a busy loop.
      const bool waited =
          !config.remote_url.empty() &&
          env.clock().NowMonotonicNanos() - step_start >=
              std::min<int64_t>(config.poll_interval_ms, 1000) * 1'000'000 / 2;
      if (*stepped == 0 && !waited && !Pause(config.poll_interval_ms)) break;
    }
    Close(UnavailableError("replica '" + config.name + "' is stopping"));
    std::lock_guard lock(mu);
    park_done = true;  // nothing runs any more: a SetRunning(false) waiting may return
    cv.notify_all();
  }
};

std::unique_ptr<Replicas> Replicas::Start(Env& env, Log& log, Store* store,
                                          const ServerConfig& config,
                                          const std::function<bool(const ReplicaConfig&)>& leased) {
  std::unique_ptr<Replicas> out(new Replicas());
  out->configs_ = config.replicas;
  for (const ReplicaConfig& c : out->configs_) {
    auto runner = std::make_unique<Runner>(out.get(), env, log, store, c);
    Runner* r = runner.get();
    r->parked = leased && leased(c);
    runner->thread = std::thread([r] { r->Run(); });
    out->runners_.push_back(std::move(runner));
  }
  return out;
}

Replicas::~Replicas() { Stop(); }

void Replicas::Stop() {
  {
    std::lock_guard lock(life_->mu);
    life_->stopped = true;
  }
  for (auto& r : runners_) {
    {
      std::lock_guard lock(r->mu);
      r->stop = true;
    }
    r->cv.notify_all();
  }
  for (auto& r : runners_) {
    if (r->thread.joinable()) r->thread.join();
    std::lock_guard lock(r->read_mu);
    r->read_db.reset();
  }
}

const ReplicaConfig* Replicas::Find(const std::string& name) const {
  for (const ReplicaConfig& c : configs_) {
    if (c.name == name) return &c;
  }
  return nullptr;
}

namespace {
template <typename R>
R* FindRunner(const std::vector<std::unique_ptr<R>>& runners, const std::string& name) {
  for (const auto& r : runners) {
    if (r->config.name == name) return r.get();
  }
  return nullptr;
}
}  // namespace

void Replicas::SetRunning(const std::string& name, bool run) {
  Runner* r = FindRunner(runners_, name);
  if (r == nullptr) return;
  std::unique_lock lock(r->mu);
  r->parked = !run;
  r->woken = true;
  r->cv.notify_all();
  // Parking waits for the thread to close the applier (it finishes its step first).
  if (!run) r->cv.wait(lock, [r] { return r->stop || r->park_done; });
}

Replicas::Description Replicas::Describe(const std::string& name) const {
  Description d;
  Runner* r = FindRunner(runners_, name);
  if (r == nullptr) {
    d.not_running = NotFoundError("no replica '" + name + "'");
    return d;
  }
  std::shared_ptr<replica::Applier> a;
  {
    std::lock_guard lock(r->mu);
    a = r->applier;
    d.not_running = r->not_running;
  }
  if (a != nullptr) {
    d.running = true;
    d.stats = a->Stats();
  }
  return d;
}

void Replicas::WaitForAsync(const std::string& name, const std::string& token, int64_t deadline_ms,
                            std::function<void(Status)> done) {
  Runner* r = FindRunner(runners_, name);
  if (r == nullptr) return done(NotFoundError("no replica '" + name + "'"));
  std::shared_ptr<replica::Applier> a;
  Status why;
  {
    std::lock_guard lock(r->mu);
    a = r->applier;
    why = r->not_running;
  }
  if (a != nullptr) return a->WaitForAsync(token, deadline_ms, std::move(done));
  // Not open yet (starting, or its database is not reachable): look again shortly, until the
  // deadline. A timer, not a thread, waits.
  if (deadline_ms <= 0) {
    return done(DeadlineExceededError(std::string(why.message()) +
                                      "; the consistency token could not be waited for"));
  }
  const int64_t step = std::min<int64_t>(deadline_ms, 20);
  std::shared_ptr<Life> life = life_;
  r->env.executor().Schedule(step * 1'000'000, [this, life, name, token, deadline_ms, step,
                                                done = std::move(done)]() mutable {
    // Under the lock Stop() takes: once it has returned, no timer touches `this`.
    std::lock_guard lock(life->mu);
    if (life->stopped) return done(CancelledError("replica '" + name + "' was closed"));
    WaitForAsync(name, token, deadline_ms - step, std::move(done));
  });
}

Status Replicas::CheckStaleness(const std::string& name, int64_t max_staleness_ms) const {
  Runner* r = FindRunner(runners_, name);
  if (r == nullptr) return NotFoundError("no replica '" + name + "'");
  std::shared_ptr<replica::Applier> a;
  {
    std::lock_guard lock(r->mu);
    if (r->applier == nullptr) return r->not_running;
    a = r->applier;
  }
  return a->CheckStaleness(max_staleness_ms);
}

Result<std::optional<replica::Row>> Replicas::ReadRow(const std::string& name,
                                                      const std::string& key) {
  Runner* r = FindRunner(runners_, name);
  if (r == nullptr) return NotFoundError("no replica '" + name + "'");
  if (!r->config.target_collection.empty()) {
    if (r->store == nullptr) return FailedPreconditionError("the store is not enabled");
    Result<std::optional<replica::Row>> row =
        ReadStoreTargetRow(*r->store, name, r->config.target_collection, key);
    if (!row.ok() && row.status().code() == StatusCode::kNotFound) {
      return std::optional<replica::Row>();  // the collections are not created yet
    }
    return row;
  }
  std::lock_guard lock(r->read_mu);
  if (r->read_db == nullptr) {
    Status error;
    r->read_db = OpenTargetDb(r->config, &error);
    if (r->read_db == nullptr) {
      return UnavailableError("replica '" + name + "': cannot open the target database: " +
                              std::string(error.message()));
    }
  }
  const std::string sql =
      // `deleted` is BOOLEAN in PostgreSQL and 0/1 in SQLite: read as an integer in both.
      "SELECT version, CASE WHEN deleted THEN 1 ELSE 0 END, document, commit_time_us, "
      "applied_us, source_partition FROM " +
      r->config.table + " WHERE key = $1";
  const sql::Value params[] = {sql::Value::Text(key)};
  std::optional<replica::Row> out;
  Result<int64_t> rows = r->read_db->Query(sql, params, [&out](const sql::Row& row) -> Status {
    replica::Row x;
    CONVERGE_ASSIGN_OR_RETURN(int64_t version, row.Int(0));
    CONVERGE_ASSIGN_OR_RETURN(int64_t deleted, row.Int(1));
    CONVERGE_ASSIGN_OR_RETURN(x.commit_time_micros, row.Int(3));
    CONVERGE_ASSIGN_OR_RETURN(x.applied_time_micros, row.Int(4));
    CONVERGE_ASSIGN_OR_RETURN(int64_t partition, row.Int(5));
    x.version = static_cast<uint64_t>(version);
    x.deleted = deleted != 0;
    x.document = std::string(row.Bytes(2));
    x.source_partition = static_cast<uint32_t>(partition);
    out = std::move(x);
    return Status::Ok();
  });
  if (!rows.ok()) {
    // The table is created by the applier; before that the row simply is not there.
    if (rows.status().code() == StatusCode::kInvalidArgument && r->Current() == nullptr) {
      return std::optional<replica::Row>();
    }
    // A lost connection is reopened by the next read.
    if (!r->read_db->healthy()) r->read_db.reset();
    const std::string what =
        "replica '" + name + "': reading the target table: " + std::string(rows.status().message());
    // Not the request's fault: a table that is not as converge laid it out is the server's.
    if (rows.status().code() == StatusCode::kInvalidArgument) return InternalError(what);
    return Status(rows.status().code(), what);
  }
  return out;
}

namespace {

// Keys listed per kind in a reconciliation result (the counts are always complete).
constexpr size_t kMaxKeysListed = 1000;
// The copy's table is read at most this fast (TableScan), so a run never starves the service
// that queries the table.
constexpr double kScanRowsPerSecond = 50'000;

void AppendKeys(std::string* out, const char* name, const std::vector<std::string>& keys) {
  *out += ",\"";
  *out += name;
  *out += "\":[";
  for (size_t i = 0; i < keys.size() && i < kMaxKeysListed; ++i) {
    if (i) *out += ',';
    AppendJsonString(out, keys[i]);
  }
  *out += "],\"";
  *out += name;
  *out += "_count\":" + std::to_string(keys.size());
}

}  // namespace

namespace replicas_internal {

// One difference between the source and the copy, in their terms.
struct Diff {
  std::string key;
  std::optional<uint64_t> source_version;  // nullopt: absent in the source
  std::optional<uint64_t> copy_version;    // nullopt: absent in the copy
};

// What a run compared.
struct Compared {
  std::vector<Diff> missing, extra, divergent;
  std::vector<std::string> changed;  // written on either side during the run
  uint64_t source_keys = 0, copy_rows = 0;
  reconcile::SessionStats stats;
};

}  // namespace replicas_internal

namespace {
using replicas_internal::Compared;
using replicas_internal::Diff;
using SourceLookup = Replicas::SourceLookup;

Diff FromSourceSide(const reconcile::Difference& d) {
  return Diff{d.key, d.local_version, d.remote_version};
}
Diff FromCopySide(const reconcile::Difference& d) {
  return Diff{d.key, d.remote_version, d.local_version};
}

}  // namespace

// The shared end of a run: repairs (unless dry_run) through the version-gated statements,
// builds the result and keeps it as the drift.
// The repairs of a SQL table target, each one autocommitted statement (version-gated, or
// conditional on the row being the one compared).
static Replicas::RowRepair SqlRowRepair(sql::Database& db, const ReplicaConfig& c, Env& env) {
  const bool pg = db.engine() == sql::Engine::kPostgres;
  const std::string no = pg ? "false" : "0";
  const std::string& t = c.table;
  // Version-gated like the applier's apply: a row the applier has meanwhile moved to the
  // source's version or past it is left alone.
  const std::string upsert =
      "INSERT INTO " + t +
      " (key, version, document, deleted, commit_time_us, applied_us, source_partition) "
      "VALUES ($1, $2, $3, " +
      no +
      ", $4, $4, 0) ON CONFLICT (key) DO UPDATE SET "
      "version = excluded.version, document = excluded.document, deleted = excluded.deleted, "
      "commit_time_us = excluded.commit_time_us, applied_us = excluded.applied_us, "
      "source_partition = excluded.source_partition WHERE excluded.version > " +
      t + ".version";
  // A row at a version the source never reached (edited in the table) is set back to the
  // source's state only if it is still the row the run compared.
  const std::string overwrite = "UPDATE " + t + " SET version = $2, document = $3, deleted = " +
                                no +
                                ", commit_time_us = $4, applied_us = $4 WHERE key = $1 AND "
                                "version = $5 AND NOT deleted";
  const std::string remove =
      "DELETE FROM " + t + " WHERE key = $1 AND version = $2 AND NOT deleted";
  return [&db, &env, upsert, overwrite, remove](
             const Diff& d, const std::optional<Document>& now) -> Result<bool> {
    const int64_t now_us = env.clock().NowWallMicros();
    Result<int64_t> n = 0;
    if (!d.source_version) {
      const sql::Value p[] = {sql::Value::Text(d.key),
                              sql::Value::Int(static_cast<int64_t>(*d.copy_version))};
      n = db.Execute(remove, p);
    } else if (!d.copy_version || *d.source_version > *d.copy_version) {
      const sql::Value p[] = {sql::Value::Text(d.key),
                              sql::Value::Int(static_cast<int64_t>(now->version)),
                              sql::Value::Text(now->value), sql::Value::Int(now_us)};
      n = db.Execute(upsert, p);
    } else {
      const sql::Value p[] = {sql::Value::Text(d.key),
                              sql::Value::Int(static_cast<int64_t>(now->version)),
                              sql::Value::Text(now->value), sql::Value::Int(now_us),
                              sql::Value::Int(static_cast<int64_t>(*d.copy_version))};
      n = db.Execute(overwrite, p);
    }
    if (!n.ok()) return n.status();
    return *n != 0;
  };
}

Result<std::string> Replicas::FinishReconcile(Runner* r, const RowRepair& repair_row,
                                              Compared& run, const SourceLookup& lookup,
                                              bool dry_run, int64_t started) {
  const ReplicaConfig& c = r->config;
  const std::string& name = c.name;
  Env& env = r->env;
  std::vector<std::string> changed = run.changed;
  uint64_t repaired = 0;
  if (!dry_run) {
    auto repair = [&](const Diff& d) -> Status {
      // Re-read the source: a key written since the run read it is not repaired from the
      // run's view (the applier brings the new write; the next run sees it settled).
      CONVERGE_ASSIGN_OR_RETURN(std::optional<Document> now, lookup(d.key));
      const std::optional<uint64_t> now_version =
          now ? std::optional<uint64_t>(now->version) : std::nullopt;
      if (now_version != d.source_version) {
        changed.push_back(d.key);
        return Status::Ok();
      }
      CONVERGE_ASSIGN_OR_RETURN(bool done, repair_row(d, now));
      if (!done) {
        changed.push_back(d.key);  // the copy's row moved meanwhile
      } else {
        ++repaired;
      }
      return Status::Ok();
    };
    for (const auto* list_of : {&run.missing, &run.extra, &run.divergent}) {
      for (const Diff& d : *list_of) {
        if (Status st = repair(d); !st.ok()) {
          return Status(st.code(), "replica '" + name + "': repairing key '" +
                                       d.key.substr(0, 200) + "' (after " +
                                       std::to_string(repaired) +
                                       " repaired): " + std::string(st.message()));
        }
      }
    }
  }
  const double seconds = static_cast<double>(env.clock().NowMonotonicNanos() - started) / 1e9;
  auto keys = [](const std::vector<Diff>& v) {
    std::vector<std::string> out;
    for (const Diff& d : v) out.push_back(d.key);
    return out;
  };
  std::string body = "{\"replica\":";
  AppendJsonString(&body, name);
  body += ",\"collection\":";
  AppendJsonString(&body, c.remote_url.empty() ? c.store_collection : c.remote_collection);
  if (!c.remote_url.empty()) {
    body += ",\"remote\":";
    AppendJsonString(&body, c.remote_url);
  }
  body += ",\"dry_run\":";
  body += dry_run ? "true" : "false";
  body += ",\"in_sync\":";
  body += run.missing.size() + run.extra.size() + run.divergent.size() == 0 ? "true" : "false";
  body += ",\"source_keys\":" + std::to_string(run.source_keys);
  body += ",\"copy_rows\":" + std::to_string(run.copy_rows);
  AppendKeys(&body, "missing", keys(run.missing));
  AppendKeys(&body, "extra", keys(run.extra));
  AppendKeys(&body, "divergent", keys(run.divergent));
  AppendKeys(&body, "changed_during_run", changed);
  body += ",\"repaired\":" + std::to_string(repaired);
  body += ",\"bytes_sent\":" + std::to_string(run.stats.bytes_sent);
  body += ",\"bytes_received\":" + std::to_string(run.stats.bytes_received);
  body += ",\"round_trips\":" + std::to_string(run.stats.round_trips);
  char secs[32];
  std::snprintf(secs, sizeof secs, "%.6f", seconds);
  body += ",\"seconds\":";
  body += secs;
  body += ",\"finished_at_us\":" + std::to_string(env.clock().NowWallMicros()) + "}";

  std::lock_guard lock(r->drift_mu);
  r->drift = body;
  ++r->reconcile_runs;
  r->found_missing += run.missing.size();
  r->found_extra += run.extra.size();
  r->found_divergent += run.divergent.size();
  r->found_changed += changed.size();
  r->repaired += repaired;
  r->last_run_seconds = seconds;
  return body;
}

// The copy: the live rows of the table (tombstones are not part of it), read with a
// rate-limited keyset cursor on the run's own connection.
static Status ScanCopy(sql::Database& db, Env& env, const std::string& table,
                       reconcile::ReconcileSet* copy) {
  reconcile::TableScanOptions scan_options;
  scan_options.table = table;
  scan_options.skip_if_column = "deleted";
  scan_options.rows_per_second = kScanRowsPerSecond;
  Result<reconcile::TableScan> scan = reconcile::TableScan::Create(db, env, scan_options);
  if (!scan.ok()) return scan.status();
  while (true) {
    Result<int64_t> wait = scan->Step([copy](std::string_view k, uint64_t v) { copy->Put(k, v); });
    if (!wait.ok()) {
      return UnavailableError("reading the target table: " + std::string(wait.status().message()));
    }
    if (*wait < 0) return Status::Ok();
    // The edge's own pool thread waits (the rate limit), not an executor.
    if (*wait > 0) std::this_thread::sleep_for(std::chrono::nanoseconds(*wait));
  }
}

Result<std::string> Replicas::Reconcile(const std::string& name, Store* store, bool dry_run) {
  Runner* r = FindRunner(runners_, name);
  if (r == nullptr) return NotFoundError("no replica '" + name + "'");
  const ReplicaConfig& c = r->config;
  if (c.store_collection.empty() && c.remote_url.empty()) {
    return FailedPreconditionError("replica '" + name + "' copies the topic '" + c.source_topic +
                                   "': reconciliation compares a store collection with its copy");
  }
  if (c.remote_url.empty() && store == nullptr) {
    return FailedPreconditionError("the shared store is not enabled on this server");
  }
  {
    // A repair writes the target: only the sidecar holding the replica's lease may.
    std::lock_guard lock(r->mu);
    if (r->parked && !dry_run) return r->not_running;
  }
  std::lock_guard run_lock(r->reconcile_mu);
  Env& env = r->env;
  const int64_t started = env.clock().NowMonotonicNanos();

  reconcile::ReconcileSet copy;
  std::unique_ptr<sql::Database> db;
  RowRepair repair_row;
  if (!c.target_collection.empty()) {
    // A read-only collection of this node's store: its bookkeeping's live entries are the
    // copy, and each repair is one store transaction (RepairStoreTargetRow).
    Store* target = r->store;
    if (target == nullptr) return FailedPreconditionError("the store is not enabled");
    if (Status st = ScanStoreTarget(
            *target, name, [&copy](const std::string& k, uint64_t v) { copy.Put(k, v); });
        !st.ok()) {
      return Status(st.code(), "replica '" + name + "': reading the copy: " +
                                   std::string(st.message()));
    }
    const std::string collection = c.target_collection;
    repair_row = [target, name, collection, &env](
                     const Diff& d, const std::optional<Document>& now) -> Result<bool> {
      return RepairStoreTargetRow(*target, name, collection, d.key, d.copy_version, now,
                                  env.clock().NowWallMicros());
    };
  } else {
    Status error;
    db = OpenTargetDb(c, &error);
    if (db == nullptr) {
      return UnavailableError("replica '" + name + "': cannot open the target database: " +
                              std::string(error.message()));
    }
    if (Status st = ScanCopy(*db, env, c.table, &copy); !st.ok()) {
      return Status(st.code(), "replica '" + name + "': " + std::string(st.message()));
    }
    repair_row = SqlRowRepair(*db, c, env);
  }
  Compared run;
  run.copy_rows = copy.size();

  if (!c.remote_url.empty()) {
    // Another node's collection: this node initiates over the sidecar channel, the other
    // node's change-stream host responds from its digest of the collection.
    Result<std::unique_ptr<RemoteNode>> node = RemoteNode::Open(RemoteSourceOptionsFor(c));
    if (!node.ok()) return node.status();
    reconcile::Initiator initiator(copy, env.random().Next64());
    std::string request = initiator.Start();
    int failures = 0;
    while (!initiator.done()) {
      Result<std::string> reply = (*node)->Reconcile(request);
      if (!reply.ok()) {
        // A lost request or reply: send it again (a few times), as the protocol allows.
        if (reply.status().code() != StatusCode::kUnavailable || ++failures > 5) {
          return Status(reply.status().code(),
                        "replica '" + name + "': reconciling with " + c.remote_url + ": " +
                            std::string(reply.status().message()));
        }
        request = initiator.Retransmit();
        continue;
      }
      Result<reconcile::Initiator::Step> step = initiator.OnReply(*reply);
      if (!step.ok()) {
        return InternalError("reconciliation: " + std::string(step.status().message()));
      }
      if (step->kind == reconcile::Initiator::Step::kDone) break;
      if (step->kind == reconcile::Initiator::Step::kSend) request = std::move(step->message);
    }
    (void)(*node)->Reconcile(initiator.Finish());
    const reconcile::ReconcileResult& result = initiator.result();
    // local = the copy, remote = the source.
    for (const auto& d : result.missing_local) run.missing.push_back(FromCopySide(d));
    for (const auto& d : result.missing_remote) run.extra.push_back(FromCopySide(d));
    for (const auto& d : result.divergent) run.divergent.push_back(FromCopySide(d));
    for (const auto& d : result.changed_during_run) run.changed.push_back(d.key);
    run.stats = initiator.stats();
    run.source_keys = copy.size() + run.missing.size() - run.extra.size();
    RemoteNode* remote = node->get();
    SourceLookup lookup = [remote](const std::string& key) { return remote->GetDocument(key); };
    return FinishReconcile(r, repair_row, run, lookup, dry_run, started);
  }

  // The source: the version of each live document of the collection (deleted and expired
  // documents are absent). A collection not created yet is empty.
  reconcile::ReconcileSet source;
  ListOptions list;
  list.limit = 100;
  while (true) {
    Result<ListResult> page = store->List(c.store_collection, list);
    if (!page.ok()) {
      if (page.status().code() == StatusCode::kNotFound) break;
      return page.status().WithContext("reading collection '" + c.store_collection + "'");
    }
    for (const Document& d : page->documents) source.Put(d.key, d.version);
    if (page->next_page_token.empty()) break;
    list.page_token = page->next_page_token;
  }
  run.source_keys = source.size();

  // The protocol, both ends in memory: the source initiates, the copy responds. The byte and
  // round-trip figures are those the same exchange would cost over a channel.
  reconcile::Initiator initiator(source, env.random().Next64());
  reconcile::Responder responder(copy, env);
  std::string request = initiator.Start();
  while (!initiator.done()) {
    Result<std::optional<std::string>> reply = responder.Handle(request);
    if (!reply.ok())
      return InternalError("reconciliation: " + std::string(reply.status().message()));
    if (!reply->has_value()) return InternalError("reconciliation: the responder did not answer");
    Result<reconcile::Initiator::Step> step = initiator.OnReply(**reply);
    if (!step.ok()) return InternalError("reconciliation: " + std::string(step.status().message()));
    if (step->kind == reconcile::Initiator::Step::kDone) break;
    if (step->kind != reconcile::Initiator::Step::kSend) {
      return InternalError("reconciliation: a reply in memory was ignored");
    }
    request = std::move(step->message);
  }
  (void)responder.Handle(initiator.Finish());
  const reconcile::ReconcileResult& result = initiator.result();
  // local = the source, remote = the copy.
  for (const auto& d : result.missing_remote) run.missing.push_back(FromSourceSide(d));
  for (const auto& d : result.missing_local) run.extra.push_back(FromSourceSide(d));
  for (const auto& d : result.divergent) run.divergent.push_back(FromSourceSide(d));
  for (const auto& d : result.changed_during_run) run.changed.push_back(d.key);
  run.stats = initiator.stats();
  const std::string collection = c.store_collection;
  SourceLookup lookup = [store, collection](const std::string& key)
      -> Result<std::optional<Document>> {
    Result<Document> doc = store->Get(collection, key);
    if (doc.ok()) return std::optional<Document>(std::move(doc).value());
    if (doc.status().code() == StatusCode::kNotFound) return std::optional<Document>();
    return doc.status();
  };
  return FinishReconcile(r, repair_row, run, lookup, dry_run, started);
}

std::optional<std::string> Replicas::Drift(const std::string& name) const {
  Runner* r = FindRunner(runners_, name);
  if (r == nullptr) return std::nullopt;
  std::lock_guard lock(r->drift_mu);
  return r->drift;
}

std::vector<std::pair<std::string, Status>> Replicas::Stopped() const {
  std::vector<std::pair<std::string, Status>> out;
  for (const auto& r : runners_) {
    std::shared_ptr<replica::Applier> a = r->Current();
    if (a == nullptr) continue;
    Status s = a->Stats().stopped;
    if (!s.ok()) out.emplace_back(r->config.name, std::move(s));
  }
  return out;
}

void Replicas::CollectMetrics(std::vector<MetricsRegistry::Sample>* out) const {
  for (const auto& r : runners_) {
    std::shared_ptr<replica::Applier> a = r->Current();
    const Labels labels = {{"replica", r->config.name}};
    replica::ReplicaStats st;
    if (a != nullptr) st = a->Stats();
    out->push_back({"converge_replica_running",
                    "1 while the replica's applier is open (0: its target or source is not "
                    "reachable yet, see the server's log).",
                    "gauge", labels, a != nullptr ? 1.0 : 0.0});
    out->push_back({"converge_replica_stopped",
                    "1 once the replica's applier stopped on a malformed change "
                    "(on_malformed: stop); it stays stopped until the server restarts.",
                    "gauge", labels, st.stopped.ok() ? 0.0 : 1.0});
    out->push_back({"converge_replica_lag_changes",
                    "Records in the replica's source topic past its position, as last seen.",
                    "gauge", labels, static_cast<double>(st.lag_changes)});
    out->push_back({"converge_replica_lag_ms",
                    "Age of the oldest change the replica has not applied (0 when caught up).",
                    "gauge", labels, static_cast<double>(st.lag_ms)});
    out->push_back({"converge_replica_last_apply_latency_ms",
                    "Source commit time to apply time of the last change the replica applied.",
                    "gauge", labels, static_cast<double>(st.last_apply_latency_us) / 1000.0});
    out->push_back({"converge_replica_applied_total",
                    "Changes the replica wrote to its target (since the server started).",
                    "counter", labels, static_cast<double>(st.applied)});
    out->push_back({"converge_replica_malformed_total",
                    "Records of the source that were not change events (since the server "
                    "started; each is reported in the server's log).",
                    "counter", labels, static_cast<double>(st.malformed)});
    std::lock_guard lock(r->drift_mu);
    out->push_back({"converge_replica_reconcile_runs_total",
                    "Reconciliation runs of the replica against its source (since the server "
                    "started).",
                    "counter", labels, static_cast<double>(r->reconcile_runs)});
    const std::pair<const char*, uint64_t> kinds[] = {{"missing", r->found_missing},
                                                      {"extra", r->found_extra},
                                                      {"divergent", r->found_divergent},
                                                      {"changed_during_run", r->found_changed}};
    for (const auto& [kind, n] : kinds) {
      Labels with_kind = labels;
      with_kind.emplace_back("kind", kind);
      out->push_back({"converge_replica_reconcile_differences_total",
                      "Differences reconciliation found between the source and the copy, by "
                      "kind (each run counts what it found).",
                      "counter", with_kind, static_cast<double>(n)});
    }
    out->push_back({"converge_replica_reconcile_repaired_total",
                    "Rows of the copy reconciliation repaired to the source's state.", "counter",
                    labels, static_cast<double>(r->repaired)});
    out->push_back({"converge_replica_reconcile_last_run_seconds",
                    "Duration of the replica's last reconciliation run (0: none yet).", "gauge",
                    labels, r->last_run_seconds});
  }
}

}  // namespace converge::server
