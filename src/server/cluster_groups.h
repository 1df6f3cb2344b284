// Consumer groups shared by several `converge serve` instances (cluster.consumer_groups:
// shared; docs/scaling.md, "Consumer groups across sidecars").
//
// Model
// - The unit spread over sidecars is the group, not the partition: each group `<topic>/<group>`
//   runs its state machine (members, assignment, leases, per-key windows, acks) in the one
//   sidecar holding the lease "group:<topic>/<group>" in the cluster's lease table. That sidecar
//   opens a ConsumerGroups on the group's state in PostgreSQL (server/group_state_pg.h), every
//   write fenced by its lease token, so a new owner recovers exactly what the last one made
//   durable and a sidecar that lost the group can no longer write it.
// - Every sidecar holds "node:<instance_id>", whose holder string ends in "@<advertise_url>":
//   the live nodes and how to reach them. A group's owner URL is the suffix of its lease's
//   holder.
// - Locate says where a group's request goes: here (this sidecar runs it), or the owner's URL
//   (the Api forwards the request there). A group without a live owner is acquired by the node
//   its rendezvous hash over the live nodes prefers, on the first request for it (a forwarded
//   request is never forwarded again: the receiver acquires, or answers 503). A rebalance every
//   renew interval releases the groups whose preferred node is another live node (a joining
//   sidecar gets its share on the next request); a dead owner's groups are taken over once its
//   lease has expired (ttl + renew interval, as for every lease).
// - The ConsumerGroups calls below serve the groups running here. For callers inside this
//   process (push subscriptions, a topic's deletion) the calls that start consuming or change a
//   group (CreateGroup, DeleteGroup, Join, Heartbeat, Fetch, Seek, ReplayDeadLetters) first
//   acquire a group no live sidecar runs when this one is the preferred node, as a request
//   would. Otherwise a group running elsewhere is Unavailable (the Api forwards before it gets
//   here; a caller that races an ownership change retries).
// - A group held here that nobody asked about for 2 x ttl and that does not exist (a name
//   asked about once) is released.
// Thread-safety: thread-safe. Blocking: Open, Locate, Stop and the group calls block on
// PostgreSQL (bounded by its timeouts).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "converge/consumer_group.h"
#include "converge/env.h"
#include "converge/log.h"
#include "converge/status.h"
#include "server/config.h"
#include "server/metrics.h"

namespace converge::server {

class ClusterGroups final : public ConsumerGroups {
 public:
  // Connects to the lease and state tables (created if missing). `base` are the options of
  // every group instance (dir is replaced by the group's scope). `env` and `log` must outlive it.
  static Result<std::unique_ptr<ClusterGroups>> Open(Env& env, Log& log, const ServerConfig& config,
                                                     ConsumerGroupsOptions base);
  ~ClusterGroups() override;

  // Starts the node lease and the rebalance; `advertise_url` is how the others reach this
  // sidecar, `holder` this process's holder string (ClusterHolder, ending in
  // "@<advertise_url>"). `taken_over`: the leases taken over from this sidecar's previous
  // incarnation at start (LeasedWork::Start): the groups among them run here again at once
  // (their state recovered from PostgreSQL), without waiting for a request. Before Locate.
  void Start(const std::string& advertise_url, const std::string& holder,
             const std::vector<std::string>& taken_over);
  // Closes every group running here (a last fenced flush), then releases the leases.
  void Stop();

  struct Where {
    bool here = false;
    std::string url;  // the owner's, when not here
  };
  // Where a request for the group goes (see the file comment). `forwarded`: the request came
  // from another sidecar, so it is served here or refused, never forwarded again. Unavailable
  // when no owner can be found or acquired in time (retry).
  Result<Where> Locate(const std::string& topic, const std::string& group, bool forwarded);

  const std::string& advertise_url() const;
  // The advertised URL of the sidecar holding `lease_name` (any lease of the cluster's table,
  // e.g. "sagas"), found through its node lease. Unavailable when nobody holds it, or its
  // holder's address is not known (retry). Blocks on PostgreSQL at most every 200 ms.
  Result<std::string> UrlOfLeaseHolder(const std::string& lease_name);
  void CountForward(bool ok);
  void CollectMetrics(std::vector<MetricsRegistry::Sample>* out) const;

  // ---- ConsumerGroups, for the groups running here ----
  Status CreateGroup(const std::string& topic, const std::string& group,
                     const GroupOptions& options) override;
  Status DeleteGroup(const std::string& topic, const std::string& group, bool force) override;
  // Every group of the topic in the cluster (from the shared table), wherever it runs.
  // (A database error is logged and lists nothing: callers that must not miss a group use
  // ListGroupsChecked.)
  std::vector<std::string> ListGroups(const std::string& topic) override;
  // The same, Unavailable when the shared table cannot be read.
  Result<std::vector<std::string>> ListGroupsChecked(const std::string& topic);
  // Each forwarded to the group's instance when it runs here (else FailedPrecondition naming
  // the owner, see Locate); WatchReady and WatchReadyByMember are registered with the cluster
  // object instead, so a watch survives the group moving away and back, and by member as the
  // group's own (a group moving here or away wakes every member).
  CONVERGE_CONSUMER_GROUP_OPERATIONS_OVERRIDE
  Status Flush() override;
  Status JournalHealth() override;

  struct Impl;

 private:
  explicit ClusterGroups(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace converge::server
