// The schema registry of the real `converge serve` (docs/schemas.md): registering versions,
// compatibility modes (409 and nothing stored), durability across a restart, validation of
// publishes on a bound topic (400 naming the path, nothing of the batch appended), and who may
// do what (admins change the registry; any token reads it; authorization before the body).
#include <gtest/gtest.h>
#include <signal.h>

#include <boost/json.hpp>
#include <memory>
#include <string>

#include "serve_process.h"
#include "test_util.h"

namespace converge {
namespace {

namespace json = boost::json;
using testing::HttpCall;
using testing::HttpHeaders;
using testing::HttpResult;
using testing::ServeProcess;

constexpr char kAdmin[] = "ops-secret-token-0001";
constexpr char kPublisher[] = "orders-secret-token-01";
constexpr char kOther[] = "other-secret-token-001";

const char* const kConfig =
    "auth:\n"
    "  tokens:\n"
    "    - {service: ops, token: ops-secret-token-0001, admin: true}\n"
    "    - {service: orders, token: orders-secret-token-01, publish: [orders], subscribe: "
    "[orders]}\n"
    "    - {service: other, token: other-secret-token-001, publish: [misc]}\n";

// Version 1 of order.created: a closed object.
const char* const kOrderV1 = R"({"schema":{
  "type":"object","required":["id","qty"],"additionalProperties":false,
  "properties":{"id":{"type":"string","minLength":1},"qty":{"type":"integer","minimum":1},
                "note":{"type":"string"}}}})";
// Adds a required field: not backward compatible (old events lack it).
const char* const kOrderV2Required = R"({"schema":{
  "type":"object","required":["id","qty","currency"],"additionalProperties":false,
  "properties":{"id":{"type":"string","minLength":1},"qty":{"type":"integer","minimum":1},
                "note":{"type":"string"},"currency":{"type":"string"}}}})";
// Adds an optional field to the closed object: backward compatible.
const char* const kOrderV2Optional = R"({"schema":{
  "type":"object","required":["id","qty"],"additionalProperties":false,
  "properties":{"id":{"type":"string","minLength":1},"qty":{"type":"integer","minimum":1},
                "note":{"type":"string"},"currency":{"type":"string"}}}})";

const HttpHeaders kJson = {{"Content-Type", "application/json"}};
const HttpHeaders kEvent = {{"Content-Type", "application/cloudevents+json"}};
const HttpHeaders kBatch = {{"Content-Type", "application/cloudevents-batch+json"}};

std::string Event(const std::string& id, const std::string& type, const std::string& data) {
  return R"({"specversion":"1.0","id":")" + id + R"(","source":"/test","type":")" + type +
         R"(","data":)" + data + "}";
}

class SchemaServeTest : public ::testing::Test {
 protected:
  void Start(const std::string& data_dir = "") {
    server_ = std::make_unique<ServeProcess>(kConfig, data_dir);
    ASSERT_OK(server_->Start());
  }
  HttpResult Call(std::string_view method, const std::string& target, const std::string& body = "",
                  const HttpHeaders& headers = {}, const std::string& token = kAdmin) {
    return HttpCall(server_->port(), method, target, body, headers, token);
  }
  // Events in the topic: the sum of its partitions' end offsets.
  uint64_t EndOffsets(const std::string& topic) {
    HttpResult r = Call("GET", "/v1/topics/" + topic, "", {}, kPublisher);
    EXPECT_EQ(r.status, 200) << r.body;
    if (r.status != 200) return 0;
    uint64_t n = 0;
    const json::value topic_json = json::parse(r.body);
    for (const auto& p : topic_json.at("partition_offsets").as_array()) {
      n += p.at("end_offset").to_number<uint64_t>();
    }
    return n;
  }
  void CreateTopic(const std::string& name) {
    HttpResult r = Call("POST", "/v1/topics", R"({"name":")" + name + R"("})", kJson);
    ASSERT_EQ(r.status, 201) << r.body;
  }
  std::unique_ptr<ServeProcess> server_;
};

TEST_F(SchemaServeTest, RegistersVersionsRefusesIncompatibleOnesAndKeepsThemAcrossARestart) {
  Start();
  HttpResult v1 = Call("POST", "/v1/schemas/order.created/versions", kOrderV1, kJson);
  ASSERT_EQ(v1.status, 201) << v1.body;
  EXPECT_EQ(json::parse(v1.body).at("version"), 1);
  EXPECT_EQ(v1.Header("Location"), "/v1/schemas/order.created/versions/1");
  // The same schema again: nothing new.
  HttpResult again = Call("POST", "/v1/schemas/order.created/versions", kOrderV1, kJson);
  EXPECT_EQ(again.status, 200) << again.body;
  EXPECT_EQ(json::parse(again.body).at("version"), 1);

  // Backward (the default): a new required field is refused, naming the finding.
  HttpResult refused = Call("POST", "/v1/schemas/order.created/versions", kOrderV2Required, kJson);
  ASSERT_EQ(refused.status, 409) << refused.body;
  EXPECT_EQ(refused.code(), "SCHEMA_INCOMPATIBLE");
  json::value findings = json::parse(refused.body).at("findings");
  ASSERT_FALSE(findings.as_array().empty()) << refused.body;
  EXPECT_EQ(findings.as_array()[0].at("path"), "/required") << refused.body;
  EXPECT_NE(refused.message().find("currency"), std::string::npos) << refused.body;
  // Nothing stored.
  HttpResult type = Call("GET", "/v1/schemas/order.created");
  ASSERT_EQ(type.status, 200) << type.body;
  EXPECT_EQ(json::parse(type.body).at("versions"), json::parse("[1]"));
  EXPECT_EQ(Call("GET", "/v1/schemas/order.created/versions/2").status, 404);

  // A compatible change registers as version 2.
  HttpResult v2 = Call("POST", "/v1/schemas/order.created/versions", kOrderV2Optional, kJson);
  ASSERT_EQ(v2.status, 201) << v2.body;
  EXPECT_EQ(json::parse(v2.body).at("version"), 2);
  // Forward: version 2 must read what the new version writes; any object is too much for it.
  // With none, anything goes in.
  HttpResult fwd =
      Call("PUT", "/v1/schemas/order.created", R"({"compatibility":"forward"})", kJson);
  ASSERT_EQ(fwd.status, 200) << fwd.body;
  EXPECT_EQ(json::parse(fwd.body).at("compatibility"), "forward");
  HttpResult fwd_refused =
      Call("POST", "/v1/schemas/order.created/versions", R"({"schema":{"type":"object"}})", kJson);
  EXPECT_EQ(fwd_refused.status, 409) << fwd_refused.body;
  ASSERT_EQ(Call("PUT", "/v1/schemas/order.created", R"({"compatibility":"none"})", kJson).status,
            200);
  HttpResult v3 = Call("POST", "/v1/schemas/order.created/versions", kOrderV2Required, kJson);
  ASSERT_EQ(v3.status, 201) << v3.body;
  EXPECT_EQ(json::parse(v3.body).at("version"), 3);
  // Schemas the validator would not enforce as written are refused.
  HttpResult bad = Call("POST", "/v1/schemas/other.type/versions",
                        R"({"schema":{"type":"object","properties":{"a":{"const":1}}}})", kJson);
  EXPECT_EQ(bad.status, 400) << bad.body;
  EXPECT_EQ(bad.code(), "INVALID_SCHEMA");
  EXPECT_EQ(Call("GET", "/v1/schemas/other.type").status, 404);
  // Strict bodies.
  EXPECT_EQ(
      Call("POST", "/v1/schemas/order.created/versions", R"({"schema":{},"x":1})", kJson).status,
      400);
  EXPECT_EQ(
      Call("PUT", "/v1/schemas/order.created", R"({"compatibility":"sideways"})", kJson).status,
      400);
  EXPECT_EQ(Call("GET", "/v1/schemas/bad%2Fname").status, 400);

  CreateTopic("orders");
  ASSERT_EQ(
      Call("PUT", "/v1/topics/orders/schema", R"({"type":"order.created","version":1})", kJson)
          .status,
      200);

  // Restart on the same data dir: versions, mode and the topic's binding are still there.
  std::string data = server_->data_dir();
  Result<int> code = server_->Signal(SIGTERM);
  ASSERT_TRUE(code.ok()) << code.status().ToString();
  auto first = std::move(server_);  // keeps its temp dir
  Start(data);
  HttpResult after = Call("GET", "/v1/schemas/order.created");
  ASSERT_EQ(after.status, 200) << after.body;
  EXPECT_EQ(json::parse(after.body).at("versions"), json::parse("[1,2,3]"));
  EXPECT_EQ(json::parse(after.body).at("compatibility"), "none");
  HttpResult got = Call("GET", "/v1/schemas/order.created/versions/1");
  ASSERT_EQ(got.status, 200) << got.body;
  EXPECT_EQ(json::parse(got.body).at("schema"), json::parse(kOrderV1).at("schema"));
  HttpResult latest = Call("GET", "/v1/schemas/order.created/versions/latest");
  EXPECT_EQ(json::parse(latest.body).at("version"), 3);
  HttpResult binding = Call("GET", "/v1/topics/orders/schema");
  ASSERT_EQ(binding.status, 200) << binding.body;
  EXPECT_EQ(json::parse(binding.body).at("version"), 1);
  HttpResult invalid =
      Call("POST", "/v1/topics/orders/events",
           Event("e1", "order.created", R"({"id":"o1","qty":0})"), kEvent, kPublisher);
  EXPECT_EQ(invalid.status, 400) << invalid.body;
  EXPECT_EQ(EndOffsets("orders"), 0u);
  HttpResult list = Call("GET", "/v1/schemas", "", {}, kOther);
  ASSERT_EQ(list.status, 200) << list.body;
  EXPECT_EQ(json::parse(list.body).at("types").as_array().size(), 1u) << list.body;
}

TEST_F(SchemaServeTest, ABoundTopicTakesOnlyValidEventsAndABadBatchWritesNothing) {
  Start();
  ASSERT_EQ(Call("POST", "/v1/schemas/order.created/versions", kOrderV1, kJson).status, 201);
  CreateTopic("orders");
  // Before the binding, anything goes.
  HttpResult loose = Call("POST", "/v1/topics/orders/events",
                          Event("e0", "whatever", R"({"qty":"many"})"), kEvent, kPublisher);
  ASSERT_EQ(loose.status, 200) << loose.body;
  ASSERT_EQ(EndOffsets("orders"), 1u);
  HttpResult bind = Call("PUT", "/v1/topics/orders/schema", R"({"type":"order.created"})", kJson);
  ASSERT_EQ(bind.status, 200) << bind.body;
  EXPECT_EQ(json::parse(bind.body).at("version"), "latest");

  HttpResult ok = Call("POST", "/v1/topics/orders/events",
                       Event("e1", "order.created", R"({"id":"o1","qty":2})"), kEvent, kPublisher);
  ASSERT_EQ(ok.status, 200) << ok.body;
  ASSERT_EQ(EndOffsets("orders"), 2u);

  // A batch whose third event fails: 400 naming it and the path; nothing of it is written.
  std::string batch = "[" + Event("b1", "order.created", R"({"id":"o2","qty":1})") + "," +
                      Event("b2", "order.created", R"({"id":"o3","qty":5})") + "," +
                      Event("b3", "order.created", R"({"id":"o4","qty":"x"})") + "]";
  HttpResult bad = Call("POST", "/v1/topics/orders/events", batch, kBatch, kPublisher);
  ASSERT_EQ(bad.status, 400) << bad.body;
  EXPECT_EQ(bad.code(), "SCHEMA_VIOLATION");
  json::value body = json::parse(bad.body);
  EXPECT_EQ(body.at("event"), 2);
  EXPECT_EQ(body.at("path"), "/qty");
  EXPECT_EQ(body.at("keyword"), "type");
  EXPECT_NE(bad.message().find("/qty"), std::string::npos) << bad.body;
  EXPECT_EQ(EndOffsets("orders"), 2u);

  // Other failures: a missing required field (path of the object), an unknown field, another
  // type, data that is not JSON, and binary mode.
  HttpResult missing = Call("POST", "/v1/topics/orders/events",
                            Event("m1", "order.created", R"({"id":"o5"})"), kEvent, kPublisher);
  EXPECT_EQ(missing.status, 400) << missing.body;
  EXPECT_EQ(json::parse(missing.body).at("keyword"), "required");
  HttpResult extra =
      Call("POST", "/v1/topics/orders/events",
           Event("m2", "order.created", R"({"id":"o5","qty":1,"x":{}})"), kEvent, kPublisher);
  EXPECT_EQ(extra.status, 400) << extra.body;
  EXPECT_EQ(json::parse(extra.body).at("path"), "/x");
  HttpResult other_type =
      Call("POST", "/v1/topics/orders/events",
           Event("m3", "order.cancelled", R"({"id":"o5","qty":1})"), kEvent, kPublisher);
  EXPECT_EQ(other_type.status, 400) << other_type.body;
  EXPECT_EQ(other_type.code(), "SCHEMA_VIOLATION");
  HttpResult text = Call("POST", "/v1/topics/orders/events",
                         R"({"specversion":"1.0","id":"m4","source":"/t","type":"order.created",)"
                         R"("datacontenttype":"text/plain","data":"hello"})",
                         kEvent, kPublisher);
  EXPECT_EQ(text.status, 400) << text.body;
  HttpResult binary = Call("POST", "/v1/topics/orders/events", R"({"id":"o6","qty":-1})",
                           {{"Content-Type", "application/json"},
                            {"ce-specversion", "1.0"},
                            {"ce-id", "m5"},
                            {"ce-source", "/t"},
                            {"ce-type", "order.created"}},
                           kPublisher);
  EXPECT_EQ(binary.status, 400) << binary.body;
  EXPECT_EQ(json::parse(binary.body).at("path"), "/qty");
  EXPECT_EQ(json::parse(binary.body).at("keyword"), "minimum");
  EXPECT_EQ(EndOffsets("orders"), 2u);

  // A valid batch goes in whole.
  std::string good = "[" + Event("g1", "order.created", R"({"id":"o7","qty":1})") + "," +
                     Event("g2", "order.created", R"({"id":"o8","qty":3,"note":"n"})") + "]";
  HttpResult good_reply = Call("POST", "/v1/topics/orders/events", good, kBatch, kPublisher);
  ASSERT_EQ(good_reply.status, 200) << good_reply.body;
  EXPECT_EQ(EndOffsets("orders"), 4u);

  // Binding to an unknown type or version: 404, and the binding is unchanged.
  EXPECT_EQ(Call("PUT", "/v1/topics/orders/schema", R"({"type":"nope"})", kJson).status, 404);
  EXPECT_EQ(
      Call("PUT", "/v1/topics/orders/schema", R"({"type":"order.created","version":9})", kJson)
          .status,
      404);
  // Unbound: anything goes again.
  EXPECT_EQ(Call("DELETE", "/v1/topics/orders/schema").status, 204);
  EXPECT_EQ(Call("GET", "/v1/topics/orders/schema").status, 404);
  HttpResult free = Call("POST", "/v1/topics/orders/events",
                         Event("f1", "order.created", R"({"qty":"x"})"), kEvent, kPublisher);
  EXPECT_EQ(free.status, 200) << free.body;
  EXPECT_EQ(EndOffsets("orders"), 5u);
}

TEST_F(SchemaServeTest, OnlyAdminsChangeTheRegistryAndAuthorizationComesBeforeTheBody) {
  Start();
  ASSERT_EQ(Call("POST", "/v1/schemas/order.created/versions", kOrderV1, kJson).status, 201);
  CreateTopic("orders");
  // Without a token: 401 everywhere.
  EXPECT_EQ(Call("GET", "/v1/schemas", "", {}, "").status, 401);
  EXPECT_EQ(Call("POST", "/v1/schemas/x/versions", kOrderV1, kJson, "").status, 401);
  // A service token may not register, set a mode or bind, even with a malformed body: 403
  // before the body is read, and nothing changes.
  for (const char* body : {kOrderV2Required, "not json", R"({"schema":{"type":"strin"}})"}) {
    HttpResult r = Call("POST", "/v1/schemas/order.created/versions", body, kJson, kPublisher);
    EXPECT_EQ(r.status, 403) << r.body;
    EXPECT_EQ(r.code(), "PERMISSION_DENIED");
  }
  EXPECT_EQ(Call("POST", "/v1/schemas/new.type/versions", kOrderV1, kJson, kPublisher).status, 403);
  EXPECT_EQ(Call("PUT", "/v1/schemas/order.created", "{", kJson, kPublisher).status, 403);
  EXPECT_EQ(
      Call("PUT", "/v1/topics/orders/schema", R"({"type":"order.created"})", kJson, kPublisher)
          .status,
      403);
  EXPECT_EQ(Call("DELETE", "/v1/topics/orders/schema", "", {}, kPublisher).status, 403);
  HttpResult type = Call("GET", "/v1/schemas/order.created", "", {}, kPublisher);
  ASSERT_EQ(type.status, 200) << type.body;
  EXPECT_EQ(json::parse(type.body).at("versions"), json::parse("[1]"));
  EXPECT_EQ(json::parse(type.body).at("compatibility"), "backward");
  EXPECT_EQ(Call("GET", "/v1/schemas/new.type", "", {}, kPublisher).status, 404);
  // Reads: any token for the registry; a topic's binding for tokens that may see the topic.
  EXPECT_EQ(Call("GET", "/v1/schemas/order.created/versions", "", {}, kOther).status, 200);
  ASSERT_EQ(Call("PUT", "/v1/topics/orders/schema", R"({"type":"order.created"})", kJson).status,
            200);
  EXPECT_EQ(Call("GET", "/v1/topics/orders/schema", "", {}, kPublisher).status, 200);
  EXPECT_EQ(Call("GET", "/v1/topics/orders/schema", "", {}, kOther).status, 403);
}

}  // namespace
}  // namespace converge
