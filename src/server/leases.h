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

// Holder strings. Every lease this sidecar takes (node, groups, singleton work) names the
// same holder, "<instance_id>/<random>@<url>": the instance, a random part new in every process
// (so two incarnations never share a lease by accident), and the URL the others reach it at
// (cluster.advertise_url, or the listening address). Without a URL that identifies the sidecar
// (listening on a wildcard address with no advertise_url) it is "<instance_id>/<random>".
std::string ClusterHolder(Env& env, const ServerConfig& config, const std::string& url);

// Whether `holder` is a previous incarnation of the process whose holder is `self`: both name
// the same instance_id and the same "@<url>", and differ (the random part). Since `self`
// listens on that URL now, and advertise_url is unique per sidecar (docs/configuration.md), no
// other live process can be serving there: that holder is dead. False when `self` has no URL.
bool IsPreviousIncarnation(const std::string& holder, const std::string& self);

// At start, once listening: takes over (TakeOver: a new token each) every live lease of the
// table whose holder is a previous incarnation of `self`, so a sidecar restarted after a crash
// does not wait for its own old leases to expire. Returns the names taken; errors of the
// database (the leases then expire as usual).
Result<std::vector<std::string>> TakeOverPreviousIncarnation(lease::LeaseStore& store,
                                                             const ServerConfig& config,
                                                             const std::string& self);

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
  // Once the sidecar listens on `url` (its advertise_url, or "" when none identifies it):
  // takes over the leases of this sidecar's previous incarnation (TakeOverPreviousIncarnation),
  // then starts acquiring the works' leases. Returns the names taken over. Once.
  std::vector<std::string> Start(const std::string& url);
  void Stop();

  // This process's holder string in the lease table (ClusterHolder); "" before Start.
  const std::string& holder() const;
  // The store of the lease table (for the shared groups' takeover, after Start).
  lease::LeaseStore& store();
  std::vector<LeaseView> View() const;
  // Whether the work under lease `name` runs here; nullopt when no work here has that lease.
  std::optional<bool> Running(const std::string& name) const;
  // Whether this sidecar holds the lease of work `name` now (its work may still be starting).
  bool Held(const std::string& name) const;
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
