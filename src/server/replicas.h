// The replicas `converge serve` runs (config `replicas:`, docs/formats/replica.md, "Replicas
// in converge serve"): one replica::Applier per entry, each driven by its own thread, woken
// by appends to its source topic (Log::WatchAppends) and polling every poll_interval_ms as a
// fallback. The routes under /v1/replicas read through this class.
//
// Contract
// - Start never fails on a database or topic that is not there yet: the thread opens the
//   target and the applier, and retries (reporting each failure once per kind) until it can.
//   Until then the replica answers Unavailable naming why.
// - An applier stopped by a malformed change (on_malformed: stop) stays stopped until the
//   server restarts; Stopped() names it (for /readyz) and the server's log says so once.
// - Stop() ends every thread between steps (a step finishes its target transaction first) and
//   destroys the appliers, which answer pending waits with Cancelled.
// Thread-safety: every public function may be called from any thread; ReadRow blocks on the
// target database (call it on the blocking pool).
#pragma once

#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "converge/env.h"
#include "converge/log.h"
#include "converge/replica.h"
#include "converge/store.h"
#include "server/config.h"
#include "server/metrics.h"

namespace converge::server {

namespace replicas_internal {
struct Compared;
struct Diff;
}  // namespace replicas_internal

class Replicas {
 public:
  // Starts one thread per replica of `config.replicas`. `env`, `log` and `store` (null when
  // the store is disabled; then no replica has a store collection as its target) must outlive
  // Stop(). A replica for which `leased` answers true starts parked (no applier, its routes
  // answer Unavailable naming the lease) until SetRunning(name, true).
  static std::unique_ptr<Replicas> Start(
      Env& env, Log& log, Store* store, const ServerConfig& config,
      const std::function<bool(const ReplicaConfig&)>& leased = nullptr);
  ~Replicas();

  // A leased replica runs (true: its lease is held here) or is parked (false: returns once its
  // applier is closed, after the step in flight; a repair by reconciliation is refused while
  // parked). No-op for an unknown name.
  void SetRunning(const std::string& name, bool run);

  // Ends the threads and closes the appliers and their databases. Idempotent.
  void Stop();

  const std::vector<ReplicaConfig>& configs() const { return configs_; }
  // nullptr when there is no replica of that name.
  const ReplicaConfig* Find(const std::string& name) const;

  struct Description {
    bool running = false;  // the applier is open
    Status not_running;    // why not (when !running)
    replica::ReplicaStats stats;
  };
  Description Describe(const std::string& name) const;

  // As Applier::WaitForAsync; Unavailable at once while the applier is not open.
  void WaitForAsync(const std::string& name, const std::string& token, int64_t deadline_ms,
                    std::function<void(Status)> done);
  // As Applier::CheckStaleness; Unavailable while the applier is not open.
  Status CheckStaleness(const std::string& name, int64_t max_staleness_ms) const;

  // One row of the target table (its own read connection), or of the target collection;
  // nullopt when the key has no row.
  Result<std::optional<replica::Row>> ReadRow(const std::string& name, const std::string& key);

  // Reconciles a store-collection replica's table with its collection (docs/formats/replica.md,
  // "Reconciliation in converge serve"): the JSON result, also kept as the replica's drift.
  // Runs of one replica are serialized. Blocks on the store and the target database (call it
  // on the blocking pool). FailedPrecondition for a replica of a plain topic.
  // A replica of another node's collection is reconciled over the sidecar channel (this node
  // initiates; the other node's POST /v1/collections/{c}/reconcile responds); `store` may then
  // be null.
  Result<std::string> Reconcile(const std::string& name, Store* store, bool dry_run);
  // The source's current document of a key (nullopt: absent), for a repair.
  using SourceLookup = std::function<Result<std::optional<Document>>(const std::string& key)>;
  // Repairs one difference to the source's document now (nullopt: absent); false when the
  // copy's row moved meanwhile (nothing written).
  using RowRepair = std::function<Result<bool>(const replicas_internal::Diff& d,
                                               const std::optional<Document>& now)>;
  // The last Reconcile result of `name`; nullopt when it has none yet.
  std::optional<std::string> Drift(const std::string& name) const;

  // The replicas whose applier stopped, with the reason.
  std::vector<std::pair<std::string, Status>> Stopped() const;

  // converge_replica_* samples, one series per replica.
  void CollectMetrics(std::vector<MetricsRegistry::Sample>* out) const;

 private:
  struct Runner;
  struct Life {
    std::mutex mu;
    bool stopped = false;
  };
  Replicas() = default;
  Result<std::string> FinishReconcile(Runner* r, const RowRepair& repair_row,
                                      replicas_internal::Compared& run,
                                      const SourceLookup& lookup, bool dry_run, int64_t started);
  std::shared_ptr<Life> life_ = std::make_shared<Life>();
  std::vector<ReplicaConfig> configs_;
  std::vector<std::unique_ptr<Runner>> runners_;  // same order as configs_
};

}  // namespace converge::server
