#include "server/metrics.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "converge/status.h"

namespace converge::server {

Histogram::Histogram(std::vector<double> bounds)
    : bounds_(std::move(bounds)),
      buckets_(std::make_unique<std::atomic<uint64_t>[]>(bounds_.size() + 1)) {
  CONVERGE_CHECK(std::is_sorted(bounds_.begin(), bounds_.end()));
}

void Histogram::Observe(double v) {
  size_t i = std::lower_bound(bounds_.begin(), bounds_.end(), v) - bounds_.begin();
  buckets_[i].fetch_add(1, std::memory_order_relaxed);
  count_.fetch_add(1, std::memory_order_relaxed);
  sum_.fetch_add(v, std::memory_order_relaxed);
}

uint64_t Histogram::CumulativeCount(size_t i) const {
  uint64_t total = 0;
  for (size_t b = 0; b <= i && b <= bounds_.size(); ++b) {
    total += buckets_[b].load(std::memory_order_relaxed);
  }
  return total;
}

double Histogram::Quantile(double q) const {
  uint64_t total = CumulativeCount(bounds_.size());
  if (total == 0) return 0;
  double rank = q * static_cast<double>(total);
  uint64_t below = 0;
  for (size_t b = 0; b <= bounds_.size(); ++b) {
    uint64_t n = buckets_[b].load(std::memory_order_relaxed);
    if (static_cast<double>(below + n) >= rank && n > 0) {
      if (b == bounds_.size()) return bounds_.empty() ? 0 : bounds_.back();
      double lo = b == 0 ? 0 : bounds_[b - 1];
      double frac = (rank - static_cast<double>(below)) / static_cast<double>(n);
      return lo + (bounds_[b] - lo) * std::clamp(frac, 0.0, 1.0);
    }
    below += n;
  }
  return bounds_.empty() ? 0 : bounds_.back();
}

std::vector<double> LatencyBucketsSeconds() {
  return {25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3,
          25e-3, 50e-3, 100e-3, 250e-3, 500e-3, 1.0,  2.5,    10.0};
}

namespace {

void AppendEscaped(std::string* out, std::string_view v) {
  for (char c : v) {
    if (c == '\\') {
      *out += "\\\\";
    } else if (c == '"') {
      *out += "\\\"";
    } else if (c == '\n') {
      *out += "\\n";
    } else {
      *out += c;
    }
  }
}

std::string FormatValue(double v) {
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  if (std::isnan(v)) return "NaN";
  char buf[64];
  if (v == std::floor(v) && std::fabs(v) < 1e15) {
    std::snprintf(buf, sizeof(buf), "%.0f", v);
  } else {
    std::snprintf(buf, sizeof(buf), "%.9g", v);
  }
  return buf;
}

std::string WithExtraLabel(const std::string& rendered, std::string_view key,
                           const std::string& value) {
  std::string extra(key);
  extra += "=\"" + value + "\"";
  if (rendered.empty()) return "{" + extra + "}";
  return rendered.substr(0, rendered.size() - 1) + "," + extra + "}";
}

}  // namespace

std::string RenderLabels(const Labels& labels) {
  if (labels.empty()) return "";
  std::string out = "{";
  for (size_t i = 0; i < labels.size(); ++i) {
    if (i) out += ',';
    out += labels[i].first;
    out += "=\"";
    AppendEscaped(&out, labels[i].second);
    out += '"';
  }
  out += '}';
  return out;
}

MetricsRegistry::Family& MetricsRegistry::FamilyFor(std::string_view name, std::string_view help,
                                                    Type type) {
  auto it = families_.find(name);
  if (it == families_.end()) {
    it = families_.emplace(std::string(name), Family{std::string(help), type, {}, {}, {}}).first;
  }
  CONVERGE_CHECK_MSG(it->second.type == type, "metric registered with two types");
  return it->second;
}

Counter* MetricsRegistry::GetCounter(std::string_view name, std::string_view help,
                                     const Labels& labels) {
  std::lock_guard lock(mu_);
  auto& slot = FamilyFor(name, help, Type::kCounter).counters[RenderLabels(labels)];
  if (!slot) slot = std::make_unique<Counter>();
  return slot.get();
}

Gauge* MetricsRegistry::GetGauge(std::string_view name, std::string_view help,
                                 const Labels& labels) {
  std::lock_guard lock(mu_);
  auto& slot = FamilyFor(name, help, Type::kGauge).gauges[RenderLabels(labels)];
  if (!slot) slot = std::make_unique<Gauge>();
  return slot.get();
}

Histogram* MetricsRegistry::GetHistogram(std::string_view name, std::string_view help,
                                         const Labels& labels, const std::vector<double>& bounds) {
  std::lock_guard lock(mu_);
  auto& slot = FamilyFor(name, help, Type::kHistogram).histograms[RenderLabels(labels)];
  if (!slot) slot = std::make_unique<Histogram>(bounds);
  return slot.get();
}

void MetricsRegistry::AddCollector(Collector collector) {
  std::lock_guard lock(mu_);
  collectors_.push_back(std::move(collector));
}

std::string MetricsRegistry::Render() const {
  std::vector<Collector> collectors;
  std::string out;
  {
    std::lock_guard lock(mu_);
    collectors = collectors_;
    for (const auto& [name, f] : families_) {
      const char* type = f.type == Type::kCounter ? "counter"
                         : f.type == Type::kGauge ? "gauge"
                                                  : "histogram";
      out += "# HELP " + name + " " + f.help + "\n";
      out += "# TYPE " + name + " " + type + "\n";
      for (const auto& [labels, c] : f.counters) {
        out += name + labels + " " + FormatValue(static_cast<double>(c->value())) + "\n";
      }
      for (const auto& [labels, g] : f.gauges) {
        out += name + labels + " " + FormatValue(g->value()) + "\n";
      }
      for (const auto& [labels, h] : f.histograms) {
        for (size_t i = 0; i <= h->bounds().size(); ++i) {
          std::string le = i < h->bounds().size() ? FormatValue(h->bounds()[i]) : "+Inf";
          out += name + "_bucket" + WithExtraLabel(labels, "le", le) + " " +
                 FormatValue(static_cast<double>(h->CumulativeCount(i))) + "\n";
        }
        out += name + "_sum" + labels + " " + FormatValue(h->sum()) + "\n";
        out += name + "_count" + labels + " " + FormatValue(static_cast<double>(h->count())) + "\n";
      }
    }
  }
  // Collected samples, grouped by name so each family has one HELP/TYPE header.
  std::vector<Sample> samples;
  for (const Collector& c : collectors) c(&samples);
  std::stable_sort(samples.begin(), samples.end(),
                   [](const Sample& a, const Sample& b) { return a.name < b.name; });
  for (size_t i = 0; i < samples.size(); ++i) {
    const Sample& s = samples[i];
    if (i == 0 || samples[i - 1].name != s.name) {
      out += "# HELP " + s.name + " " + s.help + "\n";
      out += "# TYPE " + s.name + " " + s.type + "\n";
    }
    out += s.name + RenderLabels(s.labels) + " " + FormatValue(s.value) + "\n";
  }
  return out;
}

}  // namespace converge::server
