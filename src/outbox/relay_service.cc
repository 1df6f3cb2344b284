// RelayService: several relays from one configuration (YAML via yaml-cpp).
#include <yaml-cpp/yaml.h>

#include <set>

#include "converge/relay.h"
#include "core/yaml_check.h"

namespace converge {
namespace {

Status KeyError(const std::string& where, const std::string& what) {
  return InvalidArgumentError("relay config: " + where + ": " + what);
}

template <typename T>
Status ReadScalar(const YAML::Node& node, const std::string& where, T* out) {
  try {
    *out = node.as<T>();
  } catch (const YAML::Exception& e) {
    return KeyError(where, std::string("bad value: ") + e.what());
  }
  return Status::Ok();
}

Status ParseSink(const YAML::Node& node, LogSinkOptions* sink) {
  if (!node.IsMap()) return KeyError("relays.sink", "must be a map");
  for (const auto& kv : node) {
    const std::string key = kv.first.as<std::string>();
    const std::string where = "relays.sink." + key;
    if (key == "create_topics") {
      CONVERGE_RETURN_IF_ERROR(ReadScalar(kv.second, where, &sink->create_topics));
    } else if (key == "partitions") {
      CONVERGE_RETURN_IF_ERROR(ReadScalar(kv.second, where, &sink->topic_options.partitions));
    } else if (key == "durability") {
      std::string d;
      CONVERGE_RETURN_IF_ERROR(ReadScalar(kv.second, where, &d));
      Result<Durability> parsed = ParseDurability(d);
      if (!parsed.ok()) return KeyError(where, std::string(parsed.status().message()));
      sink->topic_options.durability = *parsed;
    } else if (key == "dead_letter_topic") {
      CONVERGE_RETURN_IF_ERROR(ReadScalar(kv.second, where, &sink->dead_letter_topic));
    } else if (key == "topic_map") {
      if (!kv.second.IsMap()) return KeyError(where, "must be a map");
      for (const auto& m : kv.second) {
        sink->topic_map[m.first.as<std::string>()] = m.second.as<std::string>();
      }
    } else {
      return KeyError(where, "unknown key");
    }
  }
  return Status::Ok();
}

Status ParseSource(const YAML::Node& node, size_t index, RelaySourceConfig* out) {
  const std::string base = "relays.sources[" + std::to_string(index) + "]";
  if (!node.IsMap()) return KeyError(base, "must be a map");
  RelayOptions& o = out->options;
  for (const auto& kv : node) {
    const std::string key = kv.first.as<std::string>();
    const std::string where = base + "." + key;
    const YAML::Node& v = kv.second;
    Status s;
    if (key == "name") {
      s = ReadScalar(v, where, &out->name);
    } else if (key == "database") {
      s = ReadScalar(v, where, &out->database);
    } else if (key == "batch_max_events") {
      s = ReadScalar(v, where, &o.batch_max_events);
    } else if (key == "batch_max_bytes") {
      s = ReadScalar(v, where, &o.batch_max_bytes);
    } else if (key == "publish_chunk_max_events") {
      s = ReadScalar(v, where, &o.publish_chunk_max_events);
    } else if (key == "poll_interval_ms") {
      s = ReadScalar(v, where, &o.poll_interval_ms);
    } else if (key == "batch_linger_us") {
      s = ReadScalar(v, where, &o.batch_linger_us);
    } else if (key == "batch_linger_min_rows") {
      s = ReadScalar(v, where, &o.batch_linger_min_rows);
    } else if (key == "retry_base_delay_ms") {
      s = ReadScalar(v, where, &o.retry_base_delay_ms);
    } else if (key == "retry_max_delay_ms") {
      s = ReadScalar(v, where, &o.retry_max_delay_ms);
    } else if (key == "standby_retry_ms") {
      s = ReadScalar(v, where, &o.standby_retry_ms);
    } else if (key == "postgres_buckets") {
      s = ReadScalar(v, where, &o.postgres_buckets);
    } else if (key == "postgres_connect_timeout_ms") {
      s = ReadScalar(v, where, &o.postgres_connect_timeout_ms);
    } else if (key == "postgres_statement_timeout_ms") {
      s = ReadScalar(v, where, &o.postgres_statement_timeout_ms);
    } else if (key == "rebalance_interval_ms") {
      s = ReadScalar(v, where, &o.rebalance_interval_ms);
    } else if (key == "sqlite_synchronous") {
      s = ReadScalar(v, where, &o.sqlite_synchronous);
    } else if (key == "sqlite_busy_timeout_ms") {
      s = ReadScalar(v, where, &o.sqlite_busy_timeout_ms);
    } else if (key == "sqlite_lock_path") {
      s = ReadScalar(v, where, &o.sqlite_lock_path);
    } else if (key == "create_schema") {
      s = ReadScalar(v, where, &o.create_schema);
    } else if (key == "mode") {
      s = ReadScalar(v, where, &o.mode);
    } else if (key == "wal_slot") {
      s = ReadScalar(v, where, &o.wal_slot);
    } else if (key == "wal_publication") {
      s = ReadScalar(v, where, &o.wal_publication);
    } else if (key == "wal_capture_tables") {
      s = ReadScalar(v, where, &o.wal_capture_tables);
    } else if (key == "wal_capture_topic_prefix") {
      s = ReadScalar(v, where, &o.wal_capture_topic_prefix);
    } else {
      return KeyError(where, "unknown key");
    }
    CONVERGE_RETURN_IF_ERROR(s);
  }
  if (out->name.empty()) return KeyError(base, "needs a name");
  if (out->database.empty()) return KeyError(base, "needs a database");
  o.name = out->name;
  return Status::Ok();
}

class RelayServiceImpl final : public RelayService {
 public:
  ~RelayServiceImpl() override { Stop(); }

  void Stop() override {
    for (auto& r : relays_) r.second->Stop();
  }

  std::vector<std::pair<std::string, RelayStats>> stats() const override {
    std::vector<std::pair<std::string, RelayStats>> out;
    for (const auto& r : relays_) out.emplace_back(r.first, r.second->stats());
    return out;
  }

  std::unique_ptr<RelaySink> sink_;
  std::vector<std::pair<std::string, std::unique_ptr<Relay>>> relays_;
};

}  // namespace

Result<RelayServiceConfig> ParseRelayServiceConfig(std::string_view yaml) {
  YAML::Node root;
  try {
    root = YAML::Load(std::string(yaml));
    CONVERGE_RETURN_IF_ERROR(CheckYamlDocument(root, "relay config"));
  } catch (const YAML::Exception& e) {
    return InvalidArgumentError(std::string("relay config: not valid YAML: ") + e.what());
  }
  RelayServiceConfig config;
  YAML::Node relays = root.IsMap() && root["relays"] ? root["relays"] : root;
  if (!relays.IsMap()) return InvalidArgumentError("relay config: 'relays' must be a map");
  try {
    for (const auto& kv : relays) {
      const std::string key = kv.first.as<std::string>();
      if (key == "sink") {
        CONVERGE_RETURN_IF_ERROR(ParseSink(kv.second, &config.sink));
      } else if (key == "sources") {
        if (!kv.second.IsSequence()) return KeyError("relays.sources", "must be a list");
        size_t i = 0;
        for (const auto& item : kv.second) {
          RelaySourceConfig source;
          CONVERGE_RETURN_IF_ERROR(ParseSource(item, i++, &source));
          config.sources.push_back(std::move(source));
        }
      } else {
        return KeyError("relays." + key, "unknown key");
      }
    }
  } catch (const YAML::Exception& e) {
    return InvalidArgumentError(std::string("relay config: ") + e.what());
  }
  if (config.sources.empty()) return InvalidArgumentError("relay config: no sources");
  return config;
}

Result<std::unique_ptr<RelayService>> RelayService::Start(Env& env, Log& log,
                                                          const RelayServiceConfig& config) {
  auto service = std::make_unique<RelayServiceImpl>();
  CONVERGE_ASSIGN_OR_RETURN(service->sink_, NewLogSink(log, config.sink));
  std::set<std::string> names;
  for (const RelaySourceConfig& source : config.sources) {
    if (!names.insert(source.name).second) {
      return InvalidArgumentError("relay config: duplicate source name '" + source.name + "'");
    }
    CONVERGE_ASSIGN_OR_RETURN(sql::DatabaseTarget target,
                              sql::ParseDatabaseTarget(source.database));
    RelayOptions options = source.options;
    options.fault_point = nullptr;
    if (options.name.empty()) options.name = source.name;
    CONVERGE_ASSIGN_OR_RETURN(std::unique_ptr<Relay> relay,
                              Relay::Create(env, target, *service->sink_, std::move(options)));
    service->relays_.emplace_back(source.name, std::move(relay));
  }
  for (auto& r : service->relays_) {
    Status s = r.second->Start();
    if (!s.ok()) {
      service->Stop();
      return s;
    }
  }
  return std::unique_ptr<RelayService>(std::move(service));
}

}  // namespace converge
