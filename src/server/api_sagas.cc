// The saga orchestrator's routes (saga_routes.h) and Api::HandleSagas, which runs them on the
// pool.
#include <boost/json.hpp>
#include <charconv>
#include <optional>

#include "server/api_internal.h"
#include "server/json_util.h"
#include "server/saga_routes.h"
#include "server/system_topics.h"

namespace converge::server {
namespace {

namespace json = boost::json;

HttpResponse Json(int status, const json::value& v) {
  HttpResponse r{static_cast<http::status>(status), 11};
  r.set(http::field::content_type, "application/json");
  r.body() = json::serialize(v);
  return r;
}

HttpResponse JsonText(int status, std::string body) {
  HttpResponse r{static_cast<http::status>(status), 11};
  r.set(http::field::content_type, "application/json");
  r.body() = std::move(body);
  return r;
}

// The server's one mapping (a full disk is 503 like on every route).
HttpResponse SagaError(const Status& status) { return ErrorReply(status); }

Result<json::object> BodyObject(const std::string& body, bool allow_empty) {
  if (body.empty() && allow_empty) return json::object();
  if (body.find_first_not_of(" \t\r\n") == std::string::npos) {
    return InvalidArgumentError("the body must be a JSON object");
  }
  // The one reading of a JSON body (json_util.h): a member repeated at any depth is refused,
  // not read as its last value.
  return ParseJsonObject(body);
}

const std::string* QueryValue(const QueryParams& query, std::string_view key) {
  for (const auto& [k, v] : query) {
    if (k == key) return &v;
  }
  return nullptr;
}

Result<int64_t> QueryInt(const QueryParams& query, const std::string& key, int64_t fallback,
                         int64_t lo, int64_t hi) {
  const std::string* text = QueryValue(query, key);
  if (text == nullptr || text->empty()) return fallback;
  // The whole value, digits only: strtoll would stop at a NUL or skip leading blanks.
  int64_t v = 0;
  const auto [ptr, ec] = std::from_chars(text->data(), text->data() + text->size(), v);
  if (ec != std::errc() || ptr != text->data() + text->size() || v < lo || v > hi) {
    return InvalidArgumentError("query parameter '" + key + "' must be an integer in [" +
                                std::to_string(lo) + ", " + std::to_string(hi) + "]");
  }
  return v;
}

// The reply to a start: 201 with the id, or the error.
HttpResponse StartedReply(Result<std::string> id) {
  if (!id.ok()) return SagaError(id.status());
  json::object out;
  out["id"] = *id;
  return Json(201, out);
}

HttpResponse StartSaga(SagaOrchestrator& orch, const std::string& body,
                       const std::string& traceparent, DeferredSagaStart* deferred) {
  Result<json::object> o = BodyObject(body, false);
  if (!o.ok()) return SagaError(o.status());
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
      return SagaError(InvalidArgumentError("unexpected or mistyped member '" + std::string(key) +
                                            "' (definition: string, version: integer, id: string, "
                                            "data: any JSON)"));
    }
  }
  if (req.definition.empty()) return SagaError(InvalidArgumentError("'definition' is required"));
  req.traceparent = traceparent;
  if (deferred != nullptr) {
    deferred->request = std::move(req);
    deferred->finish = StartedReply;
    return HttpResponse();
  }
  return StartedReply(orch.Start(req));
}

HttpResponse ListSagas(SagaOrchestrator& orch, const QueryParams& query) {
  SagaListFilter f;
  const std::string* state = QueryValue(query, "state");
  if (state != nullptr && !state->empty()) {
    bool found = false;
    for (SagaState s : {SagaState::kRunning, SagaState::kCompensating, SagaState::kCompleted,
                        SagaState::kCompensated}) {
      if (SagaStateName(s) == *state) {
        f.state = s;
        found = true;
      }
    }
    if (!found) {
      return SagaError(
          InvalidArgumentError("state must be running, compensating, completed or compensated"));
    }
  }
  if (const std::string* d = QueryValue(query, "definition")) f.definition = *d;
  if (const std::string* s = QueryValue(query, "stuck")) {
    if (*s == "true" || *s == "1" || s->empty()) {
      f.stuck_only = true;
    } else if (*s != "false" && *s != "0") {
      return SagaError(InvalidArgumentError("query parameter 'stuck' must be true or false"));
    }
  }
  Result<int64_t> idle = QueryInt(query, "idle_ms", 0, 0, SagaLimits::kMaxTimeoutMs * 100);
  if (!idle.ok()) return SagaError(idle.status());
  f.idle_for_ms = *idle;
  Result<int64_t> limit = QueryInt(query, "limit", 1000, 1, 100'000);
  if (!limit.ok()) return SagaError(limit.status());
  f.limit = static_cast<size_t>(*limit);
  std::string body = "{\"sagas\":[";
  bool first = true;
  for (const SagaSummary& s : orch.List(f)) {
    if (!first) body += ",";
    first = false;
    body += SagaSummaryToJson(s);
  }
  body += "]}";
  return JsonText(200, std::move(body));
}

// The query parameters each saga route takes (router.h, CheckQuery).
Status CheckSagaQuery(const SagaRequest& request) {
  switch (request.route) {
    case RouteId::kListSagas:
      return CheckQuery(request.query, {"state", "definition", "stuck", "idle_ms", "limit"});
    case RouteId::kListSagaTimers:
      return CheckQuery(request.query, {"limit"});
    default:
      return CheckQuery(request.query, {});
  }
}

// Every route, for an admin (or with auth disabled).
HttpResponse HandleAsAdmin(SagaOrchestrator& orch, const SagaRequest& request,
                           DeferredSagaStart* deferred) {
  if (Status s = CheckSagaQuery(request); !s.ok()) return SagaError(s);
  const QueryParams& query = request.query;
  const std::string& id = request.id;
  switch (request.route) {
    case RouteId::kListSagaDefinitions: {
      std::string body = "{\"definitions\":[";
      bool first = true;
      for (const SagaDefinition& d : orch.ListDefinitions()) {
        if (!first) body += ",";
        first = false;
        body += d.ToJson();
      }
      body += "]}";
      return JsonText(200, std::move(body));
    }
    case RouteId::kRegisterSagaDefinition: {
      Result<SagaDefinition> d = ParseSagaDefinition(request.body);
      if (!d.ok()) return SagaError(d.status());
      Status s = orch.RegisterDefinition(*d);
      if (!s.ok()) return SagaError(s);
      json::object out;
      out["name"] = d->name;
      out["version"] = d->version;
      return Json(201, out);
    }
    case RouteId::kListSagaTimers: {
      Result<int64_t> limit = QueryInt(query, "limit", 1000, 1, 100'000);
      if (!limit.ok()) return SagaError(limit.status());
      std::string body = "{\"timers\":[";
      bool first = true;
      for (const SagaTimerInfo& ti : orch.ListTimers(static_cast<size_t>(*limit))) {
        if (!first) body += ",";
        first = false;
        body += SagaTimerToJson(ti);
      }
      body += "]}";
      return JsonText(200, std::move(body));
    }
    case RouteId::kStartSaga:
      return StartSaga(orch, request.body, request.traceparent, deferred);
    case RouteId::kListSagas:
      return ListSagas(orch, query);
    case RouteId::kDescribeSaga: {
      Result<SagaInfo> info = orch.Describe(id);
      if (!info.ok()) return SagaError(info.status());
      return JsonText(200, SagaInfoToJson(*info));
    }
    case RouteId::kCancelSaga: {
      Result<json::object> o = BodyObject(request.body, true);
      if (!o.ok()) return SagaError(o.status());
      std::string reason;
      for (const auto& [key, value] : *o) {
        if (key != "reason" || !value.is_string()) {
          return SagaError(InvalidArgumentError("unexpected or mistyped member '" +
                                                std::string(key) +
                                                "' (the body is {\"reason\": string})"));
        }
        reason = std::string(value.as_string());
      }
      Status s = orch.Cancel(id, reason);
      if (!s.ok()) return SagaError(s);
      Result<SagaInfo> info = orch.Describe(id);
      json::object out;
      out["id"] = id;
      if (info.ok()) out["state"] = std::string(SagaStateName(info->summary.state));
      return Json(200, out);
    }
    case RouteId::kRescheduleSagaTimer:
    case RouteId::kCancelSagaTimer: {
      Result<SagaTimerKind> kind = ParseSagaTimerKind(request.kind);
      if (!kind.ok()) return SagaError(kind.status());
      if (request.route == RouteId::kCancelSagaTimer) {
        Status s = orch.CancelTimer(id, *kind);
        if (!s.ok()) return SagaError(s);
        return Json(200, json::object{{"id", id}, {"cancelled", request.kind}});
      }
      Result<json::object> o = BodyObject(request.body, false);
      if (!o.ok()) return SagaError(o.status());
      for (const auto& [key, value] : *o) {
        if (key != "due_micros") {
          return SagaError(InvalidArgumentError("unexpected member '" + std::string(key) +
                                                "' (the body is {\"due_micros\": integer})"));
        }
      }
      auto it = o->find("due_micros");
      if (it == o->end() || !it->value().is_int64() || it->value().as_int64() < 0) {
        return SagaError(
            InvalidArgumentError("'due_micros' (integer >= 0, wall-clock microseconds) is "
                                 "required"));
      }
      Status s = orch.RescheduleTimer(id, *kind, it->value().as_int64());
      if (!s.ok()) return SagaError(s);
      return Json(
          200,
          json::object{{"id", id}, {"kind", request.kind}, {"due_micros", it->value().as_int64()}});
    }
    default:
      return SagaError(InternalError("not a saga route"));
  }
}

// The definition (name, version) if registered; version 0 = the latest.
std::optional<SagaDefinition> FindDefinition(SagaOrchestrator& orch, const std::string& name,
                                             uint32_t version) {
  for (SagaDefinition& d : orch.ListDefinitions()) {  // latest version first per name
    if (d.name == name && (version == 0 || d.version == version)) return std::move(d);
  }
  return std::nullopt;
}

bool MayUse(const SagaCaller& caller, const SagaDefinition& d) {
  for (const SagaStepDefinition& step : d.steps) {
    if (!caller.may_publish(step.participant)) return false;
  }
  return true;
}

bool MayUse(const SagaCaller& caller, const std::optional<SagaDefinition>& d) {
  // Unknown (or no longer registered): nothing to authorize against.
  return d.has_value() && MayUse(caller, *d);
}

HttpResponse StartAs(SagaOrchestrator& orch, const SagaRequest& request, const SagaCaller& caller,
                     DeferredSagaStart* deferred) {
  // A service that may start no saga of any registered definition is refused before its body
  // is read (a malformed body gets the same 403 as a well-formed one).
  bool may_start_any = false;
  for (const SagaDefinition& d : orch.ListDefinitions()) {
    if (MayUse(caller, d)) {
      may_start_any = true;
      break;
    }
  }
  if (!may_start_any) {
    return SagaError(PermissionDeniedError(
        "service '" + caller.service +
        "' may not start sagas: it needs publish permission on every participant topic of a "
        "registered definition"));
  }
  // Only as much of the body as authorization needs; StartSaga validates the rest.
  Result<json::object> o = BodyObject(request.body, false);
  if (!o.ok()) return SagaError(o.status());
  auto d = o->find("definition");
  if (d == o->end() || !d->value().is_string()) {
    return StartSaga(orch, request.body, request.traceparent, deferred);
  }
  const std::string name(d->value().as_string());
  uint32_t version = 0;
  if (auto v = o->find("version"); v != o->end() && v->value().is_int64() &&
                                   v->value().as_int64() > 0 &&
                                   v->value().as_int64() <= SagaLimits::kMaxVersion) {
    version = static_cast<uint32_t>(v->value().as_int64());
  }
  // An unknown definition gets the same answer as one the caller may not use.
  if (!MayUse(caller, FindDefinition(orch, name, version))) {
    return SagaError(PermissionDeniedError(
        "service '" + caller.service + "' may not start sagas of definition '" + name +
        "': it needs publish permission on every participant topic of the definition"));
  }
  if (Status s = CheckSagaQuery(request); !s.ok()) return SagaError(s);
  std::string taken;  // the id asked for, if any
  if (auto id = o->find("id"); id != o->end() && id->value().is_string()) {
    taken = std::string(id->value().as_string());
  }
  // The id is held by another saga. Saga ids are one namespace, so a taken id cannot look
  // free; but nothing about a saga the caller may not read is told. (Checked after the start,
  // so that no saga started in between can slip its definition into the message.)
  auto answer = [&orch, caller, taken](HttpResponse res) {
    if (res.result() != http::status::conflict || taken.empty()) return res;
    Result<SagaInfo> existing = orch.Describe(taken);
    if (!existing.ok() || !MayUse(caller, FindDefinition(orch, existing->summary.definition,
                                                         existing->summary.version))) {
      return SagaError(
          AlreadyExistsError("saga id '" + taken + "' is already taken (choose another id)"));
    }
    return res;
  };
  HttpResponse res = StartSaga(orch, request.body, request.traceparent, deferred);
  if (deferred != nullptr && deferred->finish) {
    deferred->finish = [started = std::move(deferred->finish),
                        answer = std::move(answer)](Result<std::string> id) {
      return answer(started(std::move(id)));
    };
    return res;
  }
  return answer(std::move(res));
}

}  // namespace

HttpResponse HandleSagaRoute(SagaOrchestrator& orch, const SagaRequest& request,
                             const SagaCaller& caller, DeferredSagaStart* deferred) {
  if (caller.admin) return HandleAsAdmin(orch, request, deferred);
  if (request.route == RouteId::kStartSaga) return StartAs(orch, request, caller, deferred);
  if (request.route == RouteId::kDescribeSaga) {
    // One answer for a missing saga and one the caller may not read: the same 404.
    Result<SagaInfo> info = orch.Describe(request.id);
    if (!info.ok() ||
        !MayUse(caller, FindDefinition(orch, info->summary.definition, info->summary.version))) {
      return SagaError(NotFoundError("no saga '" + request.id + "'"));
    }
    if (Status s = CheckSagaQuery(request); !s.ok()) return SagaError(s);
    return JsonText(200, SagaInfoToJson(*info));
  }
  return SagaError(PermissionDeniedError(
      "service '" + caller.service +
      "': only admin tokens may list sagas, timers and definitions, register definitions, "
      "cancel sagas or move their timers"));
}

HttpResponse ServeSagaRequest(SagaOrchestrator& orch, http::verb method, std::string_view target,
                              std::string body, const SagaCaller& caller) {
  const std::string_view path = target.substr(0, target.find('?'));
  Api::Match match = Api::MatchRoute(method, path, /*with_store=*/false, /*with_sagas=*/true);
  if (match.route != nullptr && match.route->module != Api::Module::kSagas) {
    match = Api::Match{};
  }
  if (match.route == nullptr) {
    if (match.allow.empty())
      return JsonError(http::status::not_found, "NOT_FOUND", "no such route");
    HttpResponse r = JsonError(http::status::method_not_allowed, "METHOD_NOT_ALLOWED",
                               "method " + std::string(http::to_string(method)) +
                                   " is not allowed (allowed: " + match.allow + ")");
    r.set(http::field::allow, match.allow);
    return r;
  }
  SagaRequest r;
  r.route = match.route->id;
  Result<DecodedTarget> decoded = DecodeTarget(target, match.params);
  if (!decoded.ok()) return ErrorReply(decoded.status());
  r.query = std::move(decoded->query);
  for (auto& [name, value] : decoded->params) (name == "id" ? r.id : r.kind) = std::move(value);
  r.body = std::move(body);
  return HandleSagaRoute(orch, r, caller);
}

asio::awaitable<HttpReply> Api::HandleSagas(Call& call) {
  const Principal* who = call.principal;
  // With cluster:, a sidecar where the leased orchestrator does not run forwards the request,
  // unread, to the one holding the lease "sagas", which authorizes it as it would its own.
  std::optional<HttpReply> routed = co_await RouteToLeaseHolder(call, "sagas");
  if (routed.has_value()) co_return std::move(*routed);
  // A stopped orchestrator (a failed saga-log write it could not undo) holds state its log
  // does not: every saga route, reads included, says a restart is needed.
  if (Status stopped = d_.sagas->Stopped(); !stopped.ok()) {
    co_return api_internal::Error(http::status::service_unavailable, "UNAVAILABLE",
                                  stopped.message());
  }
  SagaRequest r;
  r.route = call.route.id;
  r.id = call.Param("id");
  r.kind = call.Param("kind");
  r.query = std::move(call.query);
  r.body = call.req.body();
  // W3C Trace Context: a request with more than one traceparent header has none that counts
  // (the saga then starts a new trace, as for a malformed one).
  if (call.req.count("traceparent") == 1) r.traceparent = std::string(call.req["traceparent"]);
  SagaOrchestrator* sagas = d_.sagas;
  // Admins (and every request with auth disabled) may use every saga route; HandleSagaRoute
  // authorizes other services itself (it must give one answer for what they may not see and
  // what does not exist). `r` and `who` live in this coroutine frame until the job is done.
  // (A lambda with an init-capture built inside the co_await expression is destroyed wrongly
  // by GCC 12.)
  // A start is deferred: it is authorized and checked here, then waits for its sync without
  // holding a thread (StartAsync).
  DeferredSagaStart deferred;
  auto job = [sagas, &r, who, &deferred]() -> HttpResponse {
    SagaCaller caller;
    caller.admin = who->admin;
    caller.service = who->service;
    caller.may_publish = [who](std::string_view topic) { return who->CanPublish(topic); };
    return HandleSagaRoute(*sagas, r, caller, &deferred);
  };
  // A new definition may name new command topics (refused to HTTP publishes).
  const bool may_define = r.route == RouteId::kRegisterSagaDefinition;
  // The orchestrator appends commands to every participant topic: a definition may not make
  // it write into a topic another part of converge owns (the store's feed, the relays' dead
  // letters; '_' names the definition itself refuses). Only admins define (others get
  // HandleSagaRoute's answer); a body that does not parse gets that answer too.
  if (may_define && who->admin) {
    if (Result<SagaDefinition> def = ParseSagaDefinition(r.body); def.ok()) {
      for (const SagaStepDefinition& step : def->steps) {
        if (std::string owner = d_.system_topics->OwnerOfOutsideSagas(step.participant);
            !owner.empty()) {
          co_return SystemTopicError(
              step.participant, owner,
              "sending saga commands to it (step '" + step.name + "' names it as its participant)");
        }
      }
    }
  }
  // On the pool: the orchestrator's state lock is held through each batch's sync.
  HttpResponse res = co_await d_.pool->Run(std::move(job));
  if (deferred.finish) {
    using Started = Result<std::string>;
    auto start = [sagas, &deferred](std::function<void(Started)> done) {
      sagas->StartAsync(deferred.request, std::move(done));
    };
    Started started = co_await BlockingPool::RunInline<Started>(std::move(start));
    if (started.ok()) {
      res = deferred.finish(std::move(started));  // 201: no lookup
    } else {
      // A refused start's answer may look the taken id up (the state lock): on the pool.
      auto refused = [&deferred, &started] { return deferred.finish(std::move(started)); };
      res = co_await d_.pool->Run(std::move(refused));
    }
  }
  if (may_define) d_.system_topics->DefinitionsChanged();
  res.version(call.req.version());
  res.prepare_payload();
  co_return Reply(std::move(res));
}

}  // namespace converge::server
