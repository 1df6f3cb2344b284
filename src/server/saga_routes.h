// SagaRoutes: the handlers of the saga orchestrator's routes. The server's one router
// (Api::RouteTable) matches the route, authenticates the caller and reads the target (id,
// kind and query percent-decoded, router.h); the handlers call the orchestrator (blocking:
// run them off the I/O threads) and answer with the server's one error mapping.
//   GET    /v1/saga-definitions                  definitions
//   POST   /v1/saga-definitions                  register (JSON or YAML body)
//   POST   /v1/sagas                             start {"definition","version","data","id"}
//   GET    /v1/sagas?state=&definition=&stuck=&idle_ms=&limit=
//   GET    /v1/sagas/{id}                        status, steps, timers, history
//   POST   /v1/sagas/{id}/cancel                 {"reason"}
//   GET    /v1/saga-timers?limit=
//   PUT    /v1/sagas/{id}/timers/{kind}          {"due_micros"} reschedule
//   DELETE /v1/sagas/{id}/timers/{kind}          cancel the timer
// Thread-safety: as the orchestrator (its calls are thread-safe).
#pragma once

#include <functional>
#include <string>
#include <string_view>

#include "converge/saga.h"
#include "server/router.h"

namespace converge::server {

// Who calls, for the authorization of the saga routes.
struct SagaCaller {
  bool admin = true;
  std::string service;                                      // named in 403 messages
  std::function<bool(std::string_view topic)> may_publish;  // required unless admin
};

// One saga request as the router read it.
struct SagaRequest {
  RouteId route = RouteId::kListSagas;  // one of the saga RouteIds
  std::string id;                       // {id}, decoded
  std::string kind;                     // {kind}, decoded
  QueryParams query;                    // decoded
  std::string body;
  // The request's W3C `traceparent` header (POST /v1/sagas: the saga continues its trace;
  // malformed or absent = a new trace). Empty when absent or sent more than once.
  std::string traceparent;
};

// The routes as `caller` may use them; the caller is authorized before anything is looked up
// or validated. An admin may use every route. A non-admin service may start a saga (POST
// /v1/sagas) and read one (GET /v1/sagas/{id}) if `may_publish` allows every participant
// topic of the saga's definition (the orchestrator sends commands there on its behalf); every
// other route is for admins (403). It learns nothing it may not see: a saga it may not read
// is 404 exactly like a missing id; a definition it may not start is 403 exactly like a
// missing one; an id taken by a saga it may not read is 409 without naming that saga's
// definition; a service that may start no registered definition is 403 before its body is
// read. Blocking, except for a saga start when `deferred` is set (below).
//
// A start the route leaves to its caller: with `deferred`, a request that gets as far as
// starting a saga is not started here; `deferred->request` is filled, `deferred->finish` set,
// and the returned response is to be ignored. The caller runs the request with
// SagaOrchestrator::StartAsync (so that nothing waits on a thread for the start's sync) and
// answers with finish(outcome). `orchestrator` and `caller` must outlive finish.
struct DeferredSagaStart {
  SagaStartRequest request;
  std::function<HttpResponse(Result<std::string>)> finish;  // set: a start is deferred
};
HttpResponse HandleSagaRoute(SagaOrchestrator& orchestrator, const SagaRequest& request,
                             const SagaCaller& caller, DeferredSagaStart* deferred = nullptr);

// The saga routes alone, routed by the server's table (Api::MatchRoute) and read like every
// request (404/405/400 as the server answers them): for tests and tools that serve the saga
// routes without the rest of the server. Blocking.
HttpResponse ServeSagaRequest(SagaOrchestrator& orchestrator, http::verb method,
                              std::string_view target, std::string body,
                              const SagaCaller& caller = {});

}  // namespace converge::server
