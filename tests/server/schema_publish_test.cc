// Publishing converge's binary event batches to a topic bound to a schema: the event decoder
// leaves the events' JSON data to the schema validator's parse (one parse per event), and a
// refused request gets the same answer as when the decoder parsed the data first: which event,
// which error, in the same order of checks (docs/schemas.md). Nothing of a refused batch is
// written. Run against the binary of the previous version too: the answers below are its.
#include <gtest/gtest.h>

#include <boost/json.hpp>
#include <memory>
#include <string>
#include <vector>

#include "converge/event.h"
#include "serve_process.h"
#include "test_util.h"

namespace converge {
namespace {

namespace json = boost::json;
using testing::HttpCall;
using testing::HttpHeaders;
using testing::HttpResult;
using testing::ServeProcess;

const HttpHeaders kJson = {{"Content-Type", "application/json"}};
const HttpHeaders kNative = {{"Content-Type", "application/vnd.converge.event-batch"}};

const char* const kOrder = R"({"schema":{
  "type":"object","required":["id","qty"],"additionalProperties":false,
  "properties":{"id":{"type":"string","minLength":1},"qty":{"type":"integer","minimum":1},
                "note":{}}}})";

// One binary record of an event with JSON data.
std::string Record(const std::string& id, const std::string& type, const std::string& data) {
  Event e;
  e.set_id(id);
  e.set_source("/test");
  e.set_type(type);
  EXPECT_TRUE(e.SetJsonData(data).ok()) << data;
  std::string out;
  EXPECT_TRUE(EncodeBinary(e, &out).ok());
  return out;
}

// The record's data is its last field: replaces the last bytes (same length, so the framing
// stays valid) to make data the decoder would refuse.
std::string Garble(std::string record, std::string_view old_tail, std::string_view new_tail) {
  EXPECT_EQ(old_tail.size(), new_tail.size());
  EXPECT_EQ(record.substr(record.size() - old_tail.size()), old_tail);
  record.replace(record.size() - old_tail.size(), old_tail.size(), new_tail);
  return record;
}

std::string Batch(const std::vector<std::string>& records) {
  std::string body;
  for (const std::string& r : records) {
    uint64_t n = r.size();
    while (n >= 0x80) {
      body.push_back(static_cast<char>((n & 0x7F) | 0x80));
      n >>= 7;
    }
    body.push_back(static_cast<char>(n));
    body += r;
  }
  return body;
}

class SchemaPublishTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server_ = std::make_unique<ServeProcess>();
    ASSERT_OK(server_->Start());
    ASSERT_EQ(Call("POST", "/v1/schemas/order.created/versions", kOrder, kJson).status, 201);
    ASSERT_EQ(Call("POST", "/v1/topics", R"({"name":"orders"})", kJson).status, 201);
    ASSERT_EQ(Call("PUT", "/v1/topics/orders/schema", R"({"type":"order.created"})", kJson).status,
              200);
  }
  HttpResult Call(std::string_view method, const std::string& target, const std::string& body,
                  const HttpHeaders& headers) {
    return HttpCall(server_->port(), method, target, body, headers, "");
  }
  HttpResult Publish(const std::vector<std::string>& records) {
    return Call("POST", "/v1/topics/orders/events", Batch(records), kNative);
  }
  uint64_t EndOffsets() {
    HttpResult r = Call("GET", "/v1/topics/orders", "", {});
    EXPECT_EQ(r.status, 200) << r.body;
    if (r.status != 200) return 0;
    uint64_t n = 0;
    const json::value topic = json::parse(r.body);
    for (const auto& p : topic.at("partition_offsets").as_array()) {
      n += p.at("end_offset").to_number<uint64_t>();
    }
    return n;
  }
  std::unique_ptr<ServeProcess> server_;
};

TEST_F(SchemaPublishTest, ValidBatchGoesInWhole) {
  HttpResult ok = Publish({Record("a", "order.created", R"({"id":"o1","qty":1})"),
                           Record("b", "order.created", R"({"id":"o2","qty":2,"note":[1,{}]})"),
                           Record("c", "order.created", R"({"id":"\u00e9","qty":3})")});
  ASSERT_EQ(ok.status, 200) << ok.body;
  EXPECT_EQ(EndOffsets(), 3u);
}

TEST_F(SchemaPublishTest, MalformedDataIsAnInvalidEventBeforeAnyViolation) {
  const std::string good = Record("a", "order.created", R"({"id":"o1","qty":1})");
  const std::string violates = Record("b", "order.created", R"({"id":"o2","qty":"x"})");
  const std::string malformed =
      Garble(Record("c", "order.created", R"({"id":"o3","qty":1})"), "1}", "1]");
  const std::string bad_utf8 =
      Garble(Record("d", "order.created", R"({"id":"o3","qty":1,"note":"é"})"), "\xC3\xA9\"}",
             "\xFF\xA9\"}");

  // A schema violation at event[1], malformed data at event[2]: the decoder's refusal wins, as
  // it did when the decoder parsed every event's data before any validation.
  for (const std::string& broken : {malformed, bad_utf8}) {
    HttpResult r = Publish({good, violates, broken});
    ASSERT_EQ(r.status, 400) << r.body;
    EXPECT_EQ(r.code(), "INVALID_EVENT") << r.body;
    EXPECT_NE(r.message().find("event[2]"), std::string::npos) << r.body;
    EXPECT_NE(r.message().find("JSON data"), std::string::npos) << r.body;
  }
  // Alone, the violation is reported as usual.
  HttpResult v = Publish({good, violates});
  ASSERT_EQ(v.status, 400) << v.body;
  EXPECT_EQ(v.code(), "SCHEMA_VIOLATION");
  EXPECT_EQ(json::parse(v.body).at("event"), 1);
  EXPECT_EQ(json::parse(v.body).at("path"), "/qty");
  EXPECT_EQ(json::parse(v.body).at("keyword"), "type");
  EXPECT_EQ(EndOffsets(), 0u);
}

TEST_F(SchemaPublishTest, DataNestedTooDeepIsRefusedAsBefore) {
  // Deeper than limits.max_data_depth (64 by default): the decoder's 413.
  std::string deep =
      R"({"id":"o1","qty":1,"note":)" + std::string(70, '[') + std::string(70, ']') + "}";
  Event e;
  e.set_id("deep");
  e.set_source("/test");
  e.set_type("order.created");
  ASSERT_TRUE(e.SetJsonData(deep, 100).ok());
  std::string record;
  ASSERT_TRUE(EncodeBinary(e, &record).ok());
  HttpResult r = Publish({Record("a", "order.created", R"({"id":"o1","qty":1})"), record});
  EXPECT_EQ(r.status, 413) << r.body;
  EXPECT_EQ(r.code(), "PAYLOAD_TOO_LARGE") << r.body;
  EXPECT_NE(r.message().find("event[1]"), std::string::npos) << r.body;
  EXPECT_EQ(EndOffsets(), 0u);
}

// A schema that applies itself to the same value again could never finish: the validator
// before accepted it and then overflowed the stack on the first publish, taking the server
// down. Refused at registration now, and nothing is stored.
TEST_F(SchemaPublishTest, SelfApplyingSchemaIsRefused) {
  for (const char* body : {R"({"schema":{"allOf":[{"$ref":"#"}]}})",
                           R"({"schema":{"definitions":{"a":{"not":{"$ref":"#/definitions/b"}},
                               "b":{"anyOf":[{"$ref":"#/definitions/a"}]}},
                               "properties":{"x":{"$ref":"#/definitions/a"}}}})"}) {
    HttpResult r = Call("POST", "/v1/schemas/loop/versions", body, kJson);
    EXPECT_EQ(r.status, 400) << r.body;
    EXPECT_EQ(r.code(), "INVALID_SCHEMA") << r.body;
  }
  EXPECT_EQ(Call("GET", "/v1/schemas/loop", "", {}).status, 404);
  // The server is still there, and publishes as before.
  HttpResult ok = Publish({Record("a", "order.created", R"({"id":"o1","qty":1})")});
  EXPECT_EQ(ok.status, 200) << ok.body;
}

}  // namespace
}  // namespace converge
