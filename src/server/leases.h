// Singleton work of a sidecar run under leases (the `cluster:` section; docs/scaling.md,
// "Leases"): each piece of work has a lease in PostgreSQL, and runs in this sidecar only while
// this sidecar holds it. Several sidecars with the same configuration thus run each piece once,
// and another takes it over within ttl + renew interval (+ a round trip and the work's start)
// when its holder dies.
//
// Contract
// - Open connects to the lease table (created if missing); Unavailable when PostgreSQL cannot
//   be reached (the server does not start).
// - Work added with Add is started (on the lease work thread) once the lease is acquired and
//   stopped as soon as the keeper says it is lost: by its own deadline (last successful renewal's
//   start + ttl - margin, on the monotonic clock), before the table lets anyone else take it, so
//   the work's stop must take less than the margin. A start that fails is reported on stderr
//   and retried at the next renewal.
// - Stop stops every work, then releases the leases (a standby takes them at once).
// Thread-safety: thread-safe. Blocking: Open and Stop block on PostgreSQL (bounded by its
// timeouts) and Stop on the works' stops.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "converge/env.h"
#include "converge/log.h"
#include "converge/relay.h"
#include "converge/saga.h"
#include "converge/status.h"
#include "server/config.h"
#include "server/metrics.h"

namespace converge::server {

// One lease as this sidecar sees it (GET /v1/leases).
struct LeaseView {
  std::string name;
  bool held = false;
  bool running = false;  // its work runs here
  int64_t token = 0;
  int64_t remaining_ms = 0;
  lease::LeaseKeeperStats stats;
};

// The renew interval of the cluster's leases (cluster.lease_ttl_ms / 3 unless set), in ms.
int64_t ClusterRenewIntervalMs(const ServerConfig& config);
// Connects to the cluster's lease table (created if missing), with statements bounded by one
// renew interval. Unavailable if PostgreSQL cannot be reached.
Result<std::unique_ptr<lease::LeaseStore>> OpenClusterLeaseStore(const ServerConfig& config);

class LeasedWork {
 public:
  static Result<std::unique_ptr<LeasedWork>> Open(Env& env, const ServerConfig& config);
  ~LeasedWork();

  // Work under lease `name` (unique): start() when acquired, stop() when lost or at Stop.
  // Before Start only.
  Status Add(const std::string& name, std::function<Status()> start, std::function<void()> stop);
  void Start();
  void Stop();

  // "<instance_id>/<random>": this process's holder id in the lease table.
  const std::string& holder() const;
  std::vector<LeaseView> View() const;
  // Whether the work under lease `name` runs here; nullopt when no work here has that lease.
  std::optional<bool> Running(const std::string& name) const;
  void CollectMetrics(std::vector<MetricsRegistry::Sample>* out) const;

  struct Impl;

 private:
  explicit LeasedWork(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// The relays of config.relays, each source under its own lease "relay:<name>": a RelayService
// whose stats list every source (inactive while another sidecar holds it). `leases`, `env` and
// `log` must outlive it.
Result<std::shared_ptr<RelayService>> StartLeasedRelays(Env& env, Log& log,
                                                        const RelayServiceConfig& config,
                                                        LeasedWork& leases);

// The saga orchestrator under lease "sagas" (cluster: with a saga log in PostgreSQL): calls go
// to the orchestrator `open` returns while this sidecar holds the lease; without it they answer
// Unavailable naming the lease (Stopped() says so too, so every saga route answers 503), reads
// of definitions are empty, stats zero, Health OK (a standby is ready for other work). Losing
// the lease closes the orchestrator (it stops reacting to replies and timers; a batch in
// flight finishes). `leases` must outlive the returned object's use.
Result<std::unique_ptr<SagaOrchestrator>> StartLeasedSagas(
    std::function<Result<std::unique_ptr<SagaOrchestrator>>()> open, LeasedWork& leases);

}  // namespace converge::server
