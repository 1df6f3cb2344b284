#include "server/metrics.h"

#include <gtest/gtest.h>

namespace converge::server {
namespace {

TEST(Metrics, RendersCountersGaugesHistogramsAndCollectors) {
  MetricsRegistry r;
  Counter* a = r.GetCounter("x_total", "Xs.", {{"topic", "orders"}});
  EXPECT_EQ(a, r.GetCounter("x_total", "Xs.", {{"topic", "orders"}}));
  a->Add(3);
  r.GetCounter("x_total", "Xs.", {{"topic", "pay\"ments"}})->Add();
  r.GetGauge("g", "A gauge.")->Set(2.5);
  Histogram* h = r.GetHistogram("lat_seconds", "Latency.", {}, {0.001, 0.01});
  h->Observe(0.0005);
  h->Observe(0.005);
  h->Observe(5);
  r.AddCollector([](std::vector<MetricsRegistry::Sample>* out) {
    out->push_back({"lag", "Lag.", "gauge", {{"group", "g1"}}, 7});
    out->push_back({"lag", "Lag.", "gauge", {{"group", "g2"}}, 0});
  });
  std::string text = r.Render();
  EXPECT_NE(text.find("# TYPE x_total counter\n"), std::string::npos) << text;
  EXPECT_NE(text.find("x_total{topic=\"orders\"} 3\n"), std::string::npos) << text;
  EXPECT_NE(text.find("x_total{topic=\"pay\\\"ments\"} 1\n"), std::string::npos) << text;
  EXPECT_NE(text.find("g 2.5\n"), std::string::npos) << text;
  EXPECT_NE(text.find("lat_seconds_bucket{le=\"0.001\"} 1\n"), std::string::npos) << text;
  EXPECT_NE(text.find("lat_seconds_bucket{le=\"0.01\"} 2\n"), std::string::npos) << text;
  EXPECT_NE(text.find("lat_seconds_bucket{le=\"+Inf\"} 3\n"), std::string::npos) << text;
  EXPECT_NE(text.find("lat_seconds_count 3\n"), std::string::npos) << text;
  EXPECT_NE(text.find("# TYPE lag gauge\nlag{group=\"g1\"} 7\nlag{group=\"g2\"} 0\n"),
            std::string::npos)
      << text;
}

TEST(Metrics, HistogramQuantile) {
  Histogram h({1, 2, 3, 4});
  for (int i = 0; i < 100; ++i) h.Observe(i < 90 ? 0.5 : 3.5);
  EXPECT_LE(h.Quantile(0.5), 1.0);
  EXPECT_GT(h.Quantile(0.99), 3.0);
  EXPECT_LE(h.Quantile(0.99), 4.0);
}

}  // namespace
}  // namespace converge::server
