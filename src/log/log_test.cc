// Unit tests of the event log's storage engine.
#include "converge/log.h"

#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "core/crc32c.h"
#include "env/metered_env.h"
#include "log/dedup_table.h"
#include "log/hash.h"
#include "log/record_format.h"
#include "log/test_env.h"

namespace converge {
namespace {

using internal::Crc32c;
using internal::Crc32cExtend;
using internal::Crc32cExtendPortable;

// ---------------------------------------------------------------------------------------
// Building blocks

TEST(Crc32cTest, KnownVectors) {
  EXPECT_EQ(Crc32c("123456789", 9), 0xE3069283u);
  EXPECT_EQ(Crc32c("", 0), 0u);
  std::string zeros(32, '\0');
  EXPECT_EQ(Crc32c(zeros.data(), zeros.size()), 0x8A9136AAu);  // RFC 3720 B.4
  std::string ones(32, '\xff');
  EXPECT_EQ(Crc32c(ones.data(), ones.size()), 0x62A8AB43u);
}

TEST(Crc32cTest, HardwareAndPortableAgreeAtEveryAlignmentAndLength) {
  std::string data(1000, '\0');
  uint64_t x = 88172645463325252ull;
  for (char& c : data) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    c = static_cast<char>(x);
  }
  for (size_t start = 0; start < 16; ++start) {
    for (size_t len = 0; len + start <= data.size(); len += 7) {
      ASSERT_EQ(Crc32cExtend(0, data.data() + start, len),
                Crc32cExtendPortable(0, data.data() + start, len))
          << start << " " << len;
    }
  }
  // Extending piecewise equals one pass.
  uint32_t piecewise = Crc32cExtend(Crc32cExtend(0, data.data(), 333), data.data() + 333, 667);
  EXPECT_EQ(piecewise, Crc32c(data.data(), data.size()));
}

TEST(HashTest, Fnv1aIsTheStandardFunction) {
  EXPECT_EQ(internal::Fnv1a64(""), 0xcbf29ce484222325ull);
  EXPECT_EQ(internal::Fnv1a64("a"), 0xaf63dc4c8601ec8cull);
  EXPECT_EQ(internal::Fnv1a64("foobar"), 0x85944171f73967e8ull);
}

TEST(HashTest, PartitionForKeyIsStable) {
  // These values are part of the on-disk contract: a key must map to the same partition in
  // every version.
  EXPECT_EQ(Log::PartitionForKey("a", 16), 0xaf63dc4c8601ec8cull % 16);
  EXPECT_EQ(Log::PartitionForKey("foobar", 7), 0x85944171f73967e8ull % 7);
  EXPECT_EQ(Log::PartitionForKey("anything", 1), 0u);
  std::map<uint32_t, int> counts;
  for (int i = 0; i < 8000; ++i) ++counts[Log::PartitionForKey("user-" + std::to_string(i), 8)];
  ASSERT_EQ(counts.size(), 8u);
  for (auto& [p, n] : counts) EXPECT_GT(n, 800) << "partition " << p;
}

TEST(HashTest, IdHashDistinguishesSimilarIds) {
  std::set<std::pair<uint64_t, uint64_t>> seen;
  for (int i = 0; i < 100000; ++i) {
    internal::Hash128 h = internal::IdHash128("evt-" + std::to_string(i));
    EXPECT_TRUE(seen.insert({h.lo, h.hi}).second);
  }
  EXPECT_FALSE(internal::IdHash128("a") == internal::IdHash128(std::string("a\0", 2)));
}

TEST(RecordFormatTest, RoundTripAndDetectsEveryFlippedBit) {
  std::string id = "evt-1", key = "k", value = "hello world";
  std::vector<uint8_t> buf(internal::EncodedRecordBytes(id.size(), key.size(), value.size()));
  internal::EncodeRecord(buf.data(), 42, 1234, 5678, id, key, value);
  internal::RecordHeader h;
  ASSERT_TRUE(internal::DecodeHeader(buf.data(), &h));
  EXPECT_EQ(h.offset, 42u);
  EXPECT_EQ(h.timestamp_micros, 1234);
  EXPECT_EQ(h.append_micros, 5678);
  EXPECT_EQ(h.record_bytes(), buf.size());
  EXPECT_TRUE(internal::BodyValid(h, buf.data() + internal::kRecordHeaderBytes));
  for (size_t byte = 0; byte < buf.size(); ++byte) {
    for (int bit = 0; bit < 8; ++bit) {
      std::vector<uint8_t> bad = buf;
      bad[byte] ^= static_cast<uint8_t>(1 << bit);
      internal::RecordHeader hb;
      bool ok = internal::DecodeHeader(bad.data(), &hb) && hb.record_bytes() == bad.size() &&
                internal::BodyValid(hb, bad.data() + internal::kRecordHeaderBytes);
      EXPECT_FALSE(ok) << "byte " << byte << " bit " << bit;
    }
  }
}

TEST(DedupTableTest, WindowAndBound) {
  internal::DedupTable t(/*max_ids=*/100, /*window_micros=*/1000);
  auto h = [](int i) { return internal::IdHash128("id" + std::to_string(i)); };
  EXPECT_EQ(t.FindOrInsert(h(1), 0, 10, 5000), nullptr);
  ASSERT_NE(t.Find(h(1), 5500), nullptr);
  EXPECT_EQ(t.Find(h(1), 5500)->offset, 10u);
  const internal::DedupTable::Entry* again = t.FindOrInsert(h(1), 1, 99, 5600);
  ASSERT_NE(again, nullptr);
  EXPECT_EQ(again->offset, 10u);
  EXPECT_EQ(t.Find(h(1), 6001), nullptr);  // outside the window
  EXPECT_EQ(t.Find(h(2), 5500), nullptr);
  EXPECT_EQ(t.FindOrInsert(h(1), 1, 99, 6001), nullptr);  // expired: remembered anew
  EXPECT_EQ(t.Find(h(1), 6001)->offset, 99u);
  for (int i = 0; i < 10000; ++i) {
    EXPECT_EQ(t.FindOrInsert(h(i + 5), 0, static_cast<uint64_t>(i), 6000 + i / 100), nullptr);
    EXPECT_LE(t.size(), 100u);
  }
  // The newest half of the bound is always remembered.
  for (int i = 10000 - 50; i < 10000; ++i) {
    ASSERT_NE(t.Find(h(i + 5), 6100), nullptr) << i;
    EXPECT_EQ(t.Find(h(i + 5), 6100)->offset, static_cast<uint64_t>(i));
  }
}

// ---------------------------------------------------------------------------------------
// The Log

class LogTest : public ::testing::Test {
 protected:
  void SetUp() override { Reopen(); }

  void Reopen() {
    log_.reset();
    LogOptions options;
    options.dir = env_.Dir();
    auto opened = Log::Open(env_.env(), options);
    ASSERT_TRUE(opened.ok()) << opened.status().ToString();
    log_ = std::move(opened).value();
  }

  void Create(const std::string& topic, TopicOptions options = {}) {
    Status s = log_->CreateTopic(topic, options);
    ASSERT_TRUE(s.ok()) << s.ToString();
  }

  std::vector<AppendResult> AppendValues(const std::string& topic,
                                         const std::vector<std::string>& values,
                                         const std::string& key = "",
                                         const std::vector<std::string>& ids = {}) {
    std::vector<RecordView> records;
    for (size_t i = 0; i < values.size(); ++i) {
      RecordView r;
      r.value = values[i];
      r.key = key;
      if (i < ids.size()) r.id = ids[i];
      records.push_back(r);
    }
    auto res = log_->Append(topic, records);
    EXPECT_TRUE(res.ok()) << res.status().ToString();
    return res.ok() ? *res : std::vector<AppendResult>{};
  }

  std::vector<std::string> ReadAll(const std::string& topic, uint32_t partition,
                                   uint64_t from = 0) {
    std::vector<std::string> out;
    uint64_t next = from;
    bool first = true;
    while (true) {
      auto batch = log_->Read(topic, partition, next, 7, 1 << 20);
      EXPECT_TRUE(batch.ok()) << batch.status().ToString();
      if (!batch.ok() || batch->records.empty()) break;
      for (const StoredRecord& r : batch->records) {
        if (first) next = std::max(next, r.offset);  // retention may have moved the start
        first = false;
        EXPECT_EQ(r.offset, next);
        next = r.offset + 1;
        out.emplace_back(r.value);
      }
      EXPECT_EQ(batch->next_offset, next);
    }
    return out;
  }

  TopicInfo Describe(const std::string& topic) {
    auto info = log_->DescribeTopic(topic);
    EXPECT_TRUE(info.ok()) << info.status().ToString();
    return info.ok() ? *info : TopicInfo{};
  }

  test::TestEnv env_;
  std::unique_ptr<Log> log_;
};

TEST_F(LogTest, AppendReadRoundTrip) {
  Create("orders");
  std::vector<RecordView> records(3);
  records[0] = {"id-0", "", "first", 111};
  records[1] = {"", "", std::string_view("bin\0ary", 7), 0};
  records[2] = {"id-2", "", "", 333};
  auto res = log_->Append("orders", records);
  ASSERT_TRUE(res.ok()) << res.status().ToString();
  ASSERT_EQ(res->size(), 3u);
  for (uint64_t i = 0; i < 3; ++i) {
    EXPECT_EQ((*res)[i].partition, 0u);
    EXPECT_EQ((*res)[i].offset, i);
    EXPECT_FALSE((*res)[i].duplicate);
  }
  auto batch = log_->Read("orders", 0, 0, 100, 1 << 20);
  ASSERT_TRUE(batch.ok()) << batch.status().ToString();
  ASSERT_EQ(batch->records.size(), 3u);
  EXPECT_EQ(batch->next_offset, 3u);
  EXPECT_EQ(batch->records[0].id, "id-0");
  EXPECT_EQ(batch->records[0].value, "first");
  EXPECT_EQ(batch->records[0].timestamp_micros, 111);
  EXPECT_EQ(batch->records[1].value, std::string_view("bin\0ary", 7));
  EXPECT_EQ(batch->records[1].timestamp_micros, env_.env().clock().NowWallMicros());
  EXPECT_EQ(batch->records[2].id, "id-2");
  EXPECT_EQ(batch->records[2].value, "");

  // The data survives a reopen.
  Reopen();
  EXPECT_EQ(ReadAll("orders", 0),
            (std::vector<std::string>{"first", std::string("bin\0ary", 7), ""}));
}

TEST_F(LogTest, KeysPickStablePartitionsWithDenseOffsets) {
  TopicOptions options;
  options.partitions = 4;
  Create("t", options);
  std::map<uint32_t, std::vector<std::string>> expected;
  for (int round = 0; round < 20; ++round) {
    for (int k = 0; k < 10; ++k) {
      const std::string key = "key-" + std::to_string(k);
      const std::string value = key + "/" + std::to_string(round);
      auto res = AppendValues("t", {value}, key);
      ASSERT_EQ(res.size(), 1u);
      const uint32_t p = Log::PartitionForKey(key, 4);
      EXPECT_EQ(res[0].partition, p);
      EXPECT_EQ(res[0].offset, expected[p].size());
      expected[p].push_back(value);
    }
  }
  for (uint32_t p = 0; p < 4; ++p) EXPECT_EQ(ReadAll("t", p), expected[p]) << p;
  TopicInfo info = Describe("t");
  for (uint32_t p = 0; p < 4; ++p) EXPECT_EQ(info.partitions[p].end_offset, expected[p].size());
}

TEST_F(LogTest, KeylessBatchesRotateOverPartitions) {
  TopicOptions options;
  options.partitions = 3;
  Create("t", options);
  std::set<uint32_t> used;
  for (int i = 0; i < 6; ++i) {
    auto res = AppendValues("t", {"a", "b"});
    ASSERT_EQ(res.size(), 2u);
    EXPECT_EQ(res[0].partition, res[1].partition);
    used.insert(res[0].partition);
  }
  EXPECT_EQ(used.size(), 3u);
}

TEST_F(LogTest, AppendToPartition) {
  TopicOptions options;
  options.partitions = 2;
  Create("t", options);
  RecordView r{"", "some-key", "v", 0};
  auto res = log_->AppendToPartition("t", 1, std::span<const RecordView>(&r, 1));
  ASSERT_TRUE(res.ok());
  EXPECT_EQ((*res)[0].partition, 1u);
  auto bad = log_->AppendToPartition("t", 2, std::span<const RecordView>(&r, 1));
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
}

TEST_F(LogTest, DedupWithinBatchAcrossBatchesAndReopen) {
  TopicOptions options;
  options.partitions = 2;
  options.dedup_window_ms = 60'000;
  Create("t", options);
  // Within one batch (even with different keys the first occurrence wins).
  std::vector<RecordView> batch = {
      {"e1", "k1", "v1", 0}, {"e2", "k2", "v2", 0}, {"e1", "k9", "v1-again", 0}};
  auto res = log_->Append("t", batch);
  ASSERT_TRUE(res.ok());
  EXPECT_FALSE((*res)[0].duplicate);
  EXPECT_FALSE((*res)[1].duplicate);
  EXPECT_TRUE((*res)[2].duplicate);
  EXPECT_EQ((*res)[2].partition, (*res)[0].partition);
  EXPECT_EQ((*res)[2].offset, (*res)[0].offset);

  // Across batches.
  std::vector<RecordView> again = {{"e2", "k2", "v2", 0}, {"e3", "k3", "v3", 0}};
  res = log_->Append("t", again);
  ASSERT_TRUE(res.ok());
  EXPECT_TRUE((*res)[0].duplicate);
  EXPECT_FALSE((*res)[1].duplicate);
  const AppendResult e3 = (*res)[1];

  // Across a restart.
  Reopen();
  std::vector<RecordView> third = {{"e3", "", "v3", 0}, {"e1", "", "v1", 0}, {"e4", "", "v4", 0}};
  res = log_->Append("t", third);
  ASSERT_TRUE(res.ok());
  EXPECT_TRUE((*res)[0].duplicate);
  EXPECT_EQ((*res)[0].partition, e3.partition);
  EXPECT_EQ((*res)[0].offset, e3.offset);
  EXPECT_TRUE((*res)[1].duplicate);
  EXPECT_FALSE((*res)[2].duplicate);

  uint64_t total = 0;
  for (const PartitionInfo& p : Describe("t").partitions) total += p.end_offset;
  EXPECT_EQ(total, 4u);  // e1, e2, e3, e4
}

TEST_F(LogTest, IdsOutsideTheWindowAreAppendedAgain) {
  TopicOptions options;
  options.dedup_window_ms = 1000;
  Create("t", options);
  AppendValues("t", {"v"}, "", {"e1"});
  env_.AdvanceMs(500);
  auto res = AppendValues("t", {"v"}, "", {"e1"});
  ASSERT_EQ(res.size(), 1u);
  EXPECT_TRUE(res[0].duplicate);
  env_.AdvanceMs(1501);
  res = AppendValues("t", {"v"}, "", {"e1"});
  ASSERT_EQ(res.size(), 1u);
  EXPECT_FALSE(res[0].duplicate);
  EXPECT_EQ(res[0].offset, 1u);
  // And the window also applies to what Open rebuilds.
  env_.AdvanceMs(1001);
  Reopen();
  res = AppendValues("t", {"v"}, "", {"e1"});
  ASSERT_EQ(res.size(), 1u);
  EXPECT_FALSE(res[0].duplicate);
}

TEST_F(LogTest, SegmentsRollAndReadAcrossThem) {
  TopicOptions options;
  options.segment_max_bytes = 4096;
  Create("t", options);
  std::vector<std::string> expected;
  for (int b = 0; b < 50; ++b) {
    std::vector<std::string> values;
    for (int i = 0; i < 7; ++i) values.push_back(std::string(40 + (b * 7 + i) % 50, 'a' + i));
    AppendValues("t", values);
    expected.insert(expected.end(), values.begin(), values.end());
  }
  auto files = env_.env().fs().ListDir(env_.Dir() + "/topics/t/0000");
  ASSERT_TRUE(files.ok());
  EXPECT_GT(files->size(), 5u);
  EXPECT_EQ(ReadAll("t", 0), expected);
  for (uint64_t from : {0ull, 1ull, 77ull, 200ull, 349ull}) {
    auto batch = log_->Read("t", 0, from, 1, 1);
    ASSERT_TRUE(batch.ok());
    ASSERT_EQ(batch->records.size(), 1u);
    EXPECT_EQ(batch->records[0].offset, from);
    EXPECT_EQ(batch->records[0].value, expected[from]);
  }
  Reopen();
  EXPECT_EQ(ReadAll("t", 0), expected);
  AppendValues("t", {"after"});
  expected.push_back("after");
  EXPECT_EQ(ReadAll("t", 0), expected);
}

TEST_F(LogTest, ReadLimitsAndBounds) {
  Create("t");
  std::vector<std::string> values;
  for (int i = 0; i < 100; ++i) values.push_back("value-" + std::to_string(i));
  AppendValues("t", values);
  auto b = log_->Read("t", 0, 10, 5, 1 << 20);
  ASSERT_TRUE(b.ok());
  ASSERT_EQ(b->records.size(), 5u);
  EXPECT_EQ(b->records[0].offset, 10u);
  EXPECT_EQ(b->next_offset, 15u);
  b = log_->Read("t", 0, 10, 1000, 1);  // max_bytes tiny: still one record
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->records.size(), 1u);
  b = log_->Read("t", 0, 100, 10, 1 << 20);
  ASSERT_TRUE(b.ok());
  EXPECT_TRUE(b->records.empty());
  EXPECT_EQ(b->next_offset, 100u);
  b = log_->Read("t", 0, 5000, 10, 1 << 20);
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->next_offset, 100u);
  EXPECT_EQ(log_->Read("t", 1, 0, 10, 100).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(log_->Read("nope", 0, 0, 10, 100).status().code(), StatusCode::kNotFound);
}

TEST_F(LogTest, RetentionBySize) {
  TopicOptions options;
  options.segment_max_bytes = 2048;
  options.retention_max_bytes = 8192;
  Create("t", options);
  for (int i = 0; i < 400; ++i) AppendValues("t", {std::string(100, 'x')});
  TopicInfo info = Describe("t");
  EXPECT_GT(info.partitions[0].start_offset, 0u);
  EXPECT_EQ(info.partitions[0].end_offset, 400u);
  EXPECT_LE(info.partitions[0].size_bytes, 8192u + 2048u);
  // A read below the start begins at the start.
  auto b = log_->Read("t", 0, 0, 1, 1 << 20);
  ASSERT_TRUE(b.ok());
  ASSERT_EQ(b->records.size(), 1u);
  EXPECT_EQ(b->records[0].offset, info.partitions[0].start_offset);
  ASSERT_TRUE(log_->EnforceRetention().ok());
  const uint64_t start = Describe("t").partitions[0].start_offset;
  EXPECT_LE(Describe("t").partitions[0].size_bytes, 8192u);
  Reopen();
  EXPECT_EQ(Describe("t").partitions[0].start_offset, start);
}

TEST_F(LogTest, RetentionByAge) {
  TopicOptions options;
  options.segment_max_bytes = 2048;
  options.retention_max_age_ms = 60'000;
  options.dedup_window_ms = 10'000;
  Create("t", options);
  for (int i = 0; i < 100; ++i) AppendValues("t", {std::string(100, 'o')});
  EXPECT_EQ(Describe("t").partitions[0].start_offset, 0u);
  env_.AdvanceMs(30'000);
  for (int i = 0; i < 100; ++i) AppendValues("t", {std::string(100, 'n')});
  ASSERT_TRUE(log_->EnforceRetention().ok());
  EXPECT_EQ(Describe("t").partitions[0].start_offset, 0u);
  env_.AdvanceMs(40'000);  // the first batch is now 70 s old, the second 40 s
  ASSERT_TRUE(log_->EnforceRetention().ok());
  TopicInfo info = Describe("t");
  EXPECT_GT(info.partitions[0].start_offset, 80u);
  EXPECT_LE(info.partitions[0].start_offset, 100u);
  auto values = ReadAll("t", 0);
  ASSERT_FALSE(values.empty());
  EXPECT_EQ(values.back(), std::string(100, 'n'));
}

TEST_F(LogTest, RetentionByAgeEmptiesAQuietPartitionAndSurvivesReopen) {
  TopicOptions options;  // 64 MiB segments: these records never fill one
  options.retention_max_age_ms = 60'000;
  options.dedup_window_ms = 10'000;
  Create("t", options);
  AppendValues("t", {"a", "b", "c"});
  env_.AdvanceMs(59'000);
  ASSERT_TRUE(log_->EnforceRetention().ok());
  EXPECT_EQ(Describe("t").partitions[0].start_offset, 0u);
  EXPECT_EQ(ReadAll("t", 0).size(), 3u);
  env_.AdvanceMs(2'000);  // 61 s: every record of the active segment is past the limit
  ASSERT_TRUE(log_->EnforceRetention().ok());
  TopicInfo info = Describe("t");
  EXPECT_EQ(info.partitions[0].start_offset, 3u);
  EXPECT_EQ(info.partitions[0].end_offset, 3u);
  EXPECT_TRUE(ReadAll("t", 0).empty());
  Reopen();
  info = Describe("t");
  EXPECT_EQ(info.partitions[0].start_offset, 3u);
  EXPECT_EQ(info.partitions[0].end_offset, 3u);
  std::vector<AppendResult> next = AppendValues("t", {"d"});
  ASSERT_EQ(next.size(), 1u);
  EXPECT_EQ(next[0].offset, 3u);
  EXPECT_EQ(ReadAll("t", 0), (std::vector<std::string>{"d"}));
}

TEST_F(LogTest, AgeRetentionRunsByItselfOnAQuietTopic) {
  TopicOptions options;
  options.retention_max_age_ms = 60'000;
  options.dedup_window_ms = 10'000;
  Create("t", options);
  AppendValues("t", {"a", "b"});
  // No append, no EnforceRetention call: the log's periodic run (every 60 s by default).
  env_.AdvanceMs(130'000);
  EXPECT_EQ(Describe("t").partitions[0].start_offset, 2u);
}

TEST_F(LogTest, AgeRetentionKeepsRecordsInsideTheDedupWindowAcrossRestarts) {
  TopicOptions options;
  options.retention_max_age_ms = 1'000;
  options.dedup_window_ms = 60'000;
  Create("t", options);
  AppendValues("t", {"v"}, "", {"id-1"});
  env_.AdvanceMs(30'000);  // past the age limit, inside the dedup window
  ASSERT_TRUE(log_->EnforceRetention().ok());
  EXPECT_EQ(Describe("t").partitions[0].start_offset, 0u);
  Reopen();
  std::vector<AppendResult> again = AppendValues("t", {"v"}, "", {"id-1"});
  ASSERT_EQ(again.size(), 1u);
  EXPECT_TRUE(again[0].duplicate);  // the restart rebuilt the id from the retained record
  env_.AdvanceMs(31'000);  // now past the window too
  ASSERT_TRUE(log_->EnforceRetention().ok());
  EXPECT_EQ(Describe("t").partitions[0].start_offset, 1u);
}

TEST_F(LogTest, OffsetForTime) {
  TopicOptions options;
  options.segment_max_bytes = 1024;
  Create("t", options);
  // Timestamps 1000, 2000, ... with a few out of order.
  std::vector<int64_t> ts;
  for (int i = 0; i < 200; ++i) ts.push_back(1000 * (i + 1));
  std::swap(ts[50], ts[60]);
  for (int64_t t : ts) {
    RecordView r{"", "", "payload-payload", t};
    ASSERT_TRUE(log_->Append("t", std::span<const RecordView>(&r, 1)).ok());
  }
  auto brute = [&](int64_t t) -> uint64_t {
    for (size_t i = 0; i < ts.size(); ++i)
      if (ts[i] >= t) return i;
    return ts.size();
  };
  for (int64_t t :
       {int64_t{0}, int64_t{1000}, int64_t{1001}, int64_t{50'500}, int64_t{51'000}, int64_t{55'000},
        int64_t{61'000}, int64_t{199'999}, int64_t{200'000}, int64_t{200'001}}) {
    auto off = log_->OffsetForTime("t", 0, t);
    ASSERT_TRUE(off.ok()) << off.status().ToString();
    EXPECT_EQ(*off, brute(t)) << "t=" << t;
  }
  Reopen();
  for (int64_t t = 0; t < 202'000; t += 777) {
    auto off = log_->OffsetForTime("t", 0, t);
    ASSERT_TRUE(off.ok());
    EXPECT_EQ(*off, brute(t)) << "t=" << t;
  }
}

TEST_F(LogTest, ValidationRejectsTheWholeBatch) {
  TopicOptions options;
  options.max_record_bytes = 100;
  Create("t", options);
  std::string big(101, 'x');
  std::vector<RecordView> records = {{"", "", "ok", 0}, {"", "", big, 0}};
  auto res = log_->Append("t", records);
  EXPECT_EQ(res.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(res.status().message().find("record 1"), std::string_view::npos);
  EXPECT_EQ(Describe("t").partitions[0].end_offset, 0u);
  std::string long_key(70000, 'k');
  std::vector<RecordView> bad_key = {{"", long_key, "v", 0}};
  EXPECT_EQ(log_->Append("t", bad_key).status().code(), StatusCode::kInvalidArgument);
  std::vector<RecordView> bad_time = {{"", "", "v", -5}};
  EXPECT_EQ(log_->Append("t", bad_time).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(log_->Append("missing", records).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(Describe("t").partitions[0].end_offset, 0u);
  // An empty batch is fine and appends nothing.
  auto empty = log_->Append("t", std::span<const RecordView>());
  ASSERT_TRUE(empty.ok());
  EXPECT_TRUE(empty->empty());
}

TEST_F(LogTest, TopicAdministration) {
  TopicOptions options;
  options.partitions = 3;
  options.durability = Durability::kNone;
  options.retention_max_bytes = 12345;
  Create("b-topic", options);
  Create("a.topic");
  EXPECT_EQ(log_->CreateTopic("a.topic", {}).code(), StatusCode::kAlreadyExists);
  for (const char* bad : {"", ".hidden", "_internal", "has space", "slash/x", "ümlaut"}) {
    EXPECT_EQ(log_->CreateTopic(bad, {}).code(), StatusCode::kInvalidArgument) << bad;
  }
  EXPECT_EQ(log_->CreateTopic(std::string(201, 'x'), {}).code(), StatusCode::kInvalidArgument);
  TopicOptions internal_options;
  internal_options.internal = true;
  EXPECT_TRUE(log_->CreateTopic("_groups", internal_options).ok());
  EXPECT_EQ(log_->CreateTopic("plain", internal_options).code(), StatusCode::kInvalidArgument);
  TopicOptions bad_options;
  bad_options.partitions = 0;
  EXPECT_EQ(log_->CreateTopic("x", bad_options).code(), StatusCode::kInvalidArgument);
  bad_options.partitions = 1025;
  EXPECT_EQ(log_->CreateTopic("x", bad_options).code(), StatusCode::kInvalidArgument);

  EXPECT_EQ(log_->ListTopics(), (std::vector<std::string>{"_groups", "a.topic", "b-topic"}));
  TopicInfo info = Describe("b-topic");
  EXPECT_EQ(info.name, "b-topic");
  EXPECT_EQ(info.options.partitions, 3u);
  EXPECT_EQ(info.options.durability, Durability::kNone);
  EXPECT_EQ(info.partitions.size(), 3u);
  EXPECT_EQ(log_->DescribeTopic("zzz").status().code(), StatusCode::kNotFound);

  Reopen();
  EXPECT_EQ(log_->ListTopics(), (std::vector<std::string>{"_groups", "a.topic", "b-topic"}));
  info = Describe("b-topic");
  EXPECT_EQ(info.options.retention_max_bytes, 12345u);
  EXPECT_EQ(info.options.durability, Durability::kNone);
  EXPECT_TRUE(Describe("_groups").options.internal);

  AppendValues("a.topic", {"x", "y"});
  ASSERT_TRUE(log_->DeleteTopic("a.topic").ok());
  EXPECT_EQ(log_->DeleteTopic("a.topic").code(), StatusCode::kNotFound);
  EXPECT_EQ(log_->ListTopics(), (std::vector<std::string>{"_groups", "b-topic"}));
  EXPECT_FALSE(env_.env().fs().FileExists(env_.Dir() + "/topics/a.topic/topic.json"));
  // A new topic with the old name starts empty.
  Create("a.topic");
  EXPECT_EQ(Describe("a.topic").partitions[0].end_offset, 0u);
  Reopen();
  EXPECT_EQ(Describe("a.topic").partitions[0].end_offset, 0u);
}

TEST_F(LogTest, OnlyOneLogPerDirectory) {
  LogOptions options;
  options.dir = env_.Dir();
  auto second = Log::Open(env_.env(), options);
  EXPECT_EQ(second.status().code(), StatusCode::kFailedPrecondition);
}

TEST_F(LogTest, WatchAppendsFiresWithReadableEnds) {
  TopicOptions options;
  options.partitions = 2;
  Create("t", options);
  std::vector<std::pair<uint32_t, uint64_t>> calls;
  auto watch = log_->WatchAppends("t", [&](uint32_t p, uint64_t end) {
    calls.emplace_back(p, end);
    // The data is readable when the callback runs (a read from the callback is only done here
    // to check; real callbacks must not call into the log).
  });
  ASSERT_TRUE(watch.ok());
  std::vector<RecordView> records = {{"", "", "a", 0}, {"", "", "b", 0}};
  ASSERT_TRUE(log_->AppendToPartition("t", 1, records).ok());
  ASSERT_TRUE(log_->AppendToPartition("t", 0, records).ok());
  ASSERT_EQ(calls.size(), 2u);
  EXPECT_EQ(calls[0], std::make_pair(1u, uint64_t{2}));
  EXPECT_EQ(calls[1], std::make_pair(0u, uint64_t{2}));
  // Duplicates only: nothing new, no callback.
  std::vector<RecordView> ided = {{"x", "", "a", 0}};
  ASSERT_TRUE(log_->AppendToPartition("t", 0, ided).ok());
  ASSERT_EQ(calls.size(), 3u);
  ASSERT_TRUE(log_->AppendToPartition("t", 0, ided).ok());
  EXPECT_EQ(calls.size(), 3u);
  watch->reset();
  ASSERT_TRUE(log_->AppendToPartition("t", 0, records).ok());
  EXPECT_EQ(calls.size(), 3u);
  EXPECT_EQ(log_->WatchAppends("nope", [](uint32_t, uint64_t) {}).status().code(),
            StatusCode::kNotFound);
}

TEST_F(LogTest, IntervalDurabilitySyncsOnTimer) {
  TopicOptions options;
  options.durability = Durability::kInterval;
  options.sync_interval_ms = 20;
  Create("t", options);
  AppendValues("t", {"a"});
  AppendValues("t", {"b"});
  env_.AdvanceMs(25);  // runs the timer
  AppendValues("t", {"c"});
  ASSERT_TRUE(log_->Sync().ok());
  EXPECT_EQ(ReadAll("t", 0), (std::vector<std::string>{"a", "b", "c"}));
  auto desc = Describe("t");
  EXPECT_EQ(desc.options.sync_interval_ms, 20);
}

std::string ThreadValue(int thread, int i) {
  std::string out = "t";
  out += std::to_string(thread);
  out += '-';
  out += std::to_string(i);
  return out;
}

// Many threads on the production Env: group commit must keep per-key order and dense offsets.
// Group commit: appenders that arrive while a sync is running wait for the next one together,
// so there are far fewer file syncs than acknowledged appends.
TEST(LogRealEnvTest, ConcurrentFsyncAppendersShareSyncs) {
  test::TempDir dir;
  ASSERT_FALSE(dir.path().empty());
  std::atomic<uint64_t> file_syncs{0};
  internal::MeteredEnv env(Env::Default(), [&file_syncs](internal::SyncKind kind, double) {
    if (kind == internal::SyncKind::kFile) ++file_syncs;  // counts every file sync
  });
  LogOptions log_options;
  log_options.dir = dir.path() + "/log";
  auto opened = Log::Open(env, log_options);
  ASSERT_TRUE(opened.ok()) << opened.status().ToString();
  std::unique_ptr<Log> log = std::move(opened).value();
  ASSERT_TRUE(log->CreateTopic("t", TopicOptions{}).ok());  // durability fsync
  const uint64_t before = file_syncs.load();
  constexpr int kThreads = 8;
  constexpr int kAppends = 100;
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kAppends; ++i) {
        const std::string v = ThreadValue(t, i);
        RecordView r{"", "", v, 0};
        if (!log->Append("t", std::span<const RecordView>(&r, 1)).ok()) ++failures;
      }
    });
  }
  for (auto& th : threads) th.join();
  ASSERT_EQ(failures.load(), 0);
  const uint64_t syncs = file_syncs.load() - before;
  EXPECT_GT(syncs, 0u);
  // One sync per append would be 800; sharing makes it at most half that.
  EXPECT_LE(syncs, uint64_t{kThreads * kAppends / 2}) << syncs << " syncs";
  EXPECT_EQ(log->DescribeTopic("t")->partitions[0].end_offset, uint64_t{kThreads * kAppends});
}

TEST(LogRealEnvTest, ConcurrentAppendersShareCommitsAndKeepOrder) {
  test::TempDir dir;
  ASSERT_FALSE(dir.path().empty());
  LogOptions log_options;
  log_options.dir = dir.path() + "/log";
  auto opened = Log::Open(Env::Default(), log_options);
  ASSERT_TRUE(opened.ok()) << opened.status().ToString();
  std::unique_ptr<Log> log = std::move(opened).value();
  TopicOptions options;
  options.partitions = 2;
  options.segment_max_bytes = 64 << 10;
  ASSERT_TRUE(log->CreateTopic("t", options).ok());
  constexpr int kThreads = 4;
  constexpr int kBatches = 200;
  constexpr int kPerBatch = 25;
  std::vector<std::thread> threads;
  std::vector<std::vector<AppendResult>> results(kThreads);
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int b = 0; b < kBatches; ++b) {
        std::vector<std::string> values;
        std::vector<RecordView> records;
        const std::string key = ThreadValue(t, -1);
        for (int i = 0; i < kPerBatch; ++i) values.push_back(ThreadValue(t, b * kPerBatch + i));
        for (auto& v : values) records.push_back(RecordView{v, key, v, 0});
        auto res = log->Append("t", records);
        ASSERT_TRUE(res.ok()) << res.status().ToString();
        results[t].insert(results[t].end(), res->begin(), res->end());
      }
    });
  }
  for (auto& th : threads) th.join();
  // Every thread's records are in its key's partition, in the order it appended them.
  std::map<uint32_t, std::vector<std::string>> by_partition;
  for (uint32_t p = 0; p < 2; ++p) {
    uint64_t next = 0;
    while (true) {
      auto batch = log->Read("t", p, next, 1000, 1 << 20);
      ASSERT_TRUE(batch.ok()) << batch.status().ToString();
      if (batch->records.empty()) break;
      for (const StoredRecord& r : batch->records) {
        ASSERT_EQ(r.offset, next);
        by_partition[p].emplace_back(r.value);
        ++next;
      }
    }
  }
  uint64_t total = by_partition[0].size() + by_partition[1].size();
  EXPECT_EQ(total, uint64_t{kThreads * kBatches * kPerBatch});
  for (int t = 0; t < kThreads; ++t) {
    ASSERT_EQ(results[t].size(), size_t{kBatches * kPerBatch});
    uint64_t prev = 0;
    for (int i = 0; i < kBatches * kPerBatch; ++i) {
      const AppendResult& r = results[t][i];
      if (i > 0) {
        EXPECT_GT(r.offset, prev);
      }
      prev = r.offset;
      EXPECT_EQ(by_partition[r.partition][r.offset], ThreadValue(t, i));
    }
  }
}

// While the write buffer is full, an appender waits at most write_buffer_wait_ms and then gets
// ResourceExhausted; nothing of its batch is appended, and it succeeds once there is room.
TEST(LogRealEnvTest, FullWriteBufferMakesAppendersWaitThenFail) {
  test::TempDir dir;
  ASSERT_FALSE(dir.path().empty());
  LogOptions log_options;
  log_options.dir = dir.path() + "/log";
  log_options.write_buffer_max_bytes = 4096;
  log_options.write_buffer_wait_ms = 30;
  auto opened = Log::Open(Env::Default(), log_options);
  ASSERT_TRUE(opened.ok()) << opened.status().ToString();
  std::unique_ptr<Log> log = std::move(opened).value();
  ASSERT_TRUE(log->CreateTopic("t", {}).ok());

  // The first appender's watch callback holds it (and its buffer bytes) until released.
  std::mutex mu;
  std::condition_variable cv;
  bool entered = false;
  bool release = false;
  auto watch = log->WatchAppends("t", [&](uint32_t, uint64_t) {
    std::unique_lock<std::mutex> lock(mu);
    entered = true;
    cv.notify_all();
    cv.wait(lock, [&] { return release; });
  });
  ASSERT_TRUE(watch.ok());
  const std::string big(3000, 'a');
  std::thread first([&] {
    RecordView r{"", "", big, 0};
    EXPECT_TRUE(log->Append("t", std::span<const RecordView>(&r, 1)).ok());
  });
  {
    std::unique_lock<std::mutex> lock(mu);
    cv.wait(lock, [&] { return entered; });
  }
  RecordView second{"", "", std::string_view(big).substr(0, 2000), 0};
  auto res = log->Append("t", std::span<const RecordView>(&second, 1));
  EXPECT_EQ(res.status().code(), StatusCode::kResourceExhausted) << res.status().ToString();
  {
    std::lock_guard<std::mutex> lock(mu);
    release = true;
  }
  cv.notify_all();
  first.join();
  watch->reset();
  EXPECT_EQ(log->DescribeTopic("t")->partitions[0].end_offset, 1u);
  res = log->Append("t", std::span<const RecordView>(&second, 1));
  ASSERT_TRUE(res.ok()) << res.status().ToString();
  EXPECT_EQ((*res)[0].offset, 1u);
}

TEST_F(LogTest, BatchLargerThanTheWriteBufferIsRejected) {
  log_.reset();
  LogOptions options;
  options.dir = env_.Dir();
  options.write_buffer_max_bytes = 1000;
  auto opened = Log::Open(env_.env(), options);
  ASSERT_TRUE(opened.ok());
  log_ = std::move(opened).value();
  Create("t");
  std::string big(2000, 'b');
  RecordView r{"", "", big, 0};
  EXPECT_EQ(log_->Append("t", std::span<const RecordView>(&r, 1)).status().code(),
            StatusCode::kResourceExhausted);
  EXPECT_EQ(Describe("t").partitions[0].end_offset, 0u);
}

TEST_F(LogTest, DurabilityNames) {
  for (Durability d : {Durability::kFsync, Durability::kInterval, Durability::kNone}) {
    auto parsed = ParseDurability(DurabilityName(d));
    ASSERT_TRUE(parsed.ok());
    EXPECT_EQ(*parsed, d);
  }
  EXPECT_EQ(ParseDurability("sometimes").status().code(), StatusCode::kInvalidArgument);
}

TEST(DataLossResumeOffsetTest, Parses) {
  EXPECT_EQ(
      DataLossResumeOffset(DataLossError("x: records [3, 9) are damaged (y); resume at offset 9")),
      std::optional<uint64_t>(9));
  EXPECT_EQ(DataLossResumeOffset(InternalError("resume at offset 9")), std::nullopt);
  EXPECT_EQ(DataLossResumeOffset(DataLossError("no offset")), std::nullopt);
}

}  // namespace
}  // namespace converge
