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
      R"({"type":"string","pattern":"^\\d+$"})",
      R"({"patternProperties":{"^x":{}},"additionalProperties":false})",
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
