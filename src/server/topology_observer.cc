#include "server/topology_observer.h"

#include <algorithm>
#include <map>
#include <vector>

namespace converge::server {

namespace json = boost::json;

std::string TopologyObserver::Key(Kind kind, std::string_view topic, std::string_view service) {
  std::string key;
  key.reserve(topic.size() + service.size() + 2);
  key.push_back(kind == Kind::kPublish ? 'p' : 'c');
  key.append(topic);
  key.push_back('\0');  // neither a topic nor a service name contains NUL
  key.append(service);
  return key;
}

TopologyObserver::TopologyObserver(std::shared_ptr<const topology::System> declared,
                                   MetricsRegistry* metrics)
    : declared_(std::move(declared)), metrics_(metrics) {
  if (declared_ == nullptr) return;
  for (const topology::Service& s : declared_->services()) {
    for (const topology::Operation& o : s.sends)
      declared_pairs_.insert(Key(Kind::kPublish, o.topic, s.name));
    for (const topology::Operation& o : s.receives) {
      declared_pairs_.insert(Key(Kind::kConsume, o.topic, s.name));
    }
  }
  Result<std::string> graph = declared_->Render("json");
  if (graph.ok()) declared_graph_ = json::parse(*graph);
}

void TopologyObserver::Record(Kind kind, std::string_view topic, std::string_view service,
                              int64_t now_ms) {
  std::string key = Key(kind, topic, service);
  Counter* undeclared = nullptr;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = seen_.find(key);
    if (it == seen_.end()) {
      if (seen_.size() >= kMaxEntries) {
        ++dropped_;
        return;
      }
      Seen s;
      s.declared = declared_ == nullptr || declared_pairs_.count(key) > 0;
      if (!s.declared && metrics_ != nullptr) {
        s.undeclared = metrics_->GetCounter(
            "converge_topology_undeclared_total",
            "Publishes and consumes by a service its topology manifest does not declare",
            {{"kind", kind == Kind::kPublish ? "publish" : "consume"},
             {"topic", std::string(topic)},
             {"service", std::string(service)}});
      }
      it = seen_.emplace(std::move(key), s).first;
    }
    ++it->second.count;
    it->second.last_ms = now_ms;
    undeclared = it->second.undeclared;
  }
  if (undeclared != nullptr) undeclared->Add();
}

json::object TopologyObserver::Snapshot(int64_t now_ms, int64_t window_ms) const {
  struct Row {
    std::string service;
    uint64_t count;
    int64_t ago_ms;
    bool declared;
  };
  // topic -> (publishers, consumers), in name order.
  std::map<std::string, std::pair<std::vector<Row>, std::vector<Row>>> topics;
  uint64_t dropped;
  {
    std::lock_guard<std::mutex> lock(mu_);
    dropped = dropped_;
    for (const auto& [key, s] : seen_) {
      if (now_ms - s.last_ms > window_ms) continue;
      const size_t nul = key.find('\0');
      const std::string topic = key.substr(1, nul - 1);
      Row row{key.substr(nul + 1), s.count, now_ms - s.last_ms, s.declared};
      auto& entry = topics[topic];
      (key[0] == 'p' ? entry.first : entry.second).push_back(std::move(row));
    }
  }
  json::array list, undeclared_publishers, undeclared_consumers;
  auto rows = [](std::vector<Row>& v, const std::string& topic, json::array* undeclared) {
    std::sort(v.begin(), v.end(), [](const Row& a, const Row& b) { return a.service < b.service; });
    json::array out;
    for (const Row& r : v) {
      out.push_back(json::object{{"service", r.service},
                                 {"count", r.count},
                                 {"last_seen_ms_ago", r.ago_ms},
                                 {"declared", r.declared}});
      if (!r.declared)
        undeclared->push_back(json::object{{"topic", topic}, {"service", r.service}});
    }
    return out;
  };
  for (auto& [topic, pc] : topics) {
    json::array publishers = rows(pc.first, topic, &undeclared_publishers);
    json::array consumers = rows(pc.second, topic, &undeclared_consumers);
    list.push_back(json::object{{"topic", topic},
                                {"publishers", std::move(publishers)},
                                {"consumers", std::move(consumers)}});
  }
  json::object out;
  out["declared"] = declared_ == nullptr ? json::value(nullptr) : declared_graph_;
  out["observed"] =
      json::object{{"window_ms", window_ms}, {"topics", std::move(list)}, {"dropped", dropped}};
  if (declared_ == nullptr) {
    out["drift"] = nullptr;
  } else {
    out["drift"] = json::object{{"undeclared_publishers", std::move(undeclared_publishers)},
                                {"undeclared_consumers", std::move(undeclared_consumers)}};
  }
  return out;
}

}  // namespace converge::server
