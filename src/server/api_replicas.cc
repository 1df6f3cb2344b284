// The replica routes (/v1/replicas, docs/api/openapi.yaml): list, describe (staleness and
// counters), and read one row of a replica's table, waiting for a consistency token or
// refusing a copy staler than asked.
#include <boost/json/parse.hpp>

#include "server/api_internal.h"
#include "server/json_util.h"
#include "server/replicas.h"

namespace converge::server {

namespace {

constexpr int64_t kDefaultTokenWaitMs = 5'000;

}  // namespace

// A caller may use a replica when it may read what the replica copies: it may consume the
// source topic (for a store collection: the store's feed topic, which carries the
// collection's documents), or, for a store collection, it owns or may write the collection.
// Admin tokens and the anonymous principal (auth disabled) may use every replica.
// May wait for the store's catalog to be durable: run on the pool.
bool Api::MayUseReplica(const Principal& p, const ReplicaConfig& r) const {
  if (p.admin || p.anonymous) return true;
  // A copy of another node's collection: whoever may read a collection of that name here
  // (every token, unless its collections are limited and do not list it).
  if (!r.remote_url.empty()) return p.CanReadCollection(r.remote_collection);
  if (p.CanSubscribe(r.source_topic)) return true;
  if (!r.store_collection.empty() && d_.store != nullptr) {
    Result<CollectionInfo> info = d_.store->store().DescribeCollection(r.store_collection);
    if (info.ok()) {
      if (info->config.owner == p.service) return true;
      for (const std::string& w : info->config.writers) {
        if (w == "*" || w == p.service) return true;
      }
    }
  }
  return false;
}

// The replica a route names, or the reply refusing it: 403 for a caller that may not use it,
// and the same 403 for a replica that does not exist (a caller learns nothing about replicas
// it may not read); 404 only for callers that may use every replica.
const ReplicaConfig* Api::ReplicaFor(Call& call, HttpReply* refused) const {
  const std::string& name = call.Param("name");
  const Principal& p = *call.principal;
  const ReplicaConfig* r = d_.replicas != nullptr ? d_.replicas->Find(name) : nullptr;
  if (r != nullptr && MayUseReplica(p, *r)) return r;
  if (r == nullptr && (p.admin || p.anonymous)) {
    *refused =
        Error(http::status::not_found, "NOT_FOUND", "no replica '" + name.substr(0, 64) + "'");
  } else {
    *refused = Error(PermissionDeniedError("service '" + p.service + "' may not read replica '" +
                                           name.substr(0, 64) + "'"));
  }
  return nullptr;
}

namespace {

void AppendReplicaConfigJson(const ReplicaConfig& r, std::string* out) {
  *out += "{\"name\":";
  AppendJsonString(out, r.name);
  *out += ",\"source\":{\"topic\":";
  AppendJsonString(out, r.source_topic);
  if (!r.store_collection.empty()) {
    *out += ",\"store_collection\":";
    AppendJsonString(out, r.store_collection);
  }
  if (!r.remote_url.empty()) {
    // The URL and collection, never the token.
    *out += ",\"remote\":{\"url\":";
    AppendJsonString(out, r.remote_url);
    *out += ",\"collection\":";
    AppendJsonString(out, r.remote_collection);
    *out += "}";
  }
  if (!r.target_collection.empty()) {
    *out += "},\"target\":{\"store_collection\":";
    AppendJsonString(out, r.target_collection);
    *out += "}";
    return;
  }
  *out += "},\"target\":{\"engine\":";
  AppendJsonString(out, sql::EngineName(r.engine));
  *out += ",\"table\":";
  AppendJsonString(out, r.table);
  *out += "}";
}

}  // namespace

asio::awaitable<HttpReply> Api::ListReplicas(Call& call) {
  if (Status s = CheckQuery(call.query, {}); !s.ok()) co_return Error(s);
  auto job = [this, &call] { return ListReplicasJson(*call.principal); };
  std::string body = co_await d_.pool->Run(std::move(job));
  co_return Reply(JsonReply(http::status::ok, std::move(body)));
}

std::string Api::ListReplicasJson(const Principal& principal) const {
  std::string body = "{\"replicas\":[";
  bool first = true;
  if (d_.replicas != nullptr) {
    for (const ReplicaConfig& r : d_.replicas->configs()) {
      if (!MayUseReplica(principal, r)) continue;
      if (!first) body += ',';
      first = false;
      AppendReplicaConfigJson(r, &body);
      const Replicas::Description d = d_.replicas->Describe(r.name);
      body += ",\"running\":";
      body += d.running ? "true" : "false";
      body += ",\"stopped\":";
      body += d.stats.stopped.ok() ? "false" : "true";
      body += ",\"lag_changes\":" + std::to_string(d.stats.lag_changes);
      body += ",\"lag_ms\":" + std::to_string(d.stats.lag_ms) + "}";
    }
  }
  body += "]}";
  return body;
}

asio::awaitable<HttpReply> Api::DescribeReplica(Call& call) {
  HttpReply refused;
  auto authorize = [this, &call, &refused] { return ReplicaFor(call, &refused); };
  const ReplicaConfig* r = co_await d_.pool->Run(std::move(authorize));
  if (r == nullptr) co_return refused;
  if (Status s = CheckQuery(call.query, {}); !s.ok()) co_return Error(s);
  const Replicas::Description d = d_.replicas->Describe(r->name);
  const replica::ReplicaStats& st = d.stats;
  std::string body;
  AppendReplicaConfigJson(*r, &body);
  body += ",\"running\":";
  body += d.running ? "true" : "false";
  if (!d.running) {
    body += ",\"not_running\":";
    AppendJsonString(&body, d.not_running.message());
  }
  body += ",\"stopped\":";
  if (st.stopped.ok()) {
    body += "null";
  } else {
    AppendJsonString(&body, st.stopped.message());
  }
  auto field = [&body](const char* name, auto value) {
    body += ",\"";
    body += name;
    body += "\":" + std::to_string(value);
  };
  field("lag_changes", st.lag_changes);
  field("lag_ms", st.lag_ms);
  field("last_apply_latency_us", st.last_apply_latency_us);
  field("applied", st.applied);
  field("superseded", st.superseded);
  field("stale", st.stale);
  field("below_watermark", st.below_watermark);
  field("filtered", st.filtered);
  field("malformed", st.malformed);
  field("damaged_ranges", st.damaged_ranges);
  field("batches", st.batches);
  field("refused_batches", st.refused_batches);
  field("target_errors", st.target_errors);
  field("tombstones_purged", st.tombstones_purged);
  field("purge_watermark", st.purge_watermark);
  body += ",\"positions\":[";
  for (size_t i = 0; i < st.positions.size(); ++i) {
    const replica::Position& p = st.positions[i];
    if (i) body += ',';
    body += "{\"partition\":" + std::to_string(p.partition) +
            ",\"next_offset\":" + std::to_string(p.next_offset) +
            ",\"commitseq\":" + std::to_string(p.commitseq) +
            ",\"purge_watermark\":" + std::to_string(p.purge_watermark) + "}";
  }
  body += "]}";
  co_return Reply(JsonReply(http::status::ok, std::move(body)));
}

asio::awaitable<HttpReply> Api::ReadReplicaRow(Call& call) {
  HttpReply refused;
  auto authorize = [this, &call, &refused] { return ReplicaFor(call, &refused); };
  const ReplicaConfig* r = co_await d_.pool->Run(std::move(authorize));
  if (r == nullptr) co_return refused;
  if (Status s = CheckQuery(call.query, {"token", "max_staleness_ms", "timeout_ms"}); !s.ok()) {
    co_return Error(s);
  }
  const std::string name = r->name;
  const std::string key = call.Param("key");
  const std::optional<std::string> token = call.Query("token");
  if (token || call.Query("max_staleness_ms")) {
    // A wait for a token or a staleness check needs the applier: where it runs (cluster:).
    std::optional<HttpReply> routed = co_await RouteToLeaseHolder(call, "replica:" + name);
    if (routed.has_value()) co_return std::move(*routed);
  }
  const int64_t max_wait = d_.config->limits.max_wait_ms;
  int64_t timeout_ms = std::min(kDefaultTokenWaitMs, max_wait);
  if (std::optional<std::string> v = call.Query("timeout_ms")) {
    if (!token) {
      co_return Error(InvalidArgumentError("timeout_ms bounds the wait for a token: give token"));
    }
    Result<uint64_t> n = ParseUintParam("timeout_ms", *v, 0, static_cast<uint64_t>(max_wait));
    if (!n.ok()) co_return Error(n.status());
    timeout_ms = static_cast<int64_t>(*n);
  }
  std::optional<int64_t> max_staleness;
  if (std::optional<std::string> v = call.Query("max_staleness_ms")) {
    Result<uint64_t> n = ParseUintParam("max_staleness_ms", *v, 0, INT64_MAX);
    if (!n.ok()) co_return Error(n.status());
    max_staleness = static_cast<int64_t>(*n);
  }
  if (token) {
    if (token->empty()) co_return Error(InvalidArgumentError("token is empty"));
    // No thread waits: the applier calls back when it has applied the token (or at the
    // deadline) and the coroutine resumes on its strand.
    Replicas* replicas = d_.replicas;
    const std::string t = *token;
    auto job = [replicas, name, t, timeout_ms](std::function<void(Status)> done) {
      replicas->WaitForAsync(name, t, timeout_ms, std::move(done));
    };
    Status waited = co_await BlockingPool::RunInline<Status>(std::move(job));
    if (!waited.ok()) {
      if (waited.code() == StatusCode::kDeadlineExceeded) {
        co_return Error(http::status::gateway_timeout, "TOKEN_NOT_APPLIED", waited.message());
      }
      co_return Error(waited);
    }
  }
  if (max_staleness) {
    Status fresh = d_.replicas->CheckStaleness(name, *max_staleness);
    if (!fresh.ok()) {
      HttpReply reply = Error(http::status::service_unavailable, "REPLICA_STALE", fresh.message());
      reply.response.set(http::field::retry_after, "1");
      co_return reply;
    }
  }
  Replicas* replicas = d_.replicas;
  auto read = [replicas, name, key] { return replicas->ReadRow(name, key); };
  Result<std::optional<replica::Row>> row = co_await d_.pool->Run(std::move(read));
  if (!row.ok()) co_return Error(row.status());
  if (!row->has_value()) {
    co_return Error(http::status::not_found, "NOT_FOUND",
                    "replica '" + name + "' has no row for key '" + key.substr(0, 200) + "'");
  }
  const replica::Row& x = **row;
  std::string body = "{\"replica\":";
  AppendJsonString(&body, name);
  body += ",\"key\":";
  AppendJsonString(&body, key);
  body += ",\"version\":" + std::to_string(x.version);
  body += ",\"deleted\":";
  body += x.deleted ? "true" : "false";
  if (x.deleted) {
    body += ",\"document\":null";
  } else {
    boost::system::error_code ec;
    boost::json::parse(x.document, ec);
    if (!ec) {
      body += ",\"document\":" + x.document;
    } else {
      // A text document of a change event (not JSON).
      body += ",\"document\":null,\"document_text\":";
      AppendJsonString(&body, x.document);
    }
  }
  body += ",\"commit_time_us\":" + std::to_string(x.commit_time_micros);
  body += ",\"applied_us\":" + std::to_string(x.applied_time_micros) + "}";
  co_return Reply(JsonReply(http::status::ok, std::move(body)));
}

// Compares the replica's table with its source collection and, unless dry_run, repairs the
// differences (Replicas::Reconcile; docs/formats/replica.md). Runs on the pool: it reads the
// whole collection and table.
asio::awaitable<HttpReply> Api::ReconcileReplica(Call& call) {
  HttpReply refused;
  auto authorize = [this, &call, &refused] { return ReplicaFor(call, &refused); };
  const ReplicaConfig* r = co_await d_.pool->Run(std::move(authorize));
  if (r == nullptr) co_return refused;
  if (Status s = CheckQuery(call.query, {"dry_run"}); !s.ok()) co_return Error(s);
  {
    // Reconciled where the replica runs (a parked one refuses to repair; its drift is kept
    // there).
    std::optional<HttpReply> routed = co_await RouteToLeaseHolder(call, "replica:" + r->name);
    if (routed.has_value()) co_return std::move(*routed);
  }
  bool dry_run = false;
  if (std::optional<std::string> v = call.Query("dry_run")) {
    if (*v == "true") {
      dry_run = true;
    } else if (*v != "false") {
      co_return Error(InvalidArgumentError("dry_run must be true or false"));
    }
  }
  Replicas* replicas = d_.replicas;
  Store* store = d_.store != nullptr ? &d_.store->store() : nullptr;
  const std::string name = r->name;
  auto run = [replicas, store, name, dry_run] {
    return replicas->Reconcile(name, store, dry_run);
  };
  Result<std::string> body = co_await d_.pool->Run(std::move(run));
  if (!body.ok()) co_return Error(body.status());
  co_return Reply(JsonReply(http::status::ok, std::move(body).value()));
}

asio::awaitable<HttpReply> Api::ReplicaDrift(Call& call) {
  HttpReply refused;
  auto authorize = [this, &call, &refused] { return ReplicaFor(call, &refused); };
  const ReplicaConfig* r = co_await d_.pool->Run(std::move(authorize));
  if (r == nullptr) co_return refused;
  if (Status s = CheckQuery(call.query, {}); !s.ok()) co_return Error(s);
  {
    std::optional<HttpReply> routed = co_await RouteToLeaseHolder(call, "replica:" + r->name);
    if (routed.has_value()) co_return std::move(*routed);
  }
  std::optional<std::string> drift = d_.replicas->Drift(r->name);
  if (!drift) {
    co_return Error(http::status::not_found, "NOT_FOUND",
                    "replica '" + r->name + "' has not been reconciled since the server started");
  }
  co_return Reply(JsonReply(http::status::ok, std::move(*drift)));
}

}  // namespace converge::server
