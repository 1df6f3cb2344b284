#include "core/yaml_check.h"

#include <gtest/gtest.h>

#include <chrono>
#include <string>

namespace converge {
namespace {

Status Check(const std::string& text, YamlCheckLimits limits = {}) {
  return CheckYamlDocument(YAML::Load(text), "doc", limits);
}

TEST(YamlCheckTest, AcceptsOrdinaryDocuments) {
  EXPECT_TRUE(Check("a: 1\nb: [1, 2, {c: 3}]\nd: {e: f}\n").ok());
  EXPECT_TRUE(Check("{\"a\": 1, \"b\": {\"a\": 2}}").ok());  // the same key in two mappings
  EXPECT_TRUE(Check("base: &b {x: 1}\nuse: *b\n").ok());     // an alias used once
}

TEST(YamlCheckTest, RefusesARepeatedKeyAtAnyDepthNamingItAndItsLine) {
  Status top = Check("a: 1\nb: 2\na: 3\n");
  EXPECT_EQ(top.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(top.message().find("doc: key 'a' appears more than once"), std::string_view::npos)
      << top.message();
  EXPECT_NE(top.message().find("(line 3)"), std::string_view::npos) << top.message();
  EXPECT_EQ(Check("x:\n  - y: {p: 1, p: 2}\n").code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(Check("{\"name\": \"x\", \"name\": \"y\"}").code(), StatusCode::kInvalidArgument);
}

TEST(YamlCheckTest, RefusesDeepNesting) {
  std::string deep;
  for (int i = 0; i < 100; ++i) deep += "[";
  for (int i = 0; i < 100; ++i) deep += "]";
  Status s = Check(deep);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("nested deeper than 64"), std::string_view::npos) << s.message();
}

// Ten levels of anchors, each used ten times by the next: 10^10 nodes from about 600 bytes.
// The walk stops at its budget, quickly, instead of walking them.
TEST(YamlCheckTest, RefusesAnAliasBombQuickly) {
  std::string text = "l0: &l0 [x, x, x, x, x, x, x, x, x, x]\n";
  for (int i = 1; i <= 10; ++i) {
    const std::string n = std::to_string(i);
    const std::string prev = std::to_string(i - 1);
    text.append("l").append(n).append(": &l").append(n).append(" [");
    for (int j = 0; j < 10; ++j) text.append(j ? ", *l" : "*l").append(prev);
    text.append("]\n");
  }
  auto start = std::chrono::steady_clock::now();
  Status s = Check(text);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("expands to more than"), std::string_view::npos) << s.message();
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
  YamlCheckLimits small;
  small.max_nodes = 10;
  EXPECT_EQ(Check("[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]", small).code(),
            StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace converge
