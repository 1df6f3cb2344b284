#include "groups/codec.h"

#include <gtest/gtest.h>

#include <random>

namespace converge::internal::groups {
namespace {

TEST(CodecTest, Crc32cKnownValue) {
  // The standard check value of CRC-32C.
  EXPECT_EQ(Crc32c("123456789"), 0xe3069283u);
}

TEST(CodecTest, FramesRoundTripAndStopAtTornTail) {
  std::string data;
  AppendFrame(&data, "first");
  AppendFrame(&data, "");
  AppendFrame(&data, "third record");
  size_t valid = 0;
  auto frames = ReadFrames(data, &valid);
  ASSERT_EQ(frames.size(), 3u);
  EXPECT_EQ(frames[0], "first");
  EXPECT_EQ(frames[1], "");
  EXPECT_EQ(frames[2], "third record");
  EXPECT_EQ(valid, data.size());
  // Cut inside the last frame: the first two survive.
  frames = ReadFrames(std::string_view(data).substr(0, data.size() - 3), &valid);
  EXPECT_EQ(frames.size(), 2u);
  // A flipped bit in the second frame stops the reader there.
  std::string bad = data;
  bad[8 + 5 + 8 - 1] ^= 0x10;  // last CRC byte of frame 2
  frames = ReadFrames(bad, &valid);
  EXPECT_EQ(frames.size(), 1u);
  EXPECT_EQ(valid, 8u + 5u);
}

TEST(CodecTest, GroupRecordRoundTrip) {
  GroupRecord r;
  r.group_id = 42;
  r.topic = "orders";
  r.group = "billing";
  r.options.lease_ms = 1234;
  r.options.max_deliveries = 9;
  r.options.start = StartPosition::kTime;
  r.options.start_time_micros = -5;
  r.options.dead_letter_topic = "custom-dlq";
  r.dead_letter_topic = "custom-dlq";
  r.committed = {0, 7, 1ull << 40};
  std::string data;
  EncodeGroup(r, &data);
  size_t valid = 0;
  auto frames = ReadFrames(data, &valid);
  ASSERT_EQ(frames.size(), 1u);
  RecordType type;
  ASSERT_TRUE(DecodeType(frames[0], &type));
  EXPECT_EQ(type, RecordType::kGroup);
  GroupRecord d;
  ASSERT_TRUE(DecodeGroup(frames[0], &d));
  EXPECT_EQ(d.group_id, 42u);
  EXPECT_EQ(d.topic, "orders");
  EXPECT_EQ(d.group, "billing");
  EXPECT_EQ(d.options.lease_ms, 1234);
  EXPECT_EQ(d.options.max_deliveries, 9u);
  EXPECT_EQ(d.options.start, StartPosition::kTime);
  EXPECT_EQ(d.options.start_time_micros, -5);
  EXPECT_EQ(d.options.dead_letter_topic, "custom-dlq");
  EXPECT_EQ(d.committed, r.committed);
}

TEST(CodecTest, PartitionRecordRoundTrip) {
  PartitionRecord r{3, 2, 100, {{101, 105}, {200, 201}}};
  std::string data;
  EncodePartition(r, &data);
  size_t valid = 0;
  auto frames = ReadFrames(data, &valid);
  PartitionRecord d;
  ASSERT_TRUE(DecodePartition(frames.at(0), &d));
  EXPECT_EQ(d.group_id, 3u);
  EXPECT_EQ(d.partition, 2u);
  EXPECT_EQ(d.committed, 100u);
  EXPECT_EQ(d.done, r.done);
}

TEST(CodecTest, DeadLetterRoundTripAndRejectsGarbage) {
  DeadLetterFields f;
  f.topic = "orders";
  f.partition = 3;
  f.offset = 99;
  f.delivery_count = 5;
  f.reason = "max deliveries (5) exceeded";
  f.last_error = "timeout";
  f.dead_lettered_at_micros = 1'700'000'000'000'000;
  f.permanent = false;
  f.id = "evt-1";
  f.key = "customer-7";
  const std::string binary("\0binary\xff", 8);
  f.value = binary;
  f.timestamp_micros = 123;
  std::string data;
  EncodeDeadLetter(f, &data);
  DeadLetterFields d;
  ASSERT_TRUE(DecodeDeadLetter(data, &d));
  EXPECT_EQ(d.topic, "orders");
  EXPECT_EQ(d.partition, 3u);
  EXPECT_EQ(d.offset, 99u);
  EXPECT_EQ(d.delivery_count, 5u);
  EXPECT_EQ(d.reason, f.reason);
  EXPECT_EQ(d.last_error, "timeout");
  EXPECT_EQ(d.dead_lettered_at_micros, f.dead_lettered_at_micros);
  EXPECT_EQ(d.id, "evt-1");
  EXPECT_EQ(d.key, "customer-7");
  EXPECT_EQ(d.value, f.value);
  EXPECT_EQ(d.timestamp_micros, 123);
  // Every truncation and random garbage fail cleanly (no crash, no false success).
  for (size_t n = 0; n < data.size(); ++n) {
    EXPECT_FALSE(DecodeDeadLetter(std::string_view(data).substr(0, n), &d)) << n;
  }
  std::mt19937_64 rng(7);
  for (int i = 0; i < 1000; ++i) {
    std::string junk(rng() % 64, '\0');
    for (char& c : junk) c = static_cast<char>(rng());
    DecodeDeadLetter(junk, &d);
    GroupRecord g;
    DecodeGroup(junk, &g);
    PartitionRecord p;
    DecodePartition(junk, &p);
  }
}

TEST(CodecTest, AddRangeMerges) {
  Ranges r;
  AddRange(&r, 5, 6);
  AddRange(&r, 7, 8);
  EXPECT_EQ(r, (Ranges{{5, 6}, {7, 8}}));
  AddRange(&r, 6, 7);
  EXPECT_EQ(r, (Ranges{{5, 8}}));
  AddRange(&r, 1, 2);
  AddRange(&r, 10, 12);
  AddRange(&r, 0, 11);
  EXPECT_EQ(r, (Ranges{{0, 12}}));
  EXPECT_TRUE(InRanges(r, 0));
  EXPECT_TRUE(InRanges(r, 11));
  EXPECT_FALSE(InRanges(r, 12));
}

}  // namespace
}  // namespace converge::internal::groups
