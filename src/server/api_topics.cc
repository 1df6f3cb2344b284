// API v1: topic admin and publish.
#include <algorithm>
#include <boost/json/value.hpp>
#include <chrono>
#include <cstdio>

#include "server/api.h"
#include "server/api_internal.h"
#include "server/cloudevents_http.h"
#include "server/json_util.h"
#include "wire/wire_format.h"

namespace converge::server {

namespace json = boost::json;
namespace wire = ::converge::internal::wire;

// ---------------------------------------------------------------------------------------
// Topics

// The same options the start-time config check validated (config.cc).
TopicOptions Api::OptionsForNewTopic() const { return AutoCreatedTopicOptions(*d_.config); }

asio::awaitable<HttpReply> Api::ListTopics(Call& call) {
  Status s = CheckQuery(call.query, {"internal"});
  // Internal topics ('_': groups' dead letters, the relays' dead letters) for admins, on ask.
  bool internal = false;
  if (std::optional<std::string> v = call.Query("internal"); s.ok() && v) {
    if (*v == "true") {
      internal = true;
    } else if (*v != "false") {
      s = InvalidArgumentError("query parameter 'internal' must be true or false");
    }
  }
  if (s.ok() && internal && !call.principal->admin) {
    s = PermissionDeniedError("service '" + call.principal->service +
                              "' may not list internal topics: admin tokens only");
  }
  if (!s.ok()) co_return Error(s);
  const Principal* who = call.principal;
  auto job = [this, who, internal] {
    std::string out = "{\"topics\":[";
    bool first = true;
    for (const std::string& name : d_.log->ListTopics()) {
      if (name.empty() || (name.front() == '_' && !internal) || !who->CanSee(name)) continue;
      Result<TopicInfo> info = d_.log->DescribeTopic(name);
      if (!info.ok()) continue;  // deleted meanwhile
      if (!first) out += ',';
      first = false;
      out += TopicJson(*info, nullptr, /*offsets=*/true);
    }
    out += "]}";
    return out;
  };
  std::string body = co_await d_.pool->Run(std::move(job));
  co_return Reply(JsonReply(http::status::ok, std::move(body)));
}

asio::awaitable<HttpReply> Api::CreateTopic(Call& call) {
  if (!call.principal->admin) co_return Error(NotAllowed(*call.principal, "create topics", ""));
  if (Status s = CheckQuery(call.query, {}); !s.ok()) co_return Error(s);
  Result<json::object> body = ParseJsonObject(call.req.body());
  if (!body.ok())
    co_return Error(http::status::bad_request, "INVALID_JSON", body.status().message());
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
  // converge creates the topics it writes itself, with the options it needs (one partition for
  // the store's change feed and the relays' dead letters; the orchestrator's options for saga
  // commands; internal flags for '_' names): a topic created ahead under such a name would get
  // the caller's options instead. Refused like a publish to it (403 SYSTEM_TOPIC), whoever asks.
  if (s.ok()) {
    if (std::string owner = d_.system_topics->OwnerOf(name); !owner.empty()) {
      co_return SystemTopicError(name, owner, "creating it over HTTP");
    }
  }
  if (s.ok()) s = CheckTopicName(name);
  if (s.ok() && durability.empty() && o.contains("durability") && !o.at("durability").is_null()) {
    s = InvalidArgumentError("field 'durability' must be fsync, interval or none");
  }
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
  auto job = [this, name, options]() -> Result<TopicInfo> {
    CONVERGE_RETURN_IF_ERROR(d_.log->CreateTopic(name, options));
    return d_.log->DescribeTopic(name);
  };
  Result<TopicInfo> created = co_await d_.pool->Run(std::move(job));
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
  if (Status s = CheckQuery(call.query, {}); !s.ok()) co_return Error(s);
  // An admin may describe internal topics too (a group's dead letters, the relays').
  if (Status s = CheckReadableTopicName(*call.principal, call.topic); !s.ok()) co_return Error(s);
  const std::string topic = call.topic;
  auto job = [this, topic]() -> Result<TopicInfo> { return d_.log->DescribeTopic(topic); };
  Result<TopicInfo> info = co_await d_.pool->Run(std::move(job));
  if (!info.ok()) co_return Error(info.status());
  // Every group of the topic: with shared groups, also those running in other sidecars
  // (described by them).
  Result<std::vector<std::string>> described = co_await DescribeGroupsOfTopic(call, false);
  if (!described.ok()) co_return Error(described.status());
  std::string groups = "[";
  for (size_t i = 0; i < described->size(); ++i) {
    if (i > 0) groups += ',';
    groups += (*described)[i];
  }
  groups += ']';
  co_return Reply(JsonReply(http::status::ok, TopicJson(*info, &groups)));
}

// ---------------------------------------------------------------------------------------
// Publish

namespace {

// 400 SCHEMA_VIOLATION naming the event, and where its data fails (instance path, keyword).
HttpResponse SchemaViolation(size_t index, const std::string& message, const std::string* path,
                             const std::string* keyword) {
  json::object o;
  o["code"] = "SCHEMA_VIOLATION";
  o["message"] = "event[" + std::to_string(index) + "]: " + message;
  o["event"] = index;
  if (path != nullptr) o["path"] = *path;
  if (keyword != nullptr) o["keyword"] = *keyword;
  return JsonReply(http::status::bad_request, json::serialize(o));
}

}  // namespace

bool Api::CheckEventSchema(const Event& event, size_t index, const std::string& topic,
                           const SchemaRegistry::TopicSchema& bound, uint32_t max_data_depth,
                           schema::Validator::Batch& batch, HttpResponse* reply) {
  if (event.type() != bound.type) {
    *reply = SchemaViolation(index,
                             "type '" + event.type() + "', but topic '" + topic +
                                 "' takes only events of type '" + bound.type + "'",
                             nullptr, nullptr);
    return false;
  }
  if (event.data_kind() != DataKind::kJson) {
    *reply = SchemaViolation(index,
                             "no JSON data, but events of type '" + bound.type +
                                 "' must have data valid against its schema",
                             nullptr, nullptr);
    return false;
  }
  // The data's JSON text parsed once, into the validator's reused tape. Nested no deeper than
  // the decoder allows either (128 at most, as before).
  std::optional<schema::Violation> bad =
      batch.ValidateText(event.data(), std::min(max_data_depth, schema::kMaxTextDepth));
  if (!bad) return true;
  *reply = SchemaViolation(index,
                           "data at '" + bad->instance_path + "' fails '" + bad->keyword +
                               "' of the schema of '" + bound.type + "' version " +
                               std::to_string(bound.version) + " (at '" + bad->schema_path + "')",
                           &bad->instance_path, &bad->keyword);
  return false;
}

asio::awaitable<HttpReply> Api::Publish(Call& call) {
  if (!call.principal->CanPublish(call.topic)) {
    co_return Error(NotAllowed(*call.principal, "publish to", call.topic));
  }
  // Topics converge writes itself take no outside events, whoever asks (the admin too): a
  // forged change-feed event or saga command would be taken for the real one, and the real
  // one could then be dropped as its duplicate.
  if (std::string owner = d_.system_topics->OwnerOf(call.topic); !owner.empty()) {
    co_return SystemTopicError(call.topic, owner, "publishing to it over HTTP");
  }
  // The CloudEvents HTTP binding carries nothing in the query.
  if (Status s = CheckQuery(call.query, {}); !s.ok()) co_return Error(s);
  if (Status s = CheckTopicName(call.topic); !s.ok()) co_return Error(s);
  const std::string topic = call.topic;
  const HttpRequest& req = call.req;
  // Decoding and encoding are CPU work: done right here on the connection's thread. The append
  // then holds no thread while it waits for its group commit's sync (Log::AppendAsync), so
  // every publish in flight, however many, joins the next group commit.
  PreparedPublish prepared;
  if (HttpResponse refused; !PreparePublish(req, topic, &prepared, &refused)) {
    co_return Reply(std::move(refused));
  }
  // With the audit on, d_.log stamps and journals the events (audit::AuditedLog).
  Result<std::vector<AppendResult>> appended = co_await AppendDurably(topic, prepared.records);
  if (!appended.ok() && appended.status().code() == StatusCode::kNotFound &&
      d_.config->auto_create_topics) {
    // Creating a topic writes and syncs directories: on the pool.
    auto create = [this, &topic] { return d_.log->CreateTopic(topic, OptionsForNewTopic()); };
    Status created = co_await d_.pool->Run(std::move(create));
    if (!created.ok() && created.code() != StatusCode::kAlreadyExists) {
      co_return Reply(ErrorReply(created));
    }
    appended = co_await AppendDurably(topic, prepared.records);
  }
  HttpResponse res = PublishReply(req, topic, prepared, appended);
  if (res.result() == http::status::ok) {
    Observe(TopologyObserver::Kind::kPublish, topic, *call.principal);
  }
  co_return Reply(std::move(res));
}

Api::PublishCounters Api::PublishCountersFor(const std::string& topic) {
  {
    std::shared_lock lock(publish_counters_mu_);
    if (auto it = publish_counters_.find(topic); it != publish_counters_.end()) return it->second;
  }
  PublishCounters c;
  c.published = d_.metrics->GetCounter("converge_events_published_total",
                                       "Events appended by publish requests.", {{"topic", topic}});
  std::unique_lock lock(publish_counters_mu_);
  publish_counters_.emplace(topic, c);
  return c;
}

asio::awaitable<Result<std::vector<AppendResult>>> Api::AppendDurably(
    const std::string& topic, std::span<const RecordView> records) {
  using Appended = Result<std::vector<AppendResult>>;
  Log* log = d_.log;
  auto job = [log, &topic, records](std::function<void(Appended)> done) {
    log->AppendAsync(topic, records, std::move(done));
  };
  co_return co_await BlockingPool::RunInline<Appended>(std::move(job));
}

bool Api::PreparePublish(const HttpRequest& req, const std::string& topic, PreparedPublish* out,
                         HttpResponse* refused) {
  // A topic bound to an event type takes only events of that type whose data the type's
  // schema accepts: checked for the whole batch before anything is appended.
  std::optional<SchemaRegistry::TopicSchema> bound = d_.schemas->ForTopic(topic);
  if (!bound) return PrepareOnce(req, topic, nullptr, false, out, refused);
  // The schema validator parses each event's JSON data completely (and as strictly as the
  // decoder), so the decoder does not parse binary records' data a first time. A request this
  // refuses, for whatever reason, is decoded again the usual way: its answer (which event,
  // which error) is then exactly the one the usual order of checks gives.
  if (PrepareOnce(req, topic, &*bound, true, out, refused)) return true;
  *out = PreparedPublish();
  return PrepareOnce(req, topic, &*bound, false, out, refused);
}

bool Api::PrepareOnce(const HttpRequest& req, const std::string& topic,
                      const SchemaRegistry::TopicSchema* bound, bool defer_json_check,
                      PreparedPublish* out, HttpResponse* refused) {
  const LimitsConfig& limits = d_.config->limits;
  DecodeOptions decode;
  decode.max_event_bytes = limits.max_event_bytes;
  decode.max_batch_events = limits.max_batch_events;
  decode.defer_json_data_check = defer_json_check;
  Result<DecodedPublish> decoded = DecodePublishRequest(req, decode);
  if (!decoded.ok()) {
    const Status& s = decoded.status();
    if (s.code() == StatusCode::kResourceExhausted) {
      *refused = InputErrorReply(s);
    } else if (s.code() == StatusCode::kFailedPrecondition) {
      *refused =
          JsonError(http::status::unsupported_media_type, "UNSUPPORTED_MEDIA_TYPE", s.message());
    } else {
      *refused = JsonError(http::status::bad_request, "INVALID_EVENT", s.message());
    }
    return false;
  }
  out->decoded = std::move(decoded).value();
  std::vector<Event>& events = out->decoded.events;
  if (events.empty()) {
    *refused = JsonError(http::status::bad_request, "INVALID_EVENT", "the batch holds no events");
    return false;
  }
  if (bound != nullptr) {
    schema::Validator::Batch batch(*bound->validator);  // one scratch state for the request
    for (size_t i = 0; i < events.size(); ++i) {
      if (!CheckEventSchema(events[i], i, topic, *bound, decode.max_data_depth, batch, refused)) {
        return false;
      }
    }
  }
  // Encode everything first: one bad event rejects the request before anything is appended.
  // The buffers are filled first and the views taken after, so growth cannot invalidate them.
  const bool native = out->decoded.mode == PublishMode::kNative;
  std::string& values = out->values;
  std::string& ids = out->ids;
  // One event (the common case of many small clients) needs no end arrays.
  std::vector<size_t> value_ends;
  std::vector<size_t> id_ends;
  value_ends.reserve(events.size());
  id_ends.reserve(events.size());
  ids.reserve(events.size() * 24);
  for (size_t i = 0; i < events.size(); ++i) {
    if (!native) {
      const size_t before = values.size();
      Status s = EncodeBinary(events[i], &values);
      if (!s.ok()) {
        *refused = JsonError(http::status::bad_request, "INVALID_EVENT",
                             s.WithContext("event[" + std::to_string(i) + "]").message());
        return false;
      }
      if (values.size() - before > limits.max_event_bytes) {
        *refused = JsonError(http::status::payload_too_large, "PAYLOAD_TOO_LARGE",
                             "event[" + std::to_string(i) + "]: event is " +
                                 std::to_string(values.size() - before) +
                                 " bytes encoded, more than limits.max_event_bytes (" +
                                 std::to_string(limits.max_event_bytes) + ")");
        return false;
      }
      value_ends.push_back(values.size());
    }
    AppendRecordId(events[i], &ids);
    id_ends.push_back(ids.size());
  }
  std::vector<RecordView>& records = out->records;
  records.resize(events.size());
  for (size_t i = 0; i < events.size(); ++i) {
    const size_t id_begin = i == 0 ? 0 : id_ends[i - 1];
    records[i].id = std::string_view(ids).substr(id_begin, id_ends[i] - id_begin);
    records[i].key = PartitionKeyFor(events[i]);
    if (native) {
      records[i].value = out->decoded.records[i];
    } else {
      const size_t begin = i == 0 ? 0 : value_ends[i - 1];
      records[i].value = std::string_view(values).substr(begin, value_ends[i] - begin);
    }
  }
  return true;
}

HttpResponse Api::PublishReply(const HttpRequest& req, const std::string& topic,
                               const PreparedPublish& prepared,
                               const Result<std::vector<AppendResult>>& appended) {
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
  const std::vector<Event>& events = prepared.decoded.events;
  uint64_t duplicates = 0;
  for (const AppendResult& r : *appended) duplicates += r.duplicate ? 1 : 0;
  const bool binary_reply = wire::Accepts(req[http::field::accept], wire::kPublishResultsMediaType);
  std::string body;
  if (binary_reply) {
    body.reserve(appended->size() * 13);
    for (const AppendResult& r : *appended) {
      wire::AppendPublishResult(&body, {r.partition, r.offset, r.duplicate});
    }
  } else {
    body = "{\"results\":[";
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
    }
    body += "]}";
  }
  const PublishCounters counters = PublishCountersFor(topic);
  counters.published->Add(appended->size() - duplicates);
  if (duplicates) {
    // Rare: looked up each time, so the series appears only once a duplicate was seen.
    d_.metrics
        ->GetCounter("converge_events_duplicate_total",
                     "Published events recognized as duplicates (not appended again).",
                     {{"topic", topic}})
        ->Add(duplicates);
  }
  const auto mode = static_cast<size_t>(prepared.decoded.mode);
  Counter* by_mode = publish_mode_counters_[mode].load(std::memory_order_acquire);
  if (by_mode == nullptr) {
    // The registry returns the same counter every time: a race stores the same pointer.
    by_mode = d_.metrics->GetCounter(
        "converge_publish_requests_total", "Publish requests by content mode.",
        {{"mode", std::string(PublishModeName(prepared.decoded.mode))}});
    publish_mode_counters_[mode].store(by_mode, std::memory_order_release);
  }
  by_mode->Add();
  if (binary_reply) {
    HttpResponse res{http::status::ok, 11};
    res.set(http::field::content_type, wire::kPublishResultsMediaType);
    res.body() = std::move(body);
    res.prepare_payload();
    return res;
  }
  return JsonReply(http::status::ok, std::move(body));
}

}  // namespace converge::server
