#include "server/config.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <charconv>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <set>
#include <sstream>
#include <tuple>

#include "converge/sql.h"
#include "core/yaml_check.h"
#include "replica/multi_writer.h"
#include "server/multi_writers.h"
#include "server/push_http_client.h"
#include "server/remote_source.h"
#include "server/store_target.h"
#include "store/builtin_merge.h"
#include "sql/identifier.h"

namespace converge::server {
namespace {

// yaml-cpp reports problems with exceptions; every access below goes through these helpers
// so that a wrong document becomes an InvalidArgument naming the key, never a crash.
Status KeyError(const std::string& key, std::string_view what) {
  std::string msg = "config key '" + key + "': ";
  msg += what;
  return InvalidArgumentError(msg);
}

Status CheckKeys(const YAML::Node& node, const std::string& where,
                 const std::set<std::string>& allowed) {
  if (!node.IsMap()) return KeyError(where, "must be a mapping");
  for (const auto& kv : node) {
    std::string key = kv.first.as<std::string>();
    if (!allowed.count(key)) {
      return KeyError(where.empty() ? key : where + "." + key, "unknown key");
    }
  }
  return Status::Ok();
}

std::string Join(const std::string& where, const std::string& key) {
  return where.empty() ? key : where + "." + key;
}

Status ReadString(const YAML::Node& map, const std::string& where, const std::string& key,
                  std::string* out) {
  YAML::Node n = map[key];
  if (!n) return Status::Ok();
  if (!n.IsScalar()) return KeyError(Join(where, key), "must be a string");
  *out = n.as<std::string>();
  return Status::Ok();
}

Status ReadBool(const YAML::Node& map, const std::string& where, const std::string& key,
                bool* out) {
  YAML::Node n = map[key];
  if (!n) return Status::Ok();
  bool v;
  if (!n.IsScalar() || !YAML::convert<bool>::decode(n, v)) {
    return KeyError(Join(where, key), "must be true or false");
  }
  *out = v;
  return Status::Ok();
}

template <typename Int>
Status ReadInt(const YAML::Node& map, const std::string& where, const std::string& key, Int* out,
               long double min_value, long double max_value) {
  YAML::Node n = map[key];
  if (!n) return Status::Ok();
  if (!n.IsScalar()) return KeyError(Join(where, key), "must be an integer");
  const std::string text = n.Scalar();
  long long v = 0;
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc() || ptr != text.data() + text.size()) {
    return KeyError(Join(where, key), "must be an integer, got '" + text + "'");
  }
  if (static_cast<long double>(v) < min_value || static_cast<long double>(v) > max_value) {
    std::ostringstream os;
    os << "must be in [" << static_cast<long long>(min_value) << ", "
       << static_cast<unsigned long long>(max_value) << "], got " << v;
    return KeyError(Join(where, key), os.str());
  }
  *out = static_cast<Int>(v);
  return Status::Ok();
}

Status ReadStringList(const YAML::Node& map, const std::string& where, const std::string& key,
                      std::vector<std::string>* out) {
  YAML::Node n = map[key];
  if (!n) return Status::Ok();
  out->clear();
  if (n.IsScalar()) {
    out->push_back(n.as<std::string>());
    return Status::Ok();
  }
  if (!n.IsSequence()) return KeyError(Join(where, key), "must be a list of strings");
  for (const auto& item : n) {
    if (!item.IsScalar()) return KeyError(Join(where, key), "must be a list of strings");
    out->push_back(item.as<std::string>());
  }
  return Status::Ok();
}

Result<Durability> DurabilityFromName(std::string_view name) {
  if (name == "fsync") return Durability::kFsync;
  if (name == "interval") return Durability::kInterval;
  if (name == "none") return Durability::kNone;
  return InvalidArgumentError("durability must be fsync, interval or none");
}

constexpr long double kMaxI64 = static_cast<long double>(std::numeric_limits<int64_t>::max());
constexpr long double kMaxU32 = static_cast<long double>(std::numeric_limits<uint32_t>::max());

Status ParseTopicDefaults(const YAML::Node& n, TopicOptions* t) {
  const std::string w = "topic_defaults";
  CONVERGE_RETURN_IF_ERROR(CheckKeys(
      n, w,
      {"partitions", "durability", "sync_interval_ms", "segment_max_bytes", "retention_max_bytes",
       "retention_max_age_ms", "dedup_window_ms", "dedup_max_ids"}));
  CONVERGE_RETURN_IF_ERROR(ReadInt(n, w, "partitions", &t->partitions, 1, 1024));
  std::string durability;
  CONVERGE_RETURN_IF_ERROR(ReadString(n, w, "durability", &durability));
  if (!durability.empty()) {
    Result<Durability> d = DurabilityFromName(durability);
    if (!d.ok()) return KeyError(w + ".durability", d.status().message());
    t->durability = *d;
  }
  CONVERGE_RETURN_IF_ERROR(ReadInt(n, w, "sync_interval_ms", &t->sync_interval_ms, 1, kMaxI64));
  CONVERGE_RETURN_IF_ERROR(
      ReadInt(n, w, "segment_max_bytes", &t->segment_max_bytes, 4096, kMaxI64));
  CONVERGE_RETURN_IF_ERROR(
      ReadInt(n, w, "retention_max_bytes", &t->retention_max_bytes, 0, kMaxI64));
  CONVERGE_RETURN_IF_ERROR(
      ReadInt(n, w, "retention_max_age_ms", &t->retention_max_age_ms, 0, kMaxI64));
  CONVERGE_RETURN_IF_ERROR(ReadInt(n, w, "dedup_window_ms", &t->dedup_window_ms, 0, kMaxI64));
  CONVERGE_RETURN_IF_ERROR(ReadInt(n, w, "dedup_max_ids", &t->dedup_max_ids, 0, kMaxI64));
  return Status::Ok();
}

Status ParseLimits(const YAML::Node& n, LimitsConfig* l) {
  const std::string w = "limits";
  CONVERGE_RETURN_IF_ERROR(
      CheckKeys(n, w,
                {"max_body_bytes", "max_batch_events", "max_event_bytes", "max_inflight_requests",
                 "max_connections", "max_header_bytes", "max_subscribers", "max_fetch_events",
                 "max_fetch_bytes", "max_wait_ms", "idle_timeout_ms", "request_timeout_ms",
                 "shutdown_timeout_ms", "stream_heartbeat_ms"}));
  CONVERGE_RETURN_IF_ERROR(ReadInt(n, w, "max_body_bytes", &l->max_body_bytes, 1, kMaxI64));
  CONVERGE_RETURN_IF_ERROR(ReadInt(n, w, "max_batch_events", &l->max_batch_events, 1, kMaxU32));
  CONVERGE_RETURN_IF_ERROR(ReadInt(n, w, "max_event_bytes", &l->max_event_bytes, 64, kMaxU32));
  CONVERGE_RETURN_IF_ERROR(
      ReadInt(n, w, "max_inflight_requests", &l->max_inflight_requests, 1, kMaxU32));
  CONVERGE_RETURN_IF_ERROR(ReadInt(n, w, "max_connections", &l->max_connections, 1, kMaxU32));
  CONVERGE_RETURN_IF_ERROR(ReadInt(n, w, "max_header_bytes", &l->max_header_bytes, 1024, kMaxU32));
  CONVERGE_RETURN_IF_ERROR(ReadInt(n, w, "max_subscribers", &l->max_subscribers, 0, kMaxU32));
  CONVERGE_RETURN_IF_ERROR(ReadInt(n, w, "max_fetch_events", &l->max_fetch_events, 1, kMaxU32));
  CONVERGE_RETURN_IF_ERROR(ReadInt(n, w, "max_fetch_bytes", &l->max_fetch_bytes, 1, kMaxI64));
  CONVERGE_RETURN_IF_ERROR(ReadInt(n, w, "max_wait_ms", &l->max_wait_ms, 0, kMaxI64));
  CONVERGE_RETURN_IF_ERROR(ReadInt(n, w, "idle_timeout_ms", &l->idle_timeout_ms, 1, kMaxI64));
  CONVERGE_RETURN_IF_ERROR(ReadInt(n, w, "request_timeout_ms", &l->request_timeout_ms, 1, kMaxI64));
  CONVERGE_RETURN_IF_ERROR(
      ReadInt(n, w, "shutdown_timeout_ms", &l->shutdown_timeout_ms, 0, kMaxI64));
  CONVERGE_RETURN_IF_ERROR(
      ReadInt(n, w, "stream_heartbeat_ms", &l->stream_heartbeat_ms, 1, kMaxI64));
  return Status::Ok();
}

Status ParseGroups(const YAML::Node& n, GroupConfig* g) {
  const std::string w = "groups";
  CONVERGE_RETURN_IF_ERROR(
      CheckKeys(n, w,
                {"lease_ms", "max_lease_ms", "max_deliveries", "max_nack_delay_ms", "sync_acks",
                 "commit_interval_ms", "session_timeout_ms", "on_damage"}));
  CONVERGE_RETURN_IF_ERROR(ReadInt(n, w, "lease_ms", &g->lease_ms, 1, kMaxI64));
  CONVERGE_RETURN_IF_ERROR(ReadInt(n, w, "session_timeout_ms", &g->session_timeout_ms,
                                   kMinSessionTimeoutMs, kMaxSessionTimeoutMs));
  CONVERGE_RETURN_IF_ERROR(ReadInt(n, w, "max_lease_ms", &g->max_lease_ms, 1, kMaxI64));
  CONVERGE_RETURN_IF_ERROR(ReadInt(n, w, "max_deliveries", &g->max_deliveries, 1, kMaxU32));
  CONVERGE_RETURN_IF_ERROR(ReadInt(n, w, "max_nack_delay_ms", &g->max_nack_delay_ms, 0, kMaxI64));
  CONVERGE_RETURN_IF_ERROR(ReadBool(n, w, "sync_acks", &g->sync_acks));
  CONVERGE_RETURN_IF_ERROR(
      ReadInt(n, w, "commit_interval_ms", &g->commit_interval_ms, 1, 3'600'000));
  std::string on_damage = g->on_damage == DamagePolicy::kStop ? "stop" : "skip";
  CONVERGE_RETURN_IF_ERROR(ReadString(n, w, "on_damage", &on_damage));
  if (on_damage == "skip") {
    g->on_damage = DamagePolicy::kSkip;
  } else if (on_damage == "stop") {
    g->on_damage = DamagePolicy::kStop;
  } else {
    return InvalidArgumentError("groups.on_damage must be skip or stop, not '" + on_damage + "'");
  }
  return Status::Ok();
}

Status ParseSagas(const YAML::Node& n, SagaConfig* c) {
  const std::string w = "sagas";
  CONVERGE_RETURN_IF_ERROR(CheckKeys(n, w,
                                     {"enabled", "reply_topic", "definitions", "postgres_conninfo",
                                      "postgres_table", "postgres_connect_timeout_ms",
                                      "postgres_statement_timeout_ms", "max_in_flight",
                                      "finished_retain_max", "finished_retain_ms"}));
  CONVERGE_RETURN_IF_ERROR(ReadBool(n, w, "enabled", &c->enabled));
  CONVERGE_RETURN_IF_ERROR(ReadStringList(n, w, "definitions", &c->definitions));
  SagaOrchestratorOptions& o = c->orchestrator;
  CONVERGE_RETURN_IF_ERROR(ReadString(n, w, "reply_topic", &o.reply_topic));
  CONVERGE_RETURN_IF_ERROR(ReadString(n, w, "postgres_conninfo", &o.postgres_conninfo));
  CONVERGE_RETURN_IF_ERROR(ReadString(n, w, "postgres_table", &o.postgres_table));
  CONVERGE_RETURN_IF_ERROR(ReadInt(n, w, "postgres_connect_timeout_ms",
                                   &o.postgres_connect_timeout_ms, 1, 3'600'000));
  CONVERGE_RETURN_IF_ERROR(ReadInt(n, w, "postgres_statement_timeout_ms",
                                   &o.postgres_statement_timeout_ms, 0, 86'400'000));
  CONVERGE_RETURN_IF_ERROR(ReadInt(n, w, "max_in_flight", &o.max_in_flight, 1, kMaxU32));
  CONVERGE_RETURN_IF_ERROR(
      ReadInt(n, w, "finished_retain_max", &o.finished_retain_max, 0, kMaxU32));
  CONVERGE_RETURN_IF_ERROR(
      ReadInt(n, w, "finished_retain_ms", &o.finished_retain_ms, 0, kMaxI64));
  return Status::Ok();
}

Status ParseStore(const YAML::Node& n, StoreConfig* c) {
  const std::string w = "store";
  CONVERGE_RETURN_IF_ERROR(CheckKeys(
      n, w,
      {"enabled", "durability", "sync_interval_ms", "max_document_bytes", "max_store_bytes",
       "feed_topic", "checkpoint_wal_bytes", "ttl_sweep_interval_ms", "backend",
       "postgres_conninfo", "postgres_table_prefix", "postgres_connect_timeout_ms",
       "postgres_statement_timeout_ms"}));
  CONVERGE_RETURN_IF_ERROR(ReadBool(n, w, "enabled", &c->enabled));
  std::string durability;
  CONVERGE_RETURN_IF_ERROR(ReadString(n, w, "durability", &durability));
  if (!durability.empty()) {
    Result<Durability> d = DurabilityFromName(durability);
    if (!d.ok()) return KeyError(w + ".durability", d.status().message());
    c->durability = *d;
  }
  CONVERGE_RETURN_IF_ERROR(ReadInt(n, w, "sync_interval_ms", &c->sync_interval_ms, 1, kMaxI64));
  CONVERGE_RETURN_IF_ERROR(
      ReadInt(n, w, "max_document_bytes", &c->max_document_bytes, 1, 64 << 20));
  CONVERGE_RETURN_IF_ERROR(ReadInt(n, w, "max_store_bytes", &c->max_store_bytes, 1, kMaxI64));
  CONVERGE_RETURN_IF_ERROR(ReadString(n, w, "feed_topic", &c->feed_topic));
  CONVERGE_RETURN_IF_ERROR(
      ReadInt(n, w, "checkpoint_wal_bytes", &c->checkpoint_wal_bytes, 4096, kMaxI64));
  CONVERGE_RETURN_IF_ERROR(
      ReadInt(n, w, "ttl_sweep_interval_ms", &c->ttl_sweep_interval_ms, 0, kMaxI64));
  CONVERGE_RETURN_IF_ERROR(ReadString(n, w, "backend", &c->backend));
  if (c->backend != "embedded" && c->backend != "postgres") {
    return KeyError(w + ".backend", "must be embedded or postgres, not '" + c->backend + "'");
  }
  if (c->backend != "postgres") {
    // A backend's keys without that backend would be silently ignored.
    for (const char* key : {"postgres_conninfo", "postgres_table_prefix",
                            "postgres_connect_timeout_ms", "postgres_statement_timeout_ms"}) {
      if (n[key]) return KeyError(w + "." + key, "is only for store.backend: postgres");
    }
    return Status::Ok();
  }
  CONVERGE_RETURN_IF_ERROR(ReadString(n, w, "postgres_conninfo", &c->postgres_conninfo));
  CONVERGE_RETURN_IF_ERROR(ReadString(n, w, "postgres_table_prefix", &c->postgres_table_prefix));
  CONVERGE_RETURN_IF_ERROR(ReadInt(n, w, "postgres_connect_timeout_ms",
                                   &c->postgres_connect_timeout_ms, 1, 3'600'000));
  CONVERGE_RETURN_IF_ERROR(ReadInt(n, w, "postgres_statement_timeout_ms",
                                   &c->postgres_statement_timeout_ms, 0, 86'400'000));
  if (c->postgres_conninfo.empty()) {
    return KeyError(w + ".postgres_conninfo", "is required with store.backend: postgres");
  }
  return Status::Ok();
}

Status ParseLog(const YAML::Node& n, LogConfig* c) {
  const std::string w = "log";
  CONVERGE_RETURN_IF_ERROR(CheckKeys(n, w, {"backend", "jetstream"}));
  std::string backend = "embedded";
  CONVERGE_RETURN_IF_ERROR(ReadString(n, w, "backend", &backend));
  if (backend == "embedded") {
    c->backend = LogBackend::kEmbedded;
  } else if (backend == "jetstream") {
    c->backend = LogBackend::kJetStream;
  } else {
    return KeyError(w + ".backend", "must be embedded or jetstream, got '" + backend + "'");
  }
  YAML::Node js = n["jetstream"];
  if (js && c->backend != LogBackend::kJetStream) {
    return KeyError(w + ".jetstream", "is only for log.backend: jetstream");
  }
  if (c->backend != LogBackend::kJetStream) return Status::Ok();
  const std::string jw = w + ".jetstream";
  if (!js) return KeyError(jw, "is required with log.backend: jetstream (servers at least)");
  CONVERGE_RETURN_IF_ERROR(CheckKeys(js, jw,
                                     {"servers", "replicas", "stream_prefix", "connect_timeout_ms",
                                      "ack_timeout_ms", "max_pending_publishes"}));
  jetstream::JetStreamLogOptions& o = c->jetstream;
  CONVERGE_RETURN_IF_ERROR(ReadStringList(js, jw, "servers", &o.servers));
  if (o.servers.empty()) return KeyError(jw + ".servers", "is required (one or more nats:// URLs)");
  CONVERGE_RETURN_IF_ERROR(ReadInt(js, jw, "replicas", &o.replicas, 1, 5));
  CONVERGE_RETURN_IF_ERROR(ReadString(js, jw, "stream_prefix", &o.stream_prefix));
  CONVERGE_RETURN_IF_ERROR(
      ReadInt(js, jw, "connect_timeout_ms", &o.connect_timeout_ms, 1, 3'600'000));
  CONVERGE_RETURN_IF_ERROR(ReadInt(js, jw, "ack_timeout_ms", &o.ack_timeout_ms, 1, 3'600'000));
  CONVERGE_RETURN_IF_ERROR(
      ReadInt(js, jw, "max_pending_publishes", &o.max_pending_publishes, 1, 10'000'000));
  return Status::Ok();
}

Status ParseToken(const YAML::Node& n, size_t index, TokenConfig* t) {
  const std::string w = "auth.tokens[" + std::to_string(index) + "]";
  CONVERGE_RETURN_IF_ERROR(
      CheckKeys(n, w, {"service", "token", "token_env", "publish", "subscribe", "admin",
                       "read_collections", "write_collections"}));
  CONVERGE_RETURN_IF_ERROR(ReadString(n, w, "service", &t->service));
  if (t->service.empty()) return KeyError(w + ".service", "is required");
  std::string env_name;
  CONVERGE_RETURN_IF_ERROR(ReadString(n, w, "token", &t->token));
  CONVERGE_RETURN_IF_ERROR(ReadString(n, w, "token_env", &env_name));
  if (!t->token.empty() && !env_name.empty()) {
    return KeyError(w, "set either token or token_env, not both");
  }
  if (!env_name.empty()) {
    const char* v = std::getenv(env_name.c_str());
    if (v == nullptr || *v == '\0') {
      return KeyError(w + ".token_env", "environment variable " + env_name + " is not set");
    }
    t->token = v;
  }
  if (t->token.size() < 16) {
    return KeyError(w + ".token", "is required and must be at least 16 characters");
  }
  CONVERGE_RETURN_IF_ERROR(ReadStringList(n, w, "publish", &t->publish));
  CONVERGE_RETURN_IF_ERROR(ReadStringList(n, w, "subscribe", &t->subscribe));
  CONVERGE_RETURN_IF_ERROR(ReadBool(n, w, "admin", &t->admin));
  // Either list limits the token's store collections to those listed (a token that may read
  // one collection only, e.g. another node's replica of it). Without both: the store's own
  // rules alone decide.
  if (n["read_collections"] || n["write_collections"]) {
    CONVERGE_RETURN_IF_ERROR(ReadStringList(n, w, "read_collections", &t->read_collections));
    CONVERGE_RETURN_IF_ERROR(ReadStringList(n, w, "write_collections", &t->write_collections));
    for (const std::string& c : t->write_collections) {
      // What a service may write it may read.
      if (std::find(t->read_collections.begin(), t->read_collections.end(), c) ==
          t->read_collections.end()) {
        t->read_collections.push_back(c);
      }
    }
    t->restrict_collections = true;
  }
  return Status::Ok();
}

Status ParseAuth(const YAML::Node& n, ServerConfig* c) {
  CONVERGE_RETURN_IF_ERROR(
      CheckKeys(n, "auth", {"tokens", "allow_unauthenticated", "metrics_require_token"}));
  CONVERGE_RETURN_IF_ERROR(ReadBool(n, "auth", "allow_unauthenticated", &c->allow_unauthenticated));
  CONVERGE_RETURN_IF_ERROR(ReadBool(n, "auth", "metrics_require_token", &c->metrics_require_token));
  YAML::Node tokens = n["tokens"];
  if (!tokens) return Status::Ok();
  if (!tokens.IsSequence()) return KeyError("auth.tokens", "must be a list");
  for (size_t i = 0; i < tokens.size(); ++i) {
    TokenConfig t;
    CONVERGE_RETURN_IF_ERROR(ParseToken(tokens[i], i, &t));
    c->tokens.push_back(std::move(t));
  }
  return Status::Ok();
}

// The `relays:` section has the grammar of ParseRelayServiceConfig (converge/relay.h), which
// reads it from its own text. Topics the relays create take topic_defaults' partitions and
// durability unless relays.sink names them.
Status ParseRelays(const YAML::Node& n, const TopicOptions& topic_defaults, RelaysConfig* r) {
  if (!n.IsMap()) return KeyError("relays", "must be a mapping");
  YAML::Emitter out;
  out << n;
  if (!out.good()) return KeyError("relays", out.GetLastError());
  Result<RelayServiceConfig> parsed = ParseRelayServiceConfig(out.c_str());
  if (!parsed.ok()) return KeyError("relays", parsed.status().message());
  std::set<std::string> names;
  for (const RelaySourceConfig& source : parsed->sources) {
    if (!names.insert(source.name).second) {
      return KeyError("relays.sources", "duplicate name '" + source.name + "'");
    }
    Result<sql::DatabaseTarget> target = sql::ParseDatabaseTarget(source.database);
    if (!target.ok()) {
      return KeyError("relays.sources." + source.name + ".database", target.status().message());
    }
  }
  r->enabled = true;
  r->service = std::move(parsed).value();
  YAML::Node sink = n["sink"];
  TopicOptions& created = r->service.sink.topic_options;
  if (!sink || !sink["partitions"]) created.partitions = topic_defaults.partitions;
  if (!sink || !sink["durability"]) {
    created.durability = topic_defaults.durability;
    created.sync_interval_ms = topic_defaults.sync_interval_ms;
  }
  created.segment_max_bytes = topic_defaults.segment_max_bytes;
  created.retention_max_bytes = topic_defaults.retention_max_bytes;
  created.retention_max_age_ms = topic_defaults.retention_max_age_ms;
  created.dedup_window_ms = topic_defaults.dedup_window_ms;
  created.dedup_max_ids = topic_defaults.dedup_max_ids;
  return Status::Ok();
}

// One entry of `replicas:`. The source topic of a store collection is filled in by ParseRoot
// (it depends on store.feed_topic).
Status ParseReplica(const YAML::Node& n, size_t index, ReplicaConfig* r) {
  const std::string w = "replicas[" + std::to_string(index) + "]";
  CONVERGE_RETURN_IF_ERROR(CheckKeys(n, w,
                                     {"name", "source", "target", "max_batch", "on_malformed", "on_position_gone",
                                      "tombstone_retention_ms", "poll_interval_ms",
                                      "reconcile_interval_ms"}));
  CONVERGE_RETURN_IF_ERROR(ReadString(n, w, "name", &r->name));
  if (r->name.empty() || r->name.size() > 64 ||
      r->name.find_first_not_of(
          "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-") !=
          std::string::npos) {
    return KeyError(w + ".name", "is required: 1..64 characters of [A-Za-z0-9_-]");
  }
  const std::string wn = "replicas." + r->name;
  YAML::Node source = n["source"];
  if (!source) return KeyError(wn + ".source", "is required");
  CONVERGE_RETURN_IF_ERROR(
      CheckKeys(source, wn + ".source", {"topic", "store_collection", "remote"}));
  CONVERGE_RETURN_IF_ERROR(ReadString(source, wn + ".source", "topic", &r->topic));
  CONVERGE_RETURN_IF_ERROR(
      ReadString(source, wn + ".source", "store_collection", &r->store_collection));
  if (YAML::Node remote = source["remote"]) {
    const std::string wr = wn + ".source.remote";
    if (!remote.IsMap()) return KeyError(wr, "must be a map");
    CONVERGE_RETURN_IF_ERROR(CheckKeys(
        remote, wr, {"url", "token", "token_env", "collection", "ca_file", "feed_topic"}));
    CONVERGE_RETURN_IF_ERROR(ReadString(remote, wr, "url", &r->remote_url));
    if (r->remote_url.empty()) return KeyError(wr + ".url", "is required");
    CONVERGE_RETURN_IF_ERROR(ReadString(remote, wr, "collection", &r->remote_collection));
    if (r->remote_collection.empty()) return KeyError(wr + ".collection", "is required");
    CONVERGE_RETURN_IF_ERROR(ReadString(remote, wr, "ca_file", &r->remote_ca_file));
    std::string env_name;
    CONVERGE_RETURN_IF_ERROR(ReadString(remote, wr, "token", &r->remote_token));
    CONVERGE_RETURN_IF_ERROR(ReadString(remote, wr, "token_env", &env_name));
    if (!r->remote_token.empty() && !env_name.empty()) {
      return KeyError(wr, "set either token or token_env, not both");
    }
    if (!env_name.empty()) {
      const char* v = std::getenv(env_name.c_str());
      if (v == nullptr || *v == '\0') {
        return KeyError(wr + ".token_env", "environment variable " + env_name + " is not set");
      }
      r->remote_token = v;
    }
    r->source_topic = "store-changes";
    CONVERGE_RETURN_IF_ERROR(ReadString(remote, wr, "feed_topic", &r->source_topic));
  }
  if ((r->topic.empty() ? 0 : 1) + (r->store_collection.empty() ? 0 : 1) +
          (r->remote_url.empty() ? 0 : 1) !=
      1) {
    return KeyError(wn + ".source", "set exactly one of topic, store_collection and remote");
  }
  YAML::Node target = n["target"];
  if (!target) return KeyError(wn + ".target", "is required");
  CONVERGE_RETURN_IF_ERROR(
      CheckKeys(target, wn + ".target", {"sqlite", "postgres", "table", "store_collection"}));
  std::string sqlite, postgres;
  CONVERGE_RETURN_IF_ERROR(ReadString(target, wn + ".target", "sqlite", &sqlite));
  CONVERGE_RETURN_IF_ERROR(ReadString(target, wn + ".target", "postgres", &postgres));
  CONVERGE_RETURN_IF_ERROR(
      ReadString(target, wn + ".target", "store_collection", &r->target_collection));
  if (!r->target_collection.empty()) {
    if (!sqlite.empty() || !postgres.empty() || target["table"]) {
      return KeyError(wn + ".target",
                      "store_collection is a target of its own: no sqlite, postgres or table");
    }
    // A batch is one store transaction: two ops per change and the position.
    r->max_batch = kMaxStoreTargetBatch;
    CONVERGE_RETURN_IF_ERROR(ReadInt(n, wn, "max_batch", &r->max_batch, 1, kMaxStoreTargetBatch));
  } else {
    if (sqlite.empty() == postgres.empty()) {
      return KeyError(wn + ".target",
                      "set exactly one of sqlite (a path), postgres (a conninfo) and "
                      "store_collection");
    }
    r->engine = sqlite.empty() ? sql::Engine::kPostgres : sql::Engine::kSqlite;
    r->database = sqlite.empty() ? postgres : sqlite;
    CONVERGE_RETURN_IF_ERROR(ReadString(target, wn + ".target", "table", &r->table));
    if (r->table.empty()) return KeyError(wn + ".target.table", "is required");
    CONVERGE_RETURN_IF_ERROR(ReadInt(n, wn, "max_batch", &r->max_batch, 1, 100'000));
  }
  std::string on_malformed;
  CONVERGE_RETURN_IF_ERROR(ReadString(n, wn, "on_malformed", &on_malformed));
  if (!on_malformed.empty()) {
    Result<replica::OnMalformed> m = replica::ParseOnMalformed(on_malformed);
    if (!m.ok()) return KeyError(wn + ".on_malformed", m.status().message());
    r->on_malformed = *m;
  }
  std::string on_position_gone;
  CONVERGE_RETURN_IF_ERROR(ReadString(n, wn, "on_position_gone", &on_position_gone));
  if (!on_position_gone.empty() && on_position_gone != "stop" &&
      on_position_gone != "rebootstrap") {
    return KeyError(wn + ".on_position_gone", "must be stop or rebootstrap");
  }
  if (on_position_gone == "rebootstrap") {
    if (r->remote_url.empty() || !r->target_collection.empty()) {
      return KeyError(wn + ".on_position_gone",
                      "rebootstrap needs source.remote and a sqlite or postgres target");
    }
    r->rebootstrap_on_position_gone = true;
  }
  CONVERGE_RETURN_IF_ERROR(
      ReadInt(n, wn, "tombstone_retention_ms", &r->tombstone_retention_ms, 0, kMaxI64));
  CONVERGE_RETURN_IF_ERROR(ReadInt(n, wn, "poll_interval_ms", &r->poll_interval_ms, 10, 3'600'000));
  CONVERGE_RETURN_IF_ERROR(
      ReadInt(n, wn, "reconcile_interval_ms", &r->reconcile_interval_ms, 0, 7LL * 24 * 3'600'000));
  if (r->reconcile_interval_ms != 0 && r->reconcile_interval_ms < 1000) {
    return KeyError(wn + ".reconcile_interval_ms", "must be 0 (off) or at least 1000");
  }
  return Status::Ok();
}

// One entry of `multi_writer:`.
Status ParseMultiWriter(const YAML::Node& n, size_t index, MultiWriterConfig* m) {
  const std::string w = "multi_writer[" + std::to_string(index) + "]";
  CONVERGE_RETURN_IF_ERROR(CheckKeys(
      n, w,
      {"collection", "node_id", "policy", "crdt_fields", "resolver", "peers", "max_siblings",
       "poll_interval_ms", "tombstone_retention_ms", "reconcile_interval_ms"}));
  CONVERGE_RETURN_IF_ERROR(ReadString(n, w, "collection", &m->collection));
  if (m->collection.empty()) return KeyError(w + ".collection", "is required");
  const std::string wc = "multi_writer." + m->collection;
  CONVERGE_RETURN_IF_ERROR(ReadInt(n, wc, "node_id", &m->node_id, 0, UINT64_MAX));
  if (m->node_id == 0) return KeyError(wc + ".node_id", "is required: a node id >= 1");
  CONVERGE_RETURN_IF_ERROR(ReadString(n, wc, "policy", &m->policy));
  if (m->policy.empty()) {
    return KeyError(wc + ".policy",
                    "is required (there is no default): one of lww, multi-value, crdt-fields, "
                    "resolver");
  }
  if (Result<replica::mw::Policy> p = replica::mw::ParsePolicy(m->policy); !p.ok()) {
    return KeyError(wc + ".policy", p.status().message());
  }
  if (YAML::Node f = n["crdt_fields"]) {
    if (!f.IsMap()) return KeyError(wc + ".crdt_fields", "must be a mapping of field: kind");
    for (const auto& kv : f) {
      const std::string field = kv.first.as<std::string>();
      if (!kv.second.IsScalar()) return KeyError(wc + ".crdt_fields." + field, "must be a string");
      m->crdt_fields[field] = kv.second.as<std::string>();
    }
  }
  CONVERGE_RETURN_IF_ERROR(ReadString(n, wc, "resolver", &m->resolver));
  CONVERGE_RETURN_IF_ERROR(ReadInt(n, wc, "max_siblings", &m->max_siblings, 1, 10'000));
  CONVERGE_RETURN_IF_ERROR(ReadInt(n, wc, "poll_interval_ms", &m->poll_interval_ms, 10, 3'600'000));
  CONVERGE_RETURN_IF_ERROR(
      ReadInt(n, wc, "tombstone_retention_ms", &m->tombstone_retention_ms, 0, kMaxI64));
  CONVERGE_RETURN_IF_ERROR(
      ReadInt(n, wc, "reconcile_interval_ms", &m->reconcile_interval_ms, 0, 7LL * 24 * 3'600'000));
  if (m->reconcile_interval_ms != 0 && m->reconcile_interval_ms < 1000) {
    return KeyError(wc + ".reconcile_interval_ms", "must be 0 (off) or at least 1000");
  }
  YAML::Node peers = n["peers"];
  if (!peers || !peers.IsSequence() || peers.size() == 0) {
    return KeyError(wc + ".peers", "is required: a list of the other nodes writing the collection");
  }
  for (size_t i = 0; i < peers.size(); ++i) {
    const std::string wp = wc + ".peers[" + std::to_string(i) + "]";
    MultiWriterPeerConfig peer;
    CONVERGE_RETURN_IF_ERROR(
        CheckKeys(peers[i], wp, {"node_id", "url", "token", "token_env", "ca_file"}));
    CONVERGE_RETURN_IF_ERROR(ReadInt(peers[i], wp, "node_id", &peer.node_id, 0, UINT64_MAX));
    if (peer.node_id == 0) return KeyError(wp + ".node_id", "is required: a node id >= 1");
    CONVERGE_RETURN_IF_ERROR(ReadString(peers[i], wp, "url", &peer.url));
    if (peer.url.empty()) return KeyError(wp + ".url", "is required");
    CONVERGE_RETURN_IF_ERROR(ReadString(peers[i], wp, "ca_file", &peer.ca_file));
    std::string env_name;
    CONVERGE_RETURN_IF_ERROR(ReadString(peers[i], wp, "token", &peer.token));
    CONVERGE_RETURN_IF_ERROR(ReadString(peers[i], wp, "token_env", &env_name));
    if (!peer.token.empty() && !env_name.empty()) {
      return KeyError(wp, "set either token or token_env, not both");
    }
    if (!env_name.empty()) {
      const char* v = std::getenv(env_name.c_str());
      if (v == nullptr || *v == '\0') {
        return KeyError(wp + ".token_env", "environment variable " + env_name + " is not set");
      }
      peer.token = v;
    }
    m->peers.push_back(std::move(peer));
  }
  return Status::Ok();
}

Status ParseMultiWriters(const YAML::Node& n, ServerConfig* c) {
  if (!n.IsSequence()) return KeyError("multi_writer", "must be a list");
  for (size_t i = 0; i < n.size(); ++i) {
    MultiWriterConfig m;
    CONVERGE_RETURN_IF_ERROR(ParseMultiWriter(n[i], i, &m));
    c->multi_writer.push_back(std::move(m));
  }
  return Status::Ok();
}

Status ParseReplicas(const YAML::Node& n, ServerConfig* c) {
  if (!n.IsSequence()) return KeyError("replicas", "must be a list");
  for (size_t i = 0; i < n.size(); ++i) {
    ReplicaConfig r;
    CONVERGE_RETURN_IF_ERROR(ParseReplica(n[i], i, &r));
    c->replicas.push_back(std::move(r));
  }
  return Status::Ok();
}

// One entry of `subscriptions:`. The secret comes from exactly one of secret, secret_env and
// secret_file (the file's content without a trailing newline).
Status ParseSubscription(const YAML::Node& n, size_t index, SubscriptionConfig* s) {
  const std::string w = "subscriptions[" + std::to_string(index) + "]";
  CONVERGE_RETURN_IF_ERROR(CheckKeys(
      n, w,
      {"name", "topic", "group", "endpoint", "mode", "max_concurrency", "timeout_ms",
       "initial_backoff_ms", "max_backoff_ms", "max_deliveries", "secret", "secret_env",
       "secret_file", "ca_file"}));
  CONVERGE_RETURN_IF_ERROR(ReadString(n, w, "name", &s->name));
  CONVERGE_RETURN_IF_ERROR(ReadString(n, w, "topic", &s->topic));
  CONVERGE_RETURN_IF_ERROR(ReadString(n, w, "group", &s->group));
  CONVERGE_RETURN_IF_ERROR(ReadString(n, w, "endpoint", &s->endpoint));
  std::string mode = "structured";
  CONVERGE_RETURN_IF_ERROR(ReadString(n, w, "mode", &mode));
  if (mode != "structured" && mode != "binary") {
    return KeyError(w + ".mode", "must be binary or structured");
  }
  s->binary = mode == "binary";
  CONVERGE_RETURN_IF_ERROR(ReadInt(n, w, "max_concurrency", &s->max_concurrency, 1, 1024));
  CONVERGE_RETURN_IF_ERROR(ReadInt(n, w, "timeout_ms", &s->timeout_ms, 1, 600'000));
  CONVERGE_RETURN_IF_ERROR(
      ReadInt(n, w, "initial_backoff_ms", &s->initial_backoff_ms, 1, 3'600'000));
  CONVERGE_RETURN_IF_ERROR(ReadInt(n, w, "max_backoff_ms", &s->max_backoff_ms, 1, 86'400'000));
  CONVERGE_RETURN_IF_ERROR(ReadInt(n, w, "max_deliveries", &s->max_deliveries, 1, 10'000));
  std::string env_name, file;
  CONVERGE_RETURN_IF_ERROR(ReadString(n, w, "secret", &s->secret));
  CONVERGE_RETURN_IF_ERROR(ReadString(n, w, "secret_env", &env_name));
  CONVERGE_RETURN_IF_ERROR(ReadString(n, w, "secret_file", &file));
  if (int(!s->secret.empty()) + int(!env_name.empty()) + int(!file.empty()) != 1) {
    return KeyError(w, "set exactly one of secret, secret_env and secret_file");
  }
  if (!env_name.empty()) {
    const char* v = std::getenv(env_name.c_str());
    if (v == nullptr || *v == '\0') {
      return KeyError(w + ".secret_env", "environment variable " + env_name + " is not set");
    }
    s->secret = v;
  }
  if (!file.empty()) {
    std::ifstream in(file, std::ios::binary);
    if (!in) return KeyError(w + ".secret_file", "cannot read " + file);
    std::ostringstream text;
    text << in.rdbuf();
    s->secret = text.str();
    while (!s->secret.empty() && (s->secret.back() == '\n' || s->secret.back() == '\r')) {
      s->secret.pop_back();
    }
  }
  if (s->secret.size() < 16) return KeyError(w + ".secret", "must be at least 16 bytes");
  CONVERGE_RETURN_IF_ERROR(ReadString(n, w, "ca_file", &s->ca_file));
  if (!s->ca_file.empty()) {
    // Checked now, so that a typo stops the start instead of failing every delivery.
    if (s->endpoint.rfind("https://", 0) != 0) {
      return KeyError(w + ".ca_file", "is only for an https:// endpoint");
    }
    if (Status st = CheckPushCaFile(s->ca_file); !st.ok()) {
      return KeyError(w + ".ca_file", st.message());
    }
  }
  if (s->group.empty()) s->group = "push-" + s->name;
  s->from_config = true;
  return CheckSubscription(*s, w);
}

Status ParseSubscriptions(const YAML::Node& n, ServerConfig* c) {
  if (!n.IsSequence()) return KeyError("subscriptions", "must be a list");
  for (size_t i = 0; i < n.size(); ++i) {
    SubscriptionConfig s;
    CONVERGE_RETURN_IF_ERROR(ParseSubscription(n[i], i, &s));
    for (const SubscriptionConfig& other : c->subscriptions) {
      if (other.name == s.name) {
        return KeyError("subscriptions", "duplicate name '" + s.name + "'");
      }
      if (other.topic == s.topic && other.group == s.group) {
        return KeyError("subscriptions", "'" + other.name + "' and '" + s.name +
                                             "' deliver for the same group");
      }
    }
    c->subscriptions.push_back(std::move(s));
  }
  return Status::Ok();
}

Status ParseAudit(const YAML::Node& n, AuditConfig* c) {
  const std::string w = "audit";
  if (!n.IsMap()) return KeyError(w, "must be a mapping");
  CONVERGE_RETURN_IF_ERROR(
      CheckKeys(n, w, {"enabled", "interval_ms", "max_tracked_events", "max_findings"}));
  CONVERGE_RETURN_IF_ERROR(ReadBool(n, w, "enabled", &c->enabled));
  CONVERGE_RETURN_IF_ERROR(ReadInt(n, w, "interval_ms", &c->interval_ms, 10, 86'400'000));
  CONVERGE_RETURN_IF_ERROR(
      ReadInt(n, w, "max_tracked_events", &c->max_tracked_events, 1, 100'000'000));
  CONVERGE_RETURN_IF_ERROR(ReadInt(n, w, "max_findings", &c->max_findings, 1, 100'000));
  return Status::Ok();
}

Status ParseCluster(const YAML::Node& n, ClusterConfig* c) {
  const std::string w = "cluster";
  if (!n.IsMap()) return KeyError(w, "must be a mapping");
  CONVERGE_RETURN_IF_ERROR(
      CheckKeys(n, w,
                {"instance_id", "postgres_conninfo", "lease_table", "lease_ttl_ms",
                 "lease_renew_interval_ms", "lease_safety_margin_ms", "postgres_connect_timeout_ms",
                 "consumer_groups", "advertise_url", "group_state_table"}));
  c->enabled = true;
  CONVERGE_RETURN_IF_ERROR(ReadString(n, w, "consumer_groups", &c->consumer_groups));
  if (n["consumer_groups"] && c->consumer_groups != "shared" && c->consumer_groups != "local") {
    return KeyError(w + ".consumer_groups", "must be \"shared\" or \"local\"");
  }
  CONVERGE_RETURN_IF_ERROR(ReadString(n, w, "advertise_url", &c->advertise_url));
  if (n["advertise_url"]) {
    Result<PushUrl> url = ParsePushUrl(c->advertise_url);
    if (!url.ok()) return KeyError(w + ".advertise_url", std::string(url.status().message()));
    if (url->target != "/") {
      return KeyError(w + ".advertise_url", "give scheme, host and port only, not a path");
    }
  }
  CONVERGE_RETURN_IF_ERROR(ReadString(n, w, "group_state_table", &c->group_state_table));
  if (!sql::IsPlainTableName(c->group_state_table)) {
    return KeyError(w + ".group_state_table", "1 to 60 of [a-z0-9_]");
  }
  CONVERGE_RETURN_IF_ERROR(ReadString(n, w, "instance_id", &c->instance_id));
  CONVERGE_RETURN_IF_ERROR(ReadString(n, w, "postgres_conninfo", &c->postgres_conninfo));
  CONVERGE_RETURN_IF_ERROR(ReadString(n, w, "lease_table", &c->lease_table));
  CONVERGE_RETURN_IF_ERROR(ReadInt(n, w, "lease_ttl_ms", &c->lease_ttl_ms, 300, 600'000));
  CONVERGE_RETURN_IF_ERROR(
      ReadInt(n, w, "lease_renew_interval_ms", &c->lease_renew_interval_ms, 0, 600'000));
  CONVERGE_RETURN_IF_ERROR(
      ReadInt(n, w, "lease_safety_margin_ms", &c->lease_safety_margin_ms, 0, 600'000));
  CONVERGE_RETURN_IF_ERROR(
      ReadInt(n, w, "postgres_connect_timeout_ms", &c->postgres_connect_timeout_ms, 1, 600'000));
  const bool id_ok = !c->instance_id.empty() && c->instance_id.size() <= 64 &&
                     c->instance_id.find_first_not_of(
                         "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                         "0123456789_.-") == std::string::npos;
  if (!id_ok) return KeyError(w + ".instance_id", "is required: 1 to 64 of [A-Za-z0-9_.-]");
  if (c->postgres_conninfo.empty()) return KeyError(w + ".postgres_conninfo", "is required");
  if (!sql::IsPlainTableName(c->lease_table)) {
    return KeyError(w + ".lease_table", "1 to 60 of [a-z0-9_]");
  }
  return Status::Ok();
}

Status ParseRoot(const YAML::Node& root, ServerConfig* c) {
  if (!root || root.IsNull()) return Status::Ok();  // an empty file means all defaults
  CONVERGE_RETURN_IF_ERROR(CheckKeys(
      root, "",
      {"listen", "data_dir", "io_threads", "storage_threads", "tls", "auth", "auto_create_topics",
       "topic_defaults", "log", "groups", "limits", "store", "sagas", "relays", "topology",
       "replicas", "multi_writer", "subscriptions", "audit", "cluster"}));
  std::string listen;
  CONVERGE_RETURN_IF_ERROR(ReadString(root, "", "listen", &listen));
  if (!listen.empty()) {
    Status s = ParseListen(listen, &c->listen_address, &c->listen_port);
    if (!s.ok()) return KeyError("listen", s.message());
  }
  CONVERGE_RETURN_IF_ERROR(ReadString(root, "", "data_dir", &c->data_dir));
  CONVERGE_RETURN_IF_ERROR(ReadInt(root, "", "io_threads", &c->io_threads, 0, 64));
  CONVERGE_RETURN_IF_ERROR(ReadInt(root, "", "storage_threads", &c->storage_threads, 1, 256));
  CONVERGE_RETURN_IF_ERROR(ReadBool(root, "", "auto_create_topics", &c->auto_create_topics));
  CONVERGE_RETURN_IF_ERROR(ReadString(root, "", "topology", &c->topology_dir));
  if (YAML::Node tls = root["tls"]) {
    CONVERGE_RETURN_IF_ERROR(CheckKeys(tls, "tls", {"cert_file", "key_file"}));
    CONVERGE_RETURN_IF_ERROR(ReadString(tls, "tls", "cert_file", &c->tls_cert_file));
    CONVERGE_RETURN_IF_ERROR(ReadString(tls, "tls", "key_file", &c->tls_key_file));
  }
  if (YAML::Node auth = root["auth"]) CONVERGE_RETURN_IF_ERROR(ParseAuth(auth, c));
  if (YAML::Node t = root["topic_defaults"]) {
    CONVERGE_RETURN_IF_ERROR(ParseTopicDefaults(t, &c->topic_defaults));
  }
  if (YAML::Node l = root["log"]) CONVERGE_RETURN_IF_ERROR(ParseLog(l, &c->log));
  if (YAML::Node a = root["audit"]) CONVERGE_RETURN_IF_ERROR(ParseAudit(a, &c->audit));
  if (YAML::Node cl = root["cluster"]) CONVERGE_RETURN_IF_ERROR(ParseCluster(cl, &c->cluster));
  if (YAML::Node g = root["groups"]) CONVERGE_RETURN_IF_ERROR(ParseGroups(g, &c->groups));
  if (YAML::Node l = root["limits"]) CONVERGE_RETURN_IF_ERROR(ParseLimits(l, &c->limits));
  if (YAML::Node st = root["store"]) CONVERGE_RETURN_IF_ERROR(ParseStore(st, &c->store));
  if (YAML::Node sg = root["sagas"]) CONVERGE_RETURN_IF_ERROR(ParseSagas(sg, &c->sagas));
  // After topic_defaults: the relays' created topics inherit them.
  if (YAML::Node r = root["relays"]) {
    CONVERGE_RETURN_IF_ERROR(ParseRelays(r, c->topic_defaults, &c->relays));
  }
  if (YAML::Node r = root["replicas"]) CONVERGE_RETURN_IF_ERROR(ParseReplicas(r, c));
  if (YAML::Node m = root["multi_writer"]) CONVERGE_RETURN_IF_ERROR(ParseMultiWriters(m, c));
  if (YAML::Node s = root["subscriptions"]) CONVERGE_RETURN_IF_ERROR(ParseSubscriptions(s, c));
  // After store: a store collection's replica reads the store's feed topic.
  for (ReplicaConfig& r : c->replicas) {
    if (r.remote_url.empty()) {
      r.source_topic = r.store_collection.empty() ? r.topic : c->store.feed_topic;
    }
  }
  return Status::Ok();
}

}  // namespace

Status CheckSubscription(const SubscriptionConfig& s, const std::string& where) {
  auto bad = [&where](const char* field, std::string_view what) {
    return InvalidArgumentError("'" + where + "." + field + "': " + std::string(what));
  };
  const bool name_ok =
      !s.name.empty() && s.name.size() <= 64 &&
      std::all_of(s.name.begin(), s.name.end(), [](char ch) {
        return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
               ch == '_' || ch == '-';
      });
  if (!name_ok) return bad("name", "is required: 1 to 64 characters of [A-Za-z0-9_-]");
  if (s.topic.empty()) return bad("topic", "is required");
  if (s.topic[0] == '_') return bad("topic", "internal topics cannot be subscribed to");
  if (Status st = ValidateTopicName(s.topic); !st.ok()) return bad("topic", st.message());
  if (s.group.empty() || s.group.size() > 64 ||
      s.group.find_first_not_of(
          "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-") != std::string::npos) {
    return bad("group", "1 to 64 characters of [A-Za-z0-9_-]");
  }
  if (s.endpoint.empty()) return bad("endpoint", "is required");
  if (Result<PushUrl> url = ParsePushUrl(s.endpoint); !url.ok()) {
    return bad("endpoint", url.status().message());
  }
  if (s.max_concurrency < 1 || s.max_concurrency > 1024) {
    return bad("max_concurrency", "must be in [1, 1024]");
  }
  if (s.timeout_ms < 1 || s.timeout_ms > 600'000) return bad("timeout_ms", "must be in [1, 600000]");
  if (s.initial_backoff_ms < 1 || s.initial_backoff_ms > 3'600'000) {
    return bad("initial_backoff_ms", "must be in [1, 3600000]");
  }
  if (s.max_backoff_ms < s.initial_backoff_ms || s.max_backoff_ms > 86'400'000) {
    return bad("max_backoff_ms", "must be in [initial_backoff_ms, 86400000]");
  }
  if (s.max_deliveries > 10'000) return bad("max_deliveries", "must be in [1, 10000]");
  return Status::Ok();
}

bool IsLoopbackAddress(std::string_view address) {
  if (address == "localhost" || address == "::1" || address == "[::1]") return true;
  return address.substr(0, 4) == "127.";
}

Status ParseListen(std::string_view text, std::string* host, uint16_t* port) {
  size_t colon = text.rfind(':');
  if (colon == std::string_view::npos || colon + 1 == text.size()) {
    return InvalidArgumentError("expected host:port, got '" + std::string(text) + "'");
  }
  std::string_view h = text.substr(0, colon);
  std::string_view p = text.substr(colon + 1);
  if (h.size() >= 2 && h.front() == '[' && h.back() == ']') h = h.substr(1, h.size() - 2);
  if (h.empty()) return InvalidArgumentError("empty host in '" + std::string(text) + "'");
  unsigned v = 0;
  auto [ptr, ec] = std::from_chars(p.data(), p.data() + p.size(), v);
  if (ec != std::errc() || ptr != p.data() + p.size() || v > 65535) {
    return InvalidArgumentError("bad port in '" + std::string(text) + "'");
  }
  *host = std::string(h);
  *port = static_cast<uint16_t>(v);
  return Status::Ok();
}

Result<ServerConfig> ParseConfig(std::string_view yaml_text) {
  ServerConfig config;
  try {
    YAML::Node root = YAML::Load(std::string(yaml_text));
    CONVERGE_RETURN_IF_ERROR(CheckYamlDocument(root, "config"));
    CONVERGE_RETURN_IF_ERROR(ParseRoot(root, &config));
  } catch (const YAML::Exception& e) {
    return InvalidArgumentError(std::string("config is not valid YAML: ") + e.what());
  }
  CONVERGE_RETURN_IF_ERROR(ValidateConfig(config));
  return config;
}

Result<ServerConfig> LoadConfigFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return NotFoundError("cannot open config file " + path);
  std::ostringstream text;
  text << in.rdbuf();
  Result<ServerConfig> config = ParseConfig(text.str());
  if (!config.ok()) return config.status().WithContext(path);
  return config;
}

TopicOptions AutoCreatedTopicOptions(const ServerConfig& c) {
  TopicOptions t = c.topic_defaults;
  // Room for the whole encoded event plus its record id and key (both come from the event).
  const uint64_t record = 2ull * c.limits.max_event_bytes + 4096;
  t.max_record_bytes = static_cast<uint32_t>(std::min<uint64_t>(record, UINT32_MAX));
  return t;
}

ConsumerGroupsOptions GroupsOptionsFor(const ServerConfig& c) {
  ConsumerGroupsOptions o;
  o.dir = c.data_dir + "/groups";
  o.commit_mode = c.groups.sync_acks ? CommitMode::kSync : CommitMode::kPeriodic;
  o.commit_interval_ms = c.groups.commit_interval_ms;
  o.on_damage = c.groups.on_damage;
  o.fetch_max_records = c.limits.max_fetch_events;
  o.fetch_max_bytes = c.limits.max_fetch_bytes;
  o.list_max_records = c.limits.max_fetch_events;
  o.replay_max_records = c.limits.max_fetch_events;
  return o;
}

GroupOptions GroupDefaultsFor(const ServerConfig& c) {
  GroupOptions g;
  g.lease_ms = c.groups.lease_ms;
  g.max_deliveries = c.groups.max_deliveries;
  g.max_nack_delay_ms = c.groups.max_nack_delay_ms;
  g.session_timeout_ms = c.groups.session_timeout_ms;
  return g;
}

StoreOptions StoreOptionsFor(const ServerConfig& c) {
  const StoreConfig& sc = c.store;
  StoreOptions o;
  o.dir = c.data_dir + "/store";
  o.durability = sc.durability;
  o.sync_interval_ms = sc.sync_interval_ms;
  o.max_document_bytes = sc.max_document_bytes;
  o.max_store_bytes = sc.max_store_bytes;
  o.checkpoint_wal_bytes = sc.checkpoint_wal_bytes;
  o.ttl_sweep_interval_ms = sc.ttl_sweep_interval_ms;
  o.feed_topic = sc.feed_topic;
  o.feed_topic_options = c.topic_defaults;
  return o;
}

PostgresStoreOptions PostgresStoreOptionsFor(const ServerConfig& c) {
  PostgresStoreOptions o;
  o.conninfo = c.store.postgres_conninfo;
  o.table_prefix = c.store.postgres_table_prefix;
  o.connect_timeout_ms = c.store.postgres_connect_timeout_ms;
  o.statement_timeout_ms = c.store.postgres_statement_timeout_ms;
  // Every blocking store call runs on the storage pool: one connection per pool thread, plus
  // the feed tail and the sweep.
  o.max_connections = static_cast<size_t>(std::max<int64_t>(2, c.storage_threads + 2));
  return o;
}

SagaOrchestratorOptions SagaOptionsFor(const ServerConfig& c) {
  // The section's keys were read into the library's own options; what is left comes from the
  // rest of the configuration.
  SagaOrchestratorOptions o = c.sagas.orchestrator;
  o.dir = c.data_dir + "/sagas";
  o.topic_options = c.topic_defaults;
  o.max_data_bytes =
      static_cast<uint32_t>(std::min<uint64_t>(c.limits.max_body_bytes, o.max_data_bytes));
  return o;
}

replica::ApplierOptions ApplierOptionsFor(const ReplicaConfig& r) {
  replica::ApplierOptions o;
  o.name = r.name;
  o.collection = r.remote_url.empty() ? r.store_collection : r.remote_collection;
  o.max_batch = r.max_batch;
  o.on_malformed = r.on_malformed;
  o.tombstone_retention_ms = r.tombstone_retention_ms;
  return o;
}

replica::SqlTargetOptions SqlTargetOptionsFor(const ReplicaConfig& r) {
  replica::SqlTargetOptions o;
  o.replica = r.name;
  o.table = r.table;
  o.source_topic = r.source_topic;
  return o;
}

namespace {

// `key`'s settings refused by the module that would use them: the module's message, under
// the config key the operator has to change.
Status ModuleError(const std::string& key, const Status& s) {
  return InvalidArgumentError("config key '" + key + "': " + std::string(s.message()));
}

// The same checks the modules make when they open or create what the config describes.
Status ValidateModuleOptions(const ServerConfig& c) {
  // Topics: every topic the server creates from topic_defaults (on publish with
  // auto_create_topics, through the API, the store's feed, the saga reply topic, the relays'
  // topics) is checked by Log::CreateTopic; a config that starts must not make them all fail.
  if (Status s = ValidateTopicOptions(c.topic_defaults); !s.ok()) {
    return ModuleError("topic_defaults", s);
  }
  if (Status s = ValidateTopicOptions(AutoCreatedTopicOptions(c)); !s.ok()) {
    return ModuleError("limits.max_event_bytes",
                       InvalidArgumentError("topics would be created with a record limit the log "
                                            "refuses: " +
                                            std::string(s.message())));
  }
  if (c.log.backend == LogBackend::kJetStream) {
    if (Status s = jetstream::ValidateJetStreamLogOptions(c.log.jetstream); !s.ok()) {
      return ModuleError("log.jetstream", s);
    }
  }
  if (Status s = ValidateConsumerGroupsOptions(GroupsOptionsFor(c)); !s.ok()) {
    return ModuleError("groups", s);
  }
  if (Status s = ValidateGroupOptions(GroupDefaultsFor(c)); !s.ok()) {
    return ModuleError("groups", s);
  }
  // A group created through the API may ask for up to max_lease_ms.
  GroupOptions longest = GroupDefaultsFor(c);
  longest.lease_ms = c.groups.max_lease_ms;
  if (Status s = ValidateGroupOptions(longest); !s.ok()) {
    return ModuleError("groups.max_lease_ms", s);
  }
  if (c.store.enabled) {
    if (Status s = ValidateStoreOptions(StoreOptionsFor(c), /*with_feed=*/true); !s.ok()) {
      return ModuleError("store", s);
    }
    if (c.store.backend == "postgres") {
      if (Status s = ValidatePostgresStoreOptions(PostgresStoreOptionsFor(c)); !s.ok()) {
        return ModuleError("store", s);
      }
    }
  }
  if (c.sagas.enabled) {
    if (Status s = ValidateSagaOrchestratorOptions(SagaOptionsFor(c)); !s.ok()) {
      return ModuleError("sagas", s);
    }
  }
  std::set<std::string> replica_names;
  std::set<std::tuple<sql::Engine, std::string, std::string>> replica_tables;
  for (const ReplicaConfig& r : c.replicas) {
    const std::string key = "replicas." + r.name;
    if (!replica_names.insert(r.name).second) {
      return InvalidArgumentError("config key 'replicas': duplicate name '" + r.name + "'");
    }
    if (r.reconcile_interval_ms != 0 && r.store_collection.empty() && r.remote_url.empty()) {
      return InvalidArgumentError("config key '" + key +
                                  ".reconcile_interval_ms': only a replica of a store collection "
                                  "can be reconciled");
    }
    if (!r.remote_url.empty()) {
      if (Status s = CheckRemoteSource(r); !s.ok()) return ModuleError(key + ".source.remote", s);
    } else if (!r.store_collection.empty()) {
      if (!c.store.enabled) {
        return InvalidArgumentError("config key '" + key +
                                    ".source.store_collection': the store is disabled");
      }
      if (Status s = Store::ValidateCollectionName(r.store_collection); !s.ok()) {
        return ModuleError(key + ".source.store_collection", s);
      }
    } else if (Status s = ValidateTopicName(r.topic); !s.ok()) {
      return ModuleError(key + ".source.topic", s);
    }
    if (!r.target_collection.empty()) {
      if (!c.store.enabled) {
        return InvalidArgumentError("config key '" + key +
                                    ".target.store_collection': the store is disabled");
      }
      if (Status s = ValidateStoreTarget(r.name, r.target_collection); !s.ok()) {
        return ModuleError(key + ".target.store_collection", s);
      }
      if (r.target_collection == r.store_collection) {
        return InvalidArgumentError("config key '" + key +
                                    ".target.store_collection': the source collection itself");
      }
      if (!replica_tables.insert({sql::Engine::kSqlite, "store", r.target_collection}).second) {
        return InvalidArgumentError("config key '" + key +
                                    ".target': another replica writes the same collection");
      }
    } else if (Status s = replica::ValidateSqlTargetOptions(SqlTargetOptionsFor(r)); !s.ok()) {
      return ModuleError(key + ".target", s);
    }
    if (Status s = replica::ValidateApplierOptions(ApplierOptionsFor(r)); !s.ok()) {
      return ModuleError(key, s);
    }
    if (r.target_collection.empty() &&
        !replica_tables.insert({r.engine, r.database, r.table}).second) {
      return InvalidArgumentError("config key '" + key +
                                  ".target': another replica writes the same table");
    }
  }
  std::set<std::string> mw_collections;
  for (const MultiWriterConfig& m : c.multi_writer) {
    const std::string key = "multi_writer." + m.collection;
    if (!c.store.enabled) {
      return InvalidArgumentError("config key '" + key + "': the store is disabled");
    }
    if (!mw_collections.insert(m.collection).second) {
      return InvalidArgumentError("config key 'multi_writer': collection '" + m.collection +
                                  "' is listed twice");
    }
    if (Status s = ValidateMultiWriterCollection(m.collection); !s.ok()) {
      return ModuleError(key + ".collection", s);
    }
    for (const ReplicaConfig& r : c.replicas) {
      if (r.target_collection == m.collection) {
        return InvalidArgumentError("config key '" + key + "': replica '" + r.name +
                                    "' writes the collection (a read-only copy)");
      }
    }
    std::set<uint64_t> ids{m.node_id};
    for (const MultiWriterPeerConfig& p : m.peers) {
      if (!ids.insert(p.node_id).second) {
        return InvalidArgumentError("config key '" + key + ".peers': node id " +
                                    std::to_string(p.node_id) +
                                    " is used twice (the node's own and each peer's must differ)");
      }
      ReplicaConfig as_remote;  // the peer's URL and CA file pass the remote source's checks
      as_remote.name = m.collection;
      as_remote.remote_url = p.url;
      as_remote.remote_collection = m.collection;
      as_remote.remote_ca_file = p.ca_file;
      as_remote.source_topic = "store-changes";
      if (Status s = CheckRemoteSource(as_remote); !s.ok()) return ModuleError(key + ".peers", s);
    }
    Result<replica::mw::Policy> policy = replica::mw::ParsePolicy(m.policy);
    if (!policy.ok()) return ModuleError(key + ".policy", policy.status());
    if (*policy == replica::mw::Policy::kCrdtFields && m.crdt_fields.empty()) {
      return InvalidArgumentError("config key '" + key +
                                  ".crdt_fields': policy crdt-fields needs at least one field");
    }
    if (*policy != replica::mw::Policy::kCrdtFields && !m.crdt_fields.empty()) {
      return InvalidArgumentError("config key '" + key +
                                  ".crdt_fields': only for policy crdt-fields");
    }
    for (const auto& [field, kind] : m.crdt_fields) {
      if (store_internal::BuiltinMergeFunction(kind) == nullptr) {
        return InvalidArgumentError("config key '" + key + ".crdt_fields." + field +
                                    "': unknown CRDT kind '" + kind + "'");
      }
    }
    if ((*policy == replica::mw::Policy::kResolver) != !m.resolver.empty()) {
      return InvalidArgumentError("config key '" + key +
                                  ".resolver': required with policy resolver, and only there");
    }
    if (!m.resolver.empty() && store_internal::BuiltinMergeFunction(m.resolver) == nullptr) {
      return InvalidArgumentError("config key '" + key + ".resolver': no resolver '" + m.resolver +
                                  "' is registered");
    }
  }
  if (c.relays.enabled) {
    const LogSinkOptions& sink = c.relays.service.sink;
    if (Status s = ValidateTopicOptions(sink.topic_options); !s.ok()) {
      return ModuleError("relays.sink", s);
    }
    for (const auto& [from, to] : sink.topic_map) {
      if (Status s = ValidateTopicName(to); !s.ok()) return ModuleError("relays.sink.topic_map", s);
    }
    // The sink creates its dead-letter topic as internal when the name starts with '_'.
    const std::string& dlq = sink.dead_letter_topic;
    if (Status s = ValidateTopicName(dlq, /*internal=*/!dlq.empty() && dlq[0] == '_'); !s.ok()) {
      return ModuleError("relays.sink.dead_letter_topic", s);
    }
  }
  return Status::Ok();
}

}  // namespace

Status ValidateConfig(const ServerConfig& c) {
  if (c.tls_cert_file.empty() != c.tls_key_file.empty()) {
    return InvalidArgumentError("config key 'tls': set both cert_file and key_file");
  }
  if (c.tokens.empty() && !IsLoopbackAddress(c.listen_address) && !c.allow_unauthenticated) {
    return InvalidArgumentError(
        "refusing to listen on non-loopback address " + c.listen_address +
        " without auth tokens (configure auth.tokens, or set auth.allow_unauthenticated: true)");
  }
  std::set<std::string> seen;
  for (const TokenConfig& t : c.tokens) {
    if (!seen.insert(t.token).second) {
      return InvalidArgumentError("config key 'auth.tokens': service '" + t.service +
                                  "' reuses another service's token");
    }
    for (const auto* list : {&t.publish, &t.subscribe}) {
      for (const std::string& p : *list) {
        if (p.empty() || p.size() > 200 ||
            p.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                "0123456789._-*") != std::string::npos) {
          return InvalidArgumentError("config key 'auth.tokens': service '" + t.service +
                                      "' has invalid topic pattern '" + p + "'");
        }
      }
    }
  }
  if (c.groups.lease_ms > c.groups.max_lease_ms) {
    return InvalidArgumentError("config key 'groups.lease_ms' exceeds groups.max_lease_ms");
  }
  if (c.store.enabled && c.store.feed_topic.empty()) {
    return InvalidArgumentError("config key 'store.feed_topic' is empty");
  }
  if (c.sagas.enabled && c.sagas.orchestrator.reply_topic.empty()) {
    return InvalidArgumentError("config key 'sagas.reply_topic' is empty");
  }
  if (c.limits.max_event_bytes > c.limits.max_body_bytes) {
    return InvalidArgumentError(
        "config key 'limits.max_event_bytes' exceeds limits.max_body_bytes");
  }
  if (c.cluster.consumer_groups == "shared" && c.log.backend != LogBackend::kJetStream) {
    return InvalidArgumentError(
        "config key 'cluster.consumer_groups': \"shared\" needs a log every sidecar shares "
        "(log.backend: jetstream)");
  }
  if (SharedConsumerGroups(c) && c.cluster.advertise_url.empty() &&
      (c.listen_address == "0.0.0.0" || c.listen_address == "::" || c.listen_address.empty())) {
    return InvalidArgumentError(
        "config key 'cluster.advertise_url' is required when listening on a wildcard address "
        "with shared consumer groups (how the other sidecars reach this one)");
  }
  if (c.cluster.enabled) {
    // The keepers' own checks (a renewal must have time to land before the deadline).
    lease::LeaseKeeperOptions o = LeaseOptionsFor(c, "check");
    o.holder = c.cluster.instance_id;
    if (Status s = lease::ValidateKeeperOptions(o); !s.ok()) {
      return InvalidArgumentError("config key 'cluster': " + std::string(s.message()));
    }
  }
  return ValidateModuleOptions(c);
}

bool SharedConsumerGroups(const ServerConfig& c) {
  if (!c.cluster.enabled) return false;
  if (c.cluster.consumer_groups.empty()) return c.log.backend == LogBackend::kJetStream;
  return c.cluster.consumer_groups == "shared";
}

lease::LeaseKeeperOptions LeaseOptionsFor(const ServerConfig& c, const std::string& name) {
  lease::LeaseKeeperOptions o;
  o.name = name;
  o.ttl_ms = c.cluster.lease_ttl_ms;
  o.renew_interval_ms = c.cluster.lease_renew_interval_ms;
  o.safety_margin_ms = c.cluster.lease_safety_margin_ms;
  return o;
}

}  // namespace converge::server
