// API v1 of `converge serve`: routes HTTP requests to the log, the consumer groups and the
// shared store (whose routes are served by src/store/http_handler.h) and the saga
// orchestrator (whose routes are HandleSagaHttp in converge/saga.h).
// docs/api/openapi.yaml describes every route; server_unit_test checks the two agree.
//
// Contract
// - Authentication first (401), then authorization (403), then input (400/413/415), then
//   existence (404). A refused request never returns data and changes nothing.
// - Every error reply is JSON {"code": ..., "message": ...} (see ErrorCodeFor).
// - Blocking storage calls run on the BlockingPool; the coroutine resumes on its connection's
//   strand. Long polls and streams wait on the WakeupHub, woken by the groups' ready watch.
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
#include <string>
#include <vector>

#include "converge/consumer_group.h"
#include "converge/env.h"
#include "converge/log.h"
#include "converge/saga.h"
#include "server/auth.h"
#include "server/blocking_pool.h"
#include "server/config.h"
#include "server/http_server.h"
#include "server/metrics.h"
#include "server/system_topics.h"
#include "server/wakeup_hub.h"
#include "store/http_handler.h"

namespace converge::server {

struct ApiDeps {
  const ServerConfig* config = nullptr;
  Env* env = nullptr;
  Log* log = nullptr;
  ConsumerGroups* groups = nullptr;
  MetricsRegistry* metrics = nullptr;
  BlockingPool* pool = nullptr;
  WakeupHub* hub = nullptr;
  // The shared store's HTTP layer (/v1/collections/...); null when the store is disabled.
  store_internal::StoreHttpHandler* store = nullptr;
  // The saga orchestrator (/v1/sagas, /v1/saga-definitions, /v1/saga-timers); null when
  // sagas are disabled.
  SagaOrchestrator* sagas = nullptr;
  // The topics converge writes itself (refused to HTTP publishes).
  SystemTopics* system_topics = nullptr;
};

// One route: method and path template ("/v1/topics/{topic}").
struct RouteInfo {
  std::string method;
  std::string path;
};

class Api {
 public:
  explicit Api(ApiDeps deps);
  ~Api();

  asio::awaitable<HttpReply> Handle(HttpRequest& request);

  // Readiness turns false; streams and long polls end (the WakeupHub is shut down by the
  // caller).
  void BeginShutdown() { ready_.store(false); }
  // Drops the ready watches; call before the ConsumerGroups is destroyed.
  void ReleaseWatches();

  static std::vector<RouteInfo> Routes();

 private:
  struct Call;
  using Handler = asio::awaitable<HttpReply> (Api::*)(Call&);
  struct Route;
  static const std::vector<Route>& RouteTable();

  // /v1/collections/...: authenticates, then runs the store's handler (inline on the I/O
  // thread when that cannot block, otherwise on the pool).
  asio::awaitable<HttpReply> HandleStore(HttpRequest& request);
  // /v1/sagas..., /v1/saga-definitions, /v1/saga-timers: authenticates and authorizes
  // (HandleSagaHttp with the caller, for non-admin services) and runs the saga routes on the
  // pool.
  asio::awaitable<HttpReply> HandleSagas(HttpRequest& request);

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
  asio::awaitable<HttpReply> Stream(Call& call);
  asio::awaitable<HttpReply> Leave(Call& call);
  asio::awaitable<HttpReply> ListDeadLetters(Call& call);
  asio::awaitable<HttpReply> ReplayDeadLetters(Call& call);

  // Blocking helpers (run on the pool).
  HttpResponse DoPublish(const HttpRequest& request, const std::string& topic);
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
  Result<std::chrono::milliseconds> WatchGroup(const std::string& topic, const std::string& group);
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

  ApiDeps d_;
  Authorizer auth_;
  std::atomic<bool> ready_{true};
  std::atomic<uint32_t> subscribers_{0};
  std::atomic<uint64_t> next_stream_id_{0};

  std::mutex watches_mu_;
  std::map<std::string, std::unique_ptr<ConsumerGroups::ReadyWatch>> watches_;
  std::map<std::string, std::chrono::milliseconds> keep_alive_;  // by group key, watches_mu_

  Histogram* deliver_latency_;
  Gauge* subscribers_gauge_;
  // Request metrics per entry of RouteTable(), then "unmatched", the store's and the sagas'
  // routes.
  std::vector<std::unique_ptr<RouteMetrics>> route_metrics_;
  RouteMetrics* unmatched_metrics_ = nullptr;
  RouteMetrics* store_metrics_ = nullptr;
  RouteMetrics* saga_metrics_ = nullptr;
  Histogram* store_commit_seconds_ = nullptr;  // with the store only
};

// The stable error code of a status in API replies and its HTTP status.
struct ApiError {
  http::status status;
  std::string_view code;
};
ApiError ErrorCodeFor(const Status& status);

// A JSON error reply for a non-OK status.
HttpResponse ErrorReply(const Status& status, unsigned version = 11);

}  // namespace converge::server
