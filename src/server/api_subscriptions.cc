// Push subscriptions (/v1/subscriptions, docs/push.md).
//
// Who may do what: creating and deleting a subscription needs an admin token (a subscription
// makes converge send a topic's events, signed, to any URL: the same trust as creating topics),
// checked before the body is read. Reading needs a token that may subscribe to the
// subscription's topic (admins: all); a listing shows only those. The secret is never returned,
// except once, in the reply that created a subscription whose secret converge generated.
#include <boost/json.hpp>

#include "server/api_internal.h"
#include "server/json_util.h"
#include "server/push_service.h"

namespace converge::server {

namespace json = boost::json;

namespace {

// 32 random bytes as 64 hex digits.
std::string NewSecret(Env& env) {
  uint8_t bytes[32];
  env.random().FillSecret(bytes);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (uint8_t b : bytes) {
    out += kHex[b >> 4];
    out += kHex[b & 15];
  }
  return out;
}

// The body of POST /v1/subscriptions, read and checked like a `subscriptions:` entry.
Status ParseSubscriptionBody(const json::object& o, const GroupConfig& groups,
                             SubscriptionConfig* s) {
  Status st =
      CheckFields(o, {"name", "topic", "group", "endpoint", "mode", "max_concurrency", "timeout_ms",
                      "initial_backoff_ms", "max_backoff_ms", "max_deliveries", "secret"});
  std::string mode = "structured";
  int64_t concurrency = s->max_concurrency, deliveries = groups.max_deliveries;
  if (st.ok()) st = ReadString(o, "name", &s->name);
  if (st.ok()) st = ReadString(o, "topic", &s->topic);
  if (st.ok()) st = ReadString(o, "group", &s->group);
  if (st.ok()) st = ReadString(o, "endpoint", &s->endpoint);
  if (st.ok()) st = ReadString(o, "mode", &mode);
  if (st.ok()) st = ReadInt(o, "max_concurrency", 1, 1024, &concurrency);
  if (st.ok()) st = ReadInt(o, "timeout_ms", 1, 600'000, &s->timeout_ms);
  if (st.ok()) st = ReadInt(o, "initial_backoff_ms", 1, 3'600'000, &s->initial_backoff_ms);
  if (st.ok()) st = ReadInt(o, "max_backoff_ms", 1, 86'400'000, &s->max_backoff_ms);
  if (st.ok()) st = ReadInt(o, "max_deliveries", 1, 10'000, &deliveries);
  if (st.ok()) st = ReadString(o, "secret", &s->secret);
  CONVERGE_RETURN_IF_ERROR(st);
  if (mode != "structured" && mode != "binary") {
    return InvalidArgumentError("field 'mode' must be binary or structured");
  }
  if (o.contains("secret") && s->secret.size() < 16) {
    return InvalidArgumentError("field 'secret' must be at least 16 bytes");
  }
  s->binary = mode == "binary";
  s->max_concurrency = static_cast<uint32_t>(concurrency);
  s->max_deliveries = static_cast<uint32_t>(deliveries);
  if (s->group.empty() && !s->name.empty()) s->group = "push-" + s->name;
  return CheckSubscription(*s, "body");
}

}  // namespace

asio::awaitable<HttpReply> Api::ListSubscriptions(Call& call) {
  if (Status s = CheckQuery(call.query, {}); !s.ok()) co_return Error(s);
  std::string out = "{\"subscriptions\":[";
  bool first = true;
  for (const SubscriptionConfig& s : d_.push->List()) {
    if (!call.principal->admin && !call.principal->CanSubscribe(s.topic)) continue;
    if (!first) out += ',';
    first = false;
    out += PushService::Json(s);
  }
  out += "]}";
  co_return Reply(JsonReply(http::status::ok, std::move(out)));
}

asio::awaitable<HttpReply> Api::GetSubscription(Call& call) {
  if (Status st = CheckQuery(call.query, {}); !st.ok()) co_return Error(st);
  Result<SubscriptionConfig> s = d_.push->Get(call.Param("name"));
  // One answer for "no such subscription" and "not yours": a token learns nothing of the
  // subscriptions of topics it may not read.
  if (!s.ok() || (!call.principal->admin && !call.principal->CanSubscribe(s->topic))) {
    co_return Error(NotFoundError("subscription '" + call.Param("name") + "' does not exist"));
  }
  co_return Reply(JsonReply(http::status::ok, PushService::Json(*s)));
}

asio::awaitable<HttpReply> Api::CreateSubscription(Call& call) {
  if (!call.principal->admin) {
    co_return Error(NotAllowed(*call.principal, "create push subscriptions", ""));
  }
  if (Status s = CheckQuery(call.query, {}); !s.ok()) co_return Error(s);
  Result<json::object> body = ParseJsonObject(call.req.body());
  if (!body.ok()) {
    co_return Error(http::status::bad_request, "INVALID_JSON", body.status().message());
  }
  SubscriptionConfig s;
  if (Status st = ParseSubscriptionBody(*body, d_.config->groups, &s); !st.ok()) {
    co_return Error(st);
  }
  const bool generated = s.secret.empty();
  if (generated) s.secret = NewSecret(*d_.env);
  auto job = [this, s]() -> Status { return d_.push->Create(s); };
  if (Status st = co_await d_.pool->Run(std::move(job)); !st.ok()) co_return Error(st);
  std::string out = PushService::Json(s);
  if (generated) {
    out.pop_back();
    out += ",\"secret\":";
    AppendJsonString(&out, s.secret);
    out += '}';
  }
  HttpResponse res = JsonReply(http::status::created, std::move(out));
  res.set(http::field::location, "/v1/subscriptions/" + s.name);
  co_return Reply(std::move(res));
}

asio::awaitable<HttpReply> Api::DeleteSubscription(Call& call) {
  if (!call.principal->admin) {
    co_return Error(NotAllowed(*call.principal, "delete push subscriptions", ""));
  }
  if (Status s = CheckQuery(call.query, {}); !s.ok()) co_return Error(s);
  auto job = [this, name = call.Param("name")]() -> Status { return d_.push->Delete(name); };
  if (Status st = co_await d_.pool->Run(std::move(job)); !st.ok()) co_return Error(st);
  co_return Reply(HttpResponse{http::status::no_content, 11});
}

}  // namespace converge::server
