// The saga routes of the sidecar (converge/saga.h: HandleSagaHttp), transport-agnostic: the
// server hands over method, target and body, and sends back status, content type and body.
#include <boost/json.hpp>
#include <cctype>
#include <charconv>
#include <cstdlib>
#include <map>
#include <optional>

#include "converge/saga.h"
#include "core/storage_full.h"

namespace converge {
namespace {

namespace json = boost::json;

int HttpStatusFor(const Status& s) {
  switch (s.code()) {
    case StatusCode::kOk:
      return 200;
    case StatusCode::kInvalidArgument:
    case StatusCode::kOutOfRange:
      return 400;
    case StatusCode::kUnauthenticated:
      return 401;
    case StatusCode::kPermissionDenied:
      return 403;
    case StatusCode::kNotFound:
      return 404;
    case StatusCode::kAlreadyExists:
    case StatusCode::kFailedPrecondition:
    case StatusCode::kAborted:
      return 409;
    case StatusCode::kResourceExhausted:
      return 429;
    case StatusCode::kUnavailable:
      return 503;
    case StatusCode::kDeadlineExceeded:
      return 504;
    default:
      return 500;
  }
}

SagaHttpResponse Json(int status, const json::value& v) {
  SagaHttpResponse r;
  r.status = status;
  r.body = json::serialize(v);
  return r;
}

SagaHttpResponse Error(const Status& status) {
  // The disk refused a write: a retryable 503 like every other route, not a limit's 429.
  const Status s = StorageFullAsUnavailable(status);
  json::object o;
  o["code"] = std::string(StatusCodeName(s.code()));
  o["message"] = std::string(s.message());
  return Json(HttpStatusFor(s), o);
}

std::string PercentDecode(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size() && std::isxdigit(static_cast<unsigned char>(s[i + 1])) &&
        std::isxdigit(static_cast<unsigned char>(s[i + 2]))) {
      out.push_back(
          static_cast<char>(std::strtol(std::string(s.substr(i + 1, 2)).c_str(), nullptr, 16)));
      i += 2;
    } else if (s[i] == '+') {
      out.push_back(' ');
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}

struct Target {
  std::vector<std::string> segments;  // "/v1/sagas/x" -> {"v1", "sagas", "x"}
  std::map<std::string, std::string> query;
};

Target ParseTarget(std::string_view target) {
  Target t;
  const size_t q = target.find('?');
  std::string_view path = target.substr(0, q);
  size_t start = 0;
  while (start < path.size()) {
    size_t slash = path.find('/', start);
    if (slash == std::string_view::npos) slash = path.size();
    if (slash > start) t.segments.push_back(PercentDecode(path.substr(start, slash - start)));
    start = slash + 1;
  }
  if (q != std::string_view::npos) {
    std::string_view qs = target.substr(q + 1);
    size_t p = 0;
    while (p <= qs.size()) {
      size_t amp = qs.find('&', p);
      if (amp == std::string_view::npos) amp = qs.size();
      std::string_view kv = qs.substr(p, amp - p);
      if (!kv.empty()) {
        const size_t eq = kv.find('=');
        t.query[PercentDecode(kv.substr(0, eq))] =
            eq == std::string_view::npos ? "" : PercentDecode(kv.substr(eq + 1));
      }
      p = amp + 1;
    }
  }
  return t;
}

Result<json::object> BodyObject(const std::string& body, bool allow_empty) {
  if (body.empty() && allow_empty) return json::object();
  boost::system::error_code ec;
  json::value v = json::parse(body, ec);
  if (ec || !v.is_object()) return InvalidArgumentError("the body must be a JSON object");
  return v.as_object();
}

Result<int64_t> QueryInt(const Target& t, const std::string& key, int64_t fallback, int64_t lo,
                         int64_t hi) {
  auto it = t.query.find(key);
  if (it == t.query.end() || it->second.empty()) return fallback;
  // The whole value, digits only: strtoll would stop at a NUL or skip leading blanks.
  int64_t v = 0;
  const std::string& text = it->second;
  const auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc() || ptr != text.data() + text.size() || v < lo || v > hi) {
    return InvalidArgumentError("query parameter '" + key + "' must be an integer in [" +
                                std::to_string(lo) + ", " + std::to_string(hi) + "]");
  }
  return v;
}

json::object SummaryJson(const SagaSummary& s) {
  json::object o;
  o["id"] = s.id;
  o["definition"] = s.definition;
  o["version"] = s.version;
  o["state"] = std::string(SagaStateName(s.state));
  o["step"] = s.step;
  o["stuck"] = s.stuck;
  o["started_micros"] = s.started_micros;
  o["updated_micros"] = s.updated_micros;
  return o;
}

json::object TimerJson(const SagaTimerInfo& t) {
  json::object o;
  o["saga_id"] = t.saga_id;
  o["kind"] = std::string(SagaTimerKindName(t.kind));
  o["step"] = t.step;
  o["due_micros"] = t.due_micros;
  return o;
}

json::value DataJson(const std::string& data) {
  if (data.empty()) return nullptr;
  boost::system::error_code ec;
  json::value v = json::parse(data, ec);
  if (ec) return json::string(data);
  return v;
}

json::object InfoJson(const SagaInfo& info) {
  json::object o = SummaryJson(info.summary);
  o["data"] = DataJson(info.data);
  o["error"] = info.error;
  json::array steps;
  for (const SagaStepInfo& s : info.steps) {
    json::object so;
    so["name"] = s.name;
    so["state"] = std::string(SagaStepStateName(s.state));
    so["attempts"] = s.attempts;
    steps.push_back(std::move(so));
  }
  o["steps"] = std::move(steps);
  json::array timers;
  for (const SagaTimerInfo& t : info.timers) timers.push_back(TimerJson(t));
  o["timers"] = std::move(timers);
  json::array history;
  for (const SagaHistoryEntry& h : info.history) {
    json::object ho;
    ho["time_micros"] = h.time_micros;
    ho["event"] = h.event;
    if (h.step >= 0) ho["step"] = h.step;
    if (h.attempt > 0) ho["attempt"] = h.attempt;
    if (!h.detail.empty()) ho["detail"] = h.detail;
    history.push_back(std::move(ho));
  }
  o["history"] = std::move(history);
  o["history_dropped"] = info.history_dropped;
  return o;
}

SagaHttpResponse StartSaga(SagaOrchestrator& orch, const std::string& body) {
  Result<json::object> o = BodyObject(body, false);
  if (!o.ok()) return Error(o.status());
  SagaStartRequest req;
  for (const auto& [key, value] : *o) {
    if (key == "definition" && value.is_string()) {
      req.definition = std::string(value.as_string());
    } else if (key == "version" && value.is_int64() && value.as_int64() >= 0 &&
               value.as_int64() <= SagaLimits::kMaxVersion) {
      req.version = static_cast<uint32_t>(value.as_int64());
    } else if (key == "id" && value.is_string()) {
      req.id = std::string(value.as_string());
    } else if (key == "data") {
      req.data = value.is_null() ? "" : json::serialize(value);
    } else {
      return Error(InvalidArgumentError("unexpected or mistyped member '" + std::string(key) +
                                        "' (definition: string, version: integer, id: string, "
                                        "data: any JSON)"));
    }
  }
  if (req.definition.empty()) return Error(InvalidArgumentError("'definition' is required"));
  Result<std::string> id = orch.Start(req);
  if (!id.ok()) return Error(id.status());
  json::object out;
  out["id"] = *id;
  return Json(201, out);
}

SagaHttpResponse ListSagas(SagaOrchestrator& orch, const Target& t) {
  SagaListFilter f;
  auto state = t.query.find("state");
  if (state != t.query.end() && !state->second.empty()) {
    bool found = false;
    for (SagaState s : {SagaState::kRunning, SagaState::kCompensating, SagaState::kCompleted,
                        SagaState::kCompensated}) {
      if (SagaStateName(s) == state->second) {
        f.state = s;
        found = true;
      }
    }
    if (!found) {
      return Error(
          InvalidArgumentError("state must be running, compensating, completed or compensated"));
    }
  }
  if (auto d = t.query.find("definition"); d != t.query.end()) f.definition = d->second;
  if (auto s = t.query.find("stuck"); s != t.query.end()) {
    if (s->second == "true" || s->second == "1" || s->second.empty()) {
      f.stuck_only = true;
    } else if (s->second != "false" && s->second != "0") {
      return Error(InvalidArgumentError("query parameter 'stuck' must be true or false"));
    }
  }
  Result<int64_t> idle = QueryInt(t, "idle_ms", 0, 0, SagaLimits::kMaxTimeoutMs * 100);
  if (!idle.ok()) return Error(idle.status());
  f.idle_for_ms = *idle;
  Result<int64_t> limit = QueryInt(t, "limit", 1000, 1, 100'000);
  if (!limit.ok()) return Error(limit.status());
  f.limit = static_cast<size_t>(*limit);
  json::array arr;
  for (const SagaSummary& s : orch.List(f)) arr.push_back(SummaryJson(s));
  json::object out;
  out["sagas"] = std::move(arr);
  return Json(200, out);
}

}  // namespace

std::string SagaSummaryToJson(const SagaSummary& summary) {
  return json::serialize(SummaryJson(summary));
}
std::string SagaInfoToJson(const SagaInfo& info) { return json::serialize(InfoJson(info)); }
std::string SagaTimerToJson(const SagaTimerInfo& timer) {
  return json::serialize(TimerJson(timer));
}

bool IsSagaHttpTarget(std::string_view target) {
  Target t = ParseTarget(target);
  return t.segments.size() >= 2 && t.segments[0] == "v1" &&
         (t.segments[1] == "sagas" || t.segments[1] == "saga-definitions" ||
          t.segments[1] == "saga-timers");
}

SagaHttpResponse HandleSagaHttp(SagaOrchestrator& orch, const SagaHttpRequest& request) {
  const Target t = ParseTarget(request.target);
  const std::string& m = request.method;
  const auto& seg = t.segments;
  if (!IsSagaHttpTarget(request.target)) return Error(NotFoundError("no such route"));
  auto method_not_allowed = [&] {
    // The methods each route takes (the server's other routes answer 405 the same way).
    std::string allow = "GET";
    if (seg[1] == "saga-definitions" || (seg[1] == "sagas" && seg.size() == 2)) {
      allow = "GET, POST";
    } else if (seg[1] == "sagas" && seg.size() == 4) {
      allow = "POST";
    } else if (seg[1] == "sagas" && seg.size() == 5) {
      allow = "PUT, DELETE";
    }
    json::object o;
    o["code"] = "METHOD_NOT_ALLOWED";
    o["message"] = "method " + m + " is not allowed on " + std::string(request.target) +
                   " (allowed: " + allow + ")";
    SagaHttpResponse r = Json(405, o);
    r.allow = allow;
    return r;
  };

  if (seg[1] == "saga-definitions" && seg.size() == 2) {
    if (m == "GET") {
      json::array arr;
      for (const SagaDefinition& d : orch.ListDefinitions()) arr.push_back(json::parse(d.ToJson()));
      json::object out;
      out["definitions"] = std::move(arr);
      return Json(200, out);
    }
    if (m == "POST") {
      Result<SagaDefinition> d = ParseSagaDefinition(request.body);
      if (!d.ok()) return Error(d.status());
      Status s = orch.RegisterDefinition(*d);
      if (!s.ok()) return Error(s);
      json::object out;
      out["name"] = d->name;
      out["version"] = d->version;
      return Json(201, out);
    }
    return method_not_allowed();
  }
  if (seg[1] == "saga-timers" && seg.size() == 2) {
    if (m != "GET") return method_not_allowed();
    Result<int64_t> limit = QueryInt(t, "limit", 1000, 1, 100'000);
    if (!limit.ok()) return Error(limit.status());
    json::array arr;
    for (const SagaTimerInfo& ti : orch.ListTimers(static_cast<size_t>(*limit))) {
      arr.push_back(TimerJson(ti));
    }
    json::object out;
    out["timers"] = std::move(arr);
    return Json(200, out);
  }
  if (seg[1] != "sagas") return Error(NotFoundError("no such route"));
  if (seg.size() == 2) {
    if (m == "POST") return StartSaga(orch, request.body);
    if (m == "GET") return ListSagas(orch, t);
    return method_not_allowed();
  }
  const std::string& id = seg[2];
  if (seg.size() == 3) {
    if (m != "GET") return method_not_allowed();
    Result<SagaInfo> info = orch.Describe(id);
    if (!info.ok()) return Error(info.status());
    return Json(200, InfoJson(*info));
  }
  if (seg.size() == 4 && seg[3] == "cancel") {
    if (m != "POST") return method_not_allowed();
    Result<json::object> o = BodyObject(request.body, true);
    if (!o.ok()) return Error(o.status());
    std::string reason;
    for (const auto& [key, value] : *o) {
      if (key != "reason" || !value.is_string()) {
        return Error(InvalidArgumentError("unexpected or mistyped member '" + std::string(key) +
                                          "' (the body is {\"reason\": string})"));
      }
      reason = std::string(value.as_string());
    }
    Status s = orch.Cancel(id, reason);
    if (!s.ok()) return Error(s);
    Result<SagaInfo> info = orch.Describe(id);
    json::object out;
    out["id"] = id;
    if (info.ok()) out["state"] = std::string(SagaStateName(info->summary.state));
    return Json(200, out);
  }
  if (seg.size() == 5 && seg[3] == "timers") {
    if (m != "DELETE" && m != "PUT") return method_not_allowed();
    Result<SagaTimerKind> kind = ParseSagaTimerKind(seg[4]);
    if (!kind.ok()) return Error(kind.status());
    if (m == "DELETE") {
      Status s = orch.CancelTimer(id, *kind);
      if (!s.ok()) return Error(s);
      return Json(200, json::object{{"id", id}, {"cancelled", seg[4]}});
    }
    if (m == "PUT") {
      Result<json::object> o = BodyObject(request.body, false);
      if (!o.ok()) return Error(o.status());
      for (const auto& [key, value] : *o) {
        if (key != "due_micros") {
          return Error(InvalidArgumentError("unexpected member '" + std::string(key) +
                                            "' (the body is {\"due_micros\": integer})"));
        }
      }
      auto it = o->find("due_micros");
      if (it == o->end() || !it->value().is_int64() || it->value().as_int64() < 0) {
        return Error(
            InvalidArgumentError("'due_micros' (integer >= 0, wall-clock microseconds) is "
                                 "required"));
      }
      Status s = orch.RescheduleTimer(id, *kind, it->value().as_int64());
      if (!s.ok()) return Error(s);
      return Json(
          200, json::object{{"id", id}, {"kind", seg[4]}, {"due_micros", it->value().as_int64()}});
    }
    return method_not_allowed();
  }
  return Error(NotFoundError("no such route"));
}

namespace {

// The definition (name, version) if registered; version 0 = the latest.
std::optional<SagaDefinition> FindDefinition(SagaOrchestrator& orch, const std::string& name,
                                             uint32_t version) {
  for (SagaDefinition& d : orch.ListDefinitions()) {  // latest version first per name
    if (d.name == name && (version == 0 || d.version == version)) return std::move(d);
  }
  return std::nullopt;
}

bool MayUse(const SagaCaller& caller, const std::optional<SagaDefinition>& d) {
  if (!d) return false;  // unknown (or no longer registered): nothing to authorize against
  for (const SagaStepDefinition& step : d->steps) {
    if (!caller.may_publish(step.participant)) return false;
  }
  return true;
}

SagaHttpResponse StartAs(SagaOrchestrator& orch, const SagaHttpRequest& request,
                         const SagaCaller& caller) {
  // Only as much of the body as authorization needs; StartSaga validates the rest.
  Result<json::object> o = BodyObject(request.body, false);
  if (!o.ok()) return Error(o.status());
  auto d = o->find("definition");
  if (d == o->end() || !d->value().is_string()) return StartSaga(orch, request.body);
  const std::string name(d->value().as_string());
  uint32_t version = 0;
  if (auto v = o->find("version"); v != o->end() && v->value().is_int64() &&
                                   v->value().as_int64() > 0 &&
                                   v->value().as_int64() <= SagaLimits::kMaxVersion) {
    version = static_cast<uint32_t>(v->value().as_int64());
  }
  // An unknown definition gets the same answer as one the caller may not use.
  if (!MayUse(caller, FindDefinition(orch, name, version))) {
    return Error(PermissionDeniedError(
        "service '" + caller.service + "' may not start sagas of definition '" + name +
        "': it needs publish permission on every participant topic of the definition"));
  }
  SagaHttpResponse res = StartSaga(orch, request.body);
  auto id = o->find("id");
  if (res.status == 409 && id != o->end() && id->value().is_string()) {
    // The id is held by another saga. Saga ids are one namespace, so a taken id cannot look
    // free; but nothing about a saga the caller may not read is told. (Checked after the
    // start, so that no saga started in between can slip its definition into the message.)
    const std::string taken(id->value().as_string());
    Result<SagaInfo> existing = orch.Describe(taken);
    if (!existing.ok() || !MayUse(caller, FindDefinition(orch, existing->summary.definition,
                                                         existing->summary.version))) {
      return Error(
          AlreadyExistsError("saga id '" + taken + "' is already taken (choose another id)"));
    }
  }
  return res;
}

}  // namespace

SagaHttpResponse HandleSagaHttp(SagaOrchestrator& orch, const SagaHttpRequest& request,
                                const SagaCaller& caller) {
  if (caller.admin) return HandleSagaHttp(orch, request);
  const Target t = ParseTarget(request.target);
  const auto& seg = t.segments;
  if (request.method == "POST" && seg.size() == 2 && seg[1] == "sagas") {
    return StartAs(orch, request, caller);
  }
  if (request.method == "GET" && seg.size() == 3 && seg[1] == "sagas") {
    // One answer for a missing saga and one the caller may not read: the same 404.
    Result<SagaInfo> info = orch.Describe(seg[2]);
    if (!info.ok() ||
        !MayUse(caller, FindDefinition(orch, info->summary.definition, info->summary.version))) {
      return Error(NotFoundError("no saga '" + seg[2] + "'"));
    }
    return Json(200, InfoJson(*info));
  }
  return Error(PermissionDeniedError(
      "service '" + caller.service +
      "': only admin tokens may list sagas, timers and definitions, register definitions, "
      "cancel sagas or move their timers"));
}

}  // namespace converge
