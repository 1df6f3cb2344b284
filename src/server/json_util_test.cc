#include "server/json_util.h"

#include <gtest/gtest.h>

namespace converge::server {
namespace {

TEST(JsonUtil, ReadsFieldsStrictly) {
  Result<boost::json::object> o =
      ParseJsonObject(R"({"n": 5, "big": 18446744073709551615, "s": "x", "b": true, "z": null})");
  ASSERT_TRUE(o.ok());
  int64_t n = 0;
  EXPECT_TRUE(ReadInt(*o, "n", 0, 10, &n).ok());
  EXPECT_EQ(n, 5);
  EXPECT_FALSE(ReadInt(*o, "n", 6, 10, &n).ok());
  EXPECT_FALSE(ReadInt(*o, "s", 0, 10, &n).ok());
  uint64_t u = 0;
  EXPECT_TRUE(ReadUint(*o, "big", 0, UINT64_MAX, &u).ok());
  EXPECT_EQ(u, UINT64_MAX);
  int64_t untouched = 7;
  EXPECT_TRUE(ReadInt(*o, "z", 0, 10, &untouched).ok());
  EXPECT_TRUE(ReadInt(*o, "missing", 0, 10, &untouched).ok());
  EXPECT_EQ(untouched, 7);
  std::string s;
  EXPECT_TRUE(ReadString(*o, "s", &s).ok());
  EXPECT_EQ(s, "x");
  bool b = false;
  EXPECT_TRUE(ReadBool(*o, "b", &b).ok());
  EXPECT_TRUE(b);
  Status unknown = CheckFields(*o, {"n", "big", "s", "b"});
  EXPECT_FALSE(unknown.ok());
  EXPECT_NE(unknown.message().find("'z'"), std::string_view::npos);
  EXPECT_TRUE(ParseJsonObject("").ok());
  EXPECT_FALSE(ParseJsonObject("[1]").ok());
  EXPECT_FALSE(ParseJsonObject("{").ok());
}

TEST(JsonUtil, EscapesStrings) {
  std::string out;
  AppendJsonString(&out, std::string("a\"b\\c\n\x01\xc3\xa9", 9));
  EXPECT_EQ(out, "\"a\\\"b\\\\c\\n\\u0001\xc3\xa9\"");
  Result<boost::json::object> round = ParseJsonObject("{\"k\":" + out + "}");
  ASSERT_TRUE(round.ok());
}

TEST(JsonUtil, QueryParameters) {
  EXPECT_EQ(*ParseUintParam("limit", "10", 1, 100), 10u);
  EXPECT_FALSE(ParseUintParam("limit", "0", 1, 100).ok());
  EXPECT_FALSE(ParseUintParam("limit", "1x", 1, 100).ok());
  EXPECT_FALSE(ParseUintParam("limit", "", 1, 100).ok());
  EXPECT_NE(ParseUintParam("limit", "-1", 1, 100).status().message().find("limit"),
            std::string_view::npos);
}

}  // namespace
}  // namespace converge::server
