// The validator against RapidJSON's draft-04 validator (the one converge used before, kept
// here as a reference only): on generated instances of the official suite's draft-04 schemas
// and of the schemas the tests and the benchmark use, both must give the same verdict, and a
// failure the same instance path, keyword and schema path (the 400 SCHEMA_VIOLATION answer
// names them), except where RapidJSON is known to be wrong (listed in docs/schemas.md).
#define RAPIDJSON_HAS_STDSTRING 1
#include <gtest/gtest.h>
#include <rapidjson/document.h>
#include <rapidjson/schema.h>
#include <rapidjson/stringbuffer.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "schema/validator.h"

namespace converge::schema {
namespace {

namespace json = boost::json;
namespace fs = std::filesystem;

struct Answer {
  bool valid = true;
  std::string path, keyword, schema_path;
};

std::string PointerText(const rapidjson::Pointer& p) {
  rapidjson::StringBuffer sb;
  p.Stringify(sb);
  return std::string(sb.GetString(), sb.GetSize());
}

class Reference {
 public:
  explicit Reference(const json::value& schema) {
    doc_.Parse(json::serialize(schema));
    compiled_.emplace(doc_);
  }
  Answer Validate(const std::string& text) {
    rapidjson::SchemaValidator v(*compiled_);
    rapidjson::Document d;
    d.Parse(text);
    Answer a;
    if (!d.Accept(v)) {
      a.valid = false;
      a.path = PointerText(v.GetInvalidDocumentPointer());
      a.keyword = v.GetInvalidSchemaKeyword();
      a.schema_path = PointerText(v.GetInvalidSchemaPointer());
    }
    return a;
  }

 private:
  rapidjson::Document doc_;
  std::optional<rapidjson::SchemaDocument> compiled_;
};

// Random values built from what a schema mentions (its property names, its enum values and
// bounds) and a few of everything else, so that most keywords see both passing and failing
// values.
class Generator {
 public:
  Generator(const json::value& schema, uint32_t seed) : rng_(seed) {
    Collect(schema, 0);
    for (const char* k : {"a", "b", "foo", "bar", "x"}) keys_.push_back(k);
    for (int64_t i : {-2, -1, 0, 1, 2, 3, 5, 10, 100}) scalars_.push_back(json::value(i));
    for (double d : {0.5, 1.0, -1.5, 2.5, 1e10}) scalars_.push_back(json::value(d));
    for (const char* s : {"", "a", "ab", "abc", "\xC3\xA9\xC3\xA9", "c-1042", "c-x", "EUR"}) {
      scalars_.push_back(json::value(s));
    }
    scalars_.push_back(json::value(true));
    scalars_.push_back(json::value(false));
    scalars_.push_back(json::value(nullptr));
  }

  json::value Next(int depth = 0) {
    const int roll = Pick(10);
    if (depth < 3 && roll < 3) {
      json::object o;
      const int n = Pick(5);
      for (int i = 0; i < n; ++i) o[keys_[Pick(static_cast<int>(keys_.size()))]] = Next(depth + 1);
      return o;
    }
    if (depth < 3 && roll < 5) {
      json::array a;
      const int n = Pick(5);
      for (int i = 0; i < n; ++i) {
        // Repeats, to exercise uniqueItems.
        if (!a.empty() && Pick(4) == 0) {
          a.push_back(a[Pick(static_cast<int>(a.size()))]);
        } else {
          a.push_back(Next(depth + 1));
        }
      }
      return a;
    }
    return scalars_[Pick(static_cast<int>(scalars_.size()))];
  }

 private:
  int Pick(int n) { return std::uniform_int_distribution<int>(0, n - 1)(rng_); }

  void Collect(const json::value& v, int depth) {
    if (depth > 20) return;
    if (v.is_object()) {
      for (const auto& kv : v.get_object()) {
        if (kv.key() == "properties" && kv.value().is_object()) {
          for (const auto& p : kv.value().get_object()) keys_.emplace_back(p.key());
        }
        if ((kv.key() == "enum") && kv.value().is_array()) {
          for (const auto& e : kv.value().get_array()) scalars_.push_back(e);
        }
        if ((kv.key() == "minimum" || kv.key() == "maximum") && kv.value().is_number()) {
          scalars_.push_back(kv.value());
        }
        Collect(kv.value(), depth + 1);
      }
    } else if (v.is_array()) {
      for (const auto& e : v.get_array()) Collect(e, depth + 1);
    }
  }

  std::mt19937 rng_;
  std::vector<std::string> keys_;
  std::vector<json::value> scalars_;
};

// RapidJSON is wrong where a name only `required` or `dependencies` mentions appears with
// additionalProperties false or a schema (it takes the name for a declared property), and it
// names no useful schema for a failure under patternProperties. Such schemas are compared on
// the verdicts and paths they agree on only.
bool RequiredOnlyNames(const json::value& v) {
  if (v.is_array()) {
    for (const auto& e : v.get_array()) {
      if (RequiredOnlyNames(e)) return true;
    }
    return false;
  }
  if (!v.is_object()) return false;
  const auto& o = v.get_object();
  if (o.contains("additionalProperties") &&
      (o.contains("required") || o.contains("dependencies")) &&
      !(o.at("additionalProperties") == json::value(true))) {
    return true;
  }
  for (const auto& kv : o) {
    if (RequiredOnlyNames(kv.value())) return true;
  }
  return false;
}

// Where RapidJSON 1.1.0 is wrong and this validator follows the specification: its regular
// expressions find no empty match, so the pattern "a*" does not apply to the name "b" (ECMA
// 262: /a*/.test("b") is true).
const char* const kKnownDifferences[] = {
    "patternProperties.json / multiple simultaneous patternProperties are validated",
};

void Compare(const json::value& schema, const std::string& name, int instances, int* compared,
             int* invalid) {
  for (const char* known : kKnownDifferences) {
    if (name == known) return;
  }
  auto mine = Validator::Compile(schema);
  if (!mine.ok()) return;  // refused: nothing to compare (the suite test covers refusals)
  if (json::serialize(schema).find("patternProperties") != std::string::npos &&
      json::serialize(schema).find("additionalProperties") != std::string::npos) {
    return;  // RapidJSON 1.1.0 reads out of bounds on these
  }
  const bool required_only = RequiredOnlyNames(schema);
  Reference ref(schema);
  Generator gen(schema, static_cast<uint32_t>(std::hash<std::string>()(name)));
  for (int i = 0; i < instances; ++i) {
    const std::string text = json::serialize(gen.Next());
    Answer want = ref.Validate(text);
    std::optional<Violation> got = (*mine)->ValidateText(text);
    if (required_only && (!want.valid || got) &&
        (want.keyword == "additionalProperties" ||
         (got && got->keyword == "additionalProperties"))) {
      continue;
    }
    EXPECT_EQ(want.valid, !got.has_value())
        << name << ": " << text << " (reference: " << want.keyword << " at '" << want.path << "')";
    if (got && !want.valid) {
      EXPECT_EQ(want.path, got->instance_path) << name << ": " << text;
      EXPECT_EQ(want.keyword, got->keyword) << name << ": " << text;
      if (got->keyword != "patternProperties") {
        EXPECT_EQ(want.schema_path, got->schema_path) << name << ": " << text;
      }
    }
    ++*compared;
    *invalid += !want.valid;
  }
}

TEST(SchemaDifferentialTest, AgreesWithRapidJsonOnGeneratedInstances) {
  int compared = 0, invalid = 0;
  const char* own[] = {
      // The benchmark's order schema (bench/converge_server.cc).
      R"({"type":"object","additionalProperties":false,
        "required":["order_id","customer","currency","items","total"],
        "properties":{
          "order_id":{"type":"string","minLength":1,"maxLength":64},
          "customer":{"type":"string","pattern":"^c-[0-9]+$"},
          "currency":{"enum":["EUR","USD","GBP"]},
          "items":{"type":"array","minItems":1,"items":{
            "type":"object","additionalProperties":false,"required":["sku","qty","price"],
            "properties":{"sku":{"type":"string","maxLength":32},
                          "qty":{"type":"integer","minimum":1},
                          "price":{"type":"number","minimum":0}}}},
          "total":{"type":"number","minimum":0},
          "note":{"type":"string","maxLength":100000}}})",
      R"({"type":"object","properties":{"a":{"anyOf":[{"type":"integer"},{"minLength":2}]},
        "b":{"oneOf":[{"type":"integer"},{"minimum":2}]},"foo":{"not":{"type":"string"}},
        "bar":{"allOf":[{"type":"array"},{"uniqueItems":true,"maxItems":3}]},
        "x":{"items":[{"type":"integer"},{"type":"string"}],"additionalItems":false}},
        "dependencies":{"a":["b"],"foo":{"required":["bar"]}},"minProperties":1})",
      R"({"definitions":{"node":{"type":"object","properties":{"a":{"$ref":"#/definitions/node"},
        "b":{"type":["integer","null"],"maximum":3,"exclusiveMaximum":true,"multipleOf":0.5}}}},
        "$ref":"#/definitions/node"})",
  };
  for (int k = 0; k < static_cast<int>(std::size(own)); ++k) {
    Compare(json::parse(own[k]), "own[" + std::to_string(k) + "]", 3000, &compared, &invalid);
  }
  fs::path dir = fs::path(CONVERGE_JSON_SCHEMA_TEST_SUITE) / "tests" / "draft4";
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    if (!e.is_regular_file() || e.path().extension() != ".json") continue;
    if (e.path().filename() == "bignum.json") continue;  // RapidJSON: bignums are doubles
    std::ifstream in(e.path());
    std::stringstream ss;
    ss << in.rdbuf();
    json::value groups = json::parse(ss.str());
    for (const auto& g : groups.as_array()) {
      Compare(g.at("schema"),
              e.path().filename().string() + " / " + std::string(g.at("description").as_string()),
              300, &compared, &invalid);
    }
  }
  EXPECT_GT(compared, 30000);
  EXPECT_GT(invalid, compared / 4);  // failures (and their paths) are compared too
  std::cout << "compared " << compared << " instances, " << invalid << " invalid\n";
}

}  // namespace
}  // namespace converge::schema
