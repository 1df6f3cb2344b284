#include "server/store_metrics.h"

#include <gtest/gtest.h>

#include "converge/sim_env.h"

namespace converge::server {
namespace {

TEST(StoreMetrics, WriteOutcomesDocumentsAndStoreCountersAreRendered) {
  sim::SimEnv env(7);
  StoreOptions options;
  options.dir = "/data/store";
  options.ttl_sweep_interval_ms = 0;
  auto opened = Store::Open(env, options);
  ASSERT_TRUE(opened.ok()) << opened.status().ToString();
  Store& store = **opened;
  const Caller orders = Caller::Service("orders");
  CollectionConfig config;
  config.owner = "orders";
  ASSERT_TRUE(store.CreateCollection(orders, "carts", config).ok());
  auto w = store.Put(orders, "carts", "c1", R"({"n":1})");
  ASSERT_TRUE(w.ok());
  ASSERT_TRUE(store.Put(orders, "carts", "c2", "2").ok());
  EXPECT_FALSE(store.Put(orders, "carts", "c1", "3", Precondition::IfMatch("\"999\"")).ok());
  EXPECT_FALSE(store.Put(Caller::Service("stranger"), "carts", "c1", "3").ok());
  EXPECT_FALSE(store.Put(Caller::Service("stranger"), "carts", "c9", "3").ok());

  MetricsRegistry registry;
  registry.AddCollector(
      [&store](std::vector<MetricsRegistry::Sample>* out) { CollectStoreMetrics(store, out); });
  const std::string text = registry.Render();
  for (const char* line : {
           "# TYPE converge_store_writes_total counter\n",
           "converge_store_writes_total{collection=\"carts\",outcome=\"ok\"} 2\n",
           "converge_store_writes_total{collection=\"carts\",outcome=\"conflict\"} 1\n",
           "converge_store_writes_total{collection=\"carts\",outcome=\"denied\"} 2\n",
           "converge_store_writes_total{collection=\"carts\",outcome=\"rejected\"} 0\n",
           "converge_store_documents{collection=\"carts\"} 2\n",
           "converge_store_bytes{collection=\"carts\"} 12\n",  // c1 {"n":1} + c2 2
           "# TYPE converge_store_commits_total counter\n",
           "converge_store_commits_total 2\n",
           "converge_store_feed_backlog_events 0\n",
       }) {
    EXPECT_NE(text.find(line), std::string::npos) << "missing: " << line << "in:\n" << text;
  }
  EXPECT_NE(text.find("converge_store_group_commits_total "), std::string::npos) << text;
  EXPECT_NE(text.find("converge_store_wal_bytes "), std::string::npos) << text;
}

TEST(StoreMetrics, CommitBucketsAscend) {
  const std::vector<double> b = StoreCommitBucketsSeconds();
  ASSERT_FALSE(b.empty());
  for (size_t i = 1; i < b.size(); ++i) EXPECT_LT(b[i - 1], b[i]);
}

}  // namespace
}  // namespace converge::server
