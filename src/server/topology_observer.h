// What really happens on the topics, beside what the topology declares (GET /v1/topology,
// docs/server.md "Topology"): the publishers and consumers seen per topic, and the difference
// from the manifests (an undeclared publisher or consumer), also as the metric
// converge_topology_undeclared_total{kind,topic,service}.
//
// Contract
// - Record is called after a publish succeeded (kind publish) and when a fetch or stream
//   passed authorization (kind consume), with the caller's service name. It costs one mutex
//   and one hash lookup; the table is bounded (kMaxEntries pairs; more are counted as dropped,
//   not kept).
// - Snapshot lists the pairs seen within the last `window_ms` (monotonic clock), with their
//   count since the server started; without a declared topology, nothing is undeclared (drift
//   is null) and no metric is kept.
// Thread-safety: every method may be called from any thread.
#pragma once

#include <boost/json.hpp>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>

#include "server/metrics.h"
#include "topology/topology.h"

namespace converge::server {

class TopologyObserver {
 public:
  enum class Kind { kPublish, kConsume };
  static constexpr size_t kMaxEntries = 100'000;

  // `declared` may be null (no topology configured).
  TopologyObserver(std::shared_ptr<const topology::System> declared, MetricsRegistry* metrics);

  void Record(Kind kind, std::string_view topic, std::string_view service, int64_t now_ms);

  // {"declared": graph|null, "observed": {"window_ms", "topics": [...]}, "drift": {...}|null}
  boost::json::object Snapshot(int64_t now_ms, int64_t window_ms) const;

 private:
  struct Seen {
    uint64_t count = 0;
    int64_t last_ms = 0;
    bool declared = false;
    Counter* undeclared = nullptr;  // null when declared or without a topology
  };
  static std::string Key(Kind kind, std::string_view topic, std::string_view service);

  const std::shared_ptr<const topology::System> declared_;
  boost::json::value declared_graph_;  // the declared graph as JSON, built once
  MetricsRegistry* const metrics_;
  std::unordered_set<std::string> declared_pairs_;  // Key()s the manifests declare

  mutable std::mutex mu_;
  std::unordered_map<std::string, Seen> seen_;  // by Key()
  uint64_t dropped_ = 0;
};

}  // namespace converge::server
