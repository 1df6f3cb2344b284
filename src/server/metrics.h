// A small Prometheus metrics registry for the server: counters, gauges and histograms with
// labels, rendered in the Prometheus text exposition format (version 0.0.4).
//
// Contract
// - Get* returns a metric that lives as long as the registry; the same name and labels return
//   the same object. Callers cache the pointer; updates are lock-free (atomics).
// - A name is registered with one type; asking for it with another type is a bug (CHECK).
// - Collectors are called at scrape time to add values computed on demand (lag, counts).
// Thread-safety: every function is thread-safe.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace converge::server {

using Labels = std::vector<std::pair<std::string, std::string>>;

class Counter {
 public:
  void Add(uint64_t n = 1) { value_.fetch_add(n, std::memory_order_relaxed); }
  uint64_t value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<uint64_t> value_{0};
};

class Gauge {
 public:
  void Set(double v) { value_.store(v, std::memory_order_relaxed); }
  void Add(double v) { value_.fetch_add(v, std::memory_order_relaxed); }
  double value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0};
};

class Histogram {
 public:
  // `bounds` are the upper bounds of the buckets, ascending; +Inf is implicit.
  explicit Histogram(std::vector<double> bounds);
  void Observe(double v);
  uint64_t count() const { return count_.load(std::memory_order_relaxed); }
  double sum() const { return sum_.load(std::memory_order_relaxed); }
  const std::vector<double>& bounds() const { return bounds_; }
  // Cumulative count of observations <= bounds()[i] (i == bounds().size() means +Inf).
  uint64_t CumulativeCount(size_t i) const;
  // The value below which `q` (0..1) of observations fall, interpolated within a bucket.
  double Quantile(double q) const;

 private:
  std::vector<double> bounds_;
  std::unique_ptr<std::atomic<uint64_t>[]> buckets_;
  std::atomic<uint64_t> count_{0};
  std::atomic<double> sum_{0};
};

// Buckets for latencies in seconds: 25 us .. 10 s.
std::vector<double> LatencyBucketsSeconds();

class MetricsRegistry {
 public:
  Counter* GetCounter(std::string_view name, std::string_view help, const Labels& labels = {});
  Gauge* GetGauge(std::string_view name, std::string_view help, const Labels& labels = {});
  Histogram* GetHistogram(std::string_view name, std::string_view help, const Labels& labels,
                          const std::vector<double>& bounds);

  // A sample appended at scrape time by a collector.
  struct Sample {
    std::string name;
    std::string help;
    std::string type;  // "gauge" or "counter"
    Labels labels;
    double value = 0;
  };
  using Collector = std::function<void(std::vector<Sample>* out)>;
  void AddCollector(Collector collector);

  // The whole registry in the Prometheus text format.
  std::string Render() const;

 private:
  enum class Type { kCounter, kGauge, kHistogram };
  struct Family {
    std::string help;
    Type type;
    std::map<std::string, std::unique_ptr<Counter>> counters;  // key: rendered labels
    std::map<std::string, std::unique_ptr<Gauge>> gauges;
    std::map<std::string, std::unique_ptr<Histogram>> histograms;
  };
  Family& FamilyFor(std::string_view name, std::string_view help, Type type);

  mutable std::mutex mu_;
  std::map<std::string, Family, std::less<>> families_;
  std::vector<Collector> collectors_;
};

// `{a="x",b="y"}` with values escaped; empty string for no labels.
std::string RenderLabels(const Labels& labels);

}  // namespace converge::server
