// API v1 of `converge serve`: one router (RouteTable: method + path template -> handler and
// auth rule) for every route — the log, the consumer groups, the shared store (api_store.cc)
// and the saga orchestrator (api_sagas.cc) — one reading of the request target (router.h,
// Boost.URL) and one Status -> HTTP status mapping (ErrorCodeFor).
// docs/api/openapi.yaml describes every route; server_unit_test checks the two agree, taking
// the route list from RouteTable itself.
//
// Contract
// - Unknown path 404, known path with another method 405 (Allow); then authentication
//   (401), then authorization (403), then input (400/413/415), then existence (404). A
//   refused request never returns data and changes nothing.
// - Every error reply is JSON {"code": ..., "message": ...} (see ErrorCodeFor).
// - A publish waits for its sync without holding a thread (Log::AppendAsync, see
//   AppendDurably), and so does an ack (ConsumerGroups::AckBatchAsync, see AckDurably);
//   other blocking storage calls run on the BlockingPool. Either way the
//   coroutine resumes on its connection's strand. Long polls and streams wait on the WakeupHub, woken by the groups' ready watch.
// - A publish is all or nothing: the whole request is decoded and validated before anything
//   is appended, and the log appends a batch whole or not at all.
// Thread-safety: Handle may run concurrently on many strands.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <vector>

#include "audit/audit.h"
#include "converge/consumer_group.h"
#include "converge/env.h"
#include "converge/event.h"
#include "converge/log.h"
#include "converge/relay.h"
#include "converge/saga.h"
#include "server/auth.h"
#include "server/blocking_pool.h"
#include "server/cloudevents_http.h"
#include "server/config.h"
#include "server/http_server.h"
#include "server/metrics.h"
#include "server/system_topics.h"
#include "server/topology_observer.h"
#include "server/wakeup_hub.h"
#include "server/router.h"
#include "server/schema_registry.h"
#include "server/store_routes.h"

namespace converge::server {

class Replicas;
class LeasedWork;
class ClusterGroups;
class MultiWriters;
class PushService;

struct ApiDeps {
  const ServerConfig* config = nullptr;
  Env* env = nullptr;
  Log* log = nullptr;
  ConsumerGroups* groups = nullptr;
  MetricsRegistry* metrics = nullptr;
  BlockingPool* pool = nullptr;
  WakeupHub* hub = nullptr;
  // The shared store's routes (/v1/collections/...); null when the store is disabled.
  StoreRoutes* store = nullptr;
  // The saga orchestrator (/v1/sagas, /v1/saga-definitions, /v1/saga-timers); null when
  // sagas are disabled.
  SagaOrchestrator* sagas = nullptr;
  // The topics converge writes itself (refused to HTTP publishes).
  SystemTopics* system_topics = nullptr;
  // Event types' JSON Schemas and the topics validated against them (/v1/schemas,
  // /v1/topics/{topic}/schema); required.
  SchemaRegistry* schemas = nullptr;
  // The replicas of the config (/v1/replicas); null when there are none.
  Replicas* replicas = nullptr;
  // The multi-writer collections of the config (/v1/multi-writer); null when there are none.
  MultiWriters* multi_writers = nullptr;
  // The push subscriptions (/v1/subscriptions); required.
  PushService* push = nullptr;
  // The end-to-end audit (docs/formats/audit.md): all three set when audit.enabled, else null.
  audit::Stamper* audit_stamper = nullptr;
  audit::AckJournal* audit_journal = nullptr;
  audit::AuditService* audit = nullptr;
  // Consumer groups shared by several sidecars (cluster.consumer_groups: shared): the group
  // routes are forwarded to the sidecar running the group (server/cluster_groups.h). Then
  // `groups` is the same object. Null otherwise.
  ClusterGroups* cluster_groups = nullptr;
};

// One route: method and path template ("/v1/topics/{topic}").
struct RouteInfo {
  std::string method;
  std::string path;
};

class Api {
 public:
  struct Call;
  using Handler = asio::awaitable<HttpReply> (Api::*)(Call&);
  // Which part of the server serves a route: its routes exist only while it is enabled.
  enum class Module { kCore, kStore, kSagas };
  // One entry of the dispatch table.
  struct Route {
    http::verb method;
    std::string_view path;  // template, see MatchPathTemplate
    RouteId id;
    Handler handler;
    AuthRule auth;
    Module module;
  };
  // The dispatch table: every route the server has (with every module enabled).
  static const std::vector<Route>& RouteTable();

  // The route `method` and `path` (no query) select: the most specific templates that match
  // the path (the most literal segments) and of those the one with the method. With no route,
  // `allow` lists the methods the path takes (empty: unknown path).
  struct Match {
    const Route* route = nullptr;
    RawParams params;
    std::string allow;
  };
  static Match MatchRoute(http::verb method, std::string_view path, bool with_store = true,
                          bool with_sagas = true);

  explicit Api(ApiDeps deps);
  ~Api();

  asio::awaitable<HttpReply> Handle(HttpRequest& request);

  // The relays `converge serve` runs, for GET /v1/relays (set once they started; empty
  // without a relays: section).
  void SetRelays(std::weak_ptr<RelayService> relays) {
    std::lock_guard lock(relays_mu_);
    relays_ = std::move(relays);
  }

  // The leases of singleton work (cluster:), for GET /v1/leases; set once, before serving.
  void SetLeases(const LeasedWork* leases) { leases_ = leases; }

  // Readiness turns false; streams and long polls end (the WakeupHub is shut down by the
  // caller).
  void BeginShutdown() { ready_.store(false); }
  // Drops the ready watches; call before the ConsumerGroups is destroyed.
  void ReleaseWatches();

  // Every route of RouteTable() as (method, template), for listings and the OpenAPI check.
  static std::vector<RouteInfo> Routes();

 private:
  // The store's routes (api_store.cc): run StoreRoutes inline on the I/O thread when that
  // cannot block, otherwise on the pool.
  asio::awaitable<HttpReply> HandleStore(Call& call);
  // The saga routes (api_sagas.cc): authorize non-admin services (SagaRoutes) and run on the
  // pool.
  asio::awaitable<HttpReply> HandleSagas(Call& call);

  // The request metrics of one route label, looked up in the registry on first use (per
  // status code) rather than on every request. Registered lazily, like before: a route that
  // was never called has no series.
  class RouteMetrics {
   public:
    RouteMetrics(MetricsRegistry* registry, std::string label);
    void Record(unsigned code, bool stream, double seconds);

   private:
    static constexpr unsigned kMaxCode = 600;
    MetricsRegistry* registry_;
    std::string label_;
    std::atomic<Histogram*> duration_{nullptr};
    std::array<std::atomic<Counter*>, kMaxCode> by_code_{};
  };
  void RecordRequest(RouteMetrics& metrics, const HttpReply& reply, int64_t start);

  // Shared consumer groups: where `group` runs. nullopt when here (the handler goes on),
  // otherwise the reply: the owner's answer to the forwarded request, a 307 to the owner for a
  // stream, or an error (authorization is checked here first, before anything is parsed).
  asio::awaitable<std::optional<HttpReply>> RouteToGroupOwner(Call& call, const std::string& group);
  // Sends the request as it came (with the caller's credentials) to the sidecar at `url`; or,
  // with `target`, a `method` request of that target without a body, with the caller's
  // credentials.
  asio::awaitable<HttpReply> ForwardToOwner(Call& call, const std::string& url,
                                            const std::string& target,
                                            const std::string& method = "GET");
  // The group's description (GroupDetailJson) wherever it runs: here, or asked of its owner.
  asio::awaitable<Result<std::string>> DescribeGroupAnywhere(Call& call, const std::string& group);
  // Every group of call.topic described (GroupDetailJson with `detail`, GroupJson without), in
  // list order, wherever each runs: shared groups from the shared list (a list that cannot be
  // read is Unavailable, never a shorter list), those running elsewhere asked of their owner.
  // A group deleted meanwhile is left out.
  asio::awaitable<Result<std::vector<std::string>>> DescribeGroupsOfTopic(Call& call, bool detail);
  // Deletes every group of call.topic (with their dead letters) wherever each runs: here, or
  // through its owner (DELETE of the group with the caller's credentials). Appends the names
  // deleted to *deleted (a JSON array's items). nullopt when all are gone, otherwise the reply
  // to give (an error, or the owner's answer).
  asio::awaitable<std::optional<HttpReply>> DeleteGroupsOfTopic(Call& call, std::string* deleted);
  // A route of leased singleton work (cluster:) through a sidecar where the work does not run
  // (saga routes: lease "sagas"; a parked replica: "replica:<name>"): the answer of the sidecar
  // holding `lease` to the forwarded request. nullopt when the work runs here, is not leased,
  // there is no node registry (shared groups off), or the request was forwarded already (then
  // this sidecar answers: 503 where the work does not run). Call after authorizing.
  asio::awaitable<std::optional<HttpReply>> RouteToLeaseHolder(Call& call,
                                                               const std::string& lease);
  // The pool for forwarding's blocking lookups and sends other than fetches (api_forward.cc).
  BlockingPool& ForwardPool();
  struct Forwarder;
  std::shared_ptr<Forwarder> forwarder_;  // watches_mu_; created on first use

  asio::awaitable<HttpReply> Healthz(Call& call);
  asio::awaitable<HttpReply> Readyz(Call& call);
  asio::awaitable<HttpReply> Metrics(Call& call);
  asio::awaitable<HttpReply> ListTopics(Call& call);
  asio::awaitable<HttpReply> CreateTopic(Call& call);
  asio::awaitable<HttpReply> DescribeTopic(Call& call);
  asio::awaitable<HttpReply> Publish(Call& call);
  asio::awaitable<HttpReply> CreateGroup(Call& call);
  asio::awaitable<HttpReply> Fetch(Call& call);
  asio::awaitable<HttpReply> Ack(Call& call);
  asio::awaitable<HttpReply> Nack(Call& call);
  asio::awaitable<HttpReply> ExtendLeases(Call& call);
  asio::awaitable<HttpReply> Stream(Call& call);
  asio::awaitable<HttpReply> Leave(Call& call);
  asio::awaitable<HttpReply> ListDeadLetters(Call& call);
  asio::awaitable<HttpReply> ReplayDeadLetters(Call& call);
  // The schema registry (api_schemas.cc): reads for any token, changes for admins.
  asio::awaitable<HttpReply> ListSchemaTypes(Call& call);
  asio::awaitable<HttpReply> DescribeSchemaType(Call& call);
  asio::awaitable<HttpReply> SetSchemaCompatibility(Call& call);
  asio::awaitable<HttpReply> ListSchemaVersions(Call& call);
  asio::awaitable<HttpReply> RegisterSchemaVersion(Call& call);
  asio::awaitable<HttpReply> GetSchemaVersion(Call& call);
  asio::awaitable<HttpReply> GetTopicSchema(Call& call);
  asio::awaitable<HttpReply> PutTopicSchema(Call& call);
  asio::awaitable<HttpReply> DeleteTopicSchema(Call& call);
  asio::awaitable<HttpReply> GetTopology(Call& call);
  // Publishers and consumers seen, for GET /v1/topology (topology_observer.h).
  void Observe(TopologyObserver::Kind kind, const std::string& topic, const Principal& who);
  // The replicas (api_replicas.cc).
  asio::awaitable<HttpReply> ListReplicas(Call& call);
  asio::awaitable<HttpReply> DescribeReplica(Call& call);
  asio::awaitable<HttpReply> ReadReplicaRow(Call& call);
  asio::awaitable<HttpReply> ReconcileReplica(Call& call);
  asio::awaitable<HttpReply> ReplicaDrift(Call& call);
  // The multi-writer collections (api_multi_writer.cc).
  asio::awaitable<HttpReply> MultiWriterChanges(Call& call);
  asio::awaitable<HttpReply> MultiWriterDocument(Call& call);
  asio::awaitable<HttpReply> MultiWriterReconcile(Call& call);
  // The change stream of one store collection, for replicas on other nodes (api_remote.cc).
  asio::awaitable<HttpReply> CollectionChanges(Call& call);
  // Registers the watch that wakes waiting change streams on appends to the store's feed
  // (once). Blocking (the log): call on the pool.
  Status WatchFeed();
  // The responder end of a reconciliation run of another node's replica (api_remote.cc).
  asio::awaitable<HttpReply> CollectionReconcile(Call& call);
  // The reply of a binary exchange of the sidecar-to-sidecar channel: the bytes (200,
  // application/octet-stream), nothing to say (204), or the error.
  static HttpReply BytesReply(Result<std::optional<std::string>> reply);
  // A collection's (key, version) digest, kept up to date from the store's feed, and the
  // reconciliation responder over it. Blocking (store, log): call on the pool.
  struct CollectionDigest;
  Result<std::optional<std::string>> RespondToReconcile(const std::string& collection,
                                                        std::string_view message);
  Status CatchUpDigest(const std::string& collection, CollectionDigest& digest);
  std::mutex digests_mu_;
  std::map<std::string, std::shared_ptr<CollectionDigest>> digests_;  // by collection
  // Operating the server (api_admin.cc).
  asio::awaitable<HttpReply> DeleteTopic(Call& call);
  asio::awaitable<HttpReply> ReadEvents(Call& call);
  asio::awaitable<HttpReply> ListGroups(Call& call);
  asio::awaitable<HttpReply> DescribeGroup(Call& call);
  asio::awaitable<HttpReply> DeleteGroup(Call& call);
  asio::awaitable<HttpReply> SeekGroup(Call& call);
  asio::awaitable<HttpReply> ListRelays(Call& call);
  asio::awaitable<HttpReply> GetAudit(Call& call);
  asio::awaitable<HttpReply> ListLeases(Call& call);
  asio::awaitable<HttpReply> ListRelayDeadLetters(Call& call);
  asio::awaitable<HttpReply> ReplayRelayDeadLetters(Call& call);
  asio::awaitable<HttpReply> DiscardRelayDeadLetters(Call& call);
  asio::awaitable<HttpReply> DiscardDeadLetters(Call& call);
  asio::awaitable<HttpReply> OpenApi(Call& call);
  // The dashboard's static files (api_dashboard.cc).
  asio::awaitable<HttpReply> Dashboard(Call& call);
  asio::awaitable<HttpReply> OverviewStream(Call& call);
  // One `overview` event's JSON: what `who` may see.
  std::string OverviewJson(const Principal& who);
  // Forgets the ready watch and keep-alive of a deleted group (a group created again under
  // the name may have other options). With `epoch` (WatchEpoch read before the deletion), only
  // if the watch is still that one: a fetch woken by the deletion may already have made the
  // group again and watched the new group, and that watch must stay.
  void ForgetGroup(const std::string& topic, const std::string& group,
                   std::optional<uint64_t> epoch = std::nullopt);
  // Which watch of the group is registered now (0: none); changes whenever it is replaced.
  uint64_t WatchEpoch(const std::string& topic, const std::string& group);
  // Deletes a group (force: with its dead letters) and the topic its discarded dead letters
  // went to (DiscardDeadLetters). Blocking.
  Status DeleteGroupAndDiscarded(const std::string& topic, const std::string& group, bool force);
  // Push subscriptions (api_subscriptions.cc): changes for admins, reads for the topic's
  // subscribers.
  asio::awaitable<HttpReply> ListSubscriptions(Call& call);
  asio::awaitable<HttpReply> CreateSubscription(Call& call);
  asio::awaitable<HttpReply> GetSubscription(Call& call);
  asio::awaitable<HttpReply> DeleteSubscription(Call& call);
  // Blocking (the store's catalog): call on the pool.
  bool MayUseReplica(const Principal& principal, const ReplicaConfig& replica) const;
  std::string ListReplicasJson(const Principal& principal) const;
  const ReplicaConfig* ReplicaFor(Call& call, HttpReply* refused) const;

  // A publish request decoded, checked and encoded into the records to append (views into
  // its own buffers and the request body).
  struct PreparedPublish {
    DecodedPublish decoded;
    std::string values;
    std::string ids;
    std::vector<RecordView> records;
  };
  // Decodes, checks (schema) and encodes: false with the error reply when the request is
  // refused. CPU only (no I/O): runs on the connection's thread.
  bool PreparePublish(const HttpRequest& request, const std::string& topic,
                      PreparedPublish* out, HttpResponse* refused);
  // One attempt of PreparePublish: `bound` is the topic's schema (null: none);
  // `defer_json_check` leaves the JSON data of binary records to the schema validator's parse.
  bool PrepareOnce(const HttpRequest& request, const std::string& topic,
                   const SchemaRegistry::TopicSchema* bound, bool defer_json_check,
                   PreparedPublish* out, HttpResponse* refused);
  // The reply to an append of `prepared` (and the publish metrics).
  HttpResponse PublishReply(const HttpRequest& request, const std::string& topic,
                            const PreparedPublish& prepared,
                            const Result<std::vector<AppendResult>>& appended);
  // The publish counters of a topic, looked up in the registry once per topic (a registry
  // lookup renders the labels under the registry's lock: too dear per request).
  struct PublishCounters {
    Counter* published = nullptr;
  };
  PublishCounters PublishCountersFor(const std::string& topic);
  // Appends without holding a thread while the group commit syncs: the coroutine resumes on
  // its own executor when the append is durable.
  asio::awaitable<Result<std::vector<AppendResult>>> AppendDurably(
      const std::string& topic, std::span<const RecordView> records);
  // Acks without holding a thread while the group journal syncs (kSync); `leases` must stay
  // valid until the coroutine resumes.
  asio::awaitable<Result<AckBatchResult>> AckDurably(const std::string& topic,
                                                     const std::string& group,
                                                     const std::string& consumer,
                                                     std::span<const LeaseRef> leases);
  // False (with the 400 reply) when `event` is not of the topic's type or its data fails it.
  static bool CheckEventSchema(const Event& event, size_t index, const std::string& topic,
                               const SchemaRegistry::TopicSchema& bound, uint32_t max_data_depth,
                               schema::Validator::Batch& batch, HttpResponse* reply);
  Status EnsureGroup(const std::string& topic, const std::string& group);
  Result<FetchResult> FetchAsMember(const std::string& topic, const std::string& group,
                                    const std::string& member, uint32_t max_events,
                                    uint64_t max_bytes);
  enum class DeliveryFormat { kJson, kSse, kBinary };
  std::string RenderDeliveries(const FetchResult& fetched, const std::string& topic,
                               const std::string& group, DeliveryFormat format);
  // Registers the group's ready watch (once per group) and returns how often a waiting fetch
  // or stream must call the group to keep its member alive: a third of the group's session
  // timeout (a long poll or an idle stream would otherwise outlive its own session, and its
  // leases would expire as failed attempts while its consumer is still there).
  // `renew`: the group was deleted and made again since it was watched; its old watch went
  // with it, so a new one is registered even if one is listed.
  Result<std::chrono::milliseconds> WatchGroup(const std::string& topic, const std::string& group,
                                               bool renew = false);
  // Server-side acks of a stream (auto_ack), run one AckBatch at a time on the stream's strand.
  struct AckPipe {
    explicit AckPipe(const asio::any_io_executor& ex)
        : done(ex, std::chrono::steady_clock::now() + std::chrono::hours(24)) {}
    std::vector<LeaseRef> queued;
    bool running = false;
    Status error;
    asio::steady_timer done;  // cancelled when the worker stops
  };
  asio::awaitable<void> AckWorker(std::shared_ptr<AckPipe> pipe, std::string topic,
                                  std::string group, std::string consumer);
  void CollectGroupMetrics(std::vector<MetricsRegistry::Sample>* out);
  TopicOptions OptionsForNewTopic() const;
  GroupOptions DefaultGroupOptions() const;

  std::shared_mutex publish_counters_mu_;
  std::map<std::string, PublishCounters, std::less<>> publish_counters_;
  std::array<std::atomic<Counter*>, 4> publish_mode_counters_{};  // by PublishMode

  ApiDeps d_;
  Authorizer auth_;
  std::unique_ptr<TopologyObserver> topology_;
  std::atomic<bool> ready_{true};
  std::atomic<uint32_t> subscribers_{0};
  // A stream's place under limits.max_subscribers: null when the server is at the limit;
  // otherwise held by the stream and released (gauge updated) when its last copy goes.
  std::shared_ptr<void> TakeSubscriberSlot();
  // The 429 for a stream refused at limits.max_subscribers.
  HttpReply TooManySubscribers() const;
  std::atomic<uint64_t> next_stream_id_{0};

  std::mutex watches_mu_;
  std::map<std::string, std::unique_ptr<ConsumerGroups::ReadyWatch>> watches_;
  std::map<std::string, std::chrono::milliseconds> keep_alive_;  // by group key, watches_mu_
  std::map<std::string, uint64_t> watch_epochs_;  // by group key, watches_mu_ (WatchEpoch)
  uint64_t next_watch_epoch_ = 0;                 // watches_mu_
  std::unique_ptr<Log::Watch> feed_watch_;  // watches_mu_; WatchFeed
  // The collections replicas write into (copy and bookkeeping) -> why a write is refused.
  std::map<std::string, std::string> read_only_collections_;

  Histogram* deliver_latency_;
  Gauge* subscribers_gauge_;
  // Request metrics per entry of RouteTable(), then "unmatched".
  std::vector<std::unique_ptr<RouteMetrics>> route_metrics_;
  RouteMetrics* unmatched_metrics_ = nullptr;
  Histogram* store_commit_seconds_ = nullptr;  // with the store only

  std::mutex relays_mu_;
  std::weak_ptr<RelayService> relays_;  // relays_mu_
  const LeasedWork* leases_ = nullptr;
  // Serializes the marks of the relays' dead letters (replay and discard).
  std::mutex relay_marks_mu_;
};

}  // namespace converge::server
