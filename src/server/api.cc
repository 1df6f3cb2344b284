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
#include "server/store_metrics.h"

namespace converge::server {

namespace json = boost::json;

// ---------------------------------------------------------------------------------------
// Errors

ApiError ErrorCodeFor(const Status& status) {
  // The disk refused a write (and the writer undid it): one answer on every route, retryable.
  if (IsStorageFull(status)) return {http::status::service_unavailable, "UNAVAILABLE"};
  switch (status.code()) {
    case StatusCode::kOk:
      return {http::status::ok, "OK"};
    case StatusCode::kInvalidArgument:
      return {http::status::bad_request, "INVALID_ARGUMENT"};
    case StatusCode::kOutOfRange:
      return {http::status::bad_request, "OUT_OF_RANGE"};
    case StatusCode::kUnauthenticated:
      return {http::status::unauthorized, "UNAUTHENTICATED"};
    case StatusCode::kPermissionDenied:
      return {http::status::forbidden, "PERMISSION_DENIED"};
    case StatusCode::kNotFound:
      return {http::status::not_found, "NOT_FOUND"};
    case StatusCode::kAlreadyExists:
      return {http::status::conflict, "ALREADY_EXISTS"};
    case StatusCode::kFailedPrecondition:
      return {http::status::conflict, "FAILED_PRECONDITION"};
    case StatusCode::kAborted:
      return {http::status::conflict, "ABORTED"};
    case StatusCode::kResourceExhausted:
      return {http::status::too_many_requests, "RESOURCE_EXHAUSTED"};
    case StatusCode::kCancelled:
    case StatusCode::kUnavailable:
      return {http::status::service_unavailable, "UNAVAILABLE"};
    case StatusCode::kDeadlineExceeded:
      return {http::status::gateway_timeout, "DEADLINE_EXCEEDED"};
    case StatusCode::kDataLoss:
      return {http::status::internal_server_error, "DATA_LOSS"};
    case StatusCode::kInternal:
      return {http::status::internal_server_error, "INTERNAL"};
  }
  return {http::status::internal_server_error, "INTERNAL"};
}

HttpResponse ErrorReply(const Status& status, unsigned version) {
  ApiError e = ErrorCodeFor(status);
  HttpResponse res = JsonError(e.status, e.code, status.message(), version);
  if (e.status == http::status::too_many_requests ||
      e.status == http::status::service_unavailable) {
    res.set(http::field::retry_after, "1");
  }
  return res;
}

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

std::string TopicJson(const TopicInfo& info, const std::string* groups_json) {
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
  if (groups_json) {
    out += ",\"partition_offsets\":[";
    for (size_t i = 0; i < info.partitions.size(); ++i) {
      const PartitionInfo& p = info.partitions[i];
      if (i) out += ',';
      out += "{\"partition\":" + std::to_string(p.partition) +
             ",\"start_offset\":" + std::to_string(p.start_offset) +
             ",\"end_offset\":" + std::to_string(p.end_offset) +
             ",\"size_bytes\":" + std::to_string(p.size_bytes) + "}";
    }
    out += "],\"groups\":";
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

using api_internal::AppendStoredEvent;
using api_internal::AppendUint;
using api_internal::CheckConsumerName;
using api_internal::CheckGroupName;
using api_internal::CheckTopicName;
using api_internal::Error;
using api_internal::GroupJson;
using api_internal::GroupKey;
using api_internal::JsonReply;
using api_internal::Reply;
using api_internal::SystemTopicError;
using api_internal::TopicJson;

// ---------------------------------------------------------------------------------------
// Routing

struct Api::Route {
  http::verb method;
  std::string path;
  Handler handler;
  bool authenticated;  // false: health, readiness (and metrics unless configured)
};

const std::vector<Api::Route>& Api::RouteTable() {
  static const std::vector<Route> routes = {
      {http::verb::get, "/healthz", &Api::Healthz, false},
      {http::verb::get, "/readyz", &Api::Readyz, false},
      {http::verb::get, "/metrics", &Api::Metrics, false},
      {http::verb::get, "/v1/topics", &Api::ListTopics, true},
      {http::verb::post, "/v1/topics", &Api::CreateTopic, true},
      {http::verb::get, "/v1/topics/{topic}", &Api::DescribeTopic, true},
      {http::verb::post, "/v1/topics/{topic}/events", &Api::Publish, true},
      {http::verb::post, "/v1/topics/{topic}/groups", &Api::CreateGroup, true},
      {http::verb::post, "/v1/topics/{topic}/groups/{group}/fetch", &Api::Fetch, true},
      {http::verb::post, "/v1/topics/{topic}/groups/{group}/ack", &Api::Ack, true},
      {http::verb::post, "/v1/topics/{topic}/groups/{group}/nack", &Api::Nack, true},
      {http::verb::get, "/v1/topics/{topic}/groups/{group}/stream", &Api::Stream, true},
      {http::verb::post, "/v1/topics/{topic}/groups/{group}/leave", &Api::Leave, true},
      {http::verb::get, "/v1/topics/{topic}/groups/{group}/dead-letters", &Api::ListDeadLetters,
       true},
      {http::verb::post, "/v1/topics/{topic}/groups/{group}/dead-letters/replay",
       &Api::ReplayDeadLetters, true},
  };
  return routes;
}

std::vector<RouteInfo> Api::Routes() {
  std::vector<RouteInfo> out;
  for (const Route& r : RouteTable()) {
    out.push_back({std::string(http::to_string(r.method)), r.path});
  }
  for (const auto& r : store_internal::StoreHttpHandler::Routes())
    out.push_back({r.method, r.path});
  // HandleSagaHttp's routes (converge/saga.h).
  for (const char* r : {"GET /v1/saga-definitions", "POST /v1/saga-definitions",
                        "POST /v1/sagas", "GET /v1/sagas", "GET /v1/sagas/{id}",
                        "POST /v1/sagas/{id}/cancel", "GET /v1/saga-timers",
                        "PUT /v1/sagas/{id}/timers/{kind}", "DELETE /v1/sagas/{id}/timers/{kind}"}) {
    const std::string_view route(r);
    const size_t space = route.find(' ');
    out.push_back({std::string(route.substr(0, space)), std::string(route.substr(space + 1))});
  }
  return out;
}

namespace {

std::vector<std::string_view> SplitPath(std::string_view path) {
  std::vector<std::string_view> out;
  size_t i = 0;
  while (i < path.size()) {
    if (path[i] == '/') {
      ++i;
      continue;
    }
    size_t j = path.find('/', i);
    if (j == std::string_view::npos) j = path.size();
    out.push_back(path.substr(i, j - i));
    i = j;
  }
  return out;
}

// Matches `path` against a template; fills {topic} and {group}.
bool MatchPath(std::string_view tmpl, const std::vector<std::string_view>& segments,
               std::string* topic, std::string* group) {
  std::vector<std::string_view> parts = SplitPath(tmpl);
  if (parts.size() != segments.size()) return false;
  for (size_t i = 0; i < parts.size(); ++i) {
    if (parts[i] == "{topic}") {
      *topic = std::string(segments[i]);
    } else if (parts[i] == "{group}") {
      *group = std::string(segments[i]);
    } else if (parts[i] != segments[i]) {
      return false;
    }
  }
  return true;
}

// One name or value of a query string, percent-decoded. A malformed escape, or one that
// decodes to a control byte (NUL cuts a C string short: "limit=1%00x" would read as 1), is
// InvalidArgument: no route takes control bytes in its query.
Result<std::string> DecodeQueryPart(std::string_view part, std::string_view whole) {
  Result<std::string> decoded = PercentDecode(part);
  if (!decoded.ok()) {
    return InvalidArgumentError("malformed query string (" +
                                std::string(decoded.status().message()) + "): '" +
                                std::string(whole.substr(0, 200)) + "'");
  }
  for (char c : *decoded) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7f) {
      return InvalidArgumentError("query string has a control character: '" +
                                  std::string(whole.substr(0, 200)) + "'");
    }
  }
  return decoded;
}

Result<std::vector<std::pair<std::string, std::string>>> ParseQuery(std::string_view q) {
  std::vector<std::pair<std::string, std::string>> out;
  const std::string_view whole = q;
  while (!q.empty()) {
    size_t amp = q.find('&');
    std::string_view item = q.substr(0, amp);
    q = amp == std::string_view::npos ? std::string_view() : q.substr(amp + 1);
    if (item.empty()) continue;
    size_t eq = item.find('=');
    std::string_view k = item.substr(0, eq);
    std::string_view v = eq == std::string_view::npos ? std::string_view() : item.substr(eq + 1);
    std::string value(v);
    std::replace(value.begin(), value.end(), '+', ' ');
    CONVERGE_ASSIGN_OR_RETURN(std::string key, DecodeQueryPart(k, whole));
    CONVERGE_ASSIGN_OR_RETURN(std::string val, DecodeQueryPart(value, whole));
    out.emplace_back(std::move(key), std::move(val));
  }
  return out;
}

// The query string of a request target ("" without one), checked as ParseQuery checks it:
// the store and saga routes parse their own parameters, after this.
Status CheckQuery(std::string_view target) {
  const size_t qmark = target.find('?');
  if (qmark == std::string_view::npos) return Status::Ok();
  return ParseQuery(target.substr(qmark + 1)).status();
}

}  // namespace

Api::Api(ApiDeps deps) : d_(deps), auth_(deps.config->tokens) {
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
  for (const Route& r : RouteTable()) {
    route_metrics_.push_back(std::make_unique<RouteMetrics>(d_.metrics, r.path));
  }
  route_metrics_.push_back(std::make_unique<RouteMetrics>(d_.metrics, "unmatched"));
  unmatched_metrics_ = route_metrics_.back().get();
  route_metrics_.push_back(std::make_unique<RouteMetrics>(d_.metrics, "/v1/collections"));
  store_metrics_ = route_metrics_.back().get();
  route_metrics_.push_back(std::make_unique<RouteMetrics>(d_.metrics, "/v1/sagas"));
  saga_metrics_ = route_metrics_.back().get();
}

Api::RouteMetrics::RouteMetrics(MetricsRegistry* registry, std::string label)
    : registry_(registry), label_(std::move(label)) {}

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
}

asio::awaitable<HttpReply> Api::Handle(HttpRequest& request) {
  const int64_t start = d_.env->clock().NowMonotonicNanos();
  std::string_view target(request.target().data(), request.target().size());
  size_t qmark = target.find('?');
  std::string_view path = target.substr(0, qmark);
  if (d_.store != nullptr && store_internal::StoreHttpHandler::Matches(path)) {
    HttpReply store_reply = co_await HandleStore(request);
    RecordRequest(*store_metrics_, store_reply, start);
    co_return store_reply;
  }
  if (d_.sagas != nullptr && IsSagaHttpTarget(path)) {
    HttpReply saga_reply = co_await HandleSagas(request);
    RecordRequest(*saga_metrics_, saga_reply, start);
    co_return saga_reply;
  }
  std::vector<std::string_view> segments = SplitPath(path);

  const Route* route = nullptr;
  bool path_known = false;
  std::string allow;
  std::string topic, group;
  for (const Route& r : RouteTable()) {
    std::string t, g;
    if (!MatchPath(r.path, segments, &t, &g)) continue;
    path_known = true;
    if (!allow.empty()) allow += ", ";
    allow += std::string(http::to_string(r.method));
    if (r.method == request.method()) {
      route = &r;
      topic = std::move(t);
      group = std::move(g);
      break;
    }
  }
  HttpReply reply;
  RouteMetrics& metrics = route ? *route_metrics_[static_cast<size_t>(route - RouteTable().data())]
                                : *unmatched_metrics_;
  if (!route) {
    if (path_known) {
      reply = Error(http::status::method_not_allowed, "METHOD_NOT_ALLOWED",
                    "method " + std::string(request.method_string()) + " is not allowed on " +
                        std::string(path) + " (allowed: " + allow + ")");
      reply.response.set(http::field::allow, allow);
    } else {
      reply = Error(http::status::not_found, "NOT_FOUND", "no such endpoint: " + std::string(path));
    }
  } else {
    Call call{request, {}, std::move(topic), std::move(group), nullptr};
    Result<std::vector<std::pair<std::string, std::string>>> query =
        ParseQuery(qmark == std::string_view::npos ? std::string_view() : target.substr(qmark + 1));
    bool needs_auth = route->authenticated ||
                      (route->handler == &Api::Metrics && d_.config->metrics_require_token);
    Result<const Principal*> principal = auth_.Authenticate(request[http::field::authorization]);
    if (needs_auth && !principal.ok()) {
      reply = Error(principal.status());
      reply.response.set(http::field::www_authenticate, "Bearer realm=\"converge\"");
    } else if (!query.ok()) {
      reply = Error(query.status());
    } else {
      call.query = std::move(query).value();
      call.principal = principal.ok() ? *principal : nullptr;
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

asio::awaitable<HttpReply> Api::HandleStore(HttpRequest& request) {
  Result<const Principal*> principal = auth_.Authenticate(request[http::field::authorization]);
  if (!principal.ok()) {
    HttpReply reply = Error(principal.status());
    reply.response.set(http::field::www_authenticate, "Bearer realm=\"converge\"");
    co_return reply;
  }
  if (Status q = CheckQuery(std::string_view(request.target().data(), request.target().size()));
      !q.ok()) {
    co_return Error(q);
  }
  auto header = [&](auto field) -> std::optional<std::string_view> {
    auto it = request.find(field);
    if (it == request.end()) return std::nullopt;
    return std::string_view(it->value().data(), it->value().size());
  };
  // A precondition, TTL or media type given twice would be read as the first one only: an
  // `If-Match: "3"` next to `If-Match: *` must not quietly become either.
  for (const auto& [field, name] : {std::pair{http::field::if_match, "If-Match"},
                                    std::pair{http::field::if_none_match, "If-None-Match"},
                                    std::pair{http::field::content_type, "Content-Type"}}) {
    if (request.count(field) > 1) {
      co_return Error(http::status::bad_request, "INVALID_ARGUMENT",
                      std::string("header '") + name + "' appears more than once");
    }
  }
  if (request.count("Converge-TTL-Ms") > 1) {
    co_return Error(http::status::bad_request, "INVALID_ARGUMENT",
                    "header 'Converge-TTL-Ms' appears more than once");
  }
  store_internal::StoreHttpRequest r;
  r.method = std::string_view(request.method_string().data(), request.method_string().size());
  r.target = std::string_view(request.target().data(), request.target().size());
  r.if_match = header(http::field::if_match);
  r.if_none_match = header(http::field::if_none_match);
  r.ttl_ms = header("Converge-TTL-Ms");
  r.content_type = header(http::field::content_type);
  r.body = request.body();
  // With auth disabled every request is the anonymous principal, which may do everything.
  r.caller = Caller{(*principal)->service, (*principal)->admin || (*principal)->anonymous};
  auto to_reply = [&request](store_internal::StoreHttpResponse res) {
    HttpResponse out{static_cast<http::status>(res.status), request.version()};
    for (auto& [name, value] : res.headers) out.set(name, value);
    out.body() = std::move(res.body);
    out.prepare_payload();
    return Reply(std::move(out));
  };
  // A durable document read is answered right here: no hop through the executor.
  store_internal::StoreHttpHandler* store = d_.store;
  if (std::optional<store_internal::StoreHttpResponse> read = store->TryRead(r)) {
    co_return to_reply(std::move(*read));
  }
  // Writes, and reads of a change still being synced, are handed to the store right here on
  // the I/O thread when that cannot block (the store syncs on the pool, see Server::Open) and
  // resume this coroutine when durable; the rest runs on the pool. The handler reads `r` (in
  // this frame) only until it calls done or returns.
  const bool write = store_internal::StoreHttpHandler::IsDocumentWrite(r.method, r.target);
  const int64_t write_start = write ? d_.env->clock().NowMonotonicNanos() : 0;
  BlockingPool* pool = d_.pool;
  auto job = [store, pool, &r](std::function<void(store_internal::StoreHttpResponse)> done) {
    if (store->TryHandleInline(r, done)) return;
    pool->Post(
        [store, &r, done = std::move(done)]() mutable { store->HandleAsync(r, std::move(done)); });
  };
  store_internal::StoreHttpResponse res =
      co_await BlockingPool::RunInline<store_internal::StoreHttpResponse>(std::move(job));
  if (write && res.status >= 200 && res.status < 300) {
    store_commit_seconds_->Observe(
        static_cast<double>(d_.env->clock().NowMonotonicNanos() - write_start) * 1e-9);
  }
  co_return to_reply(std::move(res));
}

asio::awaitable<HttpReply> Api::HandleSagas(HttpRequest& request) {
  Result<const Principal*> principal = auth_.Authenticate(request[http::field::authorization]);
  if (!principal.ok()) {
    HttpReply reply = Error(principal.status());
    reply.response.set(http::field::www_authenticate, "Bearer realm=\"converge\"");
    co_return reply;
  }
  if (Status q = CheckQuery(std::string_view(request.target().data(), request.target().size()));
      !q.ok()) {
    co_return Error(q);
  }
  const Principal* who = *principal;
  // A stopped orchestrator (a failed saga-log write it could not undo) holds state its log
  // does not: every saga route, reads included, says a restart is needed.
  if (Status stopped = d_.sagas->Stopped(); !stopped.ok()) {
    co_return Error(http::status::service_unavailable, "UNAVAILABLE", stopped.message());
  }
  SagaHttpRequest r;
  r.method = std::string(request.method_string());
  r.target = std::string(request.target());
  r.body = request.body();
  SagaOrchestrator* sagas = d_.sagas;
  // Admins (and every request with auth disabled) may use every saga route; HandleSagaHttp
  // authorizes other services itself (it must give one answer for what they may not see and
  // what does not exist). `r` and `who` live in this coroutine frame until the job is done.
  // (A lambda with an init-capture built inside the co_await expression is destroyed wrongly
  // by GCC 12.)
  auto job = [sagas, &r, who]() -> SagaHttpResponse {
    SagaCaller caller;
    caller.admin = who->admin;
    caller.service = who->service;
    caller.may_publish = [who](std::string_view topic) { return who->CanPublish(topic); };
    return HandleSagaHttp(*sagas, r, caller);
  };
  // A new definition may name new command topics (refused to HTTP publishes).
  const bool may_define = r.method != "GET" && r.target.rfind("/v1/saga-definitions", 0) == 0;
  // The orchestrator appends commands to every participant topic: a definition may not make
  // it write into a topic another part of converge owns (the store's feed, the relays' dead
  // letters; '_' names the definition itself refuses). Only admins define (others get
  // HandleSagaHttp's answer); a body that does not parse gets that answer too.
  if (may_define && r.method == "POST" && who->admin) {
    if (Result<SagaDefinition> def = ParseSagaDefinition(r.body); def.ok()) {
      for (const SagaStepDefinition& step : def->steps) {
        if (std::string owner = d_.system_topics->OwnerOfOutsideSagas(step.participant);
            !owner.empty()) {
          co_return SystemTopicError(step.participant, owner,
                                     "sending saga commands to it (step '" + step.name +
                                         "' names it as its participant)");
        }
      }
    }
  }
  SagaHttpResponse res = co_await d_.pool->Run(std::move(job));
  if (may_define) d_.system_topics->DefinitionsChanged();
  HttpResponse out =
      JsonReply(static_cast<http::status>(res.status), std::move(res.body), request.version());
  if (!res.allow.empty()) out.set(http::field::allow, res.allow);
  // 503 here is a batch the saga log refused and undid (a full disk): retry, like every route.
  if (res.status == 503 || res.status == 429) out.set(http::field::retry_after, "1");
  co_return Reply(std::move(out));
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
      checks.push_back({"store",
                        "the store refuses every call until it is reopened (restart the "
                        "server): ",
                        d_.store->store().Health()});
    }
    if (d_.sagas != nullptr) checks.push_back({"sagas", "", d_.sagas->Health()});
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
