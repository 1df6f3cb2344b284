#include "core/coding.h"

#include <gtest/gtest.h>

#include <limits>
#include <string>
#include <vector>

namespace converge::internal {
namespace {

TEST(CodingTest, FixedIntegersAreLittleEndian) {
  std::string s;
  PutFixed32(&s, 0x04030201u);
  PutFixed64(&s, 0x0c0b0a0908070605ull);
  EXPECT_EQ(s, std::string("\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c", 12));
  std::string_view in(s);
  uint32_t a = 0;
  uint64_t b = 0;
  ASSERT_TRUE(GetFixed32(&in, &a));
  ASSERT_TRUE(GetFixed64(&in, &b));
  EXPECT_EQ(a, 0x04030201u);
  EXPECT_EQ(b, 0x0c0b0a0908070605ull);
  EXPECT_TRUE(in.empty());
  // Too short: false and nothing consumed.
  std::string_view shorter(s.data(), 3);
  EXPECT_FALSE(GetFixed32(&shorter, &a));
  EXPECT_EQ(shorter.size(), 3u);
  std::string_view seven(s.data(), 7);
  EXPECT_FALSE(GetFixed64(&seven, &b));
  EXPECT_EQ(seven.size(), 7u);
}

TEST(CodingTest, VarintsRoundTripAtEveryLength) {
  std::vector<uint64_t> values = {0, 1, 127, 128, 255, 300, 16383, 16384};
  for (int shift = 0; shift < 64; ++shift) {
    const uint64_t p = uint64_t{1} << shift;
    values.push_back(p - 1);
    values.push_back(p);
    values.push_back(p + 1);
  }
  values.push_back(std::numeric_limits<uint64_t>::max());
  std::string s;
  for (uint64_t v : values) {
    const size_t before = s.size();
    PutVarint64(&s, v);
    EXPECT_EQ(s.size() - before, VarintLength(v)) << v;
    EXPECT_LE(VarintLength(v), kMaxVarint64Bytes);
  }
  std::string_view in(s);
  for (uint64_t v : values) {
    uint64_t got = 0;
    ASSERT_TRUE(GetVarint64(&in, &got)) << v;
    EXPECT_EQ(got, v);
  }
  EXPECT_TRUE(in.empty());
}

TEST(CodingTest, VarintBytesAreLeb128) {
  std::string s;
  PutVarint64(&s, 300);
  EXPECT_EQ(s, "\xac\x02");
  s.clear();
  PutVarint64(&s, std::numeric_limits<uint64_t>::max());
  EXPECT_EQ(s, std::string(9, '\xff') + "\x01");
  char buf[kMaxVarint64Bytes];
  EXPECT_EQ(EncodeVarint64(buf, 127) - buf, 1);
  EXPECT_EQ(buf[0], '\x7f');
}

TEST(CodingTest, TruncatedVarintIsReportedAndConsumesNothing) {
  std::string s;
  PutVarint64(&s, uint64_t{1} << 40);
  for (size_t n = 0; n < s.size(); ++n) {
    std::string_view in(s.data(), n);
    uint64_t v = 0;
    size_t used = 0;
    EXPECT_EQ(DecodeVarint64(in, &v, &used), VarintError::kTruncated) << n;
    EXPECT_FALSE(GetVarint64(&in, &v));
    EXPECT_EQ(in.size(), n);
  }
}

TEST(CodingTest, VarintBeyond64BitsIsMalformed) {
  uint64_t v = 0;
  size_t used = 0;
  // A tenth byte above 1 does not fit.
  std::string over = std::string(9, '\xff') + "\x02";
  EXPECT_EQ(DecodeVarint64(over, &v, &used), VarintError::kOverflow);
  // Eleven bytes: a continuation bit on the tenth.
  std::string eleven(10, '\x80');
  eleven.push_back('\x01');
  EXPECT_EQ(DecodeVarint64(eleven, &v, &used), VarintError::kOverflow);
  std::string_view in(eleven);
  EXPECT_FALSE(GetVarint64(&in, &v));
  EXPECT_EQ(in.size(), eleven.size());
  EXPECT_EQ(VarintErrorText(VarintError::kOverflow), "varint overflows 64 bits");
}

TEST(CodingTest, RedundantZeroGroupsAreRefusedOnlyWhenTheShortestFormIsRequired) {
  const std::string padded("\x81\x00", 2);  // 1, with a redundant zero group
  uint64_t v = 0;
  size_t used = 0;
  EXPECT_EQ(DecodeVarint64(padded, &v, &used), VarintError::kNone);
  EXPECT_EQ(v, 1u);
  EXPECT_EQ(used, 2u);
  v = 7;
  EXPECT_EQ(DecodeVarint64(padded, &v, &used, /*shortest=*/true), VarintError::kNotShortest);
  EXPECT_EQ(used, 2u);
  EXPECT_EQ(v, 7u);  // not written on failure
  // A single zero byte is the shortest form of 0.
  EXPECT_EQ(DecodeVarint64(std::string_view("\x00", 1), &v, &used, true), VarintError::kNone);
  EXPECT_EQ(v, 0u);
}

TEST(CodingTest, Varint32RefusesValuesAbove32Bits) {
  std::string s;
  PutVarint32(&s, std::numeric_limits<uint32_t>::max());
  PutVarint64(&s, uint64_t{1} << 32);
  std::string_view in(s);
  uint32_t v = 0;
  ASSERT_TRUE(GetVarint32(&in, &v));
  EXPECT_EQ(v, std::numeric_limits<uint32_t>::max());
  const size_t left = in.size();
  EXPECT_FALSE(GetVarint32(&in, &v));
  EXPECT_EQ(in.size(), left);
}

TEST(CodingTest, ZigZag) {
  const int64_t values[] = {
      0, -1, 1, -2, 2, std::numeric_limits<int64_t>::min(), std::numeric_limits<int64_t>::max()};
  for (int64_t v : values) EXPECT_EQ(ZigZagDecode(ZigZagEncode(v)), v);
  EXPECT_EQ(ZigZagEncode(0), 0u);
  EXPECT_EQ(ZigZagEncode(-1), 1u);
  EXPECT_EQ(ZigZagEncode(1), 2u);
  EXPECT_EQ(ZigZagEncode(std::numeric_limits<int64_t>::min()),
            std::numeric_limits<uint64_t>::max());
}

TEST(CodingTest, LengthPrefixedSlices) {
  std::string s;
  PutLengthPrefixed(&s, "abc");
  PutLengthPrefixed(&s, "");
  PutLengthPrefixed(&s, std::string(200, 'x'));
  std::string_view in(s);
  std::string_view out;
  ASSERT_TRUE(GetLengthPrefixed(&in, &out));
  EXPECT_EQ(out, "abc");
  ASSERT_TRUE(GetLengthPrefixed(&in, &out));
  EXPECT_EQ(out, "");
  ASSERT_TRUE(GetLengthPrefixed(&in, &out));
  EXPECT_EQ(out, std::string(200, 'x'));
  EXPECT_TRUE(in.empty());
  // A length beyond the end, and a malformed length: false, nothing consumed.
  std::string_view cut(s.data(), 3);  // "\x03ab"
  EXPECT_FALSE(GetLengthPrefixed(&cut, &out));
  EXPECT_EQ(cut.size(), 3u);
  std::string_view bad("\x80", 1);
  EXPECT_FALSE(GetLengthPrefixed(&bad, &out));
  EXPECT_EQ(bad.size(), 1u);
}

TEST(CodingTest, MaskedCrcRoundTripsAndDiffers) {
  const uint32_t crc = Crc32c(std::string_view("123456789"));
  EXPECT_EQ(crc, 0xe3069283u);
  EXPECT_NE(MaskCrc(crc), crc);
  EXPECT_EQ(UnmaskCrc(MaskCrc(crc)), crc);
  EXPECT_NE(MaskCrc(0), 0u);
}

}  // namespace
}  // namespace converge::internal
