// Consumer groups over a log that lost records: a committed offset beyond the log's end after
// a machine crash under interval durability (acks are synced, events were not), damaged ranges
// skipped (and reported), and acks whose journal write fails (refused, and changing nothing).
#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "converge/consumer_group.h"
#include "groups/testing/harness.h"
#include "log/testing/full_disk_env.h"

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wrestrict"  // GCC bug 105329 on "literal" + std::string
#endif

namespace converge {
namespace {

using groups_testing::Harness;

constexpr char kTopic[] = "events";
constexpr char kGroup[] = "workers";

// Fetches and acks until nothing more comes; returns the (partition, offset) of every record
// delivered.
std::vector<std::pair<uint32_t, uint64_t>> DrainGroup(ConsumerGroups& groups,
                                                      const std::string& member) {
  std::vector<std::pair<uint32_t, uint64_t>> out;
  for (int i = 0; i < 1000; ++i) {
    auto fetched = groups.Fetch(kTopic, kGroup, member, 100, 1 << 20);
    EXPECT_TRUE(fetched.ok()) << fetched.status().ToString();
    if (!fetched.ok() || fetched->deliveries.empty()) break;
    std::vector<LeaseRef> leases;
    for (const Delivery& d : fetched->deliveries) {
      out.emplace_back(d.partition, d.offset);
      leases.push_back(d.lease());
    }
    auto acked = groups.AckBatch(kTopic, kGroup, member, leases);
    EXPECT_TRUE(acked.ok()) << acked.status().ToString();
  }
  return out;
}

// Under interval durability events are readable before they are synced, while acks are synced:
// a machine crash can leave the group's committed offset beyond the log's end. Recovery moves
// it back to the end and reports the gap, so the records appended next (which reuse those
// offsets) are delivered. Before the fix they were silently skipped, with lag 0.
TEST(GroupsDamageTest, CommittedBeyondLogEndAfterCrashIsMovedBack) {
  for (uint64_t seed = 1; seed <= 150; ++seed) {
    SCOPED_TRACE("seed " + std::to_string(seed));
    std::mt19937_64 rng(seed);
    Harness h(seed);
    std::vector<std::string> notices;
    ConsumerGroupsOptions go = groups_testing::DefaultGroupsOptions();
    go.report_damage = [&](const std::string& m) { notices.push_back(m); };
    ASSERT_TRUE(h.Open(go).ok());
    const uint32_t partitions = 1 + static_cast<uint32_t>(rng() % 3);
    TopicOptions to;
    to.partitions = partitions;
    to.durability = seed % 2 == 0 ? Durability::kInterval : Durability::kNone;
    to.sync_interval_ms = 3'600'000;  // nothing is synced by time in this test
    ASSERT_TRUE(h.log->CreateTopic(kTopic, to).ok());
    GroupOptions o;
    ASSERT_TRUE(h.groups->CreateGroup(kTopic, kGroup, o).ok());
    ASSERT_TRUE(h.groups->Join(kTopic, kGroup, "m").ok());
    const int synced = static_cast<int>(rng() % 20);
    const int unsynced = 1 + static_cast<int>(rng() % 20);
    for (int i = 0; i < synced; ++i) h.Produce(kTopic, "k" + std::to_string(rng() % 7), "s");
    ASSERT_TRUE(h.log->Sync().ok());
    std::vector<uint64_t> durable_end(partitions);
    {
      auto info = h.log->DescribeTopic(kTopic);
      ASSERT_TRUE(info.ok());
      for (uint32_t p = 0; p < partitions; ++p) durable_end[p] = info->partitions[p].end_offset;
    }
    for (int i = 0; i < unsynced; ++i) h.Produce(kTopic, "k" + std::to_string(rng() % 7), "u");
    ASSERT_EQ(DrainGroup(*h.groups, "m").size(), static_cast<size_t>(synced + unsynced));

    h.Crash();
    ASSERT_TRUE(h.Open(go).ok());
    auto described = h.groups->DescribeGroup(kTopic, kGroup);
    ASSERT_TRUE(described.ok()) << described.status().ToString();
    uint64_t lost = 0;
    for (const PartitionDescription& pd : described->partitions) {
      EXPECT_EQ(pd.committed, durable_end[pd.partition]);
      EXPECT_EQ(pd.committed, pd.end_offset);
      lost += pd.lost_beyond_end;
      if (pd.lost_beyond_end > 0) {
        EXPECT_FALSE(pd.last_error.empty());
      }
    }
    EXPECT_EQ(lost, static_cast<uint64_t>(unsynced));
    EXPECT_FALSE(notices.empty());

    // New records take the lost offsets and are delivered, every one of them.
    ASSERT_TRUE(h.groups->Join(kTopic, kGroup, "m").ok());
    const int fresh = 1 + static_cast<int>(rng() % 20);
    for (int i = 0; i < fresh; ++i) h.Produce(kTopic, "k" + std::to_string(rng() % 7), "n");
    EXPECT_EQ(DrainGroup(*h.groups, "m").size(), static_cast<size_t>(fresh));
    described = h.groups->DescribeGroup(kTopic, kGroup);
    ASSERT_TRUE(described.ok());
    EXPECT_EQ(described->total_lag, 0u);
  }
}


// An ack whose journal write fails is refused and changes nothing: the record stays leased
// (and is delivered again after its lease or a restart), the committed offset stays. Before
// the fix the ack was applied in memory first, answered with an error, and made durable by
// the next flush anyway.
TEST(GroupsDamageTest, AckRefusedByTheJournalChangesNothing) {
  sim::SimEnv sim(7);
  log_testing::FullDiskEnv disk(sim);
  LogOptions lo;
  lo.dir = "/data/log";
  auto log = Log::Open(sim, lo);
  ASSERT_TRUE(log.ok());
  TopicOptions to;
  to.partitions = 1;
  ASSERT_TRUE((*log)->CreateTopic(kTopic, to).ok());
  ConsumerGroupsOptions go = groups_testing::DefaultGroupsOptions();
  go.tick_interval_ms = 0;
  auto groups = ConsumerGroups::Open(disk, **log, go);
  ASSERT_TRUE(groups.ok()) << groups.status().ToString();
  GroupOptions o;
  o.lease_ms = 60'000;
  ASSERT_TRUE((*groups)->CreateGroup(kTopic, kGroup, o).ok());
  ASSERT_TRUE((*groups)->Join(kTopic, kGroup, "m").ok());
  for (int i = 0; i < 3; ++i) {
    RecordView r{"", "", "v" + std::to_string(i), 0};
    ASSERT_TRUE((*log)->Append(kTopic, std::span<const RecordView>(&r, 1)).ok());
  }
  auto fetched = (*groups)->Fetch(kTopic, kGroup, "m", 10, 1 << 20);
  ASSERT_TRUE(fetched.ok());
  ASSERT_EQ(fetched->deliveries.size(), 3u);
  std::vector<LeaseRef> leases;
  for (const Delivery& d : fetched->deliveries) leases.push_back(d.lease());

  disk.FailSyncs(true);
  auto refused = (*groups)->AckBatch(kTopic, kGroup, "m", std::span<const LeaseRef>(leases.data(), 2));
  ASSERT_FALSE(refused.ok());
  auto single = (*groups)->Ack(kTopic, kGroup, "m", leases[2]);
  ASSERT_FALSE(single.ok());
  auto d = (*groups)->DescribeGroup(kTopic, kGroup);
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->partitions[0].committed, 0u);
  EXPECT_EQ(d->partitions[0].in_flight, 3u);
  EXPECT_EQ(d->partitions[0].acked_above_committed, 0u);

  // Space back: a restart (the destructor flushes whatever memory holds) delivers all three
  // again, since none of the refused acks was applied.
  disk.SetUnlimited();
  groups->reset();
  groups = ConsumerGroups::Open(disk, **log, go);
  ASSERT_TRUE(groups.ok()) << groups.status().ToString();
  ASSERT_TRUE((*groups)->Join(kTopic, kGroup, "m").ok());
  auto again = (*groups)->Fetch(kTopic, kGroup, "m", 10, 1 << 20);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->deliveries.size(), 3u);
  // And an ack that the journal takes is applied.
  std::vector<LeaseRef> now;
  for (const Delivery& x : again->deliveries) now.push_back(x.lease());
  ASSERT_TRUE((*groups)->AckBatch(kTopic, kGroup, "m", now).ok());
  d = (*groups)->DescribeGroup(kTopic, kGroup);
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->partitions[0].committed, 3u);
  EXPECT_EQ(d->partitions[0].in_flight, 0u);
}

}  // namespace
}  // namespace converge
