#include "wire/cloudevents_binary.h"

#include <gtest/gtest.h>

namespace converge::internal::wire {
namespace {

using Headers = std::vector<std::pair<std::string, std::string>>;

std::string Find(const Headers& h, const std::string& name) {
  for (const auto& [n, v] : h) {
    if (n == name) return v;
  }
  return "<absent>";
}

TEST(CloudEventsBinary, PercentEncodesWhatTheBindingRequires) {
  EXPECT_EQ(PercentEncodeHeaderValue("plain-value_1.2/x:y"), "plain-value_1.2/x:y");
  EXPECT_EQ(PercentEncodeHeaderValue("a b\"c%d"), "a%20b%22c%25d");
  EXPECT_EQ(PercentEncodeHeaderValue("\xC3\xA9\n\x7F"), "%C3%A9%0A%7F");
}

TEST(CloudEventsBinary, AttributesExtensionsAndContentType) {
  Event e;
  e.set_id("id 1");
  e.set_source("/orders");
  e.set_type("order.created");
  e.set_subject("k\"1");
  e.SetExtension("partitionkey", "k1");
  ASSERT_TRUE(e.SetJsonData(R"({"n":1})").ok());
  Headers h;
  AppendBinaryModeHeaders(e, &h);
  EXPECT_EQ(Find(h, "ce-specversion"), "1.0");
  EXPECT_EQ(Find(h, "ce-id"), "id%201");
  EXPECT_EQ(Find(h, "ce-subject"), "k%221");
  EXPECT_EQ(Find(h, "ce-partitionkey"), "k1");
  EXPECT_EQ(Find(h, "ce-time"), "<absent>");
  EXPECT_EQ(Find(h, "Content-Type"), "application/json");

  Event bin = e;
  bin.SetBinaryData("\x01\x02");
  Headers hb;
  AppendBinaryModeHeaders(bin, &hb);
  EXPECT_EQ(Find(hb, "Content-Type"), "application/octet-stream");

  Event typed = e;
  typed.set_datacontenttype("application/vnd.x+json");
  Headers ht;
  AppendBinaryModeHeaders(typed, &ht);
  EXPECT_EQ(Find(ht, "Content-Type"), "application/vnd.x+json");

  Event none = e;
  none.ClearData();
  Headers hn;
  AppendBinaryModeHeaders(none, &hn);
  EXPECT_EQ(Find(hn, "Content-Type"), "<absent>");
}

}  // namespace
}  // namespace converge::internal::wire
