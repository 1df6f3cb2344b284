#include "schema/compat.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace converge::schema {
namespace {

namespace json = boost::json;

std::string Describe(const std::vector<Finding>& findings) {
  std::string out;
  for (const auto& f : findings) out += "  " + f.path + ": " + f.reason + "\n";
  return out.empty() ? "  (none)\n" : out;
}

// One schema change, and what each mode says about it: an empty `*_path` means compatible,
// otherwise the JSON pointer of a finding the check must report.
struct Change {
  const char* name;
  const char* previous;
  const char* next;
  const char* backward_path;
  const char* forward_path;
};

// Closed objects (additionalProperties false) unless the case is about the content model:
// with an open one, any field may already exist with any value (see docs/schemas.md).
const Change kChanges[] = {
    {"identical", R"({"type":"object","properties":{"id":{"type":"string"}},"required":["id"]})",
     R"({"type":"object","properties":{"id":{"type":"string"}},"required":["id"]})", "", ""},
    {"optional field added to a closed object",
     R"({"type":"object","properties":{"id":{"type":"string"}},"additionalProperties":false})",
     R"({"type":"object","properties":{"id":{"type":"string"},"note":{"type":"string"}},
        "additionalProperties":false})",
     "", "/additionalProperties"},
    {"optional field added to an open object",
     R"({"type":"object","properties":{"id":{"type":"string"}}})",
     R"({"type":"object","properties":{"id":{"type":"string"},"note":{"type":"string"}}})",
     "/properties/note/type", ""},
    {"optional untyped field added to an open object",
     R"({"type":"object","properties":{"id":{"type":"string"}}})",
     R"({"type":"object","properties":{"id":{"type":"string"},"note":{"description":"x"}}})", "",
     ""},
    {"required field added",
     R"({"type":"object","properties":{"id":{"type":"string"}},"required":["id"],
        "additionalProperties":false})",
     R"({"type":"object","properties":{"id":{"type":"string"},"n":{"type":"integer"}},
        "required":["id","n"],"additionalProperties":false})",
     "/required", "/additionalProperties"},
    {"required field removed from the object",
     R"({"type":"object","properties":{"id":{"type":"string"},"n":{"type":"integer"}},
        "required":["id","n"],"additionalProperties":false})",
     R"({"type":"object","properties":{"id":{"type":"string"}},"required":["id"],
        "additionalProperties":false})",
     "/additionalProperties", "/required"},
    {"required field made optional",
     R"({"type":"object","properties":{"id":{"type":"string"}},"required":["id"]})",
     R"({"type":"object","properties":{"id":{"type":"string"}}})", "", "/required"},
    {"optional field made required", R"({"type":"object","properties":{"id":{"type":"string"}}})",
     R"({"type":"object","properties":{"id":{"type":"string"}},"required":["id"]})", "/required",
     ""},
    {"type changed", R"({"type":"object","properties":{"id":{"type":"string"}}})",
     R"({"type":"object","properties":{"id":{"type":"integer"}}})", "/properties/id/type",
     "/properties/id/type"},
    {"type widened integer to number", R"({"type":"object","properties":{"n":{"type":"integer"}}})",
     R"({"type":"object","properties":{"n":{"type":"number"}}})", "", "/properties/n/type"},
    {"type narrowed number to integer", R"({"type":"object","properties":{"n":{"type":"number"}}})",
     R"({"type":"object","properties":{"n":{"type":"integer"}}})", "/properties/n/type", ""},
    {"type widened to a union with null",
     R"({"type":"object","properties":{"n":{"type":"string"}}})",
     R"({"type":"object","properties":{"n":{"type":["string","null"]}}})", "",
     "/properties/n/type"},
    {"enum widened", R"({"type":"string","enum":["a","b"]})",
     R"({"type":"string","enum":["a","b","c"]})", "", "/enum"},
    {"enum narrowed", R"({"type":"string","enum":["a","b","c"]})",
     R"({"type":"string","enum":["a","b"]})", "/enum", ""},
    {"enum added", R"({"type":"string"})", R"({"type":"string","enum":["a"]})", "/enum", ""},
    {"const changed", R"({"const":"v1"})", R"({"const":"v2"})", "/const", "/const"},
    {"additionalProperties false added",
     R"({"type":"object","properties":{"id":{"type":"string"}}})",
     R"({"type":"object","properties":{"id":{"type":"string"}},"additionalProperties":false})",
     "/additionalProperties", ""},
    {"additionalProperties schema narrowed",
     R"({"type":"object","additionalProperties":{"type":"number"}})",
     R"({"type":"object","additionalProperties":{"type":"integer"}})", "/additionalProperties/type",
     ""},
    {"nested object field type changed",
     R"({"type":"object","properties":{"address":{"type":"object",
        "properties":{"zip":{"type":"string"}}}}})",
     R"({"type":"object","properties":{"address":{"type":"object",
        "properties":{"zip":{"type":"integer"}}}}})",
     "/properties/address/properties/zip/type", "/properties/address/properties/zip/type"},
    {"nested required field added",
     R"({"type":"object","properties":{"address":{"type":"object",
        "properties":{"zip":{"type":"string"}}}}})",
     R"({"type":"object","properties":{"address":{"type":"object",
        "properties":{"zip":{"type":"string"}},"required":["zip"]}}})",
     "/properties/address/required", ""},
    {"array items widened",
     R"({"type":"object","properties":{"tags":{"type":"array","items":{"type":"integer"}}}})",
     R"({"type":"object","properties":{"tags":{"type":"array","items":{"type":"number"}}}})", "",
     "/properties/tags/items/type"},
    {"array items enum narrowed", R"({"type":"array","items":{"enum":["x","y"]}})",
     R"({"type":"array","items":{"enum":["x"]}})", "/items/enum", ""},
    {"array items added", R"({"type":"array"})", R"({"type":"array","items":{"type":"string"}})",
     "/items/type", ""},
    {"$ref target changed",
     R"({"definitions":{"money":{"type":"object","properties":{"cents":{"type":"integer"}},
        "required":["cents"]}},
        "type":"object","properties":{"total":{"$ref":"#/definitions/money"}}})",
     R"({"definitions":{"money":{"type":"object","properties":{"cents":{"type":"string"}},
        "required":["cents"]}},
        "type":"object","properties":{"total":{"$ref":"#/definitions/money"}}})",
     "/properties/total/properties/cents/type", "/properties/total/properties/cents/type"},
    {"$ref inlined unchanged",
     R"({"definitions":{"id":{"type":"string","minLength":1}},
        "type":"object","properties":{"id":{"$ref":"#/definitions/id"}}})",
     R"({"type":"object","properties":{"id":{"type":"string","minLength":1}}})", "", ""},
    {"recursive $ref unchanged",
     R"({"$defs":{"node":{"type":"object","properties":{"kids":{"type":"array",
        "items":{"$ref":"#/$defs/node"}}}}},"$ref":"#/$defs/node"})",
     R"({"$defs":{"node":{"type":"object","properties":{"kids":{"type":"array",
        "items":{"$ref":"#/$defs/node"}}}}},"$ref":"#/$defs/node"})",
     "", ""},
    {"$ref to another document", R"({"type":"object"})", R"({"$ref":"other.json#/x"})", "/$ref",
     "/$ref"},
    {"$ref that names nothing", R"({"type":"object"})", R"({"$ref":"#/definitions/none"})", "/$ref",
     "/$ref"},
    {"unsupported keyword anyOf", R"({"anyOf":[{"type":"string"},{"type":"integer"}]})",
     R"({"anyOf":[{"type":"string"},{"type":"integer"}]})", "/anyOf", "/anyOf"},
    {"unsupported keyword patternProperties", R"({"type":"object"})",
     R"({"type":"object","patternProperties":{"^x":{"type":"string"}}})", "/patternProperties",
     "/patternProperties"},
    {"tuple items", R"({"type":"array","items":[{"type":"string"}]})",
     R"({"type":"array","items":[{"type":"string"}]})", "/items", "/items"},
    {"minimum raised", R"({"type":"integer","minimum":0})", R"({"type":"integer","minimum":1})",
     "/minimum", ""},
    {"draft-04 exclusive minimum added", R"({"type":"number","minimum":0})",
     R"({"type":"number","minimum":0,"exclusiveMinimum":true})", "/minimum", ""},
    {"draft-06 exclusive maximum", R"({"type":"number","exclusiveMaximum":10})",
     R"({"type":"number","maximum":10})", "", "/exclusiveMaximum"},
    {"maxLength lowered", R"({"type":"string","maxLength":10})",
     R"({"type":"string","maxLength":5})", "/maxLength", ""},
    {"pattern added", R"({"type":"string"})", R"({"type":"string","pattern":"^[a-z]+$"})",
     "/pattern", ""},
    {"string keywords ignored for a number", R"({"type":"integer"})",
     R"({"type":"integer","maxLength":3})", "", ""},
    {"untyped writer, typed reader", R"({})", R"({"type":"string"})", "/type", ""},
    {"schema true to an object", R"(true)", R"({"type":"object"})", "/type", ""},
    {"schema false", R"({"type":"object"})", R"(false)", "", ""},
};

bool HasPath(const std::vector<Finding>& findings, const std::string& path) {
  for (const auto& f : findings) {
    if (f.path == path) return true;
  }
  return false;
}

void Expect(const std::vector<Finding>& got, const std::string& want_path, const char* what) {
  if (want_path.empty()) {
    EXPECT_TRUE(got.empty()) << what << ": expected compatible, findings:\n" << Describe(got);
  } else {
    EXPECT_TRUE(HasPath(got, want_path))
        << what << ": expected a finding at " << want_path << ", got:\n"
        << Describe(got);
  }
}

TEST(SchemaCompatTest, EachChangeUnderEachMode) {
  for (const auto& c : kChanges) {
    SCOPED_TRACE(c.name);
    json::value prev = json::parse(c.previous);
    json::value next = json::parse(c.next);
    std::string back = c.backward_path;
    std::string fwd = c.forward_path;
    if (std::string(c.name) == "schema false") {
      // false as the new version: no old data passes it; as the old one, it wrote nothing.
      back = "";
      EXPECT_FALSE(CheckCompatibility(prev, next, Compatibility::kBackward).empty());
      EXPECT_TRUE(CheckCompatibility(prev, next, Compatibility::kForward).empty());
      continue;
    }
    Expect(CheckCompatibility(prev, next, Compatibility::kBackward), back, "backward");
    Expect(CheckCompatibility(prev, next, Compatibility::kForward), fwd, "forward");
    auto full = CheckCompatibility(prev, next, Compatibility::kFull);
    if (back.empty() && fwd.empty()) {
      EXPECT_TRUE(full.empty()) << "full:\n" << Describe(full);
    } else {
      if (!back.empty()) {
        EXPECT_TRUE(HasPath(full, back)) << "full:\n" << Describe(full);
      }
      if (!fwd.empty()) {
        EXPECT_TRUE(HasPath(full, fwd)) << "full:\n" << Describe(full);
      }
    }
    EXPECT_TRUE(CheckCompatibility(prev, next, Compatibility::kNone).empty());
    // Backward is the reader-accepts check with the new version reading.
    EXPECT_EQ(CheckReaderAccepts(prev, next).size(),
              CheckCompatibility(prev, next, Compatibility::kBackward).size());
  }
}

TEST(SchemaCompatTest, ReasonsNameTheChange) {
  auto narrowed =
      CheckReaderAccepts(json::parse(R"({"type":"number"})"), json::parse(R"({"type":"integer"})"));
  ASSERT_EQ(narrowed.size(), 1u) << Describe(narrowed);
  EXPECT_EQ(narrowed[0].path, "/type");
  EXPECT_EQ(narrowed[0].reason, "type narrowed from number to integer");

  auto removed = CheckCompatibility(
      json::parse(R"({"type":"object","properties":{"id":{}},"required":["id"]})"),
      json::parse(R"({"type":"object","properties":{"id":{}}})"), Compatibility::kForward);
  ASSERT_EQ(removed.size(), 1u) << Describe(removed);
  EXPECT_NE(removed[0].reason.find("'id'"), std::string::npos) << removed[0].reason;

  auto enums =
      CheckReaderAccepts(json::parse(R"({"enum":["a","b"]})"), json::parse(R"({"enum":["a"]})"));
  ASSERT_EQ(enums.size(), 1u) << Describe(enums);
  EXPECT_NE(enums[0].reason.find("\"b\""), std::string::npos) << enums[0].reason;
}

TEST(SchemaCompatTest, EscapesPropertyNamesInPaths) {
  auto f = CheckReaderAccepts(
      json::parse(R"({"type":"object","properties":{"a/b~c":{"type":"string"}}})"),
      json::parse(R"({"type":"object","properties":{"a/b~c":{"type":"integer"}}})"));
  ASSERT_EQ(f.size(), 1u) << Describe(f);
  EXPECT_EQ(f[0].path, "/properties/a~1b~0c/type");
}

}  // namespace
}  // namespace converge::schema
