// The shared store's metrics in /metrics, computed at scrape time from the Store (no cost per
// request): per collection the write outcomes, documents and bytes; for the store its
// commits, group commits, WAL size and change-feed backlog. The commit latency histogram
// (converge_store_commit_seconds) is observed by the API per acknowledged write.
// Thread-safety: CollectStoreMetrics may run concurrently with any store call.
#pragma once

#include <vector>

#include "converge/store.h"
#include "server/metrics.h"

namespace converge::server {

// Appends the samples (families below) to `out`. Collections that disappear meanwhile are
// skipped.
//   converge_store_writes_total{collection,outcome}  counter; outcome ok | conflict | denied |
//                                                    rejected (see WriteCounts)
//   converge_store_documents{collection}             gauge
//   converge_store_bytes{collection}                 gauge (keys + values)
//   converge_store_commits_total                     counter (transactions committed)
//   converge_store_group_commits_total               counter (WAL writes + syncs by a leader)
//   converge_store_wal_bytes                         gauge
//   converge_store_feed_backlog_events               gauge (changes not yet in the feed)
void CollectStoreMetrics(Store& store, std::vector<MetricsRegistry::Sample>* out);

// Upper bounds of converge_store_commit_seconds.
std::vector<double> StoreCommitBucketsSeconds();

}  // namespace converge::server
