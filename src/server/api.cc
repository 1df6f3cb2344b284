#include "server/api.h"

#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>
#include <algorithm>
#include <chrono>

#include "server/cloudevents_http.h"
#include "server/json_util.h"

namespace converge::server {

namespace json = boost::json;

// ---------------------------------------------------------------------------------------
// Errors

ApiError ErrorCodeFor(const Status& status) {
  switch (status.code()) {
    case StatusCode::kOk: return {http::status::ok, "OK"};
    case StatusCode::kInvalidArgument: return {http::status::bad_request, "INVALID_ARGUMENT"};
    case StatusCode::kOutOfRange: return {http::status::bad_request, "OUT_OF_RANGE"};
    case StatusCode::kUnauthenticated: return {http::status::unauthorized, "UNAUTHENTICATED"};
    case StatusCode::kPermissionDenied: return {http::status::forbidden, "PERMISSION_DENIED"};
    case StatusCode::kNotFound: return {http::status::not_found, "NOT_FOUND"};
    case StatusCode::kAlreadyExists: return {http::status::conflict, "ALREADY_EXISTS"};
    case StatusCode::kFailedPrecondition:
      return {http::status::conflict, "FAILED_PRECONDITION"};
    case StatusCode::kAborted: return {http::status::conflict, "ABORTED"};
    case StatusCode::kResourceExhausted:
      return {http::status::too_many_requests, "RESOURCE_EXHAUSTED"};
    case StatusCode::kCancelled:
    case StatusCode::kUnavailable: return {http::status::service_unavailable, "UNAVAILABLE"};
    case StatusCode::kDeadlineExceeded:
      return {http::status::gateway_timeout, "DEADLINE_EXCEEDED"};
    case StatusCode::kDataLoss: return {http::status::internal_server_error, "DATA_LOSS"};
    case StatusCode::kInternal: return {http::status::internal_server_error, "INTERNAL"};
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

namespace {

HttpResponse JsonReply(http::status status, std::string body, unsigned version = 11) {
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
  out += ",\"dead_letters\":" + std::to_string(g.dead_letters);
  out += ",\"dead_letters_replayed\":" + std::to_string(g.dead_letters_replayed);
  out += ",\"partitions\":[";
  for (size_t i = 0; i < g.partitions.size(); ++i) {
    const PartitionDescription& p = g.partitions[i];
    if (i) out += ',';
    out += "{\"partition\":" + std::to_string(p.partition) +
           ",\"committed_offset\":" + std::to_string(p.committed) +
           ",\"end_offset\":" + std::to_string(p.end_offset) +
           ",\"lag\":" + std::to_string(p.lag) + ",\"in_flight\":" + std::to_string(p.in_flight) +
           ",\"delayed\":" + std::to_string(p.delayed) + "}";
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
  AppendJsonString(out, event.ok() ? "cannot encode the stored event"
                                   : std::string(event.status().message()));
}

}  // namespace

// ---------------------------------------------------------------------------------------
// Routing

struct Api::Call {
  HttpRequest& req;
  std::vector<std::pair<std::string, std::string>> query;
  std::string topic;
  std::string group;
  const Principal* principal = nullptr;

  std::optional<std::string> Query(std::string_view name) const {
    for (const auto& [k, v] : query) {
      if (k == name) return v;
    }
    return std::nullopt;
  }
};

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

Result<std::vector<std::pair<std::string, std::string>>> ParseQuery(std::string_view q) {
  std::vector<std::pair<std::string, std::string>> out;
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
    Result<std::string> key = PercentDecode(k);
    Result<std::string> val = PercentDecode(value);
    if (!key.ok() || !val.ok()) return InvalidArgumentError("malformed query string");
    out.emplace_back(std::move(key).value(), std::move(val).value());
  }
  return out;
}

}  // namespace

Api::Api(ApiDeps deps) : d_(deps), auth_(deps.config->tokens) {
  deliver_latency_ = d_.metrics->GetHistogram(
      "converge_publish_to_deliver_seconds",
      "Time from append to first delivery of an event to a consumer.", {},
      LatencyBucketsSeconds());
  subscribers_gauge_ =
      d_.metrics->GetGauge("converge_stream_subscribers", "Open streaming subscriptions.");
  d_.metrics->AddCollector(
      [this](std::vector<MetricsRegistry::Sample>* out) { CollectGroupMetrics(out); });
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
  std::string route_label = route ? route->path : "unmatched";
  if (!route) {
    if (path_known) {
      reply = Error(http::status::method_not_allowed, "METHOD_NOT_ALLOWED",
                    "method " + std::string(request.method_string()) + " is not allowed on " +
                        std::string(path) + " (allowed: " + allow + ")");
      reply.response.set(http::field::allow, allow);
    } else {
      reply = Error(http::status::not_found, "NOT_FOUND",
                    "no such endpoint: " + std::string(path));
    }
  } else {
    Call call{request, {}, std::move(topic), std::move(group), nullptr};
    Result<std::vector<std::pair<std::string, std::string>>> query =
        ParseQuery(qmark == std::string_view::npos ? std::string_view() : target.substr(qmark + 1));
    bool needs_auth =
        route->authenticated || (route->handler == &Api::Metrics && d_.config->metrics_require_token);
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
  const double seconds =
      static_cast<double>(d_.env->clock().NowMonotonicNanos() - start) * 1e-9;
  const std::string code = std::to_string(static_cast<unsigned>(reply.response.result_int()));
  d_.metrics
      ->GetCounter("converge_http_requests_total", "HTTP requests by route and status code.",
                   {{"route", route_label}, {"code", code}})
      ->Add();
  if (!reply.stream) {
    d_.metrics
        ->GetHistogram("converge_http_request_duration_seconds",
                       "Time to handle a request (excluding streams).", {{"route", route_label}},
                       LatencyBucketsSeconds())
        ->Observe(seconds);
  }
  co_return reply;
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
  co_return Reply(JsonReply(http::status::ok, "{\"status\":\"ready\"}"));
}

asio::awaitable<HttpReply> Api::Metrics(Call&) {
  // Collectors describe groups (storage reads): render on the pool.
  std::string text = co_await d_.pool->Run([this] { return d_.metrics->Render(); });
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
      out->push_back({"converge_topic_end_offset", "Sum of the end offsets of a topic's partitions.",
                      "gauge", {{"topic", topic}}, static_cast<double>(end)});
    }
    for (const std::string& group : d_.groups->ListGroups(topic)) {
      Result<GroupDescription> g = d_.groups->DescribeGroup(topic, group);
      if (!g.ok()) continue;
      Labels labels = {{"topic", topic}, {"group", group}};
      out->push_back({"converge_consumer_lag", "Events not yet consumed by a group.", "gauge",
                      labels, static_cast<double>(g->total_lag)});
      uint64_t in_flight = 0;
      for (const PartitionDescription& p : g->partitions) in_flight += p.in_flight;
      out->push_back({"converge_consumer_in_flight", "Events leased and not yet acked.",
                      "gauge", labels, static_cast<double>(in_flight)});
      out->push_back({"converge_dead_letters", "Events in a group's dead-letter topic.",
                      "gauge", labels, static_cast<double>(g->dead_letters)});
      out->push_back({"converge_dead_letters_replayed", "Dead letters replayed.", "gauge",
                      labels, static_cast<double>(g->dead_letters_replayed)});
    }
  }
}

// ---------------------------------------------------------------------------------------
// Topics

TopicOptions Api::OptionsForNewTopic() const {
  TopicOptions t = d_.config->topic_defaults;
  // Room for the whole encoded event plus its record id and key (both come from the event).
  uint64_t record = 2ull * d_.config->limits.max_event_bytes + 4096;
  t.max_record_bytes = static_cast<uint32_t>(std::min<uint64_t>(record, UINT32_MAX));
  return t;
}

asio::awaitable<HttpReply> Api::ListTopics(Call& call) {
  const Principal* who = call.principal;
  std::string body = co_await d_.pool->Run([this, who] {
    std::string out = "{\"topics\":[";
    bool first = true;
    for (const std::string& name : d_.log->ListTopics()) {
      if (name.empty() || name.front() == '_' || !who->CanSee(name)) continue;
      Result<TopicInfo> info = d_.log->DescribeTopic(name);
      if (!info.ok()) continue;  // deleted meanwhile
      if (!first) out += ',';
      first = false;
      out += TopicJson(*info, nullptr);
    }
    out += "]}";
    return out;
  });
  co_return Reply(JsonReply(http::status::ok, std::move(body)));
}

asio::awaitable<HttpReply> Api::CreateTopic(Call& call) {
  if (!call.principal->admin) co_return Error(NotAllowed(*call.principal, "create topics", ""));
  Result<json::object> body = ParseJsonObject(call.req.body());
  if (!body.ok()) co_return Error(http::status::bad_request, "INVALID_JSON", body.status().message());
  const json::object& o = *body;
  Status s = CheckFields(o, {"name", "partitions", "durability", "retention_max_bytes",
                             "retention_max_age_ms", "sync_interval_ms", "dedup_window_ms"});
  std::string name, durability;
  TopicOptions options = OptionsForNewTopic();
  uint64_t partitions = options.partitions, retention_bytes = options.retention_max_bytes;
  int64_t retention_age = options.retention_max_age_ms, sync_interval = options.sync_interval_ms,
          dedup_window = options.dedup_window_ms;
  if (s.ok()) s = ReadString(o, "name", &name);
  if (s.ok()) s = ReadUint(o, "partitions", 1, 1024, &partitions);
  if (s.ok()) s = ReadString(o, "durability", &durability);
  if (s.ok()) s = ReadUint(o, "retention_max_bytes", 0, INT64_MAX, &retention_bytes);
  if (s.ok()) s = ReadInt(o, "retention_max_age_ms", 0, INT64_MAX, &retention_age);
  if (s.ok()) s = ReadInt(o, "sync_interval_ms", 1, 3'600'000, &sync_interval);
  if (s.ok()) s = ReadInt(o, "dedup_window_ms", 0, INT64_MAX, &dedup_window);
  if (s.ok() && name.empty()) s = InvalidArgumentError("field 'name' is required");
  if (s.ok()) s = CheckTopicName(name);
  if (s.ok() && !durability.empty()) {
    Result<Durability> d = ParseDurability(durability);
    if (d.ok()) {
      options.durability = *d;
    } else {
      s = InvalidArgumentError("field 'durability' must be fsync, interval or none");
    }
  }
  if (!s.ok()) co_return Error(s);
  options.partitions = static_cast<uint32_t>(partitions);
  options.retention_max_bytes = retention_bytes;
  options.retention_max_age_ms = retention_age;
  options.sync_interval_ms = sync_interval;
  options.dedup_window_ms = dedup_window;
  Result<TopicInfo> created = co_await d_.pool->Run([this, name, options]() -> Result<TopicInfo> {
    CONVERGE_RETURN_IF_ERROR(d_.log->CreateTopic(name, options));
    return d_.log->DescribeTopic(name);
  });
  if (!created.ok()) co_return Error(created.status());
  std::string groups = "[]";
  HttpResponse res = JsonReply(http::status::created, TopicJson(*created, &groups));
  res.set(http::field::location, "/v1/topics/" + name);
  co_return Reply(std::move(res));
}

asio::awaitable<HttpReply> Api::DescribeTopic(Call& call) {
  if (!call.principal->CanSee(call.topic)) {
    co_return Error(NotAllowed(*call.principal, "see", call.topic));
  }
  if (Status s = CheckTopicName(call.topic); !s.ok()) co_return Error(s);
  const std::string topic = call.topic;
  Result<std::string> body = co_await d_.pool->Run([this, topic]() -> Result<std::string> {
    CONVERGE_ASSIGN_OR_RETURN(TopicInfo info, d_.log->DescribeTopic(topic));
    std::string groups = "[";
    bool first = true;
    for (const std::string& g : d_.groups->ListGroups(topic)) {
      Result<GroupDescription> desc = d_.groups->DescribeGroup(topic, g);
      if (!desc.ok()) continue;
      if (!first) groups += ',';
      first = false;
      groups += GroupJson(*desc);
    }
    groups += ']';
    return TopicJson(info, &groups);
  });
  if (!body.ok()) co_return Error(body.status());
  co_return Reply(JsonReply(http::status::ok, std::move(body).value()));
}

// ---------------------------------------------------------------------------------------
// Publish

asio::awaitable<HttpReply> Api::Publish(Call& call) {
  if (!call.principal->CanPublish(call.topic)) {
    co_return Error(NotAllowed(*call.principal, "publish to", call.topic));
  }
  if (Status s = CheckTopicName(call.topic); !s.ok()) co_return Error(s);
  const std::string topic = call.topic;
  const HttpRequest& req = call.req;
  // Decoding, encoding and the append (which waits for fsync) all run on the pool, so the io
  // threads only frame HTTP and concurrent publishers share group commits.
  HttpResponse res = co_await d_.pool->Run([this, &req, topic] { return DoPublish(req, topic); });
  co_return Reply(std::move(res));
}

HttpResponse Api::DoPublish(const HttpRequest& req, const std::string& topic) {
  const LimitsConfig& limits = d_.config->limits;
  DecodeOptions decode;
  decode.max_event_bytes = limits.max_event_bytes;
  decode.max_batch_events = limits.max_batch_events;
  Result<DecodedPublish> decoded = DecodePublishRequest(req, decode);
  if (!decoded.ok()) {
    const Status& s = decoded.status();
    if (s.code() == StatusCode::kResourceExhausted) {
      return JsonError(http::status::payload_too_large, "PAYLOAD_TOO_LARGE", s.message());
    }
    if (s.code() == StatusCode::kFailedPrecondition) {
      return JsonError(http::status::unsupported_media_type, "UNSUPPORTED_MEDIA_TYPE",
                       s.message());
    }
    return JsonError(http::status::bad_request, "INVALID_EVENT", s.message());
  }
  std::vector<Event>& events = decoded->events;
  if (events.empty()) {
    return JsonError(http::status::bad_request, "INVALID_EVENT", "the batch holds no events");
  }
  // Encode everything first: one bad event rejects the request before anything is appended.
  std::string values;
  std::vector<size_t> ends;
  std::vector<std::string> ids;
  ends.reserve(events.size());
  ids.reserve(events.size());
  for (size_t i = 0; i < events.size(); ++i) {
    size_t before = values.size();
    Status s = EncodeBinary(events[i], &values);
    std::string where = events.size() > 1 ? "event[" + std::to_string(i) + "]: " : "";
    if (!s.ok()) return JsonError(http::status::bad_request, "INVALID_EVENT", where + std::string(s.message()));
    if (values.size() - before > limits.max_event_bytes) {
      return JsonError(http::status::payload_too_large, "PAYLOAD_TOO_LARGE",
                       where + "event is " + std::to_string(values.size() - before) +
                           " bytes encoded, more than limits.max_event_bytes (" +
                           std::to_string(limits.max_event_bytes) + ")");
    }
    ends.push_back(values.size());
    ids.push_back(RecordIdFor(events[i]));
  }
  std::vector<RecordView> records(events.size());
  for (size_t i = 0; i < events.size(); ++i) {
    size_t begin = i == 0 ? 0 : ends[i - 1];
    records[i].id = ids[i];
    records[i].key = PartitionKeyFor(events[i]);
    records[i].value = std::string_view(values).substr(begin, ends[i] - begin);
  }
  Result<std::vector<AppendResult>> appended = d_.log->Append(topic, records);
  if (!appended.ok() && appended.status().code() == StatusCode::kNotFound &&
      d_.config->auto_create_topics) {
    Status created = d_.log->CreateTopic(topic, OptionsForNewTopic());
    if (!created.ok() && created.code() != StatusCode::kAlreadyExists) {
      return ErrorReply(created);
    }
    appended = d_.log->Append(topic, records);
  }
  if (!appended.ok()) {
    const Status& s = appended.status();
    if (s.code() == StatusCode::kNotFound) {
      return JsonError(http::status::not_found, "NOT_FOUND",
                       "topic '" + topic + "' does not exist (create it with POST /v1/topics)");
    }
    if (s.code() == StatusCode::kInvalidArgument) {
      return JsonError(http::status::bad_request, "INVALID_EVENT", s.message());
    }
    return ErrorReply(s);
  }
  uint64_t duplicates = 0;
  std::string body = "{\"results\":[";
  body.reserve(body.size() + appended->size() * 64);
  for (size_t i = 0; i < appended->size(); ++i) {
    const AppendResult& r = (*appended)[i];
    if (i) body += ',';
    body += "{\"id\":";
    AppendJsonString(&body, events[i].id());
    body += ",\"partition\":";
    AppendUint(&body, r.partition);
    body += ",\"offset\":";
    AppendUint(&body, r.offset);
    body += r.duplicate ? ",\"duplicate\":true}" : ",\"duplicate\":false}";
    duplicates += r.duplicate ? 1 : 0;
  }
  body += "]}";
  d_.metrics
      ->GetCounter("converge_events_published_total", "Events appended by publish requests.",
                   {{"topic", topic}})
      ->Add(appended->size() - duplicates);
  if (duplicates) {
    d_.metrics
        ->GetCounter("converge_events_duplicate_total",
                     "Published events recognized as duplicates (not appended again).",
                     {{"topic", topic}})
        ->Add(duplicates);
  }
  d_.metrics
      ->GetCounter("converge_publish_requests_total", "Publish requests by content mode.",
                   {{"mode", std::string(PublishModeName(decoded->mode))}})
      ->Add();
  return JsonReply(http::status::ok, std::move(body));
}

// ---------------------------------------------------------------------------------------
// Consumer groups

GroupOptions Api::DefaultGroupOptions() const {
  GroupOptions g;
  g.lease_ms = d_.config->groups.lease_ms;
  g.max_deliveries = d_.config->groups.max_deliveries;
  g.max_nack_delay_ms = d_.config->groups.max_nack_delay_ms;
  return g;
}

Status Api::EnsureGroup(const std::string& topic, const std::string& group) {
  Status s = d_.groups->CreateGroup(topic, group, DefaultGroupOptions());
  if (s.code() == StatusCode::kAlreadyExists) return Status::Ok();
  if (s.code() == StatusCode::kNotFound) {
    return NotFoundError("topic '" + topic + "' does not exist");
  }
  return s;
}

Status Api::WatchGroup(const std::string& topic, const std::string& group) {
  const std::string key = GroupKey(topic, group);
  std::lock_guard lock(watches_mu_);
  if (watches_.count(key)) return Status::Ok();
  WakeupHub* hub = d_.hub;
  CONVERGE_ASSIGN_OR_RETURN(std::unique_ptr<ConsumerGroups::ReadyWatch> watch,
                            d_.groups->WatchReady(topic, group, [hub, key] { hub->Notify(key); }));
  watches_.emplace(key, std::move(watch));
  return Status::Ok();
}

Result<FetchResult> Api::FetchAsMember(const std::string& topic, const std::string& group,
                                       const std::string& member, uint32_t max_events,
                                       uint64_t max_bytes) {
  Result<FetchResult> r = d_.groups->Fetch(topic, group, member, max_events, max_bytes);
  if (r.ok() || r.status().code() != StatusCode::kFailedPrecondition) return r;
  // Not (or no longer) a member: HTTP consumers are stateless, so join on their behalf.
  CONVERGE_RETURN_IF_ERROR(d_.groups->Join(topic, group, member).status());
  return d_.groups->Fetch(topic, group, member, max_events, max_bytes);
}

std::string Api::RenderDeliveries(const FetchResult& fetched, const std::string& topic,
                                  const std::string& group, bool sse) {
  const int64_t now_micros = d_.env->clock().NowWallMicros();
  std::string out;
  if (!sse) out = "{\"deliveries\":[";
  for (size_t i = 0; i < fetched.deliveries.size(); ++i) {
    const Delivery& d = fetched.deliveries[i];
    if (d.attempt == 1 && now_micros >= d.timestamp_micros) {
      deliver_latency_->Observe(static_cast<double>(now_micros - d.timestamp_micros) * 1e-6);
    }
    if (sse) {
      out += "event: delivery\nid: " + std::to_string(d.partition) + ":" +
             std::to_string(d.offset) + ":" + std::to_string(d.lease_id) + "\ndata: ";
    } else if (i) {
      out += ',';
    }
    out += "{\"partition\":" + std::to_string(d.partition) +
           ",\"offset\":" + std::to_string(d.offset) +
           ",\"lease_id\":" + std::to_string(d.lease_id) +
           ",\"attempt\":" + std::to_string(d.attempt) +
           ",\"lease_expires_at_ms\":" + std::to_string(d.lease_expires_at_micros / 1000) +
           ",\"event\":";
    AppendStoredEvent(&out, d.value);
    out += '}';
    if (sse) out += "\n\n";
  }
  if (!sse) out += "]}";
  d_.metrics
      ->GetCounter("converge_events_delivered_total", "Events delivered to consumers.",
                   {{"topic", topic}, {"group", group}})
      ->Add(fetched.deliveries.size());
  return out;
}

asio::awaitable<HttpReply> Api::CreateGroup(Call& call) {
  if (!call.principal->CanSubscribe(call.topic)) {
    co_return Error(NotAllowed(*call.principal, "subscribe to", call.topic));
  }
  if (Status s = CheckTopicName(call.topic); !s.ok()) co_return Error(s);
  Result<json::object> body = ParseJsonObject(call.req.body());
  if (!body.ok()) co_return Error(http::status::bad_request, "INVALID_JSON", body.status().message());
  const json::object& o = *body;
  GroupOptions options = DefaultGroupOptions();
  std::string name, start = "earliest";
  uint64_t max_deliveries = options.max_deliveries;
  Status s = CheckFields(o, {"name", "lease_ms", "max_deliveries", "start"});
  if (s.ok()) s = ReadString(o, "name", &name);
  if (s.ok()) s = ReadInt(o, "lease_ms", 1, d_.config->groups.max_lease_ms, &options.lease_ms);
  if (s.ok()) s = ReadUint(o, "max_deliveries", 1, 10'000, &max_deliveries);
  if (s.ok()) s = ReadString(o, "start", &start);
  if (s.ok()) s = CheckGroupName(name);
  if (s.ok()) {
    if (start == "earliest") {
      options.start = StartPosition::kEarliest;
    } else if (start == "latest") {
      options.start = StartPosition::kLatest;
    } else {
      s = InvalidArgumentError("field 'start' must be \"earliest\" or \"latest\"");
    }
  }
  if (!s.ok()) co_return Error(s);
  options.max_deliveries = static_cast<uint32_t>(max_deliveries);
  const std::string topic = call.topic;
  Result<std::string> created =
      co_await d_.pool->Run([this, topic, name, options]() -> Result<std::string> {
        CONVERGE_RETURN_IF_ERROR(d_.groups->CreateGroup(topic, name, options));
        CONVERGE_ASSIGN_OR_RETURN(GroupDescription g, d_.groups->DescribeGroup(topic, name));
        return GroupJson(g);
      });
  if (!created.ok()) co_return Error(created.status());
  co_return Reply(JsonReply(http::status::created, std::move(created).value()));
}

asio::awaitable<HttpReply> Api::Fetch(Call& call) {
  if (!call.principal->CanSubscribe(call.topic)) {
    co_return Error(NotAllowed(*call.principal, "subscribe to", call.topic));
  }
  Status s = CheckTopicName(call.topic);
  if (s.ok()) s = CheckGroupName(call.group);
  Result<json::object> body = ParseJsonObject(call.req.body());
  if (!body.ok()) co_return Error(http::status::bad_request, "INVALID_JSON", body.status().message());
  const LimitsConfig& limits = d_.config->limits;
  uint64_t max_events = 100, max_bytes = limits.max_fetch_bytes;
  int64_t wait_ms = 0;
  std::string consumer = "default";
  if (s.ok()) s = CheckFields(*body, {"max_events", "max_bytes", "wait_ms", "consumer"});
  if (s.ok()) s = ReadUint(*body, "max_events", 1, limits.max_fetch_events, &max_events);
  if (s.ok()) s = ReadUint(*body, "max_bytes", 1, limits.max_fetch_bytes, &max_bytes);
  if (s.ok()) s = ReadInt(*body, "wait_ms", 0, limits.max_wait_ms, &wait_ms);
  if (s.ok()) s = ReadString(*body, "consumer", &consumer);
  if (s.ok()) s = CheckConsumerName(consumer);
  if (!s.ok()) co_return Error(s);

  const std::string topic = call.topic, group = call.group;
  s = co_await d_.pool->Run([this, topic, group] {
    Status st = EnsureGroup(topic, group);
    return st.ok() ? WatchGroup(topic, group) : st;
  });
  if (!s.ok()) co_return Error(s);

  const std::string key = GroupKey(topic, group);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(wait_ms);
  for (;;) {
    uint64_t seen = d_.hub->Generation(key);
    Result<std::string> out = co_await d_.pool->Run(
        [this, topic, group, consumer, max_events, max_bytes, wait_ms,
         deadline]() -> Result<std::string> {
          CONVERGE_ASSIGN_OR_RETURN(
              FetchResult r, FetchAsMember(topic, group, consumer,
                                           static_cast<uint32_t>(max_events), max_bytes));
          if (r.deliveries.empty() && wait_ms > 0 && std::chrono::steady_clock::now() < deadline) {
            return std::string();  // nothing yet: wait
          }
          return RenderDeliveries(r, topic, group, false);
        });
    if (!out.ok()) co_return Error(out.status());
    if (!out->empty()) co_return Reply(JsonReply(http::status::ok, std::move(out).value()));
    if (!ready_.load()) {
      co_return Reply(JsonReply(http::status::ok, "{\"deliveries\":[]}"));
    }
    co_await d_.hub->Wait(key, seen, deadline);
  }
}

namespace {

struct LeaseItem {
  LeaseRef lease;
  int64_t delay_ms = 0;
  bool permanent = false;
  std::string reason;
};

// Parses {"acks"|"nacks": [{"partition", "offset", "lease_id", ...}], "consumer": ...}.
Status ParseLeases(const json::object& body, std::string_view list_name, bool nack,
                   uint64_t max_items, int64_t max_delay_ms, std::vector<LeaseItem>* items,
                   std::string* consumer) {
  CONVERGE_RETURN_IF_ERROR(CheckFields(body, {list_name, "consumer"}));
  CONVERGE_RETURN_IF_ERROR(ReadString(body, "consumer", consumer));
  CONVERGE_RETURN_IF_ERROR(CheckConsumerName(*consumer));
  auto it = body.find(json::string_view(list_name.data(), list_name.size()));
  if (it == body.end() || !it->value().is_array()) {
    return InvalidArgumentError("field '" + std::string(list_name) + "' must be a list");
  }
  const json::array& list = it->value().as_array();
  if (list.size() > max_items) {
    return ResourceExhaustedError("'" + std::string(list_name) + "' has " +
                                  std::to_string(list.size()) + " items, more than " +
                                  "limits.max_fetch_events (" + std::to_string(max_items) + ")");
  }
  for (size_t i = 0; i < list.size(); ++i) {
    std::string where = std::string(list_name) + "[" + std::to_string(i) + "]: ";
    if (!list[i].is_object()) return InvalidArgumentError(where + "must be an object");
    const json::object& o = list[i].as_object();
    Status s = nack ? CheckFields(o, {"partition", "offset", "lease_id", "delay_ms",
                                      "permanent", "reason"})
                    : CheckFields(o, {"partition", "offset", "lease_id"});
    for (std::string_view required : {"partition", "offset", "lease_id"}) {
      if (s.ok() && !o.contains(json::string_view(required.data(), required.size()))) {
        s = InvalidArgumentError("field '" + std::string(required) + "' is required");
      }
    }
    LeaseItem item;
    uint64_t partition = 0;
    if (s.ok()) s = ReadUint(o, "partition", 0, 1023, &partition);
    if (s.ok()) s = ReadUint(o, "offset", 0, UINT64_MAX, &item.lease.offset);
    if (s.ok()) s = ReadUint(o, "lease_id", 0, UINT64_MAX, &item.lease.lease_id);
    if (nack) {
      if (s.ok()) s = ReadInt(o, "delay_ms", 0, max_delay_ms, &item.delay_ms);
      if (s.ok()) s = ReadBool(o, "permanent", &item.permanent);
      if (s.ok()) s = ReadString(o, "reason", &item.reason);
      if (s.ok() && item.reason.size() > 4096) s = InvalidArgumentError("field 'reason' is too long");
    }
    if (!s.ok()) return s.WithContext(where.substr(0, where.size() - 2));
    item.lease.partition = static_cast<uint32_t>(partition);
    items->push_back(std::move(item));
  }
  return Status::Ok();
}

HttpReply LeaseParseError(const Status& s) {
  if (s.code() == StatusCode::kResourceExhausted) {
    return Error(http::status::payload_too_large, "PAYLOAD_TOO_LARGE", s.message());
  }
  return Error(s);
}

}  // namespace

asio::awaitable<HttpReply> Api::Ack(Call& call) {
  if (!call.principal->CanSubscribe(call.topic)) {
    co_return Error(NotAllowed(*call.principal, "subscribe to", call.topic));
  }
  Status s = CheckTopicName(call.topic);
  if (s.ok()) s = CheckGroupName(call.group);
  if (!s.ok()) co_return Error(s);
  Result<json::object> body = ParseJsonObject(call.req.body());
  if (!body.ok()) co_return Error(http::status::bad_request, "INVALID_JSON", body.status().message());
  std::vector<LeaseItem> items;
  std::string consumer = "default";
  s = ParseLeases(*body, "acks", false, d_.config->limits.max_fetch_events, 0, &items, &consumer);
  if (!s.ok()) co_return LeaseParseError(s);
  const std::string topic = call.topic, group = call.group;
  Result<std::string> out = co_await d_.pool->Run([&, topic, group]() -> Result<std::string> {
    std::vector<LeaseRef> leases;
    leases.reserve(items.size());
    for (const LeaseItem& i : items) leases.push_back(i.lease);
    CONVERGE_ASSIGN_OR_RETURN(AckBatchResult r,
                              d_.groups->AckBatch(topic, group, consumer, leases));
    std::string json = "{\"acked\":" + std::to_string(r.acked) + ",\"lost\":[";
    for (size_t i = 0; i < r.lost.size(); ++i) {
      if (i) json += ',';
      json += std::to_string(r.lost[i]);
    }
    json += "]}";
    return json;
  });
  if (!out.ok()) co_return Error(out.status());
  co_return Reply(JsonReply(http::status::ok, std::move(out).value()));
}

asio::awaitable<HttpReply> Api::Nack(Call& call) {
  if (!call.principal->CanSubscribe(call.topic)) {
    co_return Error(NotAllowed(*call.principal, "subscribe to", call.topic));
  }
  Status s = CheckTopicName(call.topic);
  if (s.ok()) s = CheckGroupName(call.group);
  if (!s.ok()) co_return Error(s);
  Result<json::object> body = ParseJsonObject(call.req.body());
  if (!body.ok()) co_return Error(http::status::bad_request, "INVALID_JSON", body.status().message());
  std::vector<LeaseItem> items;
  std::string consumer = "default";
  s = ParseLeases(*body, "nacks", true, d_.config->limits.max_fetch_events,
                  d_.config->groups.max_nack_delay_ms, &items, &consumer);
  if (!s.ok()) co_return LeaseParseError(s);
  const std::string topic = call.topic, group = call.group;
  // Each nack is its own storage operation; the reply says what happened to each, so a
  // failure in the middle is reported precisely rather than hidden.
  Result<std::string> out = co_await d_.pool->Run([&, topic, group]() -> Result<std::string> {
    size_t nacked = 0;
    std::string lost, failed;
    for (size_t i = 0; i < items.size(); ++i) {
      NackOptions options;
      options.delay_ms = items[i].delay_ms;
      options.permanent = items[i].permanent;
      options.reason = items[i].reason;
      Status st = d_.groups->Nack(topic, group, consumer, items[i].lease, options);
      if (st.ok()) {
        ++nacked;
      } else if (st.code() == StatusCode::kNotFound && i == 0) {
        return st;  // no such group: nothing was applied
      } else if (st.code() == StatusCode::kFailedPrecondition) {
        if (!lost.empty()) lost += ',';
        lost += std::to_string(i);
      } else {
        if (!failed.empty()) failed += ',';
        failed += "{\"index\":" + std::to_string(i) + ",\"code\":";
        AppendJsonString(&failed, ErrorCodeFor(st).code);
        failed += ",\"message\":";
        AppendJsonString(&failed, st.message());
        failed += '}';
      }
    }
    return "{\"nacked\":" + std::to_string(nacked) + ",\"lost\":[" + lost + "],\"failed\":[" +
           failed + "]}";
  });
  if (!out.ok()) co_return Error(out.status());
  co_return Reply(JsonReply(http::status::ok, std::move(out).value()));
}

asio::awaitable<HttpReply> Api::Stream(Call& call) {
  if (!call.principal->CanSubscribe(call.topic)) {
    co_return Error(NotAllowed(*call.principal, "subscribe to", call.topic));
  }
  Status s = CheckTopicName(call.topic);
  if (s.ok()) s = CheckGroupName(call.group);
  const LimitsConfig& limits = d_.config->limits;
  uint64_t max_events = 100;
  bool auto_ack = false;
  std::string consumer =
      "stream-" + std::to_string(next_stream_id_.fetch_add(1)) + "-" +
      std::to_string(d_.env->clock().NowWallMicros());
  if (auto v = call.Query("max_events"); s.ok() && v) {
    Result<uint64_t> n = ParseUintParam("max_events", *v, 1, limits.max_fetch_events);
    if (n.ok()) max_events = *n; else s = n.status();
  }
  if (auto v = call.Query("auto_ack"); s.ok() && v) {
    if (*v == "true" || *v == "1") {
      auto_ack = true;
    } else if (*v != "false" && *v != "0") {
      s = InvalidArgumentError("query parameter 'auto_ack' must be true or false");
    }
  }
  if (auto v = call.Query("consumer"); s.ok() && v) {
    consumer = *v;
    s = CheckConsumerName(consumer);
  }
  if (!s.ok()) co_return Error(s);
  if (subscribers_.fetch_add(1) >= limits.max_subscribers) {
    subscribers_.fetch_sub(1);
    HttpReply r = Error(http::status::too_many_requests, "TOO_MANY_REQUESTS",
                        "server is at limits.max_subscribers (" +
                            std::to_string(limits.max_subscribers) + ")");
    r.response.set(http::field::retry_after, "1");
    co_return r;
  }
  const std::string topic = call.topic, group = call.group;
  auto slot_holder = co_await d_.pool->Run([this, topic, group, consumer] {
    Status st = EnsureGroup(topic, group);
    if (st.ok()) st = WatchGroup(topic, group);
    if (st.ok()) st = d_.groups->Join(topic, group, consumer).status();
    return st;
  });
  s = std::move(slot_holder);
  // Releases the subscriber slot however the stream ends (or if it never starts).
  struct Slot {
    Api* api;
    ~Slot() {
      api->subscribers_.fetch_sub(1);
      api->subscribers_gauge_->Set(api->subscribers_.load());
    }
  };
  auto slot = std::make_shared<Slot>(Slot{this});
  subscribers_gauge_->Set(subscribers_.load());
  if (!s.ok()) co_return Error(s);

  HttpReply reply;
  reply.response = HttpResponse{http::status::ok, 11};
  reply.response.set(http::field::content_type, "text/event-stream");
  reply.response.set(http::field::cache_control, "no-store");
  reply.stream = [this, slot, topic, group, consumer, max_events,
                  auto_ack](StreamSink& sink) -> asio::awaitable<void> {
    const std::string key = GroupKey(topic, group);
    const auto heartbeat = std::chrono::milliseconds(d_.config->limits.stream_heartbeat_ms);
    std::string hello = "retry: 1000\n: subscribed consumer=" + consumer + "\n\n";
    bool open = co_await sink.Write(std::move(hello));
    auto last_write = std::chrono::steady_clock::now();
    while (open && !sink.Closing() && ready_.load()) {
      uint64_t seen = d_.hub->Generation(key);
      struct Batch {
        std::string text;
        std::vector<LeaseRef> leases;
      };
      Result<Batch> batch = co_await d_.pool->Run([&]() -> Result<Batch> {
        CONVERGE_ASSIGN_OR_RETURN(
            FetchResult r, FetchAsMember(topic, group, consumer,
                                         static_cast<uint32_t>(max_events),
                                         d_.config->limits.max_fetch_bytes));
        Batch b;
        if (r.deliveries.empty()) return b;
        b.text = RenderDeliveries(r, topic, group, true);
        if (auto_ack) {
          for (const Delivery& d : r.deliveries) b.leases.push_back(d.lease());
        }
        return b;
      });
      if (!batch.ok()) {
        std::string err = "event: error\ndata: {\"code\":";
        AppendJsonString(&err, ErrorCodeFor(batch.status()).code);
        err += ",\"message\":";
        AppendJsonString(&err, batch.status().message());
        err += "}\n\n";
        co_await sink.Write(std::move(err));
        break;
      }
      if (!batch->text.empty()) {
        open = co_await sink.Write(std::move(batch->text));
        last_write = std::chrono::steady_clock::now();
        if (open && auto_ack) {
          std::vector<LeaseRef> leases = std::move(batch->leases);
          Status acked = co_await d_.pool->Run([&] {
            return d_.groups->AckBatch(topic, group, consumer, leases).status();
          });
          if (!acked.ok()) break;
        }
        continue;
      }
      co_await d_.hub->Wait(key, seen, last_write + heartbeat);
      if (std::chrono::steady_clock::now() >= last_write + heartbeat) {
        open = co_await sink.Write(": keep-alive\n\n");
        last_write = std::chrono::steady_clock::now();
      }
    }
    // Unacked leases of this consumer go back to the group at once.
    Status left = co_await d_.pool->Run([&] { return d_.groups->Leave(topic, group, consumer); });
    left.IgnoreError();
  };
  co_return reply;
}

// ---------------------------------------------------------------------------------------
// Dead letters

asio::awaitable<HttpReply> Api::ListDeadLetters(Call& call) {
  if (!call.principal->CanSubscribe(call.topic)) {
    co_return Error(NotAllowed(*call.principal, "subscribe to", call.topic));
  }
  Status s = CheckTopicName(call.topic);
  if (s.ok()) s = CheckGroupName(call.group);
  uint64_t from = 0, limit = 100;
  if (auto v = call.Query("from_offset"); s.ok() && v) {
    Result<uint64_t> n = ParseUintParam("from_offset", *v, 0, UINT64_MAX);
    if (n.ok()) from = *n; else s = n.status();
  }
  if (auto v = call.Query("limit"); s.ok() && v) {
    Result<uint64_t> n = ParseUintParam("limit", *v, 1, d_.config->limits.max_fetch_events);
    if (n.ok()) limit = *n; else s = n.status();
  }
  if (!s.ok()) co_return Error(s);
  const std::string topic = call.topic, group = call.group;
  Result<std::string> out = co_await d_.pool->Run([&, topic, group]() -> Result<std::string> {
    CONVERGE_ASSIGN_OR_RETURN(
        DeadLetterPage page,
        d_.groups->ListDeadLetters(topic, group, from, static_cast<uint32_t>(limit)));
    std::string json = "{\"dead_letters\":[";
    for (size_t i = 0; i < page.dead_letters.size(); ++i) {
      const DeadLetter& dl = page.dead_letters[i];
      if (i) json += ',';
      json += "{\"dead_letter_offset\":" + std::to_string(dl.dead_letter_offset) +
              ",\"partition\":" + std::to_string(dl.partition) +
              ",\"offset\":" + std::to_string(dl.offset) +
              ",\"delivery_count\":" + std::to_string(dl.delivery_count) + ",\"reason\":";
      AppendJsonString(&json, dl.reason);
      json += ",\"last_error\":";
      AppendJsonString(&json, dl.last_error);
      json += ",\"dead_lettered_at_ms\":" + std::to_string(dl.dead_lettered_at_micros / 1000);
      json += dl.replayed ? ",\"replayed\":true" : ",\"replayed\":false";
      json += ",\"event\":";
      AppendStoredEvent(&json, dl.value);
      json += '}';
    }
    json += "],\"next_offset\":" + std::to_string(page.next_offset) +
            ",\"end_offset\":" + std::to_string(page.end_offset) + "}";
    return json;
  });
  if (!out.ok()) co_return Error(out.status());
  co_return Reply(JsonReply(http::status::ok, std::move(out).value()));
}

asio::awaitable<HttpReply> Api::ReplayDeadLetters(Call& call) {
  if (!call.principal->CanSubscribe(call.topic)) {
    co_return Error(NotAllowed(*call.principal, "subscribe to", call.topic));
  }
  Status s = CheckTopicName(call.topic);
  if (s.ok()) s = CheckGroupName(call.group);
  if (!s.ok()) co_return Error(s);
  Result<json::object> body = ParseJsonObject(call.req.body());
  if (!body.ok()) co_return Error(http::status::bad_request, "INVALID_JSON", body.status().message());
  ReplayOptions options;
  uint64_t max_events = options.max_records;
  s = CheckFields(*body, {"from_offset", "to_offset", "max_events", "target_topic",
                          "include_replayed"});
  if (s.ok()) s = ReadUint(*body, "from_offset", 0, UINT64_MAX, &options.from_offset);
  if (s.ok()) s = ReadUint(*body, "to_offset", 0, UINT64_MAX, &options.to_offset);
  if (s.ok()) s = ReadUint(*body, "max_events", 1, d_.config->limits.max_fetch_events, &max_events);
  if (s.ok()) s = ReadString(*body, "target_topic", &options.target_topic);
  if (s.ok()) s = ReadBool(*body, "include_replayed", &options.include_replayed);
  if (s.ok() && !options.target_topic.empty()) {
    s = CheckTopicName(options.target_topic);
    if (s.ok() && !call.principal->CanPublish(options.target_topic)) {
      s = NotAllowed(*call.principal, "publish to", options.target_topic);
    }
  }
  if (!s.ok()) co_return Error(s);
  options.max_records = static_cast<uint32_t>(max_events);
  const std::string topic = call.topic, group = call.group;
  Result<ReplayResult> r = co_await d_.pool->Run(
      [&, topic, group] { return d_.groups->ReplayDeadLetters(topic, group, options); });
  if (!r.ok()) co_return Error(r.status());
  co_return Reply(JsonReply(http::status::ok,
                            "{\"replayed\":" + std::to_string(r->replayed) +
                                ",\"skipped_already_replayed\":" +
                                std::to_string(r->skipped_already_replayed) +
                                ",\"next_offset\":" + std::to_string(r->next_offset) + "}"));
}

}  // namespace converge::server
