#include "server/api.h"

#include <algorithm>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>
#include <chrono>
#include <functional>
#include <optional>

#include "core/storage_full.h"
#include "server/api_internal.h"
#include "server/cloudevents_http.h"
#include "server/json_util.h"
#include "server/multi_writers.h"
#include "server/replicas.h"
#include "server/store_target.h"
#include "server/store_metrics.h"

namespace converge::server {

namespace json = boost::json;

namespace api_internal {

HttpResponse JsonReply(http::status status, std::string body, unsigned version) {
  HttpResponse res{status, version};
  res.set(http::field::content_type, "application/json");
  res.body() = std::move(body);
  res.prepare_payload();
  return res;
}

HttpReply Reply(HttpResponse res) { return HttpReply{std::move(res), nullptr}; }

HttpReply Error(const Status& status) { return Reply(ErrorReply(status)); }

HttpReply Error(http::status s, std::string_view code, std::string_view message) {
  return Reply(JsonError(s, code, message));
}

HttpReply SystemTopicError(std::string_view topic, std::string_view owner, std::string_view what) {
  return Error(http::status::forbidden, "SYSTEM_TOPIC",
               "topic '" + std::string(topic.substr(0, 200)) + "' is written only by " +
                   std::string(owner) + ": " + std::string(what) + " is not allowed");
}

// Topic names as the log accepts them from clients; internal ('_') names are not reachable.
Status CheckTopicName(std::string_view name) {
  if (name.empty() || name.size() > 200 || name.front() == '.' || name.front() == '_' ||
      name.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-") !=
          std::string_view::npos) {
    return InvalidArgumentError("invalid topic name '" + std::string(name.substr(0, 200)) +
                                "': 1..200 characters of [A-Za-z0-9._-], not starting with "
                                "'.' or '_'");
  }
  return Status::Ok();
}

Status CheckReadableTopicName(const Principal& who, std::string_view name) {
  if (who.admin && !name.empty() && name.front() == '_') {
    return ValidateTopicName(name, /*internal=*/true);
  }
  return CheckTopicName(name);
}

Status CheckGroupName(std::string_view name) {
  if (name.empty() || name.size() > 64 ||
      name.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-") !=
          std::string_view::npos) {
    return InvalidArgumentError("invalid group name '" + std::string(name.substr(0, 64)) +
                                "': 1..64 characters of [A-Za-z0-9_-]");
  }
  return Status::Ok();
}

Status CheckConsumerName(std::string_view name) {
  if (name.empty() || name.size() > 128 ||
      name.find_first_not_of(
          "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:@-") !=
          std::string_view::npos) {
    return InvalidArgumentError("invalid consumer name '" + std::string(name.substr(0, 128)) +
                                "': 1..128 characters of [A-Za-z0-9._:@-]");
  }
  return Status::Ok();
}

std::string GroupKey(const std::string& topic, const std::string& group) {
  return topic + '\n' + group;
}

void AppendUint(std::string* out, uint64_t v) { *out += std::to_string(v); }

std::string TopicJson(const TopicInfo& info, const std::string* groups_json, bool offsets) {
  std::string out = "{\"name\":";
  AppendJsonString(&out, info.name);
  out += ",\"partitions\":";
  AppendUint(&out, info.options.partitions);
  out += ",\"durability\":";
  AppendJsonString(&out, DurabilityName(info.options.durability));
  out += ",\"retention_max_bytes\":";
  AppendUint(&out, info.options.retention_max_bytes);
  out += ",\"retention_max_age_ms\":";
  out += std::to_string(info.options.retention_max_age_ms);
  // Every option a topic is created with reads back: a client that retries a publish needs
  // the dedup window to know how long the same (source, id) is stored once.
  out += ",\"sync_interval_ms\":";
  out += std::to_string(info.options.sync_interval_ms);
  out += ",\"dedup_window_ms\":";
  out += std::to_string(info.options.dedup_window_ms);
  if (groups_json || offsets) {
    out += ",\"partition_offsets\":[";
    for (size_t i = 0; i < info.partitions.size(); ++i) {
      const PartitionInfo& p = info.partitions[i];
      if (i) out += ',';
      out += "{\"partition\":" + std::to_string(p.partition) +
             ",\"start_offset\":" + std::to_string(p.start_offset) +
             ",\"end_offset\":" + std::to_string(p.end_offset) +
             ",\"size_bytes\":" + std::to_string(p.size_bytes) + "}";
    }
    out += ']';
  }
  if (groups_json) {
    out += ",\"groups\":";
    out += *groups_json;
  }
  out += '}';
  return out;
}

std::string GroupJson(const GroupDescription& g) {
  std::string out = "{\"name\":";
  AppendJsonString(&out, g.group);
  out += ",\"lag\":" + std::to_string(g.total_lag);
  out += ",\"members\":" + std::to_string(g.members.size());
  out += ",\"lease_ms\":" + std::to_string(g.options.lease_ms);
  out += ",\"max_deliveries\":" + std::to_string(g.options.max_deliveries);
  out += ",\"session_timeout_ms\":" + std::to_string(g.options.session_timeout_ms);
  out += ",\"dead_letters\":" + std::to_string(g.dead_letters);
  out += ",\"dead_letters_replayed\":" + std::to_string(g.dead_letters_replayed);
  out += ",\"partitions\":[";
  for (size_t i = 0; i < g.partitions.size(); ++i) {
    const PartitionDescription& p = g.partitions[i];
    if (i) out += ',';
    out += "{\"partition\":" + std::to_string(p.partition) +
           ",\"committed_offset\":" + std::to_string(p.committed) +
           ",\"end_offset\":" + std::to_string(p.end_offset) + ",\"lag\":" + std::to_string(p.lag) +
           ",\"in_flight\":" + std::to_string(p.in_flight) +
           ",\"delayed\":" + std::to_string(p.delayed) +
           ",\"damaged_skipped\":" + std::to_string(p.damaged_skipped) +
           ",\"lost_beyond_end\":" + std::to_string(p.lost_beyond_end);
    if (!p.last_error.empty()) {
      out += ",\"last_error\":";
      AppendJsonString(&out, p.last_error);
    }
    out += '}';
  }
  out += "]}";
  return out;
}

// The event of a stored record as structured-mode JSON, or an "error" member if the record
// is not a converge event (written by another producer of the log).
void AppendStoredEvent(std::string* out, std::string_view value) {
  Result<Event> event = DecodeBinary(value);
  if (event.ok() && AppendJson(*event, out).ok()) return;
  out->pop_back();  // the ':' after "event"
  out->resize(out->size() - std::string_view("\"event\"").size());
  *out += "\"event\":null,\"error\":";
  AppendJsonString(
      out, event.ok() ? "cannot encode the stored event" : std::string(event.status().message()));
}

}  // namespace api_internal

// ---------------------------------------------------------------------------------------
// Routing

const std::vector<Api::Route>& Api::RouteTable() {
  using V = http::verb;
  using A = AuthRule;
  using M = Module;
  static const std::vector<Route> routes = {
      {V::get, "/healthz", RouteId::kHealthz, &Api::Healthz, A::kNone, M::kCore},
      {V::get, "/readyz", RouteId::kReadyz, &Api::Readyz, A::kNone, M::kCore},
      {V::get, "/metrics", RouteId::kMetrics, &Api::Metrics, A::kMetrics, M::kCore},
      {V::get, "/v1/topics", RouteId::kListTopics, &Api::ListTopics, A::kToken, M::kCore},
      {V::post, "/v1/topics", RouteId::kCreateTopic, &Api::CreateTopic, A::kToken, M::kCore},
      {V::get, "/v1/topics/{topic}", RouteId::kDescribeTopic, &Api::DescribeTopic, A::kToken,
       M::kCore},
      {V::delete_, "/v1/topics/{topic}", RouteId::kDeleteTopic, &Api::DeleteTopic, A::kToken,
       M::kCore},
      {V::get, "/v1/topics/{topic}/events", RouteId::kReadEvents, &Api::ReadEvents, A::kToken,
       M::kCore},
      {V::post, "/v1/topics/{topic}/events", RouteId::kPublish, &Api::Publish, A::kToken, M::kCore},
      {V::post, "/v1/topics/{topic}/groups", RouteId::kCreateGroup, &Api::CreateGroup, A::kToken,
       M::kCore},
      {V::get, "/v1/topics/{topic}/groups", RouteId::kListGroups, &Api::ListGroups, A::kToken,
       M::kCore},
      {V::get, "/v1/topics/{topic}/groups/{group}", RouteId::kDescribeGroup, &Api::DescribeGroup,
       A::kToken, M::kCore},
      {V::delete_, "/v1/topics/{topic}/groups/{group}", RouteId::kDeleteGroup, &Api::DeleteGroup,
       A::kToken, M::kCore},
      {V::post, "/v1/topics/{topic}/groups/{group}/seek", RouteId::kSeekGroup, &Api::SeekGroup,
       A::kToken, M::kCore},
      {V::post, "/v1/topics/{topic}/groups/{group}/fetch", RouteId::kFetch, &Api::Fetch, A::kToken,
       M::kCore},
      {V::post, "/v1/topics/{topic}/groups/{group}/ack", RouteId::kAck, &Api::Ack, A::kToken,
       M::kCore},
      {V::post, "/v1/topics/{topic}/groups/{group}/nack", RouteId::kNack, &Api::Nack, A::kToken,
       M::kCore},
      {V::post, "/v1/topics/{topic}/groups/{group}/extend", RouteId::kExtendLeases,
       &Api::ExtendLeases, A::kToken, M::kCore},
      {V::get, "/v1/topics/{topic}/groups/{group}/stream", RouteId::kStream, &Api::Stream,
       A::kToken, M::kCore},
      {V::post, "/v1/topics/{topic}/groups/{group}/leave", RouteId::kLeave, &Api::Leave, A::kToken,
       M::kCore},
      {V::get, "/v1/topics/{topic}/groups/{group}/dead-letters", RouteId::kListDeadLetters,
       &Api::ListDeadLetters, A::kToken, M::kCore},
      {V::post, "/v1/topics/{topic}/groups/{group}/dead-letters/replay",
       RouteId::kReplayDeadLetters, &Api::ReplayDeadLetters, A::kToken, M::kCore},
      {V::post, "/v1/topics/{topic}/groups/{group}/dead-letters/discard",
       RouteId::kDiscardDeadLetters, &Api::DiscardDeadLetters, A::kToken, M::kCore},
      {V::get, "/v1/topics/{topic}/schema", RouteId::kGetTopicSchema, &Api::GetTopicSchema,
       A::kToken, M::kCore},
      {V::put, "/v1/topics/{topic}/schema", RouteId::kPutTopicSchema, &Api::PutTopicSchema,
       A::kToken, M::kCore},
      {V::delete_, "/v1/topics/{topic}/schema", RouteId::kDeleteTopicSchema,
       &Api::DeleteTopicSchema, A::kToken, M::kCore},
      // The declared topology beside the observed one: admins only.
      {V::get, "/v1/topology", RouteId::kTopology, &Api::GetTopology, A::kToken, M::kCore},
      // The schema registry: reads for any token, changes for admins (checked before the body
      // is read).
      {V::get, "/v1/schemas", RouteId::kListSchemaTypes, &Api::ListSchemaTypes, A::kToken,
       M::kCore},
      {V::get, "/v1/schemas/{type}", RouteId::kDescribeSchemaType, &Api::DescribeSchemaType,
       A::kToken, M::kCore},
      {V::put, "/v1/schemas/{type}", RouteId::kSetSchemaCompatibility, &Api::SetSchemaCompatibility,
       A::kToken, M::kCore},
      {V::get, "/v1/schemas/{type}/versions", RouteId::kListSchemaVersions,
       &Api::ListSchemaVersions, A::kToken, M::kCore},
      {V::post, "/v1/schemas/{type}/versions", RouteId::kRegisterSchemaVersion,
       &Api::RegisterSchemaVersion, A::kToken, M::kCore},
      {V::get, "/v1/schemas/{type}/versions/{version}", RouteId::kGetSchemaVersion,
       &Api::GetSchemaVersion, A::kToken, M::kCore},
      // The shared store: StoreRoutes authorizes (owner, writers) before it reads the input.
      {V::get, "/v1/collections", RouteId::kListCollections, &Api::HandleStore, A::kToken,
       M::kStore},
      {V::get, "/v1/collections/{collection}", RouteId::kGetCollection, &Api::HandleStore,
       A::kToken, M::kStore},
      {V::put, "/v1/collections/{collection}", RouteId::kPutCollection, &Api::HandleStore,
       A::kToken, M::kStore},
      {V::delete_, "/v1/collections/{collection}", RouteId::kDeleteCollection, &Api::HandleStore,
       A::kToken, M::kStore},
      {V::get, "/v1/collections/{collection}/docs", RouteId::kListDocuments, &Api::HandleStore,
       A::kToken, M::kStore},
      {V::get, "/v1/collections/{collection}/docs/{key...}", RouteId::kGetDocument,
       &Api::HandleStore, A::kToken, M::kStore},
      {V::put, "/v1/collections/{collection}/docs/{key...}", RouteId::kPutDocument,
       &Api::HandleStore, A::kToken, M::kStore},
      {V::delete_, "/v1/collections/{collection}/docs/{key...}", RouteId::kDeleteDocument,
       &Api::HandleStore, A::kToken, M::kStore},
      {V::get, "/v1/collections/{collection}/changes", RouteId::kCollectionChanges,
       &Api::CollectionChanges, A::kToken, M::kStore},
      {V::post, "/v1/collections/{collection}/reconcile", RouteId::kCollectionReconcile,
       &Api::CollectionReconcile, A::kToken, M::kStore},
      {V::post, "/v1/collections/_transaction", RouteId::kTransaction, &Api::HandleStore, A::kToken,
       M::kStore},
      // Multi-writer collections: each handler authorizes against the collection (read for
      // reads and the peers' pulls, write for writes) before reading anything else.
      {V::get, "/v1/multi-writer/{collection}/changes", RouteId::kMultiWriterChanges,
       &Api::MultiWriterChanges, A::kToken, M::kStore},
      {V::post, "/v1/multi-writer/{collection}/reconcile", RouteId::kMultiWriterReconcile,
       &Api::MultiWriterReconcile, A::kToken, M::kStore},
      {V::post, "/v1/multi-writer/{collection}/states", RouteId::kMultiWriterStates,
       &Api::MultiWriterReconcile, A::kToken, M::kStore},
      {V::get, "/v1/multi-writer/{collection}/docs/{key...}", RouteId::kGetMultiWriterDocument,
       &Api::MultiWriterDocument, A::kToken, M::kStore},
      {V::put, "/v1/multi-writer/{collection}/docs/{key...}", RouteId::kPutMultiWriterDocument,
       &Api::MultiWriterDocument, A::kToken, M::kStore},
      {V::delete_, "/v1/multi-writer/{collection}/docs/{key...}",
       RouteId::kDeleteMultiWriterDocument, &Api::MultiWriterDocument, A::kToken, M::kStore},
      // The sagas: SagaRoutes authorizes non-admin services before it reads the input.
      {V::get, "/v1/saga-definitions", RouteId::kListSagaDefinitions, &Api::HandleSagas, A::kToken,
       M::kSagas},
      {V::post, "/v1/saga-definitions", RouteId::kRegisterSagaDefinition, &Api::HandleSagas,
       A::kToken, M::kSagas},
      {V::get, "/v1/sagas", RouteId::kListSagas, &Api::HandleSagas, A::kToken, M::kSagas},
      {V::post, "/v1/sagas", RouteId::kStartSaga, &Api::HandleSagas, A::kToken, M::kSagas},
      {V::get, "/v1/sagas/{id}", RouteId::kDescribeSaga, &Api::HandleSagas, A::kToken, M::kSagas},
      {V::post, "/v1/sagas/{id}/cancel", RouteId::kCancelSaga, &Api::HandleSagas, A::kToken,
       M::kSagas},
      {V::get, "/v1/saga-timers", RouteId::kListSagaTimers, &Api::HandleSagas, A::kToken,
       M::kSagas},
      {V::put, "/v1/sagas/{id}/timers/{kind}", RouteId::kRescheduleSagaTimer, &Api::HandleSagas,
       A::kToken, M::kSagas},
      {V::delete_, "/v1/sagas/{id}/timers/{kind}", RouteId::kCancelSagaTimer, &Api::HandleSagas,
       A::kToken, M::kSagas},
      // Replicas: each handler authorizes against the replica's source before reading input.
      {V::get, "/v1/replicas", RouteId::kListReplicas, &Api::ListReplicas, A::kToken, M::kCore},
      {V::get, "/v1/replicas/{name}", RouteId::kDescribeReplica, &Api::DescribeReplica, A::kToken,
       M::kCore},
      {V::get, "/v1/replicas/{name}/rows/{key...}", RouteId::kReadReplicaRow, &Api::ReadReplicaRow,
       A::kToken, M::kCore},
      {V::post, "/v1/replicas/{name}/reconcile", RouteId::kReconcileReplica, &Api::ReconcileReplica,
       A::kToken, M::kCore},
      {V::get, "/v1/replicas/{name}/drift", RouteId::kReplicaDrift, &Api::ReplicaDrift, A::kToken,
       M::kCore},
      // The outbox relays and their dead letters: admin tokens only. The dead-letter topic's
      // name ("_dlq.outbox") is not a topic a path may name, so it has routes of its own.
      {V::get, "/v1/relays", RouteId::kListRelays, &Api::ListRelays, A::kToken, M::kCore},
      // The end-to-end audit's last findings: admin tokens only.
      {V::get, "/v1/audit", RouteId::kAudit, &Api::GetAudit, A::kToken, M::kCore},
      // This sidecar's leases of singleton work (cluster:): admin tokens only.
      {V::get, "/v1/leases", RouteId::kListLeases, &Api::ListLeases, A::kToken, M::kCore},
      {V::get, "/v1/relays/dead-letters", RouteId::kListRelayDeadLetters,
       &Api::ListRelayDeadLetters, A::kToken, M::kCore},
      {V::post, "/v1/relays/dead-letters/replay", RouteId::kReplayRelayDeadLetters,
       &Api::ReplayRelayDeadLetters, A::kToken, M::kCore},
      {V::post, "/v1/relays/dead-letters/discard", RouteId::kDiscardRelayDeadLetters,
       &Api::DiscardRelayDeadLetters, A::kToken, M::kCore},
      // This API's OpenAPI document (docs/api/openapi.yaml, built in): public, like the source.
      {V::get, "/v1/openapi.yaml", RouteId::kOpenApi, &Api::OpenApi, A::kNone, M::kCore},
      // Push subscriptions: changes for admins (checked before the body is read), reads for
      // the topic's subscribers.
      {V::get, "/v1/subscriptions", RouteId::kListSubscriptions, &Api::ListSubscriptions,
       A::kToken, M::kCore},
      {V::post, "/v1/subscriptions", RouteId::kCreateSubscription, &Api::CreateSubscription,
       A::kToken, M::kCore},
      {V::get, "/v1/subscriptions/{name}", RouteId::kGetSubscription, &Api::GetSubscription,
       A::kToken, M::kCore},
      {V::delete_, "/v1/subscriptions/{name}", RouteId::kDeleteSubscription,
       &Api::DeleteSubscription, A::kToken, M::kCore},
      // The dashboard (src/server/dashboard/, built in): static files without data, public; the
      // page asks for a token and sends it on every API call.
      {V::get, "/ui", RouteId::kDashboard, &Api::Dashboard, A::kNone, M::kCore},
      {V::get, "/ui/{asset}", RouteId::kDashboardAsset, &Api::Dashboard, A::kNone, M::kCore},
      {V::get, "/v1/overview/stream", RouteId::kOverviewStream, &Api::OverviewStream, A::kToken,
       M::kCore},
  };
  return routes;
}

std::vector<RouteInfo> Api::Routes() {
  std::vector<RouteInfo> out;
  for (const Route& r : RouteTable()) {
    // "{key...}" (the rest of the path) is "{key}" in OpenAPI terms.
    std::string path(r.path);
    if (const size_t dots = path.find("...}"); dots != std::string::npos) path.erase(dots, 3);
    out.push_back({std::string(http::to_string(r.method)), std::move(path)});
  }
  return out;
}

Api::Match Api::MatchRoute(http::verb method, std::string_view path, bool with_store,
                           bool with_sagas) {
  // The templates split once (RouteTable never changes).
  static const std::vector<SplitPath> templates = [] {
    std::vector<SplitPath> out;
    for (const Route& r : RouteTable()) out.emplace_back(r.path);
    return out;
  }();
  const std::vector<Route>& table = RouteTable();
  const SplitPath split(path);
  Match out;
  int best = -1;
  RawParams params;
  for (size_t i = 0; i < table.size(); ++i) {
    const Route& r = table[i];
    if ((r.module == Module::kStore && !with_store) ||
        (r.module == Module::kSagas && !with_sagas)) {
      continue;
    }
    const int literals = MatchPathTemplate(templates[i], split, &params);
    if (literals < 0 || literals < best) continue;
    if (literals > best) {
      // A more specific template: the less specific ones matched before do not count.
      out.route = nullptr;
      out.allow.clear();
      best = literals;
    }
    if (r.method == method) {
      if (out.route == nullptr) {
        out.route = &r;
        out.params = std::move(params);
      }
    } else {
      if (!out.allow.empty()) out.allow += ", ";
      out.allow += std::string(http::to_string(r.method));
    }
  }
  if (out.route != nullptr) out.allow.clear();
  return out;
}

Api::Api(ApiDeps deps)
    : d_(deps),
      auth_(deps.config->tokens),
      topology_(std::make_unique<TopologyObserver>(deps.config->topology, deps.metrics)) {
  deliver_latency_ = d_.metrics->GetHistogram(
      "converge_publish_to_deliver_seconds",
      "Time from append to first delivery of an event to a consumer.", {}, LatencyBucketsSeconds());
  subscribers_gauge_ =
      d_.metrics->GetGauge("converge_stream_subscribers", "Open streaming subscriptions.");
  d_.metrics->AddCollector(
      [this](std::vector<MetricsRegistry::Sample>* out) { CollectGroupMetrics(out); });
  if (d_.store != nullptr) {
    store_commit_seconds_ = d_.metrics->GetHistogram(
        "converge_store_commit_seconds",
        "Time from a document write or transaction reaching the store to its durable "
        "acknowledgement (successful writes only).",
        {}, StoreCommitBucketsSeconds());
  }
  for (const ReplicaConfig& r : d_.config->replicas) {
    if (r.target_collection.empty()) continue;
    const std::string what =
        r.remote_url.empty()
            ? (r.store_collection.empty() ? "topic '" + r.topic + "'"
                                          : "collection '" + r.store_collection + "'")
            : "collection '" + r.remote_collection + "' of " + r.remote_url;
    read_only_collections_[r.target_collection] =
        "collection '" + r.target_collection + "' is a read-only replica (replica '" + r.name +
        "') of " + what + ": write to the source instead";
    read_only_collections_[ReplicaMetaCollection(r.name)] =
        "collection '" + ReplicaMetaCollection(r.name) + "' is the bookkeeping of replica '" +
        r.name + "': only the replica writes it";
  }
  for (const MultiWriterConfig& m : d_.config->multi_writer) {
    read_only_collections_[m.collection] =
        "collection '" + m.collection +
        "' is a multi-writer collection: write through /v1/multi-writer/" + m.collection +
        "/docs/{key}";
    read_only_collections_[MultiWriterMetaCollection(m.collection)] =
        "collection '" + MultiWriterMetaCollection(m.collection) +
        "' is the bookkeeping of multi-writer collection '" + m.collection +
        "': only converge writes it";
  }
  for (const Route& r : RouteTable()) {
    route_metrics_.push_back(std::make_unique<RouteMetrics>(d_.metrics, std::string(r.path)));
  }
  route_metrics_.push_back(std::make_unique<RouteMetrics>(d_.metrics, "unmatched"));
  unmatched_metrics_ = route_metrics_.back().get();
}

Api::RouteMetrics::RouteMetrics(MetricsRegistry* registry, std::string label)
    : registry_(registry), label_(std::move(label)) {}

std::shared_ptr<void> Api::TakeSubscriberSlot() {
  if (subscribers_.fetch_add(1) >= d_.config->limits.max_subscribers) {
    subscribers_.fetch_sub(1);
    return nullptr;
  }
  subscribers_gauge_->Set(subscribers_.load());
  return std::shared_ptr<void>(static_cast<void*>(this), [this](void*) {
    subscribers_.fetch_sub(1);
    subscribers_gauge_->Set(subscribers_.load());
  });
}

HttpReply Api::TooManySubscribers() const {
  const uint32_t max = d_.config->limits.max_subscribers;
  HttpReply r = Error(http::status::too_many_requests, "TOO_MANY_REQUESTS",
                      "server is at limits.max_subscribers (" + std::to_string(max) + ")");
  r.response.set(http::field::retry_after, "1");
  return r;
}

void Api::RouteMetrics::Record(unsigned code, bool stream, double seconds) {
  Counter* counter = code < kMaxCode ? by_code_[code].load(std::memory_order_acquire) : nullptr;
  if (counter == nullptr) {
    // First request with this code (the registry returns the same counter every time).
    counter = registry_->GetCounter("converge_http_requests_total",
                                    "HTTP requests by route and status code.",
                                    {{"route", label_}, {"code", std::to_string(code)}});
    if (code < kMaxCode) by_code_[code].store(counter, std::memory_order_release);
  }
  counter->Add();
  if (stream) return;
  Histogram* duration = duration_.load(std::memory_order_acquire);
  if (duration == nullptr) {
    duration = registry_->GetHistogram("converge_http_request_duration_seconds",
                                       "Time to handle a request (excluding streams).",
                                       {{"route", label_}}, LatencyBucketsSeconds());
    duration_.store(duration, std::memory_order_release);
  }
  duration->Observe(seconds);
}

Api::~Api() { ReleaseWatches(); }

void Api::ReleaseWatches() {
  std::lock_guard lock(watches_mu_);
  watches_.clear();
  feed_watch_.reset();
}

asio::awaitable<HttpReply> Api::Handle(HttpRequest& request) {
  const int64_t start = d_.env->clock().NowMonotonicNanos();
  const std::string_view target(request.target().data(), request.target().size());
  const std::string_view path = target.substr(0, target.find('?'));
  Match match = MatchRoute(request.method(), path, d_.store != nullptr, d_.sagas != nullptr);
  const Route* route = match.route;
  HttpReply reply;
  RouteMetrics& metrics = route ? *route_metrics_[static_cast<size_t>(route - RouteTable().data())]
                                : *unmatched_metrics_;
  if (!route) {
    if (!match.allow.empty()) {
      reply = Error(http::status::method_not_allowed, "METHOD_NOT_ALLOWED",
                    "method " + std::string(request.method_string()) + " is not allowed on " +
                        std::string(path.substr(0, 200)) + " (allowed: " + match.allow + ")");
      reply.response.set(http::field::allow, match.allow);
    } else {
      reply = Error(http::status::not_found, "NOT_FOUND",
                    "no such endpoint: " + std::string(path.substr(0, 200)));
    }
    RecordRequest(metrics, reply, start);
    co_return reply;
  }
  // Authentication before anything of the request is read.
  const bool needs_auth = route->auth == AuthRule::kToken ||
                          (route->auth == AuthRule::kMetrics && d_.config->metrics_require_token);
  Result<const Principal*> principal = auth_.Authenticate(request[http::field::authorization]);
  // Credentials given twice are read as neither: which one counts is what a proxy that adds
  // its own and this server could disagree on.
  if (auth_.enabled() && request.count(http::field::authorization) > 1) {
    principal = UnauthenticatedError("the Authorization header appears more than once");
  }
  if (needs_auth && !principal.ok()) {
    reply = Error(principal.status());
    reply.response.set(http::field::www_authenticate, "Bearer realm=\"converge\"");
    RecordRequest(metrics, reply, start);
    co_return reply;
  }
  Result<DecodedTarget> input = DecodeTarget(target, match.params);
  if (!input.ok()) {
    reply = Error(input.status());
  } else {
    Call call{request,
              *route,
              std::move(input->query),
              std::move(input->params),
              {},
              {},
              principal.ok() ? *principal : nullptr};
    call.topic = call.Param("topic");
    call.group = call.Param("group");
    std::optional<HttpReply> routed;
    if (d_.cluster_groups != nullptr && !call.group.empty()) {
      routed = co_await RouteToGroupOwner(call, call.group);
    }
    if (routed.has_value()) {
      reply = std::move(*routed);
    } else {
      reply = co_await (this->*(route->handler))(call);
    }
  }
  RecordRequest(metrics, reply, start);
  co_return reply;
}

void Api::RecordRequest(RouteMetrics& metrics, const HttpReply& reply, int64_t start) {
  const double seconds = static_cast<double>(d_.env->clock().NowMonotonicNanos() - start) * 1e-9;
  metrics.Record(reply.response.result_int(), reply.stream != nullptr, seconds);
}

// ---------------------------------------------------------------------------------------
// Operations

asio::awaitable<HttpReply> Api::Healthz(Call&) {
  co_return Reply(JsonReply(http::status::ok, "{\"status\":\"ok\"}"));
}

asio::awaitable<HttpReply> Api::Readyz(Call&) {
  if (!ready_.load()) {
    co_return Error(http::status::service_unavailable, "UNAVAILABLE",
                    "shutting down: not accepting new work");
  }
  // Not ready while any component that writes cannot: the log, the consumer-group journal,
  // the store, the saga orchestrator. A full disk is "for now": each undoes the failed write
  // and its check probes the disk (or writes again), so readiness comes back by itself once
  // there is space. A failure a component could not undo needs a restart (or a reopen); its
  // message says so. The body names every failing component and why.
  struct Check {
    const char* component;
    std::string prefix;
    Status status;
  };
  auto job = [this] {
    std::vector<Check> checks;
    checks.push_back({"log", "the log cannot write: ", d_.log->WriteHealth()});
    checks.push_back({"consumer_groups", "", d_.groups->JournalHealth()});
    if (d_.store != nullptr) {
      // Unavailable is a shared store's database that does not answer (for now); anything
      // else is an error the store could not undo.
      Status health = d_.store->store().Health();
      checks.push_back({"store",
                        health.code() == StatusCode::kUnavailable
                            ? ""
                            : "the store refuses every call until it is reopened (restart the "
                              "server): ",
                        std::move(health)});
    }
    if (d_.sagas != nullptr) checks.push_back({"sagas", "", d_.sagas->Health()});
    if (d_.replicas != nullptr) {
      // A stopped applier needs its producer fixed (or on_malformed: skip) and a restart.
      for (auto& [name, why] : d_.replicas->Stopped()) {
        checks.push_back({"replicas", "replica '" + name + "' stopped: ", std::move(why)});
      }
    }
    return checks;
  };
  std::vector<Check> checks = co_await d_.pool->Run(std::move(job));
  json::array failing;
  std::string message;
  for (const Check& c : checks) {
    if (c.status.ok()) continue;
    const std::string why = c.prefix + std::string(c.status.message());
    failing.push_back(json::object{{"component", c.component}, {"message", why}});
    message += (message.empty() ? "not ready: " : "; ") + std::string(c.component) + ": " + why;
  }
  if (failing.empty()) co_return Reply(JsonReply(http::status::ok, "{\"status\":\"ready\"}"));
  json::object body{{"code", "UNAVAILABLE"}, {"message", message}, {"failing", failing}};
  co_return Reply(JsonReply(http::status::service_unavailable, json::serialize(body)));
}

asio::awaitable<HttpReply> Api::Metrics(Call&) {
  // Collectors describe groups (storage reads): render on the pool.
  auto job = [this] { return d_.metrics->Render(); };
  std::string text = co_await d_.pool->Run(std::move(job));
  HttpResponse res{http::status::ok, 11};
  res.set(http::field::content_type, "text/plain; version=0.0.4; charset=utf-8");
  res.body() = std::move(text);
  res.prepare_payload();
  co_return Reply(std::move(res));
}

void Api::CollectGroupMetrics(std::vector<MetricsRegistry::Sample>* out) {
  for (const std::string& topic : d_.log->ListTopics()) {
    if (topic.empty() || topic.front() == '_') continue;
    Result<TopicInfo> info = d_.log->DescribeTopic(topic);
    if (info.ok()) {
      uint64_t end = 0;
      for (const PartitionInfo& p : info->partitions) end += p.end_offset;
      out->push_back({"converge_topic_end_offset",
                      "Sum of the end offsets of a topic's partitions.",
                      "gauge",
                      {{"topic", topic}},
                      static_cast<double>(end)});
    }
    for (const std::string& group : d_.groups->ListGroups(topic)) {
      Result<GroupDescription> g = d_.groups->DescribeGroup(topic, group);
      if (!g.ok()) continue;
      Labels labels = {{"topic", topic}, {"group", group}};
      out->push_back({"converge_consumer_lag", "Events not yet consumed by a group.", "gauge",
                      labels, static_cast<double>(g->total_lag)});
      uint64_t in_flight = 0;
      uint64_t damaged = 0;
      uint64_t lost = 0;
      for (const PartitionDescription& p : g->partitions) {
        in_flight += p.in_flight;
        damaged += p.damaged_skipped;
        lost += p.lost_beyond_end;
      }
      out->push_back({"converge_consumer_damaged_skipped",
                      "Events a group skipped because the log reported them damaged (since the "
                      "server started).",
                      "gauge", labels, static_cast<double>(damaged)});
      out->push_back({"converge_consumer_lost_beyond_end",
                      "Events a group had consumed that the log no longer held at start (its "
                      "committed offset was moved back to the log's end).",
                      "gauge", labels, static_cast<double>(lost)});
      out->push_back({"converge_consumer_in_flight", "Events leased and not yet acked.", "gauge",
                      labels, static_cast<double>(in_flight)});
      out->push_back({"converge_dead_letters", "Events in a group's dead-letter topic.", "gauge",
                      labels, static_cast<double>(g->dead_letters)});
      out->push_back({"converge_dead_letters_replayed", "Dead letters replayed.", "gauge", labels,
                      static_cast<double>(g->dead_letters_replayed)});
    }
  }
}

}  // namespace converge::server
