#include <gtest/gtest.h>

#include <boost/json/parse.hpp>
#include <boost/json/value.hpp>

#include "converge/event.h"
#include "core/core_test_util.h"
#include "core/event_internal.h"

namespace converge {
namespace {

namespace json = boost::json;

// The JSON value of `text` with top-level null attributes dropped ("null means absent"),
// except "data", where null is a payload.
json::value Semantic(std::string_view text) {
  json::value v = json::parse(text);
  if (v.is_object()) {
    json::object& o = v.as_object();
    for (auto it = o.begin(); it != o.end();) {
      if (it->value().is_null() && it->key() != "data") {
        it = o.erase(it);
      } else {
        ++it;
      }
    }
  }
  return v;
}

// decode -> encode -> decode: the events are equal and the JSON means the same.
Event ExpectRoundTrip(std::string_view text) {
  Result<Event> first = DecodeJson(text);
  EXPECT_TRUE(first.ok()) << first.status().ToString() << "\n" << text;
  if (!first.ok()) return Event();
  Result<std::string> encoded = EncodeJson(*first);
  EXPECT_TRUE(encoded.ok()) << encoded.status().ToString();
  if (!encoded.ok()) return Event();
  Result<Event> second = DecodeJson(*encoded);
  EXPECT_TRUE(second.ok()) << second.status().ToString() << "\n" << *encoded;
  if (!second.ok()) return Event();
  EXPECT_EQ(*first, *second) << *encoded;
  EXPECT_EQ(Semantic(text), Semantic(*encoded)) << text << "\n" << *encoded;
  // Encoding is deterministic: a second trip gives the same bytes.
  EXPECT_EQ(EncodeJson(*second).value(), *encoded);
  return *first;
}

TEST(EventJsonTest, MinimalEvent) {
  Event e = ExpectRoundTrip(R"({
    "specversion" : "1.0",
    "type" : "com.example.someevent",
    "source" : "/mycontext",
    "id" : "A234-1234-1234"
  })");
  EXPECT_EQ(e.id(), "A234-1234-1234");
  EXPECT_EQ(e.source(), "/mycontext");
  EXPECT_EQ(e.type(), "com.example.someevent");
  EXPECT_FALSE(e.time().has_value());
  EXPECT_EQ(e.data_kind(), DataKind::kNone);
  EXPECT_EQ(EncodeJson(e).value(),
            R"({"specversion":"1.0","id":"A234-1234-1234","source":"/mycontext",)"
            R"("type":"com.example.someevent"})");
}

TEST(EventJsonTest, FullEventWithExtensions) {
  Event e = ExpectRoundTrip(R"({
    "specversion" : "1.0",
    "type" : "com.example.someevent",
    "source" : "https://example.com/orders",
    "subject" : "order/17",
    "id" : "C234-1234-1234",
    "time" : "2018-04-05T17:31:00Z",
    "datacontenttype" : "application/json",
    "dataschema" : "https://example.com/schemas/order.json",
    "comexampleextension1" : "value",
    "comexampleothervalue" : 5,
    "negative" : -2147483648,
    "flag" : true,
    "off" : false,
    "unsetextension" : null,
    "partitionkey" : "order-17",
    "traceparent" : "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    "tracestate" : "rojo=00f067aa0ba902b7",
    "data" : { "appinfoA" : "abc", "appinfoB" : 123, "appinfoC" : true }
  })");
  EXPECT_EQ(e.subject(), "order/17");
  EXPECT_EQ(e.time(), "2018-04-05T17:31:00Z");
  EXPECT_EQ(e.datacontenttype(), "application/json");
  EXPECT_EQ(e.dataschema(), "https://example.com/schemas/order.json");
  EXPECT_EQ(e.partitionkey(), "order-17");
  EXPECT_EQ(e.tracestate(), "rojo=00f067aa0ba902b7");
  EXPECT_TRUE(TraceParent::Parse(*e.traceparent()).ok());
  ASSERT_NE(e.FindExtension("comexampleothervalue"), nullptr);
  EXPECT_EQ(e.FindExtension("comexampleothervalue")->kind, ExtensionKind::kInteger);
  EXPECT_EQ(e.FindExtension("comexampleothervalue")->value, "5");
  EXPECT_EQ(e.FindExtension("negative")->value, "-2147483648");
  EXPECT_EQ(e.FindExtension("flag")->kind, ExtensionKind::kBoolean);
  EXPECT_EQ(e.FindExtension("off")->value, "false");
  EXPECT_EQ(e.FindExtension("unsetextension"), nullptr);
  EXPECT_EQ(e.extensions().size(), 8u);
  EXPECT_EQ(e.data_kind(), DataKind::kJson);
  EXPECT_EQ(e.data(), R"({"appinfoA":"abc","appinfoB":123,"appinfoC":true})");
  // Integers and booleans are re-encoded as JSON numbers and booleans.
  const std::string out = EncodeJson(e).value();
  EXPECT_NE(out.find(R"("comexampleothervalue":5)"), std::string::npos) << out;
  EXPECT_NE(out.find(R"("flag":true)"), std::string::npos) << out;
}

TEST(EventJsonTest, DataAsJsonStringWithoutContentType) {
  Event e = ExpectRoundTrip(R"({"specversion":"1.0","type":"t","source":"/s","id":"D1",
                                "subject":null,"data":"I'm just a string"})");
  EXPECT_EQ(e.data_kind(), DataKind::kJson);
  EXPECT_EQ(e.data(), "\"I'm just a string\"");  // the binary-mode body of application/json
  EXPECT_FALSE(e.subject().has_value());
}

TEST(EventJsonTest, DataAsTextUnderNonJsonContentType) {
  Event e = ExpectRoundTrip(R"({"specversion":"1.0","type":"t","source":"/s","id":"B1",
                                "datacontenttype":"application/xml",
                                "data":"<much wow=\"xml\"/>\n\u00e9"})");
  EXPECT_EQ(e.data_kind(), DataKind::kText);
  EXPECT_EQ(e.data(), "<much wow=\"xml\"/>\n\xC3\xA9");
}

TEST(EventJsonTest, DataBase64) {
  Event e = ExpectRoundTrip(R"({"specversion":"1.0","type":"t","source":"/s","id":"B64",
                                "datacontenttype":"application/vnd.apache.thrift.binary",
                                "data_base64":"AAEC/f7/"})");
  EXPECT_EQ(e.data_kind(), DataKind::kBinary);
  EXPECT_EQ(e.data(), std::string("\x00\x01\x02\xfd\xfe\xff", 6));
  for (const char* b64 : {"", "QQ==", "QUI=", "QUJD"}) {
    Event x = ExpectRoundTrip(R"({"specversion":"1.0","type":"t","source":"/s","id":"1",
                                  "data_base64":")" +
                              std::string(b64) + "\"}");
    EXPECT_EQ(x.data_kind(), DataKind::kBinary);
  }
}

TEST(EventJsonTest, DataOfEveryJsonType) {
  const char* values[] = {
      R"({"a":[1,{"b":null}],"c":"\"q\" \\ \u0001 \ud83d\ude00"})",
      R"([])",
      R"([1, -0.0, 1e400, 12345678901234567890123456789, 0.1000000000000000055511151231257827])",
      R"("")",
      R"(0)",
      R"(-17)",
      R"(true)",
      R"(false)",
      R"(null)",
  };
  for (const char* v : values) {
    const std::string text =
        R"({"specversion":"1.0","type":"t","source":"/s","id":"1","data":)" + std::string(v) + "}";
    Event e = ExpectRoundTrip(text);
    EXPECT_EQ(e.data_kind(), DataKind::kJson) << v;
  }
  // Numbers keep exactly the digits the producer wrote.
  Event big = DecodeJson(R"({"specversion":"1.0","type":"t","source":"/s","id":"1",
                              "data":[12345678901234567890123456789,1.50,-0]})")
                  .value();
  EXPECT_EQ(big.data(), "[12345678901234567890123456789,1.50,-0]");
  // data: null is a payload, distinct from no data.
  Event null_data =
      DecodeJson(R"({"specversion":"1.0","type":"t","source":"/s","id":"1","data":null})").value();
  EXPECT_EQ(null_data.data_kind(), DataKind::kJson);
  EXPECT_EQ(null_data.data(), "null");
}

TEST(EventJsonTest, EscapedMemberNamesAndValuesAreDecoded) {
  Event e = DecodeJson(R"({"spec\u0076ersion":"1.0","\u0069d":"a\u0062c","source":"\/s",)"
                       R"("type":"t","ext\u0031":"\u00e9"})")
                .value();
  EXPECT_EQ(e.id(), "abc");
  EXPECT_EQ(e.source(), "/s");
  EXPECT_EQ(e.FindExtension("ext1")->value, "\xC3\xA9");
}

struct BadCase {
  const char* json;
  StatusCode code;
  const char* message;
};

TEST(EventJsonTest, InvalidEventsNameTheAttribute) {
  const BadCase cases[] = {
      // Malformed JSON.
      {"", StatusCode::kInvalidArgument, "malformed JSON"},
      {"{", StatusCode::kInvalidArgument, "malformed JSON"},
      {R"({"id":"1",})", StatusCode::kInvalidArgument, "malformed JSON"},
      {R"({"id":"1"} x)", StatusCode::kInvalidArgument, "malformed JSON"},
      {R"({"id":"1"}{})", StatusCode::kInvalidArgument, "malformed JSON"},
      {"{\"id\":\"\xff\"}", StatusCode::kInvalidArgument, "malformed JSON"},
      {R"({"id":'1'})", StatusCode::kInvalidArgument, "malformed JSON"},
      {R"([])", StatusCode::kInvalidArgument, "must be a JSON object"},
      {R"("event")", StatusCode::kInvalidArgument, "must be a JSON object"},
      {R"(17)", StatusCode::kInvalidArgument, "must be a JSON object"},
      {R"(null)", StatusCode::kInvalidArgument, "must be a JSON object"},
      // Missing required attributes.
      {R"({"specversion":"1.0","type":"t","source":"/s"})", StatusCode::kInvalidArgument,
       "attribute 'id' is required"},
      {R"({"specversion":"1.0","type":"t","id":"1"})", StatusCode::kInvalidArgument,
       "attribute 'source' is required"},
      {R"({"type":"t","source":"/s","id":"1"})", StatusCode::kInvalidArgument,
       "attribute 'specversion' is required"},
      {R"({"specversion":"1.0","source":"/s","id":"1"})", StatusCode::kInvalidArgument,
       "attribute 'type' is required"},
      {R"({"specversion":"1.0","type":"t","source":"/s","id":null})", StatusCode::kInvalidArgument,
       "attribute 'id' is required"},
      // Wrong types.
      {R"({"specversion":"1.0","type":"t","source":"/s","id":1})", StatusCode::kInvalidArgument,
       "attribute 'id' must be a string"},
      {R"({"specversion":"1.0","type":"t","source":["/s"],"id":"1"})", StatusCode::kInvalidArgument,
       "attribute 'source' must be a string"},
      {R"({"specversion":1.0,"type":"t","source":"/s","id":"1"})", StatusCode::kInvalidArgument,
       "attribute 'specversion' must be a string"},
      {R"({"specversion":"1.0","type":true,"source":"/s","id":"1"})", StatusCode::kInvalidArgument,
       "attribute 'type' must be a string"},
      {R"({"specversion":"1.0","type":"t","source":"/s","id":"1","subject":{}})",
       StatusCode::kInvalidArgument, "attribute 'subject' must be a string"},
      {R"({"specversion":"1.0","type":"t","source":"/s","id":"1","time":1522949460})",
       StatusCode::kInvalidArgument, "attribute 'time' must be a string"},
      {R"({"specversion":"1.0","type":"t","source":"/s","id":"1","datacontenttype":false})",
       StatusCode::kInvalidArgument, "attribute 'datacontenttype' must be a string"},
      {R"({"specversion":"1.0","type":"t","source":"/s","id":"1","dataschema":7})",
       StatusCode::kInvalidArgument, "attribute 'dataschema' must be a string"},
      {R"({"specversion":"1.0","type":"t","source":"/s","id":"1","data_base64":[]})",
       StatusCode::kInvalidArgument, "attribute 'data_base64' must be a string"},
      {R"({"specversion":"1.0","type":"t","source":"/s","id":"1","ext":{"a":1}})",
       StatusCode::kInvalidArgument, "attribute 'ext' must be a string, a boolean or an integer"},
      {R"({"specversion":"1.0","type":"t","source":"/s","id":"1","ext":[1]})",
       StatusCode::kInvalidArgument, "attribute 'ext' must be a string, a boolean or an integer"},
      {R"({"specversion":"1.0","type":"t","source":"/s","id":"1","ext":1.5})",
       StatusCode::kInvalidArgument, "attribute 'ext' must be an integer"},
      {R"({"specversion":"1.0","type":"t","source":"/s","id":"1","ext":2147483648})",
       StatusCode::kInvalidArgument, "attribute 'ext' must be an integer"},
      {R"({"specversion":"1.0","type":"t","source":"/s","id":"1","ext":18446744073709551615})",
       StatusCode::kInvalidArgument, "attribute 'ext' must be an integer"},
      // Wrong values.
      {R"({"specversion":"0.3","type":"t","source":"/s","id":"1"})", StatusCode::kInvalidArgument,
       "attribute 'specversion' must be \"1.0\""},
      {R"({"specversion":"1.0","type":"t","source":"/s","id":""})", StatusCode::kInvalidArgument,
       "attribute 'id' must be a non-empty string"},
      {R"({"specversion":"1.0","type":"","source":"/s","id":"1"})", StatusCode::kInvalidArgument,
       "attribute 'type' must be a non-empty string"},
      {R"({"specversion":"1.0","type":"t","source":"not a uri","id":"1"})",
       StatusCode::kInvalidArgument, "attribute 'source' must be a URI-reference"},
      {R"({"specversion":"1.0","type":"t","source":"/s","id":"1","time":"noon"})",
       StatusCode::kInvalidArgument, "attribute 'time' must be an RFC 3339 timestamp"},
      {R"({"specversion":"1.0","type":"t","source":"/s","id":"1","dataschema":"/rel"})",
       StatusCode::kInvalidArgument, "attribute 'dataschema' must be a URI"},
      {R"({"specversion":"1.0","type":"t","source":"/s","id":"1","datacontenttype":"json"})",
       StatusCode::kInvalidArgument, "attribute 'datacontenttype' must be a media type"},
      {R"({"specversion":"1.0","type":"t","source":"/s","id":"a\nb"})",
       StatusCode::kInvalidArgument, "attribute 'id' contains U+000A"},
      {R"({"specversion":"1.0","type":"t","source":"/s","id":"1","ext":"\u0000"})",
       StatusCode::kInvalidArgument, "attribute 'ext' contains U+0000"},
      // Names.
      {R"({"specversion":"1.0","type":"t","source":"/s","id":"1","Ext":"v"})",
       StatusCode::kInvalidArgument, "attribute 'Ext': attribute names must be"},
      {R"({"specversion":"1.0","type":"t","source":"/s","id":"1","a_b":"v"})",
       StatusCode::kInvalidArgument, "attribute 'a_b'"},
      {R"({"specversion":"1.0","type":"t","source":"/s","id":"1","a23456789012345678901":"v"})",
       StatusCode::kInvalidArgument, "attribute 'a23456789012345678901'"},
      {R"({"specversion":"1.0","type":"t","source":"/s","id":"1","":"v"})",
       StatusCode::kInvalidArgument, "attribute ''"},
      {R"({"specversion":"1.0","type":"t","source":"/s","id":"1","id":"2"})",
       StatusCode::kInvalidArgument, "attribute 'id' appears more than once"},
      {R"({"specversion":"1.0","type":"t","source":"/s","id":"1","x":"1","x":"2"})",
       StatusCode::kInvalidArgument, "attribute 'x' appears more than once"},
      // Data.
      {R"({"specversion":"1.0","type":"t","source":"/s","id":"1","data":1,"data_base64":""})",
       StatusCode::kInvalidArgument, "'data' and 'data_base64' are mutually exclusive"},
      {R"({"specversion":"1.0","type":"t","source":"/s","id":"1","data":null,"data_base64":"QQ=="})",
       StatusCode::kInvalidArgument, "'data' and 'data_base64' are mutually exclusive"},
      {R"({"specversion":"1.0","type":"t","source":"/s","id":"1","data_base64":"QQ="})",
       StatusCode::kInvalidArgument, "attribute 'data_base64' must be valid padded base64"},
      {R"({"specversion":"1.0","type":"t","source":"/s","id":"1","data_base64":"QR=="})",
       StatusCode::kInvalidArgument, "attribute 'data_base64' must be valid padded base64"},
      {R"({"specversion":"1.0","type":"t","source":"/s","id":"1","data_base64":"Q Q="})",
       StatusCode::kInvalidArgument, "attribute 'data_base64' must be valid padded base64"},
      {R"({"specversion":"1.0","type":"t","source":"/s","id":"1","data_base64":"QQ"})",
       StatusCode::kInvalidArgument, "attribute 'data_base64' must be valid padded base64"},
      {R"({"specversion":"1.0","type":"t","source":"/s","id":"1","data_base64":"=QQQ"})",
       StatusCode::kInvalidArgument, "attribute 'data_base64' must be valid padded base64"},
      {R"({"specversion":"1.0","type":"t","source":"/s","id":"1","datacontenttype":"text/plain",)"
       R"("data":{"a":1}})",
       StatusCode::kInvalidArgument, "attribute 'data' must be a string when datacontenttype"},
      {R"({"specversion":"1.0","type":"t","source":"/s","id":"1","data":[[[[[[[[1]]]]]]]]})",
       StatusCode::kResourceExhausted, "attribute 'data' nests deeper than"},
  };
  DecodeOptions options;
  options.max_data_depth = 7;
  for (const BadCase& c : cases) {
    Result<Event> r = DecodeJson(c.json, options);
    ASSERT_FALSE(r.ok()) << c.json;
    EXPECT_EQ(r.status().code(), c.code) << c.json << "\n" << r.status().ToString();
    EXPECT_NE(r.status().message().find(c.message), std::string_view::npos)
        << c.json << "\nwant: " << c.message << "\ngot:  " << r.status().ToString();
  }
}

TEST(EventJsonTest, NullOptionalAttributesAreAbsent) {
  Event e = ExpectRoundTrip(R"({"specversion":"1.0","type":"t","source":"/s","id":"1",
      "subject":null,"time":null,"datacontenttype":null,"dataschema":null,"data_base64":null,
      "someext":null})");
  EXPECT_FALSE(e.subject() || e.time() || e.datacontenttype() || e.dataschema());
  EXPECT_TRUE(e.extensions().empty());
  EXPECT_EQ(e.data_kind(), DataKind::kNone);
}

TEST(EventJsonTest, EventSizeLimit) {
  const std::string text = R"({"specversion":"1.0","type":"t","source":"/s","id":"1"})";
  DecodeOptions options;
  options.max_event_bytes = text.size();
  EXPECT_TRUE(DecodeJson(text, options).ok());
  options.max_event_bytes = text.size() - 1;
  EXPECT_EQ(DecodeJson(text, options).status().code(), StatusCode::kResourceExhausted);
}

TEST(EventJsonTest, EncodingAnInvalidEventFailsAndLeavesOutputAlone) {
  Event e;
  e.set_id("1");
  e.set_type("t");  // no source
  std::string out = "prefix";
  Status s = AppendJson(e, &out);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("attribute 'source'"), std::string_view::npos) << s.ToString();
  EXPECT_EQ(out, "prefix");
  EXPECT_FALSE(EncodeJson(e).ok());
}

TEST(EventJsonTest, EncodesStringsWithEscapes) {
  Event e;
  e.set_id("quote\" backslash\\ tab\t? no: tab is forbidden");
  e.set_source("/s");
  e.set_type("t");
  EXPECT_FALSE(EncodeJson(e).ok());  // U+0009 is forbidden in attributes
  e.set_id("quote\" backslash\\ slash/ \xE2\x80\xA8");
  e.set_datacontenttype("text/plain");
  ASSERT_TRUE(e.SetTextData("line1\nline2\t\x01\"\\").ok());
  const std::string out = EncodeJson(e).value();
  EXPECT_NE(out.find(R"("id":"quote\" backslash\\ slash/ )"), std::string::npos) << out;
  EXPECT_NE(out.find(R"("data":"line1\nline2\t\u0001\"\\")"), std::string::npos) << out;
  EXPECT_EQ(DecodeJson(out).value(), e);
}

TEST(EventJsonTest, RandomEventsRoundTrip) {
  const uint64_t seed = testing::TestSeed(42);
  testing::SeededRandom random(seed);
  testing::EventGenerator gen(random);
  for (int i = 0; i < 3000; ++i) {
    const Event e = gen.Next();
    Result<std::string> text = EncodeJson(e);
    ASSERT_TRUE(text.ok()) << "seed " << seed << " #" << i << ": " << text.status().ToString();
    Result<Event> back = DecodeJson(*text);
    ASSERT_TRUE(back.ok()) << "seed " << seed << " #" << i << ": " << back.status().ToString()
                           << "\n"
                           << *text;
    ASSERT_EQ(*back, e) << "seed " << seed << " #" << i << "\n" << *text;
  }
}

TEST(EventJsonTest, RandomJsonDataMatchesBoostSemantics) {
  const uint64_t seed = testing::TestSeed(99);
  testing::SeededRandom random(seed);
  testing::EventGenerator gen(random);
  for (int i = 0; i < 2000; ++i) {
    const std::string data = gen.Json(4);
    const std::string text =
        R"({"specversion":"1.0","type":"t","source":"/s","id":"1","data":)" + data + "}";
    Result<Event> e = DecodeJson(text);
    ASSERT_TRUE(e.ok()) << "seed " << seed << ": " << e.status().ToString() << "\n" << text;
    EXPECT_EQ(json::parse(e->data()), json::parse(data)) << "seed " << seed << "\n" << data;
  }
}

// ---- batches ----

TEST(EventJsonTest, BatchRoundTrip) {
  const char* text = R"([
  {
      "specversion" : "1.0",
      "type" : "com.example.someevent",
      "source" : "/mycontext/4",
      "id" : "B234-1234-1234",
      "time" : "2018-04-05T17:31:00Z",
      "comexampleextension1" : "value",
      "comexampleothervalue" : 5,
      "datacontenttype" : "application/vnd.apache.thrift.binary",
      "data_base64" : "aGVsbG8="
  },
  {
      "specversion" : "1.0",
      "type" : "com.example.someotherevent",
      "source" : "/mycontext/9",
      "id" : "C234-1234-1234",
      "time" : "2018-04-05T17:31:05Z",
      "datacontenttype" : "application/json",
      "data" : { "appinfoA" : "abc", "appinfoB" : 123, "appinfoC" : true }
  }
])";
  Result<std::vector<Event>> events = DecodeJsonBatch(text);
  ASSERT_TRUE(events.ok()) << events.status().ToString();
  ASSERT_EQ(events->size(), 2u);
  EXPECT_EQ((*events)[0].data(), "hello");
  EXPECT_EQ((*events)[1].id(), "C234-1234-1234");
  Result<std::string> encoded = EncodeJsonBatch(*events);
  ASSERT_TRUE(encoded.ok());
  EXPECT_EQ(json::parse(text), json::parse(*encoded));
  Result<std::vector<Event>> again = DecodeJsonBatch(*encoded);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*again, *events);
}

TEST(EventJsonTest, EmptyBatches) {
  for (const char* empty : {"[]", " [ ] ", "\n[\n]\n"}) {
    Result<std::vector<Event>> events = DecodeJsonBatch(empty);
    ASSERT_TRUE(events.ok()) << empty << ": " << events.status().ToString();
    EXPECT_TRUE(events->empty());
  }
  EXPECT_EQ(EncodeJsonBatch({}).value(), "[]");
}

TEST(EventJsonTest, BatchErrorsNameTheIndex) {
  const std::string good = R"({"specversion":"1.0","type":"t","source":"/s","id":"1"})";
  const std::string no_type = R"({"specversion":"1.0","source":"/s","id":"1"})";
  const BadCase cases[] = {
      {"", StatusCode::kInvalidArgument, "a batch must be a JSON array"},
      {"{}", StatusCode::kInvalidArgument, "a batch must be a JSON array"},
      {"[", StatusCode::kInvalidArgument, "event[0]: malformed JSON"},
      {"[1]", StatusCode::kInvalidArgument, "event[0]: an event must be a JSON object"},
      {"[[]]", StatusCode::kInvalidArgument, "event[0]: an event must be a JSON object"},
      {"[] x", StatusCode::kInvalidArgument, "extra data after the batch"},
  };
  for (const BadCase& c : cases) {
    Result<std::vector<Event>> r = DecodeJsonBatch(c.json);
    ASSERT_FALSE(r.ok()) << c.json;
    EXPECT_EQ(r.status().code(), c.code) << r.status().ToString();
    EXPECT_NE(r.status().message().find(c.message), std::string_view::npos)
        << c.json << "\nwant: " << c.message << "\ngot:  " << r.status().ToString();
  }
  struct Framed {
    std::string json;
    const char* message;
  };
  const Framed framed[] = {
      {"[" + good + "," + good + "," + good + "," + no_type + "]",
       "event[3]: attribute 'type' is required"},
      {"[" + good + "," + good + "]]", "extra data after the batch"},
      {"[" + good + " " + good + "]", "expected ',' or ']' after event[0]"},
      {"[" + good + ",]", "event[1]: malformed JSON"},
      {"[" + good + "," + good, "the batch array is not closed"},
      {"[" + good + ",", "event[1]: malformed JSON"},
      {"[" + good + ", 5]", "event[1]: an event must be a JSON object"},
  };
  for (const Framed& c : framed) {
    Result<std::vector<Event>> r = DecodeJsonBatch(c.json);
    ASSERT_FALSE(r.ok()) << c.json;
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << r.status().ToString();
    EXPECT_NE(r.status().message().find(c.message), std::string_view::npos)
        << c.json << "\nwant: " << c.message << "\ngot:  " << r.status().ToString();
  }
}

TEST(EventJsonTest, BatchLimits) {
  const std::string good = R"({"specversion":"1.0","type":"t","source":"/s","id":"1"})";
  std::string batch = "[";
  for (int i = 0; i < 5; ++i) batch += (i ? "," : "") + good;
  batch += "]";
  DecodeOptions options;
  options.max_batch_events = 5;
  EXPECT_TRUE(DecodeJsonBatch(batch, options).ok());
  options.max_batch_events = 4;
  Result<std::vector<Event>> r = DecodeJsonBatch(batch, options);
  EXPECT_EQ(r.status().code(), StatusCode::kResourceExhausted) << r.status().ToString();

  options = DecodeOptions();
  options.max_event_bytes = good.size() - 1;
  r = DecodeJsonBatch(batch, options);
  EXPECT_EQ(r.status().code(), StatusCode::kResourceExhausted) << r.status().ToString();
  EXPECT_NE(r.status().message().find("event[0]"), std::string_view::npos);
}

TEST(EventJsonTest, BatchEncodingNamesTheInvalidEvent) {
  std::vector<Event> events(3);
  for (Event& e : events) {
    e.set_id("1");
    e.set_source("/s");
    e.set_type("t");
  }
  events[2].set_time("later");
  std::string out;
  Status s = AppendJsonBatch(events, &out);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("event[2]: attribute 'time'"), std::string_view::npos) << s.ToString();
  EXPECT_TRUE(out.empty());
}

TEST(EventJsonTest, RandomBatchesRoundTrip) {
  const uint64_t seed = testing::TestSeed(1234);
  testing::SeededRandom random(seed);
  testing::EventGenerator gen(random);
  for (int round = 0; round < 30; ++round) {
    std::vector<Event> events(random.Uniform(100));
    for (Event& e : events) e = gen.Next();
    Result<std::string> text = EncodeJsonBatch(events);
    ASSERT_TRUE(text.ok()) << text.status().ToString();
    Result<std::vector<Event>> back = DecodeJsonBatch(*text);
    ASSERT_TRUE(back.ok()) << "seed " << seed << ": " << back.status().ToString();
    ASSERT_EQ(*back, events) << "seed " << seed;
  }
}

TEST(EventJsonTest, CheckUniqueJsonKeysFindsAMemberRepeatedWithinOneObject) {
  using internal::CheckUniqueJsonKeys;
  EXPECT_TRUE(CheckUniqueJsonKeys(R"({"a":1,"b":{"a":2},"c":[{"a":1},{"a":2}]})", 64).ok());
  EXPECT_TRUE(CheckUniqueJsonKeys(R"([1,"a",{"x":null}])", 64).ok());
  Status s = CheckUniqueJsonKeys(R"({"a":1,"b":{"x":1,"y":2,"x":3}})", 64);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("'x'"), std::string_view::npos) << s.ToString();
  // Escapes spell the same name; many members (past the small-object fast path).
  EXPECT_FALSE(CheckUniqueJsonKeys(R"({"ab":1,"a\u0062":2})", 64).ok());
  std::string many = "{";
  for (int i = 0; i < 100; ++i) many += "\"k" + std::to_string(i) + "\":" + std::to_string(i) + ",";
  EXPECT_TRUE(CheckUniqueJsonKeys(many.substr(0, many.size() - 1) + "}", 64).ok());
  EXPECT_FALSE(CheckUniqueJsonKeys(many + "\"k77\":0}", 64).ok());
  EXPECT_FALSE(CheckUniqueJsonKeys(R"({"a":1)", 64).ok());
}

}  // namespace
}  // namespace converge
