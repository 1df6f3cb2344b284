#include "server/cloudevents_http.h"
#include "server/router.h"

#include <gtest/gtest.h>

namespace converge::server {
namespace {

HttpRequest Request(std::string content_type, std::string body) {
  HttpRequest req{http::verb::post, "/v1/topics/t/events", 11};
  if (!content_type.empty()) req.set(http::field::content_type, content_type);
  req.body() = std::move(body);
  return req;
}

HttpRequest Binary(std::string content_type, std::string body) {
  HttpRequest req = Request(std::move(content_type), std::move(body));
  req.set("ce-specversion", "1.0");
  req.set("ce-id", "A%20234");
  req.set("Ce-Source", "/shop");
  req.set("CE-TYPE", "order.created");
  return req;
}

TEST(CloudEventsHttp, MediaTypeAndPercentDecoding) {
  EXPECT_EQ(MediaType(" Application/CloudEvents+JSON ; charset=utf-8"),
            "application/cloudevents+json");
  EXPECT_EQ(*PercentDecode("a%20b%22c%25"), "a b\"c%");
  EXPECT_EQ(*PercentDecode("%C3%A9"), "\xC3\xA9");
  EXPECT_FALSE(PercentDecode("50%").ok());
  EXPECT_FALSE(PercentDecode("%4").ok());
  EXPECT_FALSE(PercentDecode("%zz").ok());
}

TEST(CloudEventsHttp, StructuredAndBatch) {
  DecodeOptions o;
  Result<DecodedPublish> one = DecodePublishRequest(
      Request("application/cloudevents+json; charset=utf-8",
              R"({"specversion":"1.0","id":"1","source":"/s","type":"t","data":{"a":1}})"),
      o);
  ASSERT_TRUE(one.ok()) << one.status().ToString();
  EXPECT_EQ(one->mode, PublishMode::kStructured);
  ASSERT_EQ(one->events.size(), 1u);
  EXPECT_EQ(one->events[0].data(), R"({"a":1})");

  Result<DecodedPublish> batch =
      DecodePublishRequest(Request("application/cloudevents-batch+json",
                                   R"([{"specversion":"1.0","id":"1","source":"/s","type":"t"},
                  {"specversion":"1.0","id":"2","source":"/s","type":"t"}])"),
                           o);
  ASSERT_TRUE(batch.ok()) << batch.status().ToString();
  EXPECT_EQ(batch->mode, PublishMode::kBatch);
  EXPECT_EQ(batch->events.size(), 2u);

  o.max_batch_events = 1;
  EXPECT_EQ(
      DecodePublishRequest(Request("application/cloudevents-batch+json",
                                   R"([{"specversion":"1.0","id":"1","source":"/s","type":"t"},
                                             {"specversion":"1.0","id":"2","source":"/s","type":"t"}])"),
                           o)
          .status()
          .code(),
      StatusCode::kResourceExhausted);
  EXPECT_EQ(DecodePublishRequest(Request("application/cloudevents+avro", "x"), o).status().code(),
            StatusCode::kFailedPrecondition);
}

TEST(CloudEventsHttp, BinaryModeMapsHeadersAndBody) {
  HttpRequest req = Binary("application/json", R"( {"total": 12} )");
  req.set("ce-subject", "orders/9");
  req.set("ce-partitionkey", "customer-1");
  req.set("ce-traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
  Result<DecodedPublish> d = DecodePublishRequest(req, {});
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  EXPECT_EQ(d->mode, PublishMode::kBinary);
  const Event& e = d->events.at(0);
  EXPECT_EQ(e.id(), "A 234");
  EXPECT_EQ(e.source(), "/shop");
  EXPECT_EQ(e.type(), "order.created");
  EXPECT_EQ(*e.subject(), "orders/9");
  EXPECT_EQ(*e.datacontenttype(), "application/json");
  EXPECT_EQ(e.data_kind(), DataKind::kJson);
  EXPECT_EQ(e.data(), R"({"total":12})");
  EXPECT_EQ(*e.partitionkey(), "customer-1");
  EXPECT_EQ(PartitionKeyFor(e), "customer-1");

  Result<DecodedPublish> text = DecodePublishRequest(Binary("text/plain", "héllo"), {});
  ASSERT_TRUE(text.ok());
  EXPECT_EQ(text->events[0].data_kind(), DataKind::kText);
  Result<DecodedPublish> bytes =
      DecodePublishRequest(Binary("application/octet-stream", std::string("\0\xff", 2)), {});
  ASSERT_TRUE(bytes.ok());
  EXPECT_EQ(bytes->events[0].data_kind(), DataKind::kBinary);
  Result<DecodedPublish> none = DecodePublishRequest(Binary("", ""), {});
  ASSERT_TRUE(none.ok());
  EXPECT_EQ(none->events[0].data_kind(), DataKind::kNone);
  EXPECT_EQ(PartitionKeyFor(none->events[0]), "");
}

TEST(CloudEventsHttp, BinaryModeErrorsNameTheHeader) {
  auto error = [](HttpRequest req) {
    Result<DecodedPublish> d = DecodePublishRequest(req, {});
    EXPECT_FALSE(d.ok());
    return std::string(d.status().message());
  };
  EXPECT_NE(error(Request("application/json", "{}")).find("ce-specversion"), std::string::npos);
  HttpRequest no_id = Binary("application/json", "{}");
  no_id.erase("ce-id");
  EXPECT_NE(error(no_id).find("ce-id"), std::string::npos);
  HttpRequest v2 = Binary("", "");
  v2.set("ce-specversion", "2.0");
  EXPECT_NE(error(v2).find("ce-specversion"), std::string::npos);
  EXPECT_NE(error(Binary("application/json", "{nope")).find("body"), std::string::npos);
  HttpRequest dct = Binary("", "");
  dct.set("ce-datacontenttype", "text/plain");
  EXPECT_NE(error(dct).find("ce-datacontenttype"), std::string::npos);
  HttpRequest bad_escape = Binary("", "");
  bad_escape.set("ce-subject", "100%");
  EXPECT_NE(error(bad_escape).find("ce-subject"), std::string::npos);
  HttpRequest bad_time = Binary("", "");
  bad_time.set("ce-time", "yesterday");
  EXPECT_NE(error(bad_time).find("time"), std::string::npos);
}

TEST(CloudEventsHttp, RecordIdIsSourceAndIdUnambiguously) {
  Event a, b;
  a.set_source("/a");
  a.set_id("b1");
  b.set_source("/ab");
  b.set_id("1");
  EXPECT_NE(RecordIdFor(a), RecordIdFor(b));
  EXPECT_EQ(RecordIdFor(a), "2:/ab1");
}

}  // namespace
}  // namespace converge::server
