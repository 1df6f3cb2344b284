// Publish deduplication across the change of the id fingerprint (a home-made 2x64-bit hash
// before, XXH3-128 now). The fingerprint is never stored: each partition rebuilds its dedup
// table from the ids in its records when it opens, so a data directory written by the old
// code must open and still refuse the ids it holds as duplicates.
#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "converge/log.h"
#include "log/hash.h"
#include "log/test_env.h"

namespace converge {
namespace {

// A byte-exact copy of the fingerprint the log used before XXH3-128 (kept only here, to show
// that the fixture's ids really change fingerprint across the upgrade).
uint64_t OldLoad64(const char* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}
uint64_t OldRotl(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }
uint64_t OldFmix64(uint64_t k) {
  k ^= k >> 33;
  k *= 0xff51afd7ed558ccdULL;
  k ^= k >> 33;
  k *= 0xc4ceb9fe1a85ec53ULL;
  k ^= k >> 33;
  return k;
}
internal::Hash128 OldIdHash128(std::string_view data) {
  const char* p = data.data();
  size_t n = data.size();
  constexpr uint64_t kM1 = 0x9E3779B97F4A7C15ULL;
  constexpr uint64_t kM2 = 0xC2B2AE3D27D4EB4FULL;
  uint64_t a = 0x243F6A8885A308D3ULL ^ (n * kM1);
  uint64_t b = 0x13198A2E03707344ULL ^ (n * kM2);
  while (n >= 8) {
    const uint64_t w = OldLoad64(p);
    a = OldRotl(a ^ (w * kM1), 29) * kM2;
    b = OldRotl(b ^ (w * kM2), 31) * kM1;
    p += 8;
    n -= 8;
  }
  if (n > 0) {
    uint64_t w = 0;
    std::memcpy(&w, p, n);
    w ^= static_cast<uint64_t>(n) << 56;
    a = OldRotl(a ^ (w * kM1), 29) * kM2;
    b = OldRotl(b ^ (w * kM2), 31) * kM1;
  }
  a += b;
  b += a;
  return internal::Hash128{OldFmix64(a), OldFmix64(b ^ 0x452821E638D01377ULL)};
}

// prefix + decimal n (built by appending: GCC 12 warns falsely on "literal" + std::string).
std::string Numbered(const char* prefix, int n) {
  std::string s = prefix;
  s += std::to_string(n);
  return s;
}

TEST(IdHashTest, IsXxh3With128Bits) {
  // Reference values of XXH3_128bits (seed 0, default secret), as the xxHash project's
  // sanity checks give them for the empty input.
  const internal::Hash128 empty = internal::IdHash128("");
  EXPECT_EQ(empty.lo, 0x6001C324468D497FULL);
  EXPECT_EQ(empty.hi, 0x99AA06D3014798D8ULL);
  for (const char* id : {"evt-0", "evt-39", "a"}) {
    EXPECT_FALSE(internal::IdHash128(id) == OldIdHash128(id)) << id;
  }
}

// tests: src/log/testdata/log_written_before_xxh3 was written by the log before this change:
// topic "orders", 2 partitions, a 100-year dedup window, ids evt-0..evt-39 (keys k0..k4).
TEST(DedupUpgradeTest, DataWrittenWithTheOldFingerprintStillDeduplicates) {
  const char* source_dir = std::getenv("CONVERGE_SOURCE_DIR");
  ASSERT_NE(source_dir, nullptr) << "run through ctest (CONVERGE_SOURCE_DIR)";
  test::TempDir tmp;
  ASSERT_FALSE(tmp.path().empty());
  const std::string dir = tmp.path() + "/log";
  std::filesystem::copy(std::string(source_dir) + "/src/log/testdata/log_written_before_xxh3", dir,
                        std::filesystem::copy_options::recursive);
  LogOptions options;
  options.dir = dir;
  auto opened = Log::Open(Env::Default(), options);
  ASSERT_TRUE(opened.ok()) << opened.status().ToString();
  std::unique_ptr<Log> log = std::move(opened).value();
  auto info = log->DescribeTopic("orders");
  ASSERT_TRUE(info.ok()) << info.status().ToString();
  ASSERT_EQ(info->partitions.size(), 2u);
  EXPECT_EQ(info->partitions[0].end_offset + info->partitions[1].end_offset, 40u);

  // Every old id is a duplicate of its original record, wherever the retry's key points.
  for (int i = 0; i < 40; ++i) {
    const std::string id = Numbered("evt-", i);
    const std::string key = Numbered("k", i % 5);
    const std::string value = "retry";
    std::vector<RecordView> records{RecordView{id, key, value, 0}};
    auto appended = log->Append("orders", records);
    ASSERT_TRUE(appended.ok()) << appended.status().ToString();
    ASSERT_TRUE((*appended)[0].duplicate) << id << " was appended again";
    auto batch = log->Read("orders", (*appended)[0].partition, (*appended)[0].offset, 1, 1 << 20);
    ASSERT_TRUE(batch.ok()) << batch.status().ToString();
    ASSERT_EQ(batch->records.size(), 1u);
    EXPECT_EQ(batch->records[0].id, id);
    EXPECT_EQ(batch->records[0].value, Numbered("value ", i));
  }
  // A new id is appended, and remembered across a restart with the new fingerprint.
  std::vector<RecordView> fresh{RecordView{"evt-new", "k1", "v", 0}};
  auto first = log->Append("orders", fresh);
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  EXPECT_FALSE((*first)[0].duplicate);
  log.reset();
  opened = Log::Open(Env::Default(), options);
  ASSERT_TRUE(opened.ok()) << opened.status().ToString();
  log = std::move(opened).value();
  auto again = log->Append("orders", fresh);
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_TRUE((*again)[0].duplicate);
  EXPECT_EQ((*again)[0].offset, (*first)[0].offset);
}

}  // namespace
}  // namespace converge
