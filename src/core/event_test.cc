#include "converge/event.h"

#include <gtest/gtest.h>

#include "core/core_test_util.h"

namespace converge {
namespace {

Event ValidEvent() {
  Event e;
  e.set_id("A234-1234-1234");
  e.set_source("/mycontext");
  e.set_type("com.example.someevent");
  return e;
}

void ExpectInvalid(const Event& e, std::string_view needle) {
  Status s = e.Validate();
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.ToString();
  EXPECT_NE(s.message().find(needle), std::string_view::npos)
      << "message '" << s.message() << "' lacks '" << needle << "'";
}

TEST(EventTest, MinimalEventIsValid) {
  Event e = ValidEvent();
  EXPECT_TRUE(e.Validate().ok()) << e.Validate().ToString();
  EXPECT_EQ(e.specversion(), "1.0");
  EXPECT_EQ(e.data_kind(), DataKind::kNone);
}

TEST(EventTest, RequiredAttributesMustBeNonEmpty) {
  Event e = ValidEvent();
  e.set_id("");
  ExpectInvalid(e, "attribute 'id' must be a non-empty string");
  e = ValidEvent();
  e.set_source("");
  ExpectInvalid(e, "attribute 'source'");
  e = ValidEvent();
  e.set_type("");
  ExpectInvalid(e, "attribute 'type'");
  e = ValidEvent();
  e.set_subject("");
  ExpectInvalid(e, "attribute 'subject'");
}

TEST(EventTest, StringAttributesRejectForbiddenCharacters) {
  struct Case {
    std::string value;
    const char* needle;
  };
  const Case cases[] = {
      {"a\nb", "U+000A"},
      {std::string("a\0b", 3), "U+0000"},
      {"a\x7f", "U+007F"},
      {"a\xC2\x85", "U+0085"},           // NEL, a C1 control
      {"a\xEF\xBF\xBE", "U+FFFE"},       // noncharacter
      {"a\xEF\xB7\x90", "U+FDD0"},       // noncharacter
      {"a\xF0\x9F\xBF\xBF", "U+1FFFF"},  // noncharacter in plane 1
      {"\xC3", "not valid UTF-8"},
      {"\xED\xA0\x80", "not valid UTF-8"},  // surrogate
      {"\xC0\xAF", "not valid UTF-8"},      // overlong
      {"\xF4\x90\x80\x80", "not valid UTF-8"},
  };
  for (const Case& c : cases) {
    Event e = ValidEvent();
    e.set_type(c.value);
    ExpectInvalid(e, c.needle);
    e = ValidEvent();
    e.SetExtension("ext", c.value);
    ExpectInvalid(e, c.needle);
  }
  Event e = ValidEvent();
  e.set_id("caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80 \"quoted\" \\");
  EXPECT_TRUE(e.Validate().ok()) << e.Validate().ToString();
}

TEST(EventTest, SourceMustBeAUriReference) {
  for (const char* ok : {"/mycontext", "mycontext", "https://example.com/a/b?c=d#e",
                         "urn:uuid:6e8bc430-9c3a-11d9-9669-0800200c9a66", "./a:b", "%41bc",
                         "mailto:a@example.com", "http://[::1]:80/x", "a+b.c-d:rest"}) {
    Event e = ValidEvent();
    e.set_source(ok);
    EXPECT_TRUE(e.Validate().ok()) << ok << ": " << e.Validate().ToString();
  }
  for (const char* bad : {"has space", "1abc:foo", "%zz", "%4", "a#b#c", "tab\there", "a<b>",
                          "caf\xC3\xA9", ":nothing", "a\"b"}) {
    Event e = ValidEvent();
    e.set_source(bad);
    ExpectInvalid(e, "attribute 'source' must be a URI-reference");
  }
}

TEST(EventTest, DataschemaMustBeAnAbsoluteUri) {
  Event e = ValidEvent();
  e.set_dataschema("https://example.com/schema.json");
  EXPECT_TRUE(e.Validate().ok());
  e.set_dataschema("/relative/schema.json");
  ExpectInvalid(e, "attribute 'dataschema' must be a URI");
  e.set_dataschema("");
  ExpectInvalid(e, "attribute 'dataschema'");
}

TEST(EventTest, TimeMustBeRfc3339) {
  for (const char* ok : {"2018-04-05T17:31:00Z", "2018-04-05t17:31:00z", "2018-04-05T17:31:00.1Z",
                         "2018-04-05T17:31:00.123456789123+05:30", "2016-12-31T23:59:60Z",
                         "2024-02-29T00:00:00-00:00", "0001-01-01T00:00:00Z"}) {
    Event e = ValidEvent();
    e.set_time(ok);
    EXPECT_TRUE(e.Validate().ok()) << ok;
  }
  for (const char* bad :
       {"", "yesterday", "2018-04-05", "2018-04-05 17:31:00Z", "2018-04-05T17:31:00",
        "2018-13-05T17:31:00Z", "2023-02-29T00:00:00Z", "2018-04-31T00:00:00Z",
        "2018-04-05T24:00:00Z", "2018-04-05T17:60:00Z", "2018-04-05T17:31:61Z",
        "2018-04-05T17:31:00.Z", "2018-04-05T17:31:00+0200", "2018-04-05T17:31:00+24:00",
        "2018-04-05T17:31:00Zjunk", "18-04-05T17:31:00Z", "2018-4-05T17:31:00Z"}) {
    Event e = ValidEvent();
    e.set_time(bad);
    ExpectInvalid(e, "attribute 'time' must be an RFC 3339 timestamp");
  }
}

TEST(EventTest, DatacontenttypeMustBeAMediaType) {
  for (const char* ok : {"application/json", "text/plain; charset=utf-8", "application/vnd.a+json",
                         "image/png", "text/plain;charset=\"utf-8\""}) {
    Event e = ValidEvent();
    e.set_datacontenttype(ok);
    EXPECT_TRUE(e.Validate().ok()) << ok << ": " << e.Validate().ToString();
  }
  for (const char* bad :
       {"", "json", "application/", "/json", "text /plain", "text/plain x", "a/b/c"}) {
    Event e = ValidEvent();
    e.set_datacontenttype(bad);
    ExpectInvalid(e, "attribute 'datacontenttype'");
  }
}

TEST(EventTest, ExtensionsStaySortedAndCanBeReplacedAndRemoved) {
  Event e = ValidEvent();
  e.SetExtension("zeta", "z");
  e.SetExtensionInteger("alpha", -42);
  e.SetExtensionBoolean("mid", true);
  e.SetExtension("alpha", "now a string");
  ASSERT_EQ(e.extensions().size(), 3u);
  EXPECT_EQ(e.extensions()[0].name, "alpha");
  EXPECT_EQ(e.extensions()[0].value, "now a string");
  EXPECT_EQ(e.extensions()[0].kind, ExtensionKind::kString);
  EXPECT_EQ(e.extensions()[1].name, "mid");
  EXPECT_EQ(e.extensions()[1].value, "true");
  EXPECT_EQ(e.extensions()[2].name, "zeta");
  ASSERT_NE(e.FindExtension("mid"), nullptr);
  EXPECT_EQ(e.FindExtension("nope"), nullptr);
  EXPECT_TRUE(e.RemoveExtension("mid"));
  EXPECT_FALSE(e.RemoveExtension("mid"));
  EXPECT_EQ(e.extensions().size(), 2u);
  EXPECT_TRUE(e.Validate().ok());

  e.SetExtensionInteger("min", INT32_MIN);
  EXPECT_EQ(e.FindExtension("min")->value, "-2147483648");
  EXPECT_TRUE(e.Validate().ok());
}

TEST(EventTest, ExtensionNamesAreChecked) {
  for (const char* bad : {"Upper", "with_underscore", "a-b", "", "a23456789012345678901", "id",
                          "data", "specversion", "datacontenttype"}) {
    Event e = ValidEvent();
    e.SetExtension(bad, "v");
    EXPECT_EQ(e.Validate().code(), StatusCode::kInvalidArgument) << bad;
  }
  Event e = ValidEvent();
  e.SetExtension("a2345678901234567890", "twenty characters");
  EXPECT_TRUE(e.Validate().ok());
}

TEST(EventTest, WellKnownExtensionHelpers) {
  Event e = ValidEvent();
  EXPECT_FALSE(e.partitionkey().has_value());
  EXPECT_FALSE(e.traceparent().has_value());
  e.set_partitionkey("order-17");
  e.set_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
  e.set_tracestate("congo=t61rcWkgMzE");
  EXPECT_EQ(e.partitionkey(), "order-17");
  EXPECT_EQ(e.FindExtension("partitionkey")->kind, ExtensionKind::kString);
  EXPECT_EQ(e.tracestate(), "congo=t61rcWkgMzE");
  Result<TraceParent> tp = TraceParent::Parse(*e.traceparent());
  ASSERT_TRUE(tp.ok()) << tp.status().ToString();
  EXPECT_TRUE(tp->sampled());
  EXPECT_EQ(tp->trace_id[0], 0x4b);
  EXPECT_EQ(tp->parent_id[7], 0xb7);
  EXPECT_EQ(tp->ToString(), *e.traceparent());
  EXPECT_TRUE(e.Validate().ok());
}

TEST(EventTest, TraceParentRejectsMalformedValues) {
  for (const char* bad :
       {"", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",  // uppercase
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",  // zero trace id
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",  // zero parent id
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  // version ff
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
        "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x"}) {
    EXPECT_FALSE(TraceParent::Parse(bad).ok()) << bad;
  }
  // A future version may append fields.
  Result<TraceParent> future =
      TraceParent::Parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-more");
  ASSERT_TRUE(future.ok());
  EXPECT_EQ(future->version, 1);
  EXPECT_FALSE(future->sampled());
}

TEST(EventTest, JsonDataIsValidatedAndCompacted) {
  Event e = ValidEvent();
  ASSERT_TRUE(e.SetJsonData(" { \"a\" : [1, 2.50, \"x\\u0041\\n\"] ,\"b\":null } ").ok());
  EXPECT_EQ(e.data_kind(), DataKind::kJson);
  EXPECT_EQ(e.data(), "{\"a\":[1,2.50,\"xA\\n\"],\"b\":null}");
  EXPECT_TRUE(e.Validate().ok());

  const std::string before = e.data();
  for (const char* bad : {"", "{", "[1,]", "{\"a\":1} 2", "nul", "'single'", "01", "\"\xC3\""}) {
    Status s = e.SetJsonData(bad);
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << bad << ": " << s.ToString();
    EXPECT_EQ(e.data(), before) << "a failed set must leave the event unchanged";
  }
  EXPECT_EQ(e.SetJsonData("[[[[1]]]]", /*max_depth=*/3).code(), StatusCode::kResourceExhausted);
  EXPECT_TRUE(e.SetJsonData("[[[[1]]]]", /*max_depth=*/4).ok());
}

TEST(EventTest, DataKindMustAgreeWithContentType) {
  Event e = ValidEvent();
  ASSERT_TRUE(e.SetTextData("hello").ok());
  ExpectInvalid(e, "attribute 'data' holds text");  // no content type means JSON
  e.set_datacontenttype("application/json");
  ExpectInvalid(e, "attribute 'data' holds text");
  e.set_datacontenttype("text/plain");
  EXPECT_TRUE(e.Validate().ok());

  ASSERT_TRUE(e.SetJsonData("{}").ok());
  ExpectInvalid(e, "not a JSON media type");
  e.set_datacontenttype("application/problem+json");
  EXPECT_TRUE(e.Validate().ok());

  e.SetBinaryData(std::string("\0\xff", 2));
  e.set_datacontenttype(std::nullopt);
  EXPECT_TRUE(e.Validate().ok());

  EXPECT_EQ(e.SetTextData("\xff").code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(e.data_kind(), DataKind::kBinary);
  e.ClearData();
  EXPECT_EQ(e.data_kind(), DataKind::kNone);
  EXPECT_TRUE(e.data().empty());
}

TEST(EventTest, JsonContentTypeDetection) {
  for (const char* yes :
       {"application/json", "text/json", "APPLICATION/JSON", "application/cloudevents+json",
        "application/vnd.x+JSON; charset=utf-8", "application/json ;charset=utf-8"}) {
    EXPECT_TRUE(IsJsonContentType(yes)) << yes;
  }
  for (const char* no : {"text/plain", "application/xml", "application/jsonx", "json",
                         "application/x-json-stream", "/json", "application/xjson"}) {
    EXPECT_FALSE(IsJsonContentType(no)) << no;
  }
}

TEST(EventTest, Rfc3339ParsesKnownInstants) {
  EXPECT_EQ(*ParseRfc3339Nanos("1970-01-01T00:00:00Z"), 0);
  EXPECT_EQ(*ParseRfc3339Nanos("2018-04-05T17:31:00Z"), 1'522'949'460'000'000'000);
  EXPECT_EQ(*ParseRfc3339Nanos("2018-04-05T19:31:00+02:00"), 1'522'949'460'000'000'000);
  EXPECT_EQ(*ParseRfc3339Nanos("2018-04-05T17:01:00-00:30"), 1'522'949'460'000'000'000);
  EXPECT_EQ(*ParseRfc3339Nanos("1969-12-31T23:59:59.999999999Z"), -1);
  EXPECT_EQ(*ParseRfc3339Nanos("1970-01-01T00:00:00.0000000019Z"), 1);  // truncated
  EXPECT_EQ(*ParseRfc3339Nanos("2000-02-29T12:00:00.5Z"), 951'825'600'500'000'000);
  EXPECT_EQ(*ParseRfc3339Nanos("2016-12-31T23:59:60Z"), *ParseRfc3339Nanos("2017-01-01T00:00:00Z"));
  EXPECT_EQ(ParseRfc3339Nanos("nope").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseRfc3339Nanos("9999-12-31T23:59:59Z").status().code(), StatusCode::kOutOfRange);
  EXPECT_EQ(ParseRfc3339Nanos("1000-01-01T00:00:00Z").status().code(), StatusCode::kOutOfRange);
}

TEST(EventTest, Rfc3339FormatRoundTrips) {
  EXPECT_EQ(FormatRfc3339(0), "1970-01-01T00:00:00Z");
  EXPECT_EQ(FormatRfc3339(-1), "1969-12-31T23:59:59.999999999Z");
  EXPECT_EQ(FormatRfc3339(1'522'949'460'120'000'000), "2018-04-05T17:31:00.120Z");
  EXPECT_EQ(FormatRfc3339(1'522'949'460'000'001'000), "2018-04-05T17:31:00.000001Z");
  EXPECT_EQ(FormatRfc3339(951'825'600'000'000'007), "2000-02-29T12:00:00.000000007Z");
  const uint64_t seed = testing::TestSeed(20240601);
  testing::SeededRandom random(seed);
  for (int i = 0; i < 20000; ++i) {
    const int64_t nanos = random.UniformRange(INT64_MIN / 2, INT64_MAX / 2);
    const std::string text = FormatRfc3339(nanos);
    Result<int64_t> back = ParseRfc3339Nanos(text);
    ASSERT_TRUE(back.ok()) << "seed " << seed << " " << text;
    ASSERT_EQ(*back, nanos) << "seed " << seed << " " << text;
  }
}

TEST(EventTest, GeneratedEventsAreValid) {
  const uint64_t seed = testing::TestSeed(7);
  testing::SeededRandom random(seed);
  testing::EventGenerator gen(random);
  for (int i = 0; i < 2000; ++i) {
    Event e = gen.Next();
    ASSERT_TRUE(e.Validate().ok())
        << "seed " << seed << " #" << i << ": " << e.Validate().ToString();
  }
}

}  // namespace
}  // namespace converge
