#include <gtest/gtest.h>

#include "converge/event.h"
#include "core/core_test_util.h"

namespace converge {
namespace {

Event SampleEvent() {
  Event e;
  e.set_id("A1");
  e.set_source("/s");
  e.set_type("t");
  e.set_time("2018-04-05T17:31:00Z");
  e.set_datacontenttype("text/plain");
  e.SetExtensionInteger("n", -3);
  e.SetExtension("p", "k");
  EXPECT_TRUE(e.SetTextData("hi").ok());
  return e;
}

// A string of every byte of a literal, embedded NULs included.
template <size_t N>
std::string B(const char (&literal)[N]) {
  return std::string(literal, N - 1);
}

std::string Encode(const Event& e) {
  std::string out;
  Status s = EncodeBinary(e, &out);
  EXPECT_TRUE(s.ok()) << s.ToString();
  return out;
}

// The example in docs/formats/event-binary.md, byte for byte.
TEST(EventBinaryTest, GoldenRecord) {
  // clang-format off
  const std::string expected = B(
      "\x01\x26"                        // version, flags: time, datacontenttype, text data
      "\x02" "A1"                        // id
      "\x02" "/s"                        // source
      "\x01" "t"                         // type
      "\x14" "2018-04-05T17:31:00Z"      // time
      "\x0a" "text/plain"                // datacontenttype
      "\x02"                             // extension count
      "\x01" "\x01" "n" "\x05"            // n: integer -3 (zigzag 5)
      "\x00" "\x01" "p" "\x01" "k"         // p: string "k"
      "\x02" "hi");                      // data
  // clang-format on
  EXPECT_EQ(expected.size(), 55u);
  EXPECT_EQ(Encode(SampleEvent()), expected);
  Result<Event> back = DecodeBinary(expected);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(*back, SampleEvent());
}

TEST(EventBinaryTest, EncodeAppendsAndRejectsInvalidEvents) {
  std::string out = "xyz";
  ASSERT_TRUE(EncodeBinary(SampleEvent(), &out).ok());
  EXPECT_EQ(out.substr(0, 3), "xyz");
  EXPECT_EQ(DecodeBinary(std::string_view(out).substr(3)).value(), SampleEvent());

  Event bad = SampleEvent();
  bad.set_id("");
  const std::string before = out;
  Status s = EncodeBinary(bad, &out);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(out, before);
}

TEST(EventBinaryTest, RandomEventsRoundTrip) {
  const uint64_t seed = testing::TestSeed(20241126);
  testing::SeededRandom random(seed);
  testing::EventGenerator gen(random);
  std::string buf;
  for (int i = 0; i < 10000; ++i) {
    const Event e = gen.Next();
    buf.clear();
    Status s = EncodeBinary(e, &buf);
    ASSERT_TRUE(s.ok()) << "seed " << seed << " #" << i << ": " << s.ToString();
    Result<Event> back = DecodeBinary(buf);
    ASSERT_TRUE(back.ok()) << "seed " << seed << " #" << i << ": " << back.status().ToString();
    ASSERT_EQ(*back, e) << "seed " << seed << " #" << i;
  }
}

TEST(EventBinaryTest, EveryTruncationIsDataLoss) {
  const uint64_t seed = testing::TestSeed(5);
  testing::SeededRandom random(seed);
  testing::EventGenerator gen(random);
  for (int i = 0; i < 200; ++i) {
    const std::string record = Encode(gen.Next());
    for (size_t len = 0; len < record.size(); ++len) {
      // A copy of exactly `len` bytes, so any read past the end is caught by ASan.
      const std::string prefix = record.substr(0, len);
      Result<Event> r = DecodeBinary(prefix);
      ASSERT_FALSE(r.ok()) << "seed " << seed << " #" << i << " len " << len;
      ASSERT_EQ(r.status().code(), StatusCode::kDataLoss)
          << "seed " << seed << " #" << i << " len " << len << ": " << r.status().ToString();
    }
    const std::string longer = record + '\0';
    EXPECT_EQ(DecodeBinary(longer).status().code(), StatusCode::kDataLoss);
  }
}

// A decode of garbled bytes either fails cleanly or yields a valid event whose encoding is
// exactly those bytes (the format has one encoding per event).
void CheckGarbled(const std::string& bytes, const std::string& context) {
  Result<Event> r = DecodeBinary(bytes);
  if (!r.ok()) {
    const StatusCode code = r.status().code();
    ASSERT_TRUE(code == StatusCode::kDataLoss || code == StatusCode::kInvalidArgument)
        << context << ": " << r.status().ToString();
    return;
  }
  ASSERT_TRUE(r->Validate().ok()) << context;
  std::string again;
  ASSERT_TRUE(EncodeBinary(*r, &again).ok()) << context;
  ASSERT_EQ(again, bytes) << context;
}

TEST(EventBinaryTest, EveryBitFlipFailsCleanlyOrDecodesCanonically) {
  const uint64_t seed = testing::TestSeed(6);
  testing::SeededRandom random(seed);
  testing::EventGenerator gen(random);
  for (int i = 0; i < 60; ++i) {
    const std::string record = Encode(gen.Next());
    for (size_t pos = 0; pos < record.size(); ++pos) {
      for (int bit = 0; bit < 8; ++bit) {
        std::string garbled = record;
        garbled[pos] = static_cast<char>(garbled[pos] ^ (1 << bit));
        CheckGarbled(garbled, "seed " + std::to_string(seed) + " #" + std::to_string(i) + " pos " +
                                  std::to_string(pos) + " bit " + std::to_string(bit));
      }
    }
  }
}

TEST(EventBinaryTest, RandomGarbageNeverCrashes) {
  const uint64_t seed = testing::TestSeed(8);
  testing::SeededRandom random(seed);
  testing::EventGenerator gen(random);
  for (int i = 0; i < 20000; ++i) {
    std::string bytes = gen.Bytes(0, 64);
    if (!bytes.empty() && gen.Coin(0.7)) bytes[0] = '\x01';  // get past the version byte
    if (bytes.size() > 1 && gen.Coin(0.5)) bytes[1] = static_cast<char>(bytes[1] & 0x3F);
    CheckGarbled(bytes, "seed " + std::to_string(seed) + " #" + std::to_string(i));
  }
  // Splices of real records: valid prefixes followed by another record's tail.
  for (int i = 0; i < 2000; ++i) {
    const std::string a = Encode(gen.Next()), b = Encode(gen.Next());
    const std::string spliced =
        a.substr(0, random.Uniform(a.size() + 1)) + b.substr(random.Uniform(b.size() + 1));
    CheckGarbled(spliced, "seed " + std::to_string(seed) + " splice " + std::to_string(i));
  }
}

TEST(EventBinaryTest, StructuralDamageIsDataLoss) {
  const std::string good = Encode(SampleEvent());
  struct Case {
    std::string bytes;
    const char* message;
  };
  std::string wrong_version = good;
  wrong_version[0] = 2;
  std::string reserved = good;
  reserved[1] = static_cast<char>(reserved[1] | 0x80);
  std::string bad_bool = good;
  bad_bool[good.size() - 8] = 7;  // the kind byte of extension "p"
  // clang-format off
  const Case cases[] = {
      {"", "truncated reading version"},
      {wrong_version, "unknown format version 2"},
      {reserved, "reserved bits"},
      {bad_bool, "unknown kind 7"},
      // Overlong varint for the id length (0x82 0x00 == 2).
      {B("\x01\x00" "\x82\x00" "A1" "\x02/s" "\x01t" "\x00"), "shortest form"},
      {B("\x01\x00" "\xff\xff\xff\xff\xff\xff\xff\xff\xff\x7f"), "overflows"},
      {B("\x01\x00" "\x05" "A1"), "id claims 5 bytes"},
      // Extension count that cannot fit in the bytes left.
      {B("\x01\x00" "\x01" "a" "\x01/" "\x01t" "\xff\xff\x03"), "cannot fit"},
      // Extensions out of order.
      {B("\x01\x00" "\x01" "a" "\x01/" "\x01t" "\x02" "\x00\x01z\x00" "\x00\x01" "a" "\x00"),
       "strictly increasing"},
      // Boolean byte other than 0/1.
      {B("\x01\x00" "\x01" "a" "\x01/" "\x01t" "\x01" "\x02\x01" "b" "\x02"), "boolean byte"},
      // Integer extension outside 32 bits.
      {B("\x01\x00" "\x01" "a" "\x01/" "\x01t" "\x01" "\x01\x01i" "\x80\x80\x80\x80\x10"),
       "outside 32 bits"},
      // JSON data that is not JSON.
      {B("\x01\x10" "\x01" "a" "\x01/" "\x01t" "\x00" "\x02{x"), "JSON data"},
      // Text data that is not UTF-8.
      {B("\x01\x24" "\x01" "a" "\x01/" "\x01t" "\x0a" "text/plain" "\x00" "\x01\xff"), "UTF-8"},
  };
  // clang-format on
  for (const Case& c : cases) {
    Result<Event> r = DecodeBinary(c.bytes);
    ASSERT_FALSE(r.ok()) << c.message;
    EXPECT_EQ(r.status().code(), StatusCode::kDataLoss) << r.status().ToString();
    EXPECT_NE(r.status().message().find(c.message), std::string_view::npos)
        << "want: " << c.message << "\ngot:  " << r.status().ToString();
  }
}

TEST(EventBinaryTest, WellFormedRecordOfAnInvalidEventIsInvalidArgument) {
  // id is empty; the record itself is well-formed.
  const std::string bytes =
      B("\x01\x00"
        "\x00"
        "\x01/"
        "\x01t"
        "\x00");
  Result<Event> r = DecodeBinary(bytes);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << r.status().ToString();
  EXPECT_NE(r.status().message().find("event record: attribute 'id'"), std::string_view::npos)
      << r.status().ToString();
}

TEST(EventBinaryTest, SizeLimit) {
  const std::string good = Encode(SampleEvent());
  DecodeOptions options;
  options.max_event_bytes = good.size();
  EXPECT_TRUE(DecodeBinary(good, options).ok());
  options.max_event_bytes = good.size() - 1;
  EXPECT_EQ(DecodeBinary(good, options).status().code(), StatusCode::kResourceExhausted);

  Event deep = SampleEvent();
  deep.set_datacontenttype(std::nullopt);
  ASSERT_TRUE(deep.SetJsonData("[[[[[1]]]]]").ok());
  const std::string record = Encode(deep);
  options = DecodeOptions();
  options.max_data_depth = 5;
  EXPECT_TRUE(DecodeBinary(record, options).ok());
  options.max_data_depth = 4;
  EXPECT_EQ(DecodeBinary(record, options).status().code(), StatusCode::kResourceExhausted);
  // A caller that parses the data itself (the sidecar's schema validation) can leave it out.
  options.defer_json_data_check = true;
  EXPECT_TRUE(DecodeBinary(record, options).ok());
  std::string garbled = record;
  ASSERT_EQ(garbled.back(), ']');
  garbled.back() = '}';
  options = DecodeOptions();
  EXPECT_EQ(DecodeBinary(garbled, options).status().code(), StatusCode::kDataLoss);
  options.defer_json_data_check = true;
  EXPECT_TRUE(DecodeBinary(garbled, options).ok());
}

}  // namespace
}  // namespace converge
