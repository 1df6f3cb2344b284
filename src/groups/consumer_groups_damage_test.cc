// Consumer groups over a log that lost records: a committed offset beyond the log's end after
// a machine crash under interval durability (acks are synced, events were not), damaged ranges
// skipped (and reported), and acks whose journal write fails (refused, and changing nothing).
#include <gtest/gtest.h>

#include <cstdlib>
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
  // CONVERGE_SIM_SEED=<n> replays the one seed a failure printed.
  const char* one = std::getenv("CONVERGE_SIM_SEED");
  const uint64_t first = one ? std::strtoull(one, nullptr, 10) : 1, last = one ? first : 150;
  for (uint64_t seed = first; seed <= last; ++seed) {
    SCOPED_TRACE("seed " + std::to_string(seed) +
                 " (replay with CONVERGE_SIM_SEED=" + std::to_string(seed) + ")");
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
    const std::string value = "v" + std::to_string(i);  // outlives the view
    RecordView r{"", "", value, 0};
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


// A log of 40 records over several segments with one segment's first record damaged (its
// header checksum), returning the damaged range [from, to).
std::pair<uint64_t, uint64_t> DamagedLog(Harness& h, const ConsumerGroupsOptions& go) {
  EXPECT_TRUE(h.Open(go).ok());
  TopicOptions to;
  to.segment_max_bytes = 1024;
  EXPECT_TRUE(h.log->CreateTopic(kTopic, to).ok());
  for (int i = 0; i < 40; ++i) h.Produce(kTopic, "", "value-" + std::to_string(i) + std::string(80, 'x'));
  h.Restart();
  const std::string dir = "/data/log/topics/events/0000";
  auto names = h.env.fs().ListDir(dir);
  EXPECT_TRUE(names.ok());
  std::vector<std::string> segments;
  for (const std::string& n : *names) {
    if (n.size() == 24 && n.compare(20, 4, ".log") == 0) segments.push_back(n);
  }
  EXPECT_GE(segments.size(), 4u);
  const uint64_t from = std::stoull(segments[2].substr(0, 20));
  EXPECT_TRUE(h.env.sim_fs().CorruptByte(dir + "/" + segments[2], 12, 0x40).ok());
  EXPECT_TRUE(h.Open(go).ok());
  auto read = h.log->Read(kTopic, 0, from, 100, 1 << 20);
  EXPECT_EQ(read.status().code(), StatusCode::kDataLoss) << read.status().ToString();
  const uint64_t to_offset = DataLossResumeOffset(read.status()).value_or(0);
  EXPECT_GT(to_offset, from);
  return {from, to_offset};
}

// A damaged range in the middle of a partition is skipped (on_damage: skip, the default) and
// said so: counted in the group's description, named in last_error, and reported. Before the
// fix the group delivered the rest and showed nothing anywhere.
// A group create the journal refuses (a full disk) is Unavailable and leaves no group: a retry
// once there is space creates it (before, the group stayed in memory, the create failed with
// Internal and its retry with AlreadyExists), and JournalHealth reports the journal until a
// write succeeds.
TEST(GroupsDamageTest, CreateGroupRefusedByTheJournalLeavesNoGroup) {
  sim::SimEnv sim(8);
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

  disk.SetFreeBytes(0);
  disk.FailSyncs(true);
  Status refused = (*groups)->CreateGroup(kTopic, kGroup, GroupOptions{});
  EXPECT_EQ(refused.code(), StatusCode::kUnavailable) << refused.ToString();
  EXPECT_EQ((*groups)->DescribeGroup(kTopic, kGroup).status().code(), StatusCode::kNotFound);
  EXPECT_TRUE((*groups)->ListGroups(kTopic).empty());
  EXPECT_EQ((*groups)->JournalHealth().code(), StatusCode::kUnavailable);

  disk.SetUnlimited();
  EXPECT_TRUE((*groups)->JournalHealth().ok());
  Status created = (*groups)->CreateGroup(kTopic, kGroup, GroupOptions{});
  ASSERT_TRUE(created.ok()) << created.ToString();
  groups->reset();
  groups = ConsumerGroups::Open(disk, **log, go);
  ASSERT_TRUE(groups.ok()) << groups.status().ToString();
  EXPECT_TRUE((*groups)->DescribeGroup(kTopic, kGroup).ok());
}

TEST(GroupsDamageTest, SkippedDamageIsCountedAndReported) {
  Harness h(11);
  std::vector<std::string> notices;
  ConsumerGroupsOptions go = groups_testing::DefaultGroupsOptions();
  go.report_damage = [&](const std::string& m) { notices.push_back(m); };
  const auto [from, to] = DamagedLog(h, go);
  ASSERT_TRUE(h.groups->CreateGroup(kTopic, kGroup, GroupOptions()).ok());
  ASSERT_TRUE(h.groups->Join(kTopic, kGroup, "m").ok());
  EXPECT_EQ(DrainGroup(*h.groups, "m").size(), 40 - (to - from));
  auto d = h.groups->DescribeGroup(kTopic, kGroup);
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->partitions[0].damaged_skipped, to - from);
  EXPECT_EQ(d->partitions[0].committed, 40u);
  const std::string range = "[" + std::to_string(from) + ", " + std::to_string(to) + ")";
  EXPECT_NE(d->partitions[0].last_error.find(range), std::string::npos)
      << d->partitions[0].last_error;
  ASSERT_EQ(notices.size(), 1u);
  EXPECT_NE(notices[0].find(range), std::string::npos) << notices[0];
}

// on_damage: stop delivers everything before the damage, then fails with DataLoss naming the
// range until the group is seeked past it.
TEST(GroupsDamageTest, StopPolicyFailsWithDataLossUntilSeekedPast) {
  Harness h(12);
  std::vector<std::string> notices;
  ConsumerGroupsOptions go = groups_testing::DefaultGroupsOptions();
  go.on_damage = DamagePolicy::kStop;
  go.report_damage = [&](const std::string& m) { notices.push_back(m); };
  const auto [from, to] = DamagedLog(h, go);
  ASSERT_TRUE(h.groups->CreateGroup(kTopic, kGroup, GroupOptions()).ok());
  ASSERT_TRUE(h.groups->Join(kTopic, kGroup, "m").ok());
  size_t delivered = 0;
  Status stopped;
  for (int i = 0; i < 100 && stopped.ok(); ++i) {
    auto fetched = h.groups->Fetch(kTopic, kGroup, "m", 100, 1 << 20);
    if (!fetched.ok()) {
      stopped = fetched.status();
      break;
    }
    std::vector<LeaseRef> leases;
    for (const Delivery& dl : fetched->deliveries) leases.push_back(dl.lease());
    delivered += leases.size();
    ASSERT_TRUE(h.groups->AckBatch(kTopic, kGroup, "m", leases).ok());
  }
  EXPECT_EQ(delivered, from);
  ASSERT_EQ(stopped.code(), StatusCode::kDataLoss) << stopped.ToString();
  const std::string range = "[" + std::to_string(from) + ", " + std::to_string(to) + ")";
  EXPECT_NE(stopped.message().find(range), std::string_view::npos) << stopped.ToString();
  // Again and again, reported once.
  EXPECT_EQ(h.groups->Fetch(kTopic, kGroup, "m", 100, 1 << 20).status().code(),
            StatusCode::kDataLoss);
  EXPECT_EQ(notices.size(), 1u);
  auto d = h.groups->DescribeGroup(kTopic, kGroup);
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->partitions[0].damaged_skipped, 0u);
  EXPECT_EQ(d->partitions[0].committed, from);

  SeekTarget past;
  past.kind = SeekTarget::Kind::kOffset;
  past.offset = to;
  ASSERT_TRUE(h.groups->Seek(kTopic, kGroup, past).ok());
  EXPECT_EQ(DrainGroup(*h.groups, "m").size(), 40 - to);
}


// A lost SNAPSHOT next to its journal is refused, not taken for a fresh start (which reset
// every group and deleted the journals at the first compaction).
TEST(GroupsDamageTest, MissingSnapshotIsRefusedNotStartedOver) {
  Harness h(13);
  ASSERT_TRUE(h.Open().ok());
  ASSERT_TRUE(h.CreateTopic(kTopic, 1).ok());
  ASSERT_TRUE(h.groups->CreateGroup(kTopic, kGroup, GroupOptions()).ok());
  h.Restart();
  ASSERT_TRUE(h.env.fs().DeleteFile("/data/groups/SNAPSHOT").ok());
  ASSERT_TRUE(h.env.fs().SyncDir("/data/groups").ok());
  Status opened = h.Open();
  ASSERT_EQ(opened.code(), StatusCode::kDataLoss) << opened.ToString();
  EXPECT_NE(opened.message().find("no SNAPSHOT"), std::string_view::npos) << opened.ToString();
  auto names = h.env.fs().ListDir("/data/groups");
  ASSERT_TRUE(names.ok());
  bool journal = false;
  for (const std::string& n : *names) journal = journal || n.rfind("journal-", 0) == 0;
  EXPECT_TRUE(journal);
}


namespace journal_first {

// Groups whose state directory sits on a disk that can fail (syncs or writes), over a log on
// the healthy simulated disk (so dead-letter and replay appends work). Every mutation whose
// journal write fails must answer an error and change nothing visible; a restart with the disk
// healed shows what was durable.
struct FailingJournal {
  FailingJournal() : disk(sim) {
    LogOptions lo;
    lo.dir = "/data/log";
    auto opened = Log::Open(sim, lo);
    EXPECT_TRUE(opened.ok());
    log = std::move(opened).value();
    TopicOptions to;
    to.partitions = 1;
    EXPECT_TRUE(log->CreateTopic(kTopic, to).ok());
    go = groups_testing::DefaultGroupsOptions();
    go.tick_interval_ms = 0;
    Reopen();
  }
  ~FailingJournal() {
    groups.reset();
    log.reset();
  }
  // A clean restart with the disk healed (the destructor flushes whatever memory holds).
  void Reopen() {
    disk.SetUnlimited();
    groups.reset();
    auto g = ConsumerGroups::Open(disk, *log, go);
    ASSERT_TRUE(g.ok()) << g.status().ToString();
    groups = std::move(g).value();
  }
  void Produce(int n) {
    for (int i = 0; i < n; ++i) {
      const std::string key = "k" + std::to_string(i), value = "v" + std::to_string(i);
      RecordView r{"", key, value, 0};  // views of strings that outlive the append
      ASSERT_TRUE(log->Append(kTopic, std::span<const RecordView>(&r, 1)).ok());
    }
  }
  std::vector<Delivery> Fetch() {
    auto f = groups->Fetch(kTopic, kGroup, "m", 100, 1 << 20);
    EXPECT_TRUE(f.ok()) << f.status().ToString();
    if (!f.ok()) return {};
    storage.push_back(f->storage);
    return f->deliveries;
  }
  PartitionDescription Partition0() {
    auto d = groups->DescribeGroup(kTopic, kGroup);
    EXPECT_TRUE(d.ok()) << d.status().ToString();
    return d.ok() ? d->partitions[0] : PartitionDescription{};
  }

  sim::SimEnv sim{7};
  log_testing::FullDiskEnv disk;
  std::unique_ptr<Log> log;
  ConsumerGroupsOptions go;
  std::unique_ptr<ConsumerGroups> groups;
  std::vector<std::vector<std::shared_ptr<const void>>> storage;
};

// Before the fix the group was added to memory first: the refused create left a group that
// served requests and was written by the next flush.
TEST(GroupsJournalFirstTest, CreateGroupRefusedByTheJournalChangesNothing) {
  FailingJournal f;
  f.disk.FailSyncs(true);
  EXPECT_FALSE(f.groups->CreateGroup(kTopic, kGroup, GroupOptions()).ok());
  EXPECT_TRUE(f.groups->ListGroups(kTopic).empty());
  EXPECT_EQ(f.groups->Join(kTopic, kGroup, "m").status().code(), StatusCode::kNotFound);
  f.Reopen();
  EXPECT_TRUE(f.groups->ListGroups(kTopic).empty());
  // Healed: the same create succeeds (its dead-letter topic is reused) and survives a restart.
  ASSERT_TRUE(f.groups->CreateGroup(kTopic, kGroup, GroupOptions()).ok());
  f.Reopen();
  EXPECT_EQ(f.groups->ListGroups(kTopic), std::vector<std::string>{kGroup});
}

// Before the fix the group was removed from memory first: gone at once, and gone for good
// after the next flush, although the delete was answered with an error.
TEST(GroupsJournalFirstTest, DeleteGroupRefusedByTheJournalChangesNothing) {
  FailingJournal f;
  ASSERT_TRUE(f.groups->CreateGroup(kTopic, kGroup, GroupOptions()).ok());
  ASSERT_TRUE(f.groups->Join(kTopic, kGroup, "m").ok());
  f.Produce(2);
  ASSERT_EQ(f.Fetch().size(), 2u);
  f.disk.FailSyncs(true);
  EXPECT_FALSE(f.groups->DeleteGroup(kTopic, kGroup, /*force=*/true).ok());
  EXPECT_EQ(f.groups->ListGroups(kTopic), std::vector<std::string>{kGroup});
  EXPECT_EQ(f.Partition0().in_flight, 2u);
  EXPECT_TRUE(f.log->DescribeTopic(DefaultDeadLetterTopic(kTopic, kGroup)).ok());
  f.Reopen();
  EXPECT_EQ(f.groups->ListGroups(kTopic), std::vector<std::string>{kGroup});
  ASSERT_TRUE(f.groups->DeleteGroup(kTopic, kGroup, /*force=*/true).ok());
  f.Reopen();
  EXPECT_TRUE(f.groups->ListGroups(kTopic).empty());
}

// Before the fix the seek dropped the leases and moved the committed offset in memory first,
// and the next flush made that durable.
TEST(GroupsJournalFirstTest, SeekRefusedByTheJournalChangesNothing) {
  FailingJournal f;
  ASSERT_TRUE(f.groups->CreateGroup(kTopic, kGroup, GroupOptions()).ok());
  ASSERT_TRUE(f.groups->Join(kTopic, kGroup, "m").ok());
  f.Produce(3);
  auto ds = f.Fetch();
  ASSERT_EQ(ds.size(), 3u);
  ASSERT_TRUE(f.groups->Ack(kTopic, kGroup, "m", ds[0].lease()).ok());
  f.disk.FailSyncs(true);
  SeekTarget latest;
  latest.kind = SeekTarget::Kind::kLatest;
  EXPECT_FALSE(f.groups->Seek(kTopic, kGroup, latest).ok());
  PartitionDescription p = f.Partition0();
  EXPECT_EQ(p.committed, 1u);
  EXPECT_EQ(p.in_flight, 2u);
  // The leases survived the refused seek: they can still be acked (once the disk is back).
  f.disk.SetUnlimited();
  EXPECT_TRUE(f.groups->Ack(kTopic, kGroup, "m", ds[1].lease()).ok());
  f.Reopen();
  ASSERT_TRUE(f.groups->Join(kTopic, kGroup, "m").ok());
  EXPECT_EQ(f.Partition0().committed, 2u);
  // And a seek the journal takes is applied and survives.
  SeekTarget earliest;
  earliest.kind = SeekTarget::Kind::kEarliest;
  ASSERT_TRUE(f.groups->Seek(kTopic, kGroup, earliest).ok());
  f.Reopen();
  EXPECT_EQ(f.Partition0().committed, 0u);
}

// Before the fix the record was marked done (committed) in memory first: a refused permanent
// nack moved the committed offset, and the next flush made it durable. Now the record stays
// dead-letter pending (its dead letter may be written already) and the group retries the
// append, which the Log deduplicates, and the commit.
TEST(GroupsJournalFirstTest, PermanentNackRefusedByTheJournalCommitsNothing) {
  FailingJournal f;
  ASSERT_TRUE(f.groups->CreateGroup(kTopic, kGroup, GroupOptions()).ok());
  ASSERT_TRUE(f.groups->Join(kTopic, kGroup, "m").ok());
  f.Produce(1);
  auto ds = f.Fetch();
  ASSERT_EQ(ds.size(), 1u);
  f.disk.FailSyncs(true);
  NackOptions nack;
  nack.permanent = true;
  nack.reason = "poison";
  EXPECT_FALSE(f.groups->Nack(kTopic, kGroup, "m", ds[0].lease(), nack).ok());
  PartitionDescription p = f.Partition0();
  EXPECT_EQ(p.committed, 0u);
  EXPECT_EQ(p.acked_above_committed, 0u);
  EXPECT_EQ(p.dead_letter_pending, 1u);
  // Healed: the group's retry commits it, with exactly one dead letter.
  f.disk.SetUnlimited();
  f.sim.RunFor(2000 * groups_testing::kMsNs);
  EXPECT_TRUE(f.groups->Tick().ok());
  EXPECT_EQ(f.Partition0().committed, 1u);
  auto dls = f.groups->ListDeadLetters(kTopic, kGroup, 0, 100);
  ASSERT_TRUE(dls.ok());
  ASSERT_EQ(dls->dead_letters.size(), 1u);
  EXPECT_TRUE(dls->dead_letters[0].permanent);
  EXPECT_EQ(dls->dead_letters[0].last_error, "poison");
  f.Reopen();
  EXPECT_EQ(f.Partition0().committed, 1u);
}

// A refused permanent nack followed by a restart: the record was never committed, so it is
// delivered again (at-least-once), never lost.
TEST(GroupsJournalFirstTest, PermanentNackRefusedThenRestartRedelivers) {
  FailingJournal f;
  ASSERT_TRUE(f.groups->CreateGroup(kTopic, kGroup, GroupOptions()).ok());
  ASSERT_TRUE(f.groups->Join(kTopic, kGroup, "m").ok());
  f.Produce(1);
  auto ds = f.Fetch();
  ASSERT_EQ(ds.size(), 1u);
  f.disk.FailSyncs(true);
  NackOptions nack;
  nack.permanent = true;
  EXPECT_FALSE(f.groups->Nack(kTopic, kGroup, "m", ds[0].lease(), nack).ok());
  f.Reopen();
  ASSERT_TRUE(f.groups->Join(kTopic, kGroup, "m").ok());
  EXPECT_EQ(f.Partition0().committed, 0u);
  EXPECT_EQ(f.Fetch().size(), 1u);
}

// Before the fix the replayed marks were set in memory first: the refused replay showed the
// dead letters as replayed, and the next flush made that durable. Now nothing is marked, and
// the retry finds the records already in the target instead of appending them twice.
TEST(GroupsJournalFirstTest, ReplayRefusedByTheJournalMarksNothing) {
  FailingJournal f;
  ASSERT_TRUE(f.groups->CreateGroup(kTopic, kGroup, GroupOptions()).ok());
  ASSERT_TRUE(f.groups->Join(kTopic, kGroup, "m").ok());
  f.Produce(2);
  NackOptions nack;
  nack.permanent = true;
  for (const Delivery& d : f.Fetch()) {
    ASSERT_TRUE(f.groups->Nack(kTopic, kGroup, "m", d.lease(), nack).ok());
  }
  f.disk.FailSyncs(true);
  EXPECT_FALSE(f.groups->ReplayDeadLetters(kTopic, kGroup, ReplayOptions()).ok());
  auto dls = f.groups->ListDeadLetters(kTopic, kGroup, 0, 100);
  ASSERT_TRUE(dls.ok());
  ASSERT_EQ(dls->dead_letters.size(), 2u);
  for (const DeadLetter& dl : dls->dead_letters) EXPECT_FALSE(dl.replayed);
  auto d = f.groups->DescribeGroup(kTopic, kGroup);
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->dead_letters_replayed, 0u);
  f.Reopen();
  auto retried = f.groups->ReplayDeadLetters(kTopic, kGroup, ReplayOptions());
  ASSERT_TRUE(retried.ok()) << retried.status().ToString();
  EXPECT_EQ(retried->replayed, 0u);
  EXPECT_EQ(retried->deduplicated, 2u);
  auto info = f.log->DescribeTopic(kTopic);
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->partitions[0].end_offset, 4u);  // 2 records + 2 replays, not 6
  f.Reopen();
  d = f.groups->DescribeGroup(kTopic, kGroup);
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->dead_letters_replayed, 2u);
}

}  // namespace journal_first
}  // namespace
}  // namespace converge
