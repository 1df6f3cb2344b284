#include "converge/client.h"

#include <boost/beast/core/string.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>
#include <cstdlib>
#include <deque>
#include <limits>

#include "client/connection.h"
#include "wire/cloudevents_binary.h"
#include "wire/wire_format.h"

namespace converge::client {

namespace json = boost::json;
namespace wire = ::converge::internal::wire;
using internal::Clock;
namespace http = boost::beast::http;

std::string HttpResponse::Header(std::string_view name) const {
  for (const auto& [k, v] : headers) {
    if (boost::beast::iequals(k, name)) return v;
  }
  return "";
}

Status StatusFromHttp(int http_status, std::string_view body) {
  std::string code = "HTTP_" + std::to_string(http_status);
  std::string message(body.substr(0, 512));
  boost::system::error_code ec;
  json::value v = json::parse(json::string_view(body.data(), body.size()), ec);
  if (!ec && v.is_object()) {
    const json::object& o = v.as_object();
    if (auto it = o.find("code"); it != o.end() && it->value().is_string()) {
      code = std::string(it->value().as_string());
    }
    if (auto it = o.find("message"); it != o.end() && it->value().is_string()) {
      message = std::string(it->value().as_string());
    }
  }
  std::string text = code + ": " + message;
  switch (http_status) {
    case 400:
      return InvalidArgumentError(text);
    case 401:
      return UnauthenticatedError(text);
    case 403:
      return PermissionDeniedError(text);
    case 404:
      return NotFoundError(text);
    case 409:
      return code == "ALREADY_EXISTS" ? AlreadyExistsError(text) : FailedPreconditionError(text);
    case 413:
    case 429:
      return ResourceExhaustedError(text);
    case 503:
      return UnavailableError(text);
    case 504:
      return DeadlineExceededError(text);
    default:
      break;
  }
  if (http_status >= 500) return InternalError(text);
  return InvalidArgumentError(text);
}

namespace {

// ---- reading replies ----

Result<json::value> ParseBody(const std::string& body) {
  boost::system::error_code ec;
  json::value v = json::parse(body, ec);
  if (ec) return InternalError("the server sent invalid JSON: " + ec.message());
  return v;
}

const json::value* Member(const json::value& v, std::string_view name) {
  if (!v.is_object()) return nullptr;
  auto it = v.as_object().find(json::string_view(name.data(), name.size()));
  return it == v.as_object().end() ? nullptr : &it->value();
}

uint64_t U64(const json::value& v, std::string_view name) {
  const json::value* m = Member(v, name);
  if (!m) return 0;
  if (m->is_uint64()) return m->as_uint64();
  if (m->is_int64() && m->as_int64() >= 0) return static_cast<uint64_t>(m->as_int64());
  return 0;
}

int64_t I64(const json::value& v, std::string_view name) {
  const json::value* m = Member(v, name);
  if (!m) return 0;
  if (m->is_int64()) return m->as_int64();
  if (m->is_uint64()) return static_cast<int64_t>(m->as_uint64());
  return 0;
}

std::string Str(const json::value& v, std::string_view name) {
  const json::value* m = Member(v, name);
  return m && m->is_string() ? std::string(m->as_string()) : std::string();
}

bool Bool(const json::value& v, std::string_view name) {
  const json::value* m = Member(v, name);
  return m && m->is_bool() && m->as_bool();
}

const json::array& Arr(const json::value& v, std::string_view name) {
  static const json::array kEmpty;
  const json::value* m = Member(v, name);
  return m && m->is_array() ? m->as_array() : kEmpty;
}

std::optional<Event> EventFrom(const json::value& v, std::string* error) {
  const json::value* e = Member(v, "event");
  if (!e || e->is_null()) {
    *error = Str(v, "error");
    return std::nullopt;
  }
  Result<Event> event = DecodeJson(json::serialize(*e));
  if (!event.ok()) {
    *error = std::string(event.status().message());
    return std::nullopt;
  }
  return std::move(event).value();
}

Delivery DeliveryFrom(const json::value& v) {
  Delivery d;
  d.partition = static_cast<uint32_t>(U64(v, "partition"));
  d.offset = U64(v, "offset");
  d.lease_id = U64(v, "lease_id");
  if (d.lease_id == 0) {
    std::string text = Str(v, "lease_id");  // sent as a decimal string
    d.lease_id = std::strtoull(text.c_str(), nullptr, 10);
  }
  d.attempt = static_cast<uint32_t>(U64(v, "attempt"));
  d.lease_expires_at_ms = I64(v, "lease_expires_at_ms");
  d.event = EventFrom(v, &d.decode_error);
  return d;
}

GroupInfo GroupFrom(const json::value& v) {
  GroupInfo g;
  g.name = Str(v, "name");
  g.lag = U64(v, "lag");
  g.members = static_cast<uint32_t>(U64(v, "members"));
  g.lease_ms = I64(v, "lease_ms");
  g.max_deliveries = static_cast<uint32_t>(U64(v, "max_deliveries"));
  g.dead_letters = U64(v, "dead_letters");
  g.dead_letters_replayed = U64(v, "dead_letters_replayed");
  for (const json::value& p : Arr(v, "partitions")) {
    g.partitions.push_back({static_cast<uint32_t>(U64(p, "partition")), U64(p, "committed_offset"),
                            U64(p, "end_offset"), U64(p, "lag"),
                            static_cast<uint32_t>(U64(p, "in_flight"))});
  }
  return g;
}

TopicDescription TopicFrom(const json::value& v) {
  TopicDescription t;
  t.name = Str(v, "name");
  t.partitions = static_cast<uint32_t>(U64(v, "partitions"));
  Result<Durability> d = ParseDurability(Str(v, "durability"));
  t.durability = d.ok() ? *d : Durability::kFsync;
  t.retention_max_bytes = U64(v, "retention_max_bytes");
  t.retention_max_age_ms = I64(v, "retention_max_age_ms");
  for (const json::value& p : Arr(v, "partition_offsets")) {
    t.offsets.push_back({static_cast<uint32_t>(U64(p, "partition")), U64(p, "start_offset"),
                         U64(p, "end_offset"), U64(p, "size_bytes")});
  }
  for (const json::value& g : Arr(v, "groups")) t.groups.push_back(GroupFrom(g));
  return t;
}

// ---- binary content mode ----

std::string Target(std::string_view a, const std::string& topic, std::string_view b = {},
                   const std::string& group = {}, std::string_view c = {}) {
  std::string out(a);
  out += topic;
  out += b;
  out += group;
  out += c;
  return out;
}

std::string JsonString(std::string_view s) { return json::serialize(json::string(s)); }

}  // namespace

// ---------------------------------------------------------------------------------------

class Client::Connection : public internal::Connection {
 public:
  using internal::Connection::Connection;
};

Client::Client(Options options)
    : options_(std::move(options)), connection_(std::make_unique<Connection>(options_)) {}

Client::~Client() = default;

Result<HttpResponse> Client::Send(const HttpRequest& request) {
  http::request<http::string_body> req;
  req.method_string(request.method);
  req.target(request.target);
  req.version(11);
  req.set(http::field::host, options_.host);
  req.set(http::field::user_agent, "converge-client");
  if (!options_.token.empty()) req.set(http::field::authorization, "Bearer " + options_.token);
  for (const auto& [k, v] : request.headers) req.set(k, v);
  req.body() = request.body;
  req.prepare_payload();
  req.keep_alive(true);

  const auto deadline = Clock::now() + std::chrono::milliseconds(options_.timeout_ms);
  for (int attempt = 0;; ++attempt) {
    const bool reused = connection_->is_open();
    CONVERGE_RETURN_IF_ERROR(connection_->EnsureOpen(deadline));
    Status written = connection_->Write(req, deadline);
    if (!written.ok()) {
      if (reused && attempt == 0) continue;  // the server closed an idle connection
      return written;
    }
    bool nothing_read = false;
    auto res = connection_->Read(deadline, &nothing_read);
    if (!res.ok()) {
      if (reused && attempt == 0 && nothing_read) continue;
      return res.status();
    }
    HttpResponse out;
    out.status = static_cast<int>(res->result_int());
    for (const auto& field : *res) {
      out.headers.emplace_back(std::string(field.name_string()), std::string(field.value()));
    }
    out.body = std::move(res->body());
    return out;
  }
}

namespace {

// A request whose reply must be 2xx with a JSON body.
Result<json::value> Call(Client& client, std::string method, std::string target,
                         std::string body = {}, std::string content_type = "application/json") {
  HttpRequest req;
  req.method = std::move(method);
  req.target = std::move(target);
  if (!body.empty() || req.method == "POST") {
    req.headers.emplace_back("Content-Type", std::move(content_type));
    req.body = std::move(body);
  }
  CONVERGE_ASSIGN_OR_RETURN(HttpResponse res, client.Send(req));
  if (res.status < 200 || res.status >= 300) return StatusFromHttp(res.status, res.body);
  return ParseBody(res.body);
}

}  // namespace

Status Client::Health() {
  CONVERGE_ASSIGN_OR_RETURN(HttpResponse res, Send({"GET", "/healthz", {}, {}}));
  if (res.status != 200) return StatusFromHttp(res.status, res.body);
  return Status::Ok();
}

Status Client::Ready() {
  CONVERGE_ASSIGN_OR_RETURN(HttpResponse res, Send({"GET", "/readyz", {}, {}}));
  if (res.status != 200) return StatusFromHttp(res.status, res.body);
  return Status::Ok();
}

Result<std::string> Client::Metrics() {
  CONVERGE_ASSIGN_OR_RETURN(HttpResponse res, Send({"GET", "/metrics", {}, {}}));
  if (res.status != 200) return StatusFromHttp(res.status, res.body);
  return std::move(res.body);
}

Result<TopicDescription> Client::CreateTopic(const TopicSpec& spec) {
  std::string body = "{\"name\":" + JsonString(spec.name) +
                     ",\"partitions\":" + std::to_string(spec.partitions) + ",\"durability\":\"" +
                     std::string(DurabilityName(spec.durability)) +
                     "\",\"retention_max_bytes\":" + std::to_string(spec.retention_max_bytes) +
                     ",\"retention_max_age_ms\":" + std::to_string(spec.retention_max_age_ms) + "}";
  CONVERGE_ASSIGN_OR_RETURN(json::value v, Call(*this, "POST", "/v1/topics", body));
  return TopicFrom(v);
}

Result<std::vector<TopicDescription>> Client::ListTopics() {
  CONVERGE_ASSIGN_OR_RETURN(json::value v, Call(*this, "GET", "/v1/topics"));
  std::vector<TopicDescription> out;
  for (const json::value& t : Arr(v, "topics")) out.push_back(TopicFrom(t));
  return out;
}

Result<TopicDescription> Client::DescribeTopic(const std::string& topic) {
  CONVERGE_ASSIGN_OR_RETURN(json::value v, Call(*this, "GET", Target("/v1/topics/", topic)));
  return TopicFrom(v);
}

Result<std::vector<Published>> Client::Publish(const std::string& topic,
                                               std::span<const Event> events, PublishMode mode) {
  HttpRequest req;
  req.method = "POST";
  req.target = Target("/v1/topics/", topic, "/events");
  if (mode == PublishMode::kBatch) {
    req.headers.emplace_back("Content-Type", std::string(kCloudEventsBatchMediaType));
    CONVERGE_RETURN_IF_ERROR(AppendJsonBatch(events, &req.body));
  } else if (mode == PublishMode::kNative) {
    req.headers.emplace_back("Content-Type", std::string(wire::kEventBatchMediaType));
    req.headers.emplace_back("Accept", std::string(wire::kPublishResultsMediaType));
    std::string record;
    for (size_t i = 0; i < events.size(); ++i) {
      record.clear();
      Status s = EncodeBinary(events[i], &record);
      if (!s.ok()) return s.WithContext("event[" + std::to_string(i) + "]");
      wire::AppendEventRecord(&req.body, record);
    }
  } else {
    if (events.size() != 1) {
      return InvalidArgumentError("structured and binary mode publish exactly one event");
    }
    const Event& e = events[0];
    if (mode == PublishMode::kStructured) {
      req.headers.emplace_back("Content-Type", std::string(kCloudEventsJsonMediaType));
      CONVERGE_RETURN_IF_ERROR(AppendJson(e, &req.body));
    } else {
      CONVERGE_RETURN_IF_ERROR(e.Validate());
      wire::AppendBinaryModeHeaders(e, &req.headers);
      req.body = e.data();
    }
  }
  CONVERGE_ASSIGN_OR_RETURN(HttpResponse res, Send(req));
  if (res.status != 200) return StatusFromHttp(res.status, res.body);
  std::vector<Published> out;
  if (res.Header("Content-Type") == wire::kPublishResultsMediaType) {
    std::vector<wire::PublishResult> results;
    CONVERGE_RETURN_IF_ERROR(wire::ReadPublishResults(res.body, &results));
    if (results.size() != events.size()) {
      return InternalError("the server replied with " + std::to_string(results.size()) +
                           " results for " + std::to_string(events.size()) + " events");
    }
    out.reserve(results.size());
    for (size_t i = 0; i < results.size(); ++i) {
      out.push_back(
          {events[i].id(), results[i].partition, results[i].offset, results[i].duplicate});
    }
    return out;
  }
  CONVERGE_ASSIGN_OR_RETURN(json::value v, ParseBody(res.body));
  for (const json::value& r : Arr(v, "results")) {
    out.push_back({Str(r, "id"), static_cast<uint32_t>(U64(r, "partition")), U64(r, "offset"),
                   Bool(r, "duplicate")});
  }
  if (out.size() != events.size()) {
    return InternalError("the server replied with " + std::to_string(out.size()) + " results for " +
                         std::to_string(events.size()) + " events");
  }
  return out;
}

Result<Published> Client::PublishOne(const std::string& topic, const Event& event,
                                     PublishMode mode) {
  CONVERGE_ASSIGN_OR_RETURN(std::vector<Published> r,
                            Publish(topic, std::span<const Event>(&event, 1), mode));
  return r.front();
}

Result<GroupInfo> Client::CreateGroup(const std::string& topic, const GroupSpec& spec) {
  std::string body = "{\"name\":" + JsonString(spec.name);
  if (spec.lease_ms > 0) body += ",\"lease_ms\":" + std::to_string(spec.lease_ms);
  if (spec.max_deliveries > 0) {
    body += ",\"max_deliveries\":" + std::to_string(spec.max_deliveries);
  }
  if (spec.max_in_flight > 0) body += ",\"max_in_flight\":" + std::to_string(spec.max_in_flight);
  body += spec.start_latest ? ",\"start\":\"latest\"}" : ",\"start\":\"earliest\"}";
  CONVERGE_ASSIGN_OR_RETURN(json::value v,
                            Call(*this, "POST", Target("/v1/topics/", topic, "/groups"), body));
  return GroupFrom(v);
}

Result<std::vector<Delivery>> Client::Fetch(const std::string& topic, const std::string& group,
                                            const FetchOptions& options) {
  std::string body = "{\"max_events\":" + std::to_string(options.max_events) +
                     ",\"wait_ms\":" + std::to_string(options.wait_ms);
  if (options.max_bytes) body += ",\"max_bytes\":" + std::to_string(options.max_bytes);
  if (!options.consumer.empty()) body += ",\"consumer\":" + JsonString(options.consumer);
  body += '}';
  HttpRequest req;
  req.method = "POST";
  req.target = Target("/v1/topics/", topic, "/groups/", group, "/fetch");
  req.headers.emplace_back("Content-Type", "application/json");
  if (options_.native_fetch) {
    req.headers.emplace_back("Accept", std::string(wire::kDeliveryBatchMediaType));
  }
  req.body = std::move(body);
  CONVERGE_ASSIGN_OR_RETURN(HttpResponse res, Send(req));
  if (res.status != 200) return StatusFromHttp(res.status, res.body);
  std::vector<Delivery> out;
  if (res.Header("Content-Type") == wire::kDeliveryBatchMediaType) {
    size_t pos = 0;
    while (pos < res.body.size()) {
      wire::DeliveryHeader h;
      std::string_view record;
      CONVERGE_RETURN_IF_ERROR(wire::ReadDelivery(res.body, &pos, &h, &record));
      Delivery d;
      d.partition = h.partition;
      d.offset = h.offset;
      d.lease_id = h.lease_id;
      d.attempt = h.attempt;
      d.lease_expires_at_ms = h.lease_expires_at_ms;
      Result<Event> event = DecodeBinary(record);
      if (event.ok()) {
        d.event = std::move(event).value();
      } else {
        d.decode_error = std::string(event.status().message());
      }
      out.push_back(std::move(d));
    }
    return out;
  }
  CONVERGE_ASSIGN_OR_RETURN(json::value v, ParseBody(res.body));
  for (const json::value& d : Arr(v, "deliveries")) out.push_back(DeliveryFrom(d));
  return out;
}

namespace {
std::string LeaseJson(const Lease& l) {
  return "{\"partition\":" + std::to_string(l.partition) +
         ",\"offset\":" + std::to_string(l.offset) + ",\"lease_id\":\"" +
         std::to_string(l.lease_id) + "\"";
}
}  // namespace

Result<AckResult> Client::Ack(const std::string& topic, const std::string& group,
                              std::span<const Lease> leases, const std::string& consumer) {
  std::string body = "{\"acks\":[";
  for (size_t i = 0; i < leases.size(); ++i) {
    if (i) body += ',';
    body += LeaseJson(leases[i]) + "}";
  }
  body += ']';
  if (!consumer.empty()) body += ",\"consumer\":" + JsonString(consumer);
  body += '}';
  CONVERGE_ASSIGN_OR_RETURN(
      json::value v,
      Call(*this, "POST", Target("/v1/topics/", topic, "/groups/", group, "/ack"), body));
  AckResult r;
  r.acked = U64(v, "acked");
  for (const json::value& i : Arr(v, "lost")) {
    if (i.is_int64()) r.lost.push_back(static_cast<size_t>(i.as_int64()));
    if (i.is_uint64()) r.lost.push_back(static_cast<size_t>(i.as_uint64()));
  }
  return r;
}

Result<ExtendResult> Client::ExtendLeases(const std::string& topic, const std::string& group,
                                          std::span<const Lease> leases, int64_t lease_ms,
                                          const std::string& consumer) {
  std::string body = "{\"leases\":[";
  for (size_t i = 0; i < leases.size(); ++i) {
    if (i) body += ',';
    body += LeaseJson(leases[i]) + "}";
  }
  body += "],\"lease_ms\":" + std::to_string(lease_ms);
  if (!consumer.empty()) body += ",\"consumer\":" + JsonString(consumer);
  body += '}';
  CONVERGE_ASSIGN_OR_RETURN(
      json::value v,
      Call(*this, "POST", Target("/v1/topics/", topic, "/groups/", group, "/extend"), body));
  ExtendResult r;
  r.extended = U64(v, "extended");
  for (const json::value& i : Arr(v, "lost")) {
    if (i.is_int64()) r.lost.push_back(static_cast<size_t>(i.as_int64()));
    if (i.is_uint64()) r.lost.push_back(static_cast<size_t>(i.as_uint64()));
  }
  return r;
}

Result<NackResult> Client::NackMany(const std::string& topic, const std::string& group,
                                    std::span<const Nack> nacks, const std::string& consumer) {
  std::string body = "{\"nacks\":[";
  for (size_t i = 0; i < nacks.size(); ++i) {
    if (i) body += ',';
    body += LeaseJson(nacks[i].lease) + ",\"delay_ms\":" + std::to_string(nacks[i].delay_ms) +
            (nacks[i].permanent ? ",\"permanent\":true" : ",\"permanent\":false") +
            ",\"reason\":" + JsonString(nacks[i].reason) + "}";
  }
  body += ']';
  if (!consumer.empty()) body += ",\"consumer\":" + JsonString(consumer);
  body += '}';
  CONVERGE_ASSIGN_OR_RETURN(
      json::value v,
      Call(*this, "POST", Target("/v1/topics/", topic, "/groups/", group, "/nack"), body));
  NackResult r;
  r.nacked = U64(v, "nacked");
  for (const json::value& i : Arr(v, "lost")) {
    if (i.is_int64()) r.lost.push_back(static_cast<size_t>(i.as_int64()));
  }
  for (const json::value& f : Arr(v, "failed")) {
    r.failed.emplace_back(static_cast<size_t>(U64(f, "index")),
                          InternalError(Str(f, "code") + ": " + Str(f, "message")));
  }
  return r;
}

Status Client::NackOne(const std::string& topic, const std::string& group, const Nack& nack) {
  CONVERGE_ASSIGN_OR_RETURN(NackResult r, NackMany(topic, group, std::span<const Nack>(&nack, 1)));
  if (!r.lost.empty()) return FailedPreconditionError("the lease was lost");
  if (!r.failed.empty()) return r.failed.front().second;
  return Status::Ok();
}

Result<DeadLetterList> Client::ListDeadLetters(const std::string& topic, const std::string& group,
                                               uint64_t from_offset, uint32_t limit) {
  CONVERGE_ASSIGN_OR_RETURN(
      json::value v,
      Call(*this, "GET",
           Target("/v1/topics/", topic, "/groups/", group, "/dead-letters?from_offset=") +
               std::to_string(from_offset) + "&limit=" + std::to_string(limit)));
  DeadLetterList out;
  out.next_offset = U64(v, "next_offset");
  out.end_offset = U64(v, "end_offset");
  for (const json::value& d : Arr(v, "dead_letters")) {
    DeadLetterEntry e;
    e.dead_letter_offset = U64(d, "dead_letter_offset");
    e.partition = static_cast<uint32_t>(U64(d, "partition"));
    e.offset = U64(d, "offset");
    e.delivery_count = static_cast<uint32_t>(U64(d, "delivery_count"));
    e.reason = Str(d, "reason");
    e.last_error = Str(d, "last_error");
    e.dead_lettered_at_ms = I64(d, "dead_lettered_at_ms");
    e.replayed = Bool(d, "replayed");
    std::string ignored;
    e.event = EventFrom(d, &ignored);
    out.dead_letters.push_back(std::move(e));
  }
  return out;
}

Result<ReplayReply> Client::ReplayDeadLetters(const std::string& topic, const std::string& group,
                                              const ReplayRequest& request) {
  std::string body = "{\"from_offset\":" + std::to_string(request.from_offset) +
                     ",\"to_offset\":" + std::to_string(request.to_offset) +
                     ",\"max_events\":" + std::to_string(request.max_events) +
                     (request.include_replayed ? ",\"include_replayed\":true" : "");
  if (!request.target_topic.empty()) {
    body += ",\"target_topic\":" + JsonString(request.target_topic);
  }
  body += '}';
  CONVERGE_ASSIGN_OR_RETURN(
      json::value v,
      Call(*this, "POST", Target("/v1/topics/", topic, "/groups/", group, "/dead-letters/replay"),
           body));
  return ReplayReply{U64(v, "replayed"), U64(v, "skipped_already_replayed"), U64(v, "next_offset")};
}

// ---------------------------------------------------------------------------------------
// Streaming subscription

namespace {

class SseSubscription : public Subscription {
 public:
  explicit SseSubscription(const Options& options) : conn_(options) {
    parser_.body_limit(std::numeric_limits<uint64_t>::max());  // a stream has no end
  }

  Status Start(const std::string& target, const Options& options) {
    const auto deadline = Clock::now() + std::chrono::milliseconds(options.timeout_ms);
    CONVERGE_RETURN_IF_ERROR(conn_.EnsureOpen(deadline));
    http::request<http::string_body> req{http::verb::get, target, 11};
    req.set(http::field::host, options.host);
    req.set(http::field::accept, "text/event-stream");
    if (!options.token.empty()) req.set(http::field::authorization, "Bearer " + options.token);
    CONVERGE_RETURN_IF_ERROR(conn_.Write(req, deadline));
    CONVERGE_RETURN_IF_ERROR(conn_.ReadHeader(parser_, deadline));
    const auto& head = parser_.get();
    if (head.result() != http::status::ok) {
      // The error reply is small: read it whole.
      std::string body;
      while (!parser_.is_done()) {
        Result<size_t> n = conn_.ReadBodySome(parser_, deadline, &body);
        if (!n.ok() || *n == 0) break;
      }
      return StatusFromHttp(static_cast<int>(head.result_int()), body);
    }
    return Status::Ok();
  }

  Result<std::optional<Delivery>> Next(int64_t timeout_ms) override {
    const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
    for (;;) {
      if (!ready_.empty()) {
        Delivery d = std::move(ready_.front());
        ready_.pop_front();
        return std::optional<Delivery>(std::move(d));
      }
      if (!error_.ok()) return error_;
      Result<size_t> n = conn_.ReadBodySome(parser_, deadline, &pending_);
      if (!n.ok()) {
        Parse();
        if (ready_.empty()) return n.status();
        continue;
      }
      if (*n == 0) {
        if (Clock::now() >= deadline) return std::optional<Delivery>();
        continue;
      }
      Parse();
    }
  }

 private:
  // Splits complete SSE events ("...\n\n") off the pending text.
  void Parse() {
    size_t pos;
    while ((pos = pending_.find("\n\n")) != std::string::npos) {
      std::string block = pending_.substr(0, pos);
      pending_.erase(0, pos + 2);
      std::string event_name = "message", data;
      size_t start = 0;
      while (start <= block.size()) {
        size_t end = block.find('\n', start);
        if (end == std::string::npos) end = block.size();
        std::string_view line(block.data() + start, end - start);
        start = end + 1;
        if (line.empty() || line.front() == ':') continue;
        size_t colon = line.find(':');
        std::string_view field = line.substr(0, colon);
        std::string_view value =
            colon == std::string_view::npos ? std::string_view() : line.substr(colon + 1);
        if (!value.empty() && value.front() == ' ') value.remove_prefix(1);
        if (field == "event") event_name = std::string(value);
        if (field == "data") {
          if (!data.empty()) data += '\n';
          data += value;
        }
      }
      if (data.empty()) continue;
      boost::system::error_code ec;
      json::value v = json::parse(data, ec);
      if (ec) {
        error_ = InternalError("the server sent an invalid stream event");
        continue;
      }
      if (event_name == "delivery") {
        ready_.push_back(DeliveryFrom(v));
      } else if (event_name == "error") {
        error_ = UnavailableError("stream error " + Str(v, "code") + ": " + Str(v, "message"));
      }
    }
  }

  internal::Connection conn_;
  http::response_parser<http::buffer_body> parser_;
  std::string pending_;
  std::deque<Delivery> ready_;
  Status error_;
};

}  // namespace

Result<std::unique_ptr<Subscription>> Client::Subscribe(const std::string& topic,
                                                        const std::string& group,
                                                        const SubscribeOptions& options) {
  std::string target = Target("/v1/topics/", topic, "/groups/", group, "/stream?max_events=") +
                       std::to_string(options.max_events);
  if (options.auto_ack) target += "&auto_ack=true";
  if (!options.consumer.empty()) target += "&consumer=" + options.consumer;
  auto sub = std::make_unique<SseSubscription>(options_);
  CONVERGE_RETURN_IF_ERROR(sub->Start(target, options_));
  return std::unique_ptr<Subscription>(std::move(sub));
}

}  // namespace converge::client
