// The push subscriptions of `converge serve` (docs/push.md): those of the serve config and
// those created through /v1/subscriptions, each a PushRunner (push_delivery.h) with its own
// PushHttpClient (push_http_client.h), all on one thread of their own (an AsioExecutor: the
// group calls that sync the journal and the endpoint's sockets share it).
//
// Subscriptions created through the API are kept in <data_dir>/push/subscriptions.json
// (written atomically and durably; it holds their secrets, so the data directory must be
// private), and started again at the next start. Those of the config are not stored there: the
// file the server starts with is what they are.
//
// A subscription's group is created when the subscription is (GroupDefaultsFor the config,
// with the subscription's max_deliveries and a lease of at least twice its timeout so that a
// lease never ends while its request is in flight). An existing group is used as it is if its
// lease is longer than the timeout. Deleting a subscription stops its delivery and keeps the
// group (its position and dead letters).
// Thread-safety: every method is thread-safe; Create, Delete and Stop block until the delivery
// thread has done them.
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "converge/consumer_group.h"
#include "converge/env.h"
#include "server/config.h"
#include "server/metrics.h"

namespace converge::server {

class PushService {
 public:
  // Starts the config's subscriptions and the stored ones. A subscription whose topic does not
  // exist yet is retried every second (and logged once) until it does.
  static Result<std::unique_ptr<PushService>> Start(Env& env, ConsumerGroups& groups,
                                                    const ServerConfig& config,
                                                    MetricsRegistry& metrics);
  ~PushService();

  // Stops every delivery (leaving the groups: leases go back for redelivery). Idempotent.
  void Stop();

  // Creates and starts an API subscription (its secret set by the caller). AlreadyExists (the
  // name is taken, or another subscription delivers for the group), NotFound (no such topic),
  // FailedPrecondition (the existing group's lease is not longer than the timeout), Internal
  // (the file could not be written: nothing created).
  Status Create(SubscriptionConfig subscription);
  // NotFound, FailedPrecondition (defined in the serve config), Internal (file).
  Status Delete(const std::string& name);

  std::vector<SubscriptionConfig> List() const;  // sorted by name
  Result<SubscriptionConfig> Get(const std::string& name) const;

  // The subscription as JSON for the API (no secret).
  static std::string Json(const SubscriptionConfig& s);

 private:
  struct Entry;
  PushService(Env& env, ConsumerGroups& groups, const ServerConfig& config,
              MetricsRegistry& metrics);
  Status EnsureGroup(const SubscriptionConfig& s);
  // On the delivery thread.
  void StartEntry(Entry& e);
  void RetryPending();
  Status Persist(const std::map<std::string, SubscriptionConfig>& stored);
  void RunOnThread(std::function<void()> fn);
  void Collect(std::vector<MetricsRegistry::Sample>* out) const;

  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace converge::server
