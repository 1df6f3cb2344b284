#include "schema/validator.h"

#include <gtest/gtest.h>

#include <atomic>
#include <string>
#include <thread>
#include <vector>

namespace converge::schema {
namespace {

namespace json = boost::json;

std::shared_ptr<const Validator> MustCompile(const char* schema) {
  auto v = Validator::Compile(json::parse(schema));
  EXPECT_TRUE(v.ok()) << v.status().ToString();
  return v.ok() ? *v : nullptr;
}

const char* const kOrder = R"({
  "type": "object",
  "required": ["id", "items"],
  "additionalProperties": false,
  "properties": {
    "id": {"type": "string", "minLength": 1},
    "items": {"type": "array", "items": {"$ref": "#/definitions/item"}},
    "status": {"enum": ["new", "paid"]}
  },
  "definitions": {
    "item": {"type": "object", "required": ["sku", "qty"],
             "properties": {"sku": {"type": "string"}, "qty": {"type": "integer", "minimum": 1}}}
  }
})";

TEST(SchemaValidatorTest, ValidValuePasses) {
  auto v = MustCompile(kOrder);
  ASSERT_NE(v, nullptr);
  EXPECT_FALSE(v->Validate(json::parse(R"({"id":"o1","items":[{"sku":"a","qty":2}]})")));
  EXPECT_FALSE(v->ValidateText(R"({"id":"o1","items":[]})"));
}

TEST(SchemaValidatorTest, NamesTheFailingPathAndKeyword) {
  auto v = MustCompile(kOrder);
  ASSERT_NE(v, nullptr);
  struct Case {
    const char* value;
    const char* path;
    const char* keyword;
  } cases[] = {
      {R"({"id":"o1","items":[{"sku":"a","qty":0}]})", "/items/0/qty", "minimum"},
      {R"({"id":"o1","items":[{"sku":"a","qty":1},{"sku":"b","qty":"x"}]})", "/items/1/qty",
       "type"},
      {R"({"id":"o1","items":[{"sku":"a"}]})", "/items/0", "required"},
      {R"({"id":"o1"})", "", "required"},
      {R"({"id":"o1","items":[],"extra":1})", "/extra", "additionalProperties"},
      {R"({"id":"o1","items":[],"status":"lost"})", "/status", "enum"},
      {R"([1])", "", "type"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.value);
    auto bad = v->Validate(json::parse(c.value));
    ASSERT_TRUE(bad.has_value());
    EXPECT_EQ(bad->instance_path, c.path);
    EXPECT_EQ(bad->keyword, c.keyword);
    auto text = v->ValidateText(c.value);
    ASSERT_TRUE(text.has_value());
    EXPECT_EQ(text->instance_path, c.path);
    EXPECT_EQ(text->keyword, c.keyword);
  }
  auto broken = v->ValidateText(R"({"id":)");
  ASSERT_TRUE(broken.has_value());
  EXPECT_EQ(broken->keyword, "json");
  // Deep text is refused, not recursed into without bound.
  auto any = MustCompile("{}");
  ASSERT_NE(any, nullptr);
  EXPECT_FALSE(any->ValidateText("[[[1]]]"));
  auto deep = any->ValidateText(std::string(100000, '[') + std::string(100000, ']'));
  ASSERT_TRUE(deep.has_value());
  EXPECT_EQ(deep->keyword, "json");
}

TEST(SchemaValidatorTest, CompileRefusesWhatItCannotEnforce) {
  const char* refused[] = {
      R"([])",
      R"(true)",
      R"({"type":"strin"})",
      R"({"properties":[]})",
      R"({"required":"id"})",
      R"({"minLength":-1})",
      R"({"const":1})",
      R"({"properties":{"a":{"contains":{}}}})",
      R"({"exclusiveMinimum":3})",
      R"({"$ref":"http://example.com/s.json"})",
      R"({"$ref":"#/definitions/missing"})",
      R"({"definitions":{"a":{"$ref":"#/definitions/b"},"b":{"$ref":"#/definitions/a"}},
          "$ref":"#/definitions/a"})",
      R"({"$schema":"http://json-schema.org/draft-07/schema#"})",
      R"({"items":{"items":{"items":false}}})",
      R"x({"type":"string","pattern":"^(?=a)"})x",
      R"({"type":"string","pattern":"\\bword"})",
      R"x({"patternProperties":{"(?!x)":{}}})x",
      R"({"pattern":"(a{100}){100}"})",
      // A schema that applies itself to the same value again could never finish.
      R"({"allOf":[{"$ref":"#"}]})",
      R"({"definitions":{"a":{"anyOf":[{"$ref":"#/definitions/b"}]},
                         "b":{"not":{"$ref":"#/definitions/a"}}},
          "$ref":"#/definitions/a"})",
  };
  for (const char* s : refused) {
    SCOPED_TRACE(s);
    auto v = Validator::Compile(json::parse(s));
    ASSERT_FALSE(v.ok());
    EXPECT_EQ(v.status().code(), StatusCode::kInvalidArgument);
  }
  std::string deep = "{}";
  for (int i = 0; i <= kMaxSchemaDepth; ++i) deep = R"({"items":)" + deep + "}";
  json::parse_options deep_ok;
  deep_ok.max_depth = 1000;
  EXPECT_FALSE(Validator::Compile(json::parse(deep, {}, deep_ok)).ok());
  // A recursive schema through $ref is fine: it is not a loop of bare references.
  EXPECT_TRUE(
      Validator::Compile(json::parse(R"({"type":"object","properties":{"next":{"$ref":"#"}}})"))
          .ok());
}

// Edge cases of draft-04's data model: what counts as an integer, equality of numbers,
// lengths in code points, huge numbers.
TEST(SchemaValidatorTest, IntegersNumbersAndEquality) {
  auto integer = MustCompile(R"({"type":"integer"})");
  auto number = MustCompile(R"({"type":"number"})");
  ASSERT_NE(integer, nullptr);
  ASSERT_NE(number, nullptr);
  for (const char* ok :
       {"1", "-1", "0", "-0", "9223372036854775807", "-9223372036854775808", "18446744073709551615",
        "123456789012345678901234567890", "-123456789012345678901234567890"}) {
    EXPECT_FALSE(integer->ValidateText(ok)) << ok;
    EXPECT_FALSE(number->ValidateText(ok)) << ok;
  }
  // Draft-04: a number with a fraction or an exponent is not an integer, even 1.0.
  for (const char* not_int : {"1.0", "1e0", "1.5", "-0.0", "1E400", "-1e400", "1e-400"}) {
    auto bad = integer->ValidateText(not_int);
    ASSERT_TRUE(bad.has_value()) << not_int;
    EXPECT_EQ(bad->keyword, "type");
    EXPECT_FALSE(number->ValidateText(not_int)) << not_int;
  }
  // Bounds compare exactly across the integer range, and against huge numbers.
  auto bounded = MustCompile(R"({"minimum":-9223372036854775808,"maximum":18446744073709551615})");
  ASSERT_NE(bounded, nullptr);
  EXPECT_FALSE(bounded->ValidateText("18446744073709551615"));
  EXPECT_FALSE(bounded->ValidateText("-9223372036854775808"));
  EXPECT_EQ(bounded->ValidateText("1e400")->keyword, "maximum");
  EXPECT_EQ(bounded->ValidateText("-1e400")->keyword, "minimum");
  auto small = MustCompile(R"({"maximum":9007199254740993})");
  ASSERT_NE(small, nullptr);
  EXPECT_FALSE(small->ValidateText("9007199254740993"));
  EXPECT_EQ(small->ValidateText("9007199254740994")->keyword, "maximum");
  auto multiple = MustCompile(R"({"multipleOf":3})");
  ASSERT_NE(multiple, nullptr);
  EXPECT_FALSE(multiple->ValidateText("-9"));
  EXPECT_FALSE(multiple->ValidateText("18446744073709551615"));
  EXPECT_EQ(multiple->ValidateText("10")->keyword, "multipleOf");
  // uniqueItems and enum compare numbers by value: 1 and 1.0 are the same number.
  auto unique = MustCompile(R"({"uniqueItems":true})");
  ASSERT_NE(unique, nullptr);
  auto dup = unique->ValidateText("[1, 2, 1.0]");
  ASSERT_TRUE(dup.has_value());
  EXPECT_EQ(dup->keyword, "uniqueItems");
  EXPECT_EQ(dup->instance_path, "/2");
  EXPECT_TRUE(unique->ValidateText(R"([{"a":1,"b":[1]}, {"b":[1.0],"a":1}])").has_value());
  EXPECT_FALSE(unique->ValidateText(R"([{"a":1}, {"a":2}, [1], [1,1], "1", 1, true, null])"));
  EXPECT_FALSE(unique->ValidateText("[0, false]"));
  auto one_of_enum = MustCompile(R"({"enum":[1, "a", {"k":[2.0]}]})");
  ASSERT_NE(one_of_enum, nullptr);
  EXPECT_FALSE(one_of_enum->ValidateText("1.0"));
  EXPECT_FALSE(one_of_enum->ValidateText(R"({"k":[2]})"));
  EXPECT_EQ(one_of_enum->ValidateText("true")->keyword, "enum");
  EXPECT_EQ(one_of_enum->ValidateText(R"({"k":[2],"x":1})")->keyword, "enum");
}

TEST(SchemaValidatorTest, LengthsCountCodePoints) {
  auto v = MustCompile(R"({"type":"string","minLength":2,"maxLength":3})");
  ASSERT_NE(v, nullptr);
  EXPECT_FALSE(v->ValidateText("\"\xC3\xA9\xC3\xA9\""));  // 2 code points, 4 bytes
  EXPECT_FALSE(v->ValidateText("\"\xF0\x9F\x98\x80\xF0\x9F\x98\x80\xF0\x9F\x98\x80\""));
  EXPECT_EQ(v->ValidateText("\"\xF0\x9F\x98\x80\"")->keyword, "minLength");  // 1, 4 bytes
  EXPECT_FALSE(v->ValidateText(R"("\u00e9\ud83d\ude00")"));  // escapes: 2 code points
  EXPECT_EQ(v->ValidateText(R"("abcd")")->keyword, "maxLength");
  // Text that is not JSON (a lone surrogate, bad UTF-8, a control character) is refused.
  for (const char* bad : {R"("\ud800")", "\"\xC3\"", "\"\xED\xA0\x80\"", "\"a\x01\"", "01", "1.",
                          "[1,]", "{\"a\"}", "nul", "\"a\" x"}) {
    auto f = v->ValidateText(bad);
    ASSERT_TRUE(f.has_value()) << bad;
    EXPECT_EQ(f->keyword, "json") << bad;
  }
}

// A recursive schema recurses only as deep as the value does, and values nest at most 128
// deep; a schema that would apply itself to the same value without end is refused (above).
TEST(SchemaValidatorTest, RecursionIsBounded) {
  auto list = MustCompile(R"({"type":"object","required":["v"],
      "properties":{"v":{"type":"integer"},"next":{"$ref":"#"}}})");
  ASSERT_NE(list, nullptr);
  auto nested = [](int depth, const char* leaf) {
    std::string s;
    for (int i = 0; i < depth; ++i) s += R"({"v":1,"next":)";
    s += leaf;
    s += std::string(depth, '}');
    return s;
  };
  EXPECT_FALSE(list->ValidateText(nested(100, R"({"v":2})")));
  auto bad = list->ValidateText(nested(3, R"({"v":"x"})"));
  ASSERT_TRUE(bad.has_value());
  EXPECT_EQ(bad->instance_path, "/next/next/next/v");
  EXPECT_EQ(bad->schema_path, "/properties/v");
  auto deep = list->ValidateText(nested(200, R"({"v":2})"));
  ASSERT_TRUE(deep.has_value());
  EXPECT_EQ(deep->keyword, "json");
  // Long chains of references through combinators stay bounded too.
  std::string chain = R"({"definitions":{)";
  for (int i = 0; i < 50; ++i) {
    chain += "\"d" + std::to_string(i) + R"(":{"allOf":[{"$ref":"#/definitions/d)" +
             std::to_string(i + 1) + "\"}]},";
  }
  chain += R"("d50":{"type":"integer"}},"$ref":"#/definitions/d0"})";
  auto c = MustCompile(chain.c_str());
  ASSERT_NE(c, nullptr);
  EXPECT_FALSE(c->ValidateText("[[1]]") == std::nullopt);
  EXPECT_FALSE(c->ValidateText("7"));
  // Such a loop stored by an earlier version (which accepted it) still loads, and refuses
  // every value instead of recursing without end.
  auto stored = CompileUnchecked(json::parse(R"({"anyOf":[{"$ref":"#"},{"$ref":"#"}]})"));
  ASSERT_TRUE(stored.ok());
  auto refused = (*stored)->ValidateText("1");
  ASSERT_TRUE(refused.has_value());
  EXPECT_EQ(refused->keyword, "schema");
}

TEST(SchemaValidatorTest, PatternPropertiesWithAdditionalPropertiesFalse) {
  auto v = MustCompile(R"({"properties":{"id":{"type":"string"}},
      "patternProperties":{"^x-":{"type":"integer"}},"additionalProperties":false})");
  ASSERT_NE(v, nullptr);
  EXPECT_FALSE(v->ValidateText(R"({"id":"a","x-1":1,"x-2":2})"));
  auto extra = v->ValidateText(R"({"id":"a","y":1})");
  ASSERT_TRUE(extra.has_value());
  EXPECT_EQ(extra->keyword, "additionalProperties");
  EXPECT_EQ(extra->instance_path, "/y");
  auto typed = v->ValidateText(R"({"x-1":"s"})");
  ASSERT_TRUE(typed.has_value());
  EXPECT_EQ(typed->keyword, "patternProperties");
  EXPECT_EQ(typed->instance_path, "/x-1");
  // Escaped names in $ref pointers (RFC 6901 and URI percent-escapes).
  auto refs = MustCompile(R"({"definitions":{"a/b":{"type":"integer"},"c%d":{"type":"string"}},
      "properties":{"p":{"$ref":"#/definitions/a~1b"},"q":{"$ref":"#/definitions/c%25d"}}})");
  ASSERT_NE(refs, nullptr);
  EXPECT_FALSE(refs->ValidateText(R"({"p":1,"q":"s"})"));
  EXPECT_EQ(refs->ValidateText(R"({"p":"1"})")->schema_path, "/definitions/a~1b");
  EXPECT_EQ(refs->ValidateText(R"({"q":1})")->keyword, "type");
}

// More than 64 properties: presence kept in words instead of one mask, nested objects too.
TEST(SchemaValidatorTest, ManyPropertiesAndEscapedPaths) {
  std::string props, required, value;
  for (int i = 0; i < 70; ++i) {
    std::string name = "p";
    name.append(std::to_string(i));
    if (i > 0) {
      props.push_back(',');
      required.push_back(',');
      value.push_back(',');
    }
    props.append("\"").append(name).append("\":{\"type\":\"integer\"}");
    required.append("\"").append(name).append("\"");
    value.append("\"").append(name).append("\":1");
  }
  const std::string schema = R"({"type":"object","properties":{)" + props +
                             R"(,"inner":{"$ref":"#"}},"required":[)" + required + "]}";
  auto v = MustCompile(schema.c_str());
  ASSERT_NE(v, nullptr);
  const std::string full = "{" + value + "}";
  EXPECT_FALSE(v->ValidateText(full));
  EXPECT_FALSE(v->ValidateText("{" + value + ",\"inner\":" + full + "}"));
  std::string missing = full;
  missing.replace(missing.find("\"p69\":1"), 7, "\"x\":1");
  auto bad = v->ValidateText("{" + value + ",\"inner\":" + missing + "}");
  ASSERT_TRUE(bad.has_value());
  EXPECT_EQ(bad->keyword, "required");
  EXPECT_EQ(bad->instance_path, "/inner");
  // Member names with '/' and '~' are escaped in the path (RFC 6901), escapes decoded first.
  auto typed = MustCompile(R"({"additionalProperties":{"type":"integer"}})");
  ASSERT_NE(typed, nullptr);
  auto at = typed->ValidateText(R"({"a/b":1,"c~d":"x"})");
  ASSERT_TRUE(at.has_value());
  EXPECT_EQ(at->instance_path, "/c~0d");
  at = typed->ValidateText(R"({"a\/b\u00e9":"x"})");
  ASSERT_TRUE(at.has_value());
  EXPECT_EQ(at->instance_path, "/a~1b\xC3\xA9");
}

// RapidJSON keeps a regular expression's matching state in the compiled pattern: a schema
// with `pattern` shared by threads gave wrong answers (seen as valid events refused).
TEST(SchemaValidatorTest, PatternsValidateOnManyThreadsAtOnce) {
  auto v = MustCompile(R"({"type":"object","properties":{
      "customer":{"type":"string","pattern":"^c-[0-9]+$"}},
      "patternProperties":{"^x-[a-z]+$":{"type":"integer"}}})");
  ASSERT_NE(v, nullptr);
  std::string good = R"({"customer":"c-)" + std::string(200, '7') + R"(","x-abc":1})";
  std::string bad = R"({"customer":"c-)" + std::string(200, '7') + R"(z"})";
  std::atomic<int> wrong{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 3000; ++i) {
        if (v->ValidateText(good).has_value()) ++wrong;
        auto f = v->ValidateText(bad);
        if (!f || f->keyword != "pattern") ++wrong;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(wrong.load(), 0);
}

TEST(SchemaValidatorTest, OneCompiledSchemaValidatesOnManyThreadsAtOnce) {
  auto v = MustCompile(kOrder);
  ASSERT_NE(v, nullptr);
  json::value good = json::parse(R"({"id":"o1","items":[{"sku":"a","qty":2}]})");
  json::value bad = json::parse(R"({"id":"o1","items":[{"sku":"a","qty":2},{"sku":"b"}]})");
  std::atomic<int> wrong{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 2000; ++i) {
        if (v->Validate(good).has_value()) ++wrong;
        auto f = v->Validate(bad);
        if (!f || f->instance_path != "/items/1") ++wrong;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(wrong.load(), 0);
}

}  // namespace
}  // namespace converge::schema
