#include "wire/wire_format.h"

#include <gtest/gtest.h>

namespace converge::internal::wire {
namespace {

TEST(WireFormat, VarintsRoundTripAndRejectGarbage) {
  for (uint64_t v : {0ull, 1ull, 127ull, 128ull, 300ull, 1ull << 35, ~0ull}) {
    std::string s;
    AppendVarint(&s, v);
    size_t pos = 0;
    uint64_t back = 0;
    ASSERT_TRUE(ReadVarint(s, &pos, &back));
    EXPECT_EQ(back, v);
    EXPECT_EQ(pos, s.size());
    if (!s.empty()) {
      size_t p2 = 0;
      EXPECT_FALSE(ReadVarint(s.substr(0, s.size() - 1), &p2, &back) && s.size() > 1);
    }
  }
  std::string overlong(11, '\x80');
  size_t pos = 0;
  uint64_t v = 0;
  EXPECT_FALSE(ReadVarint(overlong, &pos, &v));
}

TEST(WireFormat, EventBatchSplitsAndChecksLimits) {
  std::string body;
  AppendEventRecord(&body, "abc");
  AppendEventRecord(&body, "");
  AppendEventRecord(&body, std::string(300, 'x'));
  std::vector<std::string_view> records;
  ASSERT_TRUE(SplitEventBatch(body, 10, 1000, &records).ok());
  ASSERT_EQ(records.size(), 3u);
  EXPECT_EQ(records[0], "abc");
  EXPECT_EQ(records[1], "");
  EXPECT_EQ(records[2].size(), 300u);
  EXPECT_EQ(SplitEventBatch(body, 2, 1000, &records).code(), StatusCode::kResourceExhausted);
  Status big = SplitEventBatch(body, 10, 100, &records);
  EXPECT_EQ(big.code(), StatusCode::kResourceExhausted);
  EXPECT_NE(big.message().find("event[2]"), std::string_view::npos);
  Status cut = SplitEventBatch(body.substr(0, body.size() - 1), 10, 1000, &records);
  EXPECT_EQ(cut.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(cut.message().find("record[2]"), std::string_view::npos);
}

TEST(WireFormat, PublishResultsAndDeliveriesRoundTrip) {
  std::string body;
  AppendPublishResult(&body, {3, 1ull << 40, true});
  AppendPublishResult(&body, {0, 7, false});
  std::vector<PublishResult> results;
  ASSERT_TRUE(ReadPublishResults(body, &results).ok());
  ASSERT_EQ(results.size(), 2u);
  EXPECT_EQ(results[0].partition, 3u);
  EXPECT_EQ(results[0].offset, 1ull << 40);
  EXPECT_TRUE(results[0].duplicate);
  EXPECT_FALSE(results[1].duplicate);
  EXPECT_EQ(ReadPublishResults(body.substr(1), &results).code(), StatusCode::kDataLoss);

  std::string d;
  AppendDelivery(&d, {1, 2, 0xfedcba9876543210ull, 4, -5}, "record-bytes");
  AppendDelivery(&d, {9, 10, 11, 1, 12}, "");
  size_t pos = 0;
  DeliveryHeader h;
  std::string_view record;
  ASSERT_TRUE(ReadDelivery(d, &pos, &h, &record).ok());
  EXPECT_EQ(h.partition, 1u);
  EXPECT_EQ(h.offset, 2u);
  EXPECT_EQ(h.lease_id, 0xfedcba9876543210ull);
  EXPECT_EQ(h.attempt, 4u);
  EXPECT_EQ(h.lease_expires_at_ms, -5);
  EXPECT_EQ(record, "record-bytes");
  ASSERT_TRUE(ReadDelivery(d, &pos, &h, &record).ok());
  EXPECT_EQ(h.partition, 9u);
  EXPECT_EQ(record, "");
  EXPECT_EQ(pos, d.size());
  const size_t first_size = 4 + 8 + 8 + 4 + 8 + 1 + 12;
  for (size_t cut = 0; cut < first_size; ++cut) {
    size_t p = 0;
    EXPECT_EQ(ReadDelivery(std::string_view(d.data(), cut), &p, &h, &record).code(),
              StatusCode::kDataLoss)
        << cut;
  }
}

TEST(WireFormat, AcceptHeaders) {
  EXPECT_TRUE(Accepts("application/vnd.converge.delivery-batch", kDeliveryBatchMediaType));
  EXPECT_TRUE(Accepts("application/json, Application/Vnd.Converge.Delivery-Batch;q=0.9",
                      kDeliveryBatchMediaType));
  EXPECT_FALSE(Accepts("application/json", kDeliveryBatchMediaType));
  EXPECT_FALSE(Accepts("", kDeliveryBatchMediaType));
  EXPECT_FALSE(Accepts("*/*", kDeliveryBatchMediaType));
}

}  // namespace
}  // namespace converge::internal::wire
