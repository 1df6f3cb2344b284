// Every route of `converge serve` goes through one router: the request target is read the
// same way (bad percent-escapes, '+'), the same status gets the same HTTP status and error
// code, and a wrong method or an unknown path gets the same answer, whichever part of the
// server (log and groups, the shared store, the sagas) serves the route.
#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "serve_process.h"
#include "test_util.h"

namespace converge {
namespace {

using testing::HttpCall;
using testing::HttpResult;
using testing::ServeProcess;

const testing::HttpHeaders kJson = {{"Content-Type", "application/json"}};

class RoutingTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // Small event and document bounds, so that "too large" is cheap to send.
    server_ = std::make_unique<ServeProcess>(
        "limits:\n  max_event_bytes: 4096\nstore:\n  max_document_bytes: 4096\n");
    Status s = server_->Start();
    ASSERT_TRUE(s.ok()) << s.ToString();
    ASSERT_EQ(Call("POST", "/v1/topics", R"({"name":"orders"})").status, 201);
    ASSERT_EQ(Call("PUT", "/v1/collections/carts", "{}").status, 201);
  }
  HttpResult Call(const std::string& method, const std::string& target,
                  const std::string& body = "") {
    return HttpCall(server_->port(), method, target, body, body.empty() ? testing::HttpHeaders{}
                                                                         : kJson);
  }

  std::unique_ptr<ServeProcess> server_;
};

// A malformed percent-escape in a path or a query is 400 INVALID_ARGUMENT naming it, on the
// routes of every module. (The saga routes used to decode "%zz" as the three characters and
// answer 404 for a saga of that id.)
TEST_F(RoutingTest, ABadPercentEscapeIsTheSame400OnEveryRoute) {
  struct Probe {
    const char* method;
    const char* target;
  };
  const std::vector<Probe> probes = {
      {"GET", "/v1/topics/ord%zzers"},
      {"GET", "/v1/topics?x=%zz"},
      {"POST", "/v1/topics/orders/groups/g%4/fetch"},
      {"GET", "/v1/collections/carts/docs/a%zz"},
      {"GET", "/v1/collections/ca%rts"},
      {"GET", "/v1/collections/carts/docs?prefix=%zz"},
      {"DELETE", "/v1/collections/carts/docs/a%4"},
      {"GET", "/v1/sagas/a%zz"},
      {"GET", "/v1/sagas?definition=%zz"},
      {"POST", "/v1/sagas/a%4/cancel"},
      {"DELETE", "/v1/sagas/a/timers/retry%"},
  };
  for (const Probe& p : probes) {
    HttpResult r = Call(p.method, p.target, std::string(p.method) == "GET" ? "" : "{}");
    EXPECT_EQ(r.status, 400) << p.method << " " << p.target << ": " << r.body;
    EXPECT_EQ(r.code(), "INVALID_ARGUMENT") << p.target;
    EXPECT_NE(r.message().find("malformed percent-escape"), std::string::npos)
        << p.target << ": " << r.body;
  }
}

// '+' is a plus sign on every route, in the path and in the query (RFC 3986; a space is %20).
// (The saga routes used to read it as a space.)
TEST_F(RoutingTest, PlusIsAPlusInPathsAndQueriesOnEveryRoute) {
  // The store: a key with '+', found by its path and by a prefix with '+'.
  ASSERT_EQ(Call("PUT", "/v1/collections/carts/docs/a+b", R"({"n":1})").status, 201);
  EXPECT_EQ(Call("GET", "/v1/collections/carts/docs/a+b").body, R"({"n":1})");
  EXPECT_EQ(Call("GET", "/v1/collections/carts/docs/a%2Bb").body, R"({"n":1})");
  EXPECT_EQ(Call("GET", "/v1/collections/carts/docs/a%20b").status, 400);  // not "a+b"
  HttpResult listed = Call("GET", "/v1/collections/carts/docs?prefix=a+");
  EXPECT_NE(listed.body.find(R"("key":"a+b")"), std::string::npos) << listed.body;
  // The sagas: the id in the path and a query value keep their '+'.
  HttpResult saga = Call("GET", "/v1/sagas/a+b");
  EXPECT_EQ(saga.status, 404) << saga.body;
  EXPECT_NE(saga.message().find("'a+b'"), std::string::npos) << saga.body;
  HttpResult timer = Call("PUT", "/v1/sagas/s/timers/step+timeout", R"({"due_micros":1})");
  EXPECT_EQ(timer.status, 400) << timer.body;
  EXPECT_NE(timer.message().find("step+timeout"), std::string::npos) << timer.body;
  // The log: a topic name with '+' is refused as such (not read as a space).
  HttpResult topic = Call("GET", "/v1/topics/a+b");
  EXPECT_EQ(topic.status, 400) << topic.body;
  EXPECT_NE(topic.message().find("'a+b'"), std::string::npos) << topic.body;
}

// One error mapping: the same status is the same HTTP status and code on every module's
// routes. A bound on the request itself (an event, a document) is 413 PAYLOAD_TOO_LARGE
// on the log's and the store's routes alike (the store used to answer 413
// RESOURCE_EXHAUSTED, the code the other routes use for 429).
TEST_F(RoutingTest, TheSameFailureIsTheSameStatusAndCodeOnEveryRoute) {
  const std::string big = R"({"pad":")" + std::string(5000, 'x') + R"("})";
  HttpResult event = HttpCall(server_->port(), "POST", "/v1/topics/orders/events", big,
                              {{"Content-Type", "application/json"},
                               {"ce-specversion", "1.0"},
                               {"ce-id", "1"},
                               {"ce-source", "/t"},
                               {"ce-type", "t"}});
  HttpResult doc = Call("PUT", "/v1/collections/carts/docs/big", big);
  EXPECT_EQ(event.status, 413) << event.body;
  EXPECT_EQ(doc.status, 413) << doc.body;
  EXPECT_EQ(event.code(), "PAYLOAD_TOO_LARGE");
  EXPECT_EQ(doc.code(), "PAYLOAD_TOO_LARGE") << doc.body;

}

// A method a path does not take and a path no route has: the same 405 (with Allow, HEAD
// wherever GET is) and 404 on every module's routes.
TEST_F(RoutingTest, WrongMethodsAndUnknownPathsGetTheSameAnswerEverywhere) {
  struct Probe {
    const char* path;
    const char* allow;
  };
  for (const Probe& p : {Probe{"/v1/topics", "GET, POST, HEAD"},
                         Probe{"/v1/collections", "GET, HEAD"},
                         Probe{"/v1/collections/_transaction", "POST"},
                         Probe{"/v1/collections/carts/docs/k", "GET, PUT, DELETE, HEAD"},
                         Probe{"/v1/sagas", "GET, POST, HEAD"},
                         Probe{"/v1/sagas/x/cancel", "POST"}}) {
    HttpResult r = Call("PATCH", p.path, "{}");
    EXPECT_EQ(r.status, 405) << p.path << ": " << r.body;
    EXPECT_EQ(r.code(), "METHOD_NOT_ALLOWED") << p.path;
    EXPECT_EQ(r.Header("Allow"), p.allow) << p.path;
    std::string listed = p.allow;  // the message lists the table's methods (HEAD is added)
    if (const size_t head = listed.find(", HEAD"); head != std::string::npos) listed.erase(head);
    EXPECT_EQ(r.message(),
              std::string("method PATCH is not allowed on ") + p.path + " (allowed: " + listed + ")")
        << p.path;
  }
  for (const char* path : {"/v1/topics/orders/nothing", "/v1/collections/carts/nothing",
                           "/v1/sagas/x/nothing", "/v1/nothing"}) {
    HttpResult r = Call("GET", path);
    EXPECT_EQ(r.status, 404) << path << ": " << r.body;
    EXPECT_EQ(r.code(), "NOT_FOUND") << path;
    EXPECT_EQ(r.message(), std::string("no such endpoint: ") + path) << path;
  }
}

// Query parameters are read as strictly as bodies on every /v1 route: one the route does not
// take (a typo such as ?stat=running, a body field sent in the wrong place) or one given twice
// is 400 INVALID_ARGUMENT naming it, and the request changes nothing. (Only the group routes
// and the store's writes refused them; the other routes ignored them silently, so
// GET /v1/sagas?stat=failed listed every saga and POST /v1/topics?partitions=8 made one.)
// The probes and /metrics ignore their query (probers add their own).
TEST_F(RoutingTest, UnknownAndRepeatedQueryParametersAre400OnEveryApiRoute) {
  ASSERT_EQ(Call("POST", "/v1/topics/orders/groups", R"({"name":"g"})").status, 201);
  ASSERT_EQ(Call("PUT", "/v1/collections/carts/docs/k", R"({"n":1})").status, 201);
  const std::string definition =
      "name: order\nversion: 1\nsteps:\n  - name: charge\n    participant: payments\n"
      "    action: payments.charge\n    pivot: true\n    timeout_ms: 60000\n";
  ASSERT_EQ(HttpCall(server_->port(), "POST", "/v1/saga-definitions", definition,
                     {{"Content-Type", "application/yaml"}})
                .status,
            201);
  ASSERT_EQ(Call("POST", "/v1/sagas", R"({"definition":"order","id":"s1"})").status, 201);
  const std::string event = R"({"specversion":"1.0","id":"q1","source":"/s","type":"t"})";
  const std::string lease = R"({"partition":0,"offset":0,"lease_id":"1"})";
  struct Probe {
    std::string method, path, body;
  };
  const std::vector<Probe> probes = {
      {"GET", "/v1/topics", ""},
      {"POST", "/v1/topics", R"({"name":"made"})"},
      {"GET", "/v1/topics/orders", ""},
      {"POST", "/v1/topics/orders/events", event},
      {"POST", "/v1/topics/orders/groups", R"({"name":"h"})"},
      {"POST", "/v1/topics/orders/groups/g/fetch", R"({"wait_ms":0})"},
      {"POST", "/v1/topics/orders/groups/g/ack", "{\"acks\":[" + lease + "]}"},
      {"POST", "/v1/topics/orders/groups/g/nack", "{\"nacks\":[" + lease + "]}"},
      {"GET", "/v1/topics/orders/groups/g/stream", ""},
      {"POST", "/v1/topics/orders/groups/g/leave", R"({"consumer":"a"})"},
      {"GET", "/v1/topics/orders/groups/g/dead-letters", ""},
      {"POST", "/v1/topics/orders/groups/g/dead-letters/replay", "{}"},
      {"GET", "/v1/collections", ""},
      {"GET", "/v1/collections/carts", ""},
      {"PUT", "/v1/collections/carts", "{}"},
      {"DELETE", "/v1/collections/carts", ""},
      {"GET", "/v1/collections/carts/docs", ""},
      {"GET", "/v1/collections/carts/docs/k", ""},
      {"PUT", "/v1/collections/carts/docs/k", R"({"n":2})"},
      {"DELETE", "/v1/collections/carts/docs/k", ""},
      {"POST", "/v1/collections/_transaction",
       R"({"ops":[{"op":"put","collection":"carts","key":"k","value":{"n":3}}]})"},
      {"GET", "/v1/saga-definitions", ""},
      {"POST", "/v1/saga-definitions",
       R"({"name":"other","version":1,"steps":[{"name":"a","participant":"p2","action":"p2.go","pivot":true}]})"},
      {"GET", "/v1/sagas", ""},
      {"POST", "/v1/sagas", R"({"definition":"order","id":"s2"})"},
      {"GET", "/v1/sagas/s1", ""},
      {"POST", "/v1/sagas/s1/cancel", "{}"},
      {"GET", "/v1/saga-timers", ""},
      {"PUT", "/v1/sagas/s1/timers/step-timeout", R"({"due_micros":1})"},
      {"DELETE", "/v1/sagas/s1/timers/step-timeout", ""},
  };
  auto snapshot = [&] {
    std::string s;
    for (const char* target :
         {"/v1/topics", "/v1/topics/orders", "/v1/collections", "/v1/collections/carts/docs",
          "/v1/saga-definitions", "/v1/sagas/s1", "/v1/saga-timers"}) {
      s += Call("GET", target).body;
      s += "\n";
    }
    return s;
  };
  const std::string before = snapshot();
  for (const Probe& p : probes) {
    for (const char* query : {"?bogus=1", "?limit=5&bogus=1"}) {
      const bool publish = p.path.ends_with("/events");
      HttpResult r = HttpCall(
          server_->port(), p.method, p.path + query, p.body,
          p.body.empty() ? testing::HttpHeaders{}
          : publish      ? testing::HttpHeaders{{"Content-Type", "application/cloudevents+json"}}
                         : kJson);
      EXPECT_EQ(r.status, 400) << p.method << " " << p.path << query << ": " << r.body;
      EXPECT_EQ(r.code(), "INVALID_ARGUMENT") << p.path << query << ": " << r.body;
      // Named: 'bogus', or 'limit' on a route that does not take it either.
      EXPECT_TRUE(r.message().find("'bogus'") != std::string::npos ||
                  r.message().find("'limit'") != std::string::npos)
          << p.path << query << ": " << r.body;
    }
  }
  // A parameter a route takes, given twice, is not read as either value.
  for (const char* target :
       {"/v1/sagas?limit=1&limit=2", "/v1/sagas?state=running&state=failed",
        "/v1/saga-timers?limit=1&limit=2", "/v1/collections/carts/docs?limit=1&limit=2",
        "/v1/topics/orders/groups/g/dead-letters?limit=1&limit=2"}) {
    HttpResult r = Call("GET", target);
    EXPECT_EQ(r.status, 400) << target << ": " << r.body;
    EXPECT_TRUE(r.message().find("'limit'") != std::string::npos ||
                r.message().find("'state'") != std::string::npos)
        << target << ": " << r.body;
  }
  EXPECT_EQ(snapshot(), before);
  // The routes still work without them, and with the parameters they take.
  EXPECT_EQ(Call("GET", "/v1/sagas?limit=5&state=running").status, 200);
  EXPECT_EQ(Call("GET", "/v1/saga-timers?limit=5").status, 200);
  // Probes and metrics ignore their query.
  for (const char* target : {"/healthz?probe=1", "/readyz?x=1", "/metrics?name=up"}) {
    EXPECT_EQ(Call("GET", target).status, 200) << target;
  }
}

// The query is read after authorization: a caller without permission gets the same 403 (or,
// for a saga it may not read, the same 404) with or without an unknown parameter.
TEST(RoutingAuthTest, QueryParametersAreReadAfterAuthorization) {
  ServeProcess server(
      "auth:\n  tokens:\n"
      "    - {service: ops, token: ops-token-0123456789abc, admin: true}\n"
      "    - {service: app, token: app-token-0123456789abc, publish: [orders], "
      "subscribe: [orders]}\n");
  ASSERT_TRUE(server.Start().ok()) << server.Log();
  const std::string ops = "ops-token-0123456789abc", app = "app-token-0123456789abc";
  ASSERT_EQ(
      HttpCall(server.port(), "POST", "/v1/topics", R"({"name":"secret"})", kJson, ops).status,
      201);
  struct Probe {
    const char* method;
    const char* path;
    int status;
  };
  for (const Probe& p :
       {Probe{"POST", "/v1/topics", 403}, Probe{"GET", "/v1/topics/secret", 403},
        Probe{"POST", "/v1/topics/secret/events", 403},
        Probe{"GET", "/v1/topics/secret/groups/g/dead-letters", 403},
        Probe{"GET", "/v1/sagas", 403}, Probe{"GET", "/v1/saga-timers", 403},
        Probe{"POST", "/v1/sagas/nope/cancel", 403}, Probe{"GET", "/v1/sagas/nope", 404}}) {
    const std::string body = std::string(p.method) == "GET" ? "" : "{}";
    HttpResult plain = HttpCall(server.port(), p.method, p.path, body, kJson, app);
    HttpResult bogus =
        HttpCall(server.port(), p.method, std::string(p.path) + "?bogus=1", body, kJson, app);
    EXPECT_EQ(plain.status, p.status) << p.path << ": " << plain.body;
    EXPECT_EQ(bogus.status, p.status) << p.path << ": " << bogus.body;
    EXPECT_EQ(bogus.body, plain.body) << p.path;
  }
}

}  // namespace
}  // namespace converge
