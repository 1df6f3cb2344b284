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
      {"GET", "/v1/schemas/a%zz"},
      {"POST", "/v1/schemas/a%4/versions"},
      {"GET", "/v1/schemas/a/versions/1%"},
      {"PUT", "/v1/topics/ord%zz/schema"},
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

}  // namespace
}  // namespace converge
