#include "server/store_metrics.h"

#include <string>
#include <utility>

namespace converge::server {

void CollectStoreMetrics(Store& store, std::vector<MetricsRegistry::Sample>* out) {
  static constexpr const char* kWritesHelp =
      "Write ops addressed to a collection since the server started, by outcome.";
  for (const std::string& name : store.ListCollections()) {
    Result<CollectionInfo> info = store.DescribeCollection(name);
    if (!info.ok()) continue;
    const std::pair<const char*, uint64_t> outcomes[] = {{"ok", info->writes.ok},
                                                         {"conflict", info->writes.conflict},
                                                         {"denied", info->writes.denied},
                                                         {"rejected", info->writes.rejected}};
    for (const auto& [outcome, n] : outcomes) {
      out->push_back({"converge_store_writes_total",
                      kWritesHelp,
                      "counter",
                      {{"collection", name}, {"outcome", outcome}},
                      static_cast<double>(n)});
    }
    out->push_back({"converge_store_documents",
                    "Documents in a collection (expired ones not yet swept included).",
                    "gauge",
                    {{"collection", name}},
                    static_cast<double>(info->documents)});
    out->push_back({"converge_store_bytes",
                    "Bytes of keys and values in a collection.",
                    "gauge",
                    {{"collection", name}},
                    static_cast<double>(info->bytes)});
  }
  const StoreStats stats = store.Stats();
  out->push_back({"converge_store_commits_total",
                  "Store transactions committed since the server started.",
                  "counter",
                  {},
                  static_cast<double>(stats.commits)});
  out->push_back({"converge_store_group_commits_total",
                  "Group commits (one WAL write and, under fsync, one sync each).",
                  "counter",
                  {},
                  static_cast<double>(stats.group_commits)});
  out->push_back({"converge_store_wal_bytes",
                  "Size of the store's current WAL file.",
                  "gauge",
                  {},
                  static_cast<double>(stats.wal_bytes)});
  out->push_back({"converge_store_feed_backlog_events",
                  "Committed changes not yet published to the change feed.",
                  "gauge",
                  {},
                  static_cast<double>(stats.feed_backlog_events)});
}

std::vector<double> StoreCommitBucketsSeconds() {
  return {50e-6, 100e-6, 250e-6, 500e-6, 1e-3,   2.5e-3, 5e-3,
          10e-3, 25e-3,  50e-3,  100e-3, 250e-3, 1.0};
}

}  // namespace converge::server
