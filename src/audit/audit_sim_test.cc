// The auditor over a fault-injecting Log: for every seed a random set of acknowledged appends
// (stamped CloudEvents, and records that are not CloudEvents, checked by their ids), then one
// fault (none, a dropped record, a duplicated record, two records swapped, the partition's end
// described once too early, its tail lost) made visible to readers only. Each fault must be
// reported exactly, and a clean log must give no finding. CONVERGE_SIM_SEEDS sets the number of
// seeds (default 300); CONVERGE_SIM_SEED=<n> replays one seed.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "audit/audit.h"
#include "audit/audited_log.h"
#include "converge/sim_env.h"

namespace converge::audit {
namespace {

// kStaleEnd: the partition is described once with an end at the victim (and read only up to
// there until it is described again), as a JetStream stream leader elected a moment ago
// described it before applying what its predecessor acknowledged: not a loss. kLostTail: the
// partition ends at the victim for good (records from there gone): a loss.
enum class Fault { kNone, kDrop, kDuplicate, kSwap, kStaleEnd, kLostTail };

// Forwards everything to `base`, except that reads of `topic` partition `partition` see the
// fault: the record at `at` dropped, copied once more at the end, or swapped with the next.
class FaultLog : public Log {
 public:
  FaultLog(Log& base, std::string topic, uint32_t partition, Fault fault, uint64_t at)
      : base_(base), topic_(std::move(topic)), partition_(partition), fault_(fault), at_(at) {}

  Status CreateTopic(const std::string& t, const TopicOptions& o) override {
    return base_.CreateTopic(t, o);
  }
  Status DeleteTopic(const std::string& t) override { return base_.DeleteTopic(t); }
  std::vector<std::string> ListTopics() override { return base_.ListTopics(); }
  Result<TopicInfo> DescribeTopic(const std::string& t) override {
    Result<TopicInfo> info = base_.DescribeTopic(t);
    if (info.ok() && t == topic_ && fault_ == Fault::kDuplicate) {
      ++info->partitions[partition_].end_offset;
    }
    if (info.ok() && t == topic_ && fault_ == Fault::kStaleEnd && describes_++ > 0) {
      stale_ = false;  // described again: the view is current from now on
    }
    if (info.ok() && t == topic_ && Cut()) info->partitions[partition_].end_offset = at_;
    return info;
  }
  Result<std::vector<AppendResult>> Append(const std::string& t,
                                           std::span<const RecordView> r) override {
    return base_.Append(t, r);
  }
  Result<std::vector<AppendResult>> AppendToPartition(const std::string& t, uint32_t p,
                                                      std::span<const RecordView> r) override {
    return base_.AppendToPartition(t, p, r);
  }
  Result<ReadBatch> Read(const std::string& t, uint32_t p, uint64_t offset, size_t max_records,
                         size_t max_bytes) override {
    if (t != topic_ || p != partition_) return base_.Read(t, p, offset, max_records, max_bytes);
    // The whole partition as the faulty engine would serve it.
    struct Copy {
      uint64_t offset;
      std::string id, key, value;
    };
    auto copies = std::make_shared<std::vector<Copy>>();
    uint64_t end = 0;
    for (uint64_t o = 0;;) {
      CONVERGE_ASSIGN_OR_RETURN(ReadBatch b, base_.Read(t, p, o, 1000, 1 << 20));
      for (const StoredRecord& r : b.records) {
        copies->push_back({r.offset, std::string(r.id), std::string(r.key), std::string(r.value)});
      }
      end = b.next_offset;
      if (b.records.empty()) break;
      o = b.next_offset;
    }
    if (fault_ == Fault::kDuplicate) ++end;
    std::vector<Copy>& c = *copies;
    if (Cut()) {
      std::erase_if(c, [this](const Copy& r) { return r.offset >= at_; });
      end = std::min(end, at_);
    }
    switch (fault_) {
      case Fault::kNone:
        break;
      case Fault::kDrop:
        c.erase(c.begin() + static_cast<long>(at_));
        break;
      case Fault::kDuplicate: {
        Copy again = c[at_];
        again.offset = c.back().offset + 1;
        c.push_back(again);
        break;
      }
      case Fault::kStaleEnd:
      case Fault::kLostTail:
        break;            // cut above
      case Fault::kSwap:  // whole records change places (each keeps its offset slot)
        std::swap(c[at_].id, c[at_ + 1].id);
        std::swap(c[at_].key, c[at_ + 1].key);
        std::swap(c[at_].value, c[at_ + 1].value);
        break;
    }
    ReadBatch out;
    out.next_offset = std::max(offset, end);  // nothing left: the end (as the log answers)
    for (const Copy& r : c) {
      if (r.offset < offset) continue;
      if (out.records.size() >= max_records) break;
      out.records.push_back({r.offset, 0, r.id, r.key, r.value});
      out.next_offset = r.offset + 1;
    }
    out.storage = copies;
    return out;
  }
  Result<uint64_t> OffsetForTime(const std::string& t, uint32_t p, int64_t ts) override {
    return base_.OffsetForTime(t, p, ts);
  }
  Result<std::unique_ptr<Watch>> WatchAppends(const std::string& t, AppendCallback fn) override {
    return base_.WatchAppends(t, std::move(fn));
  }
  Status EnforceRetention() override { return base_.EnforceRetention(); }
  Status Sync() override { return base_.Sync(); }

 private:
  // Whether the partition is seen cut at `at_` right now.
  bool Cut() const { return fault_ == Fault::kLostTail || (fault_ == Fault::kStaleEnd && stale_); }

  Log& base_;
  std::string topic_;
  uint32_t partition_;
  Fault fault_;
  uint64_t at_;
  int describes_ = 0;
  bool stale_ = true;
};

// One acknowledged, stamped append of the test.
struct Appended {
  uint32_t partition;
  uint64_t offset;
  uint64_t seq;
};

void RunSeed(uint64_t seed, Fault fault) {
  SCOPED_TRACE("seed " + std::to_string(seed) + " fault " + std::to_string(int(fault)) +
               " (replay with CONVERGE_SIM_SEED=" + std::to_string(seed) + ")");
  sim::SimEnv sim(seed);
  std::mt19937_64 rng(seed * 0x9E3779B97F4A7C15ull + 7);
  LogOptions lo;
  lo.dir = "/data/log";
  auto log = Log::Open(sim, lo);
  ASSERT_TRUE(log.ok()) << log.status().ToString();
  TopicOptions to;
  to.partitions = 1 + static_cast<uint32_t>(rng() % 4);
  ASSERT_TRUE((*log)->CreateTopic("t", to).ok());
  auto producer = LoadOrCreateProducerId(sim, "/data/audit");
  ASSERT_TRUE(producer.ok()) << producer.status().ToString();
  auto journal = AckJournal::Open(sim, "/data/audit", 1'000'000);
  ASSERT_TRUE(journal.ok()) << journal.status().ToString();

  // Another producer's events interleave: the auditor must ignore them. Some of ours are not
  // CloudEvents (as a dead letter is not): their acks are keyed by their record ids (IdKey),
  // and they must be checked the same way.
  std::vector<Appended> ours;
  uint64_t stamped = 0;
  const int n = 2 + static_cast<int>(rng() % 60);
  for (int i = 0; i < n; ++i) {
    const uint64_t kind = rng() % 6;  // 0: someone else's event, 1: ours, no CloudEvent
    const bool mine = kind != 0;
    const std::string id = "e" + std::to_string(i);
    std::string value;
    uint64_t seq = 0;
    if (kind == 1) {
      value = "\xD1 not a cloudevent " + id;
      seq = IdKey(id);
    } else {
      Event e;
      e.set_id(id);
      e.set_source("/test");
      e.set_type("t.happened");
      if (mine) {
        seq = ++stamped;
        StampEvent(&e, *producer, seq);
      } else {
        StampEvent(&e, "someoneelse", i);
      }
      ASSERT_TRUE(EncodeBinary(e, &value).ok());
    }
    std::string key = rng() % 2 ? "k" + std::to_string(rng() % 7) : "";
    RecordView rv{id, key, value, 0};
    auto r = (*log)->Append("t", std::span<const RecordView>(&rv, 1));
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    if (!mine) continue;
    const AppendResult& a = (*r)[0];
    ours.push_back({a.partition, a.offset, seq});
    ASSERT_TRUE((*journal)->Record({{"t", a.partition, a.offset, seq}}).ok());
  }
  if (ours.empty()) return;
  // The fault hits one of our records (for a swap: one followed by another of ours in the
  // same partition, so the swap is visible to this producer's stamps).
  const Appended victim = ours[rng() % ours.size()];
  std::vector<Finding> expected;
  if (fault == Fault::kDrop) {
    expected.push_back(
        {FindingKind::kMissing, "t", victim.partition, victim.seq, victim.offset, victim.offset});
  } else if (fault == Fault::kDuplicate) {
    auto info = (*log)->DescribeTopic("t");
    ASSERT_TRUE(info.ok());
    expected.push_back({FindingKind::kDuplicate, "t", victim.partition, victim.seq, victim.offset,
                        info->partitions[victim.partition].end_offset});
  } else if (fault == Fault::kSwap) {
    const Appended* next = nullptr;
    for (const Appended& a : ours) {
      if (a.partition == victim.partition && a.offset == victim.offset + 1) next = &a;
    }
    if (next == nullptr) return;  // nothing of ours to swap with
    expected.push_back(
        {FindingKind::kOutOfOrder, "t", victim.partition, victim.seq, victim.offset, next->offset});
    expected.push_back(
        {FindingKind::kOutOfOrder, "t", next->partition, next->seq, next->offset, victim.offset});
  }
  if (fault == Fault::kLostTail) {
    for (const Appended& a : ours) {  // in the order of their offsets within the partition
      if (a.partition == victim.partition && a.offset >= victim.offset) {
        expected.push_back({FindingKind::kMissing, "t", a.partition, a.seq, a.offset, a.offset});
      }
    }
  }
  FaultLog faulty(**log, "t", victim.partition, fault, victim.offset);
  AuditorOptions ao;
  ao.producer = *producer;
  ao.read_batch_records = 1 + rng() % 10;  // reads cross batch boundaries
  Auditor auditor(sim, faulty, **journal, ao);
  AuditReport report = auditor.Run();
  EXPECT_TRUE(report.errors.empty()) << report.errors.front();
  EXPECT_EQ(report.checked, ours.size());
  EXPECT_EQ(report.findings, expected);
  EXPECT_EQ(report.findings_total, expected.size());
}

std::vector<uint64_t> Seeds() {
  if (const char* one = std::getenv("CONVERGE_SIM_SEED")) return {std::strtoull(one, nullptr, 10)};
  uint64_t n = 300;
  if (const char* many = std::getenv("CONVERGE_SIM_SEEDS")) n = std::strtoull(many, nullptr, 10);
  std::vector<uint64_t> seeds;
  for (uint64_t s = 1; s <= n; ++s) seeds.push_back(s);
  return seeds;
}

TEST(AuditSimTest, CleanLogHasNoFindings) {
  for (uint64_t s : Seeds()) RunSeed(s, Fault::kNone);
}
TEST(AuditSimTest, DroppedAcknowledgedRecordIsMissing) {
  for (uint64_t s : Seeds()) RunSeed(s, Fault::kDrop);
}
TEST(AuditSimTest, DuplicatedRecordIsFound) {
  for (uint64_t s : Seeds()) RunSeed(s, Fault::kDuplicate);
}
TEST(AuditSimTest, SwappedRecordsAreOutOfOrder) {
  for (uint64_t s : Seeds()) RunSeed(s, Fault::kSwap);
}
// A partition described once with an end before acknowledged offsets (a stale view) is
// described again and read on: nothing missing. A partition that really ends there (its tail
// lost) has every acknowledged event from there reported missing.
TEST(AuditSimTest, StaleEndIsNoLoss) {
  for (uint64_t s : Seeds()) RunSeed(s, Fault::kStaleEnd);
}
TEST(AuditSimTest, LostTailIsMissing) {
  for (uint64_t s : Seeds()) RunSeed(s, Fault::kLostTail);
}

// A sliding window: with the journal's bound far below what is appended, audit runs between
// rounds of appends verify the acks, the newest acks stay tracked (verified ones make room),
// and an acknowledged event lost after many times the bound was appended is still found.
void RunSlidingWindowSeed(uint64_t seed) {
  SCOPED_TRACE("seed " + std::to_string(seed) +
               " (replay with CONVERGE_SIM_SEED=" + std::to_string(seed) + ")");
  sim::SimEnv sim(seed);
  std::mt19937_64 rng(seed * 0x9E3779B97F4A7C15ull + 11);
  LogOptions lo;
  lo.dir = "/data/log";
  auto log = Log::Open(sim, lo);
  ASSERT_TRUE(log.ok()) << log.status().ToString();
  TopicOptions to;
  to.partitions = 1 + static_cast<uint32_t>(rng() % 3);
  ASSERT_TRUE((*log)->CreateTopic("t", to).ok());
  auto producer = LoadOrCreateProducerId(sim, "/data/audit");
  ASSERT_TRUE(producer.ok());
  const uint64_t bound = 4 + rng() % 12;
  auto journal = AckJournal::Open(sim, "/data/audit", bound);
  ASSERT_TRUE(journal.ok());
  AuditorOptions ao;
  ao.producer = *producer;
  ao.read_batch_records = 1 + rng() % 10;
  std::vector<Appended> ours;
  const int rounds = 3 + static_cast<int>(rng() % 6);
  for (int round = 0; round < rounds; ++round) {
    // At most the bound per round: what the last run verified always makes enough room.
    const uint64_t k = 1 + rng() % bound;
    for (uint64_t i = 0; i < k; ++i) {
      Event e;
      e.set_id("e" + std::to_string(ours.size()));
      e.set_source("/test");
      e.set_type("t.happened");
      const uint64_t seq = ours.size() + 1;
      StampEvent(&e, *producer, seq);
      std::string value;
      ASSERT_TRUE(EncodeBinary(e, &value).ok());
      std::string key = rng() % 2 ? "k" + std::to_string(rng() % 5) : "";
      RecordView rv{e.id(), key, value, 0};
      auto r = (*log)->Append("t", std::span<const RecordView>(&rv, 1));
      ASSERT_TRUE(r.ok()) << r.status().ToString();
      ours.push_back({(*r)[0].partition, (*r)[0].offset, seq});
      ASSERT_TRUE((*journal)->Record({{"t", (*r)[0].partition, (*r)[0].offset, seq}}).ok());
    }
    EXPECT_EQ((*journal)->tracked(), std::min<uint64_t>(bound, ours.size()));
    Auditor auditor(sim, **log, **journal, ao);
    AuditReport clean = auditor.Run();
    EXPECT_TRUE(clean.findings.empty());
    EXPECT_EQ(clean.checked, std::min<uint64_t>(bound, ours.size()));
  }
  // Only verified acks made room; nothing went unchecked.
  EXPECT_EQ((*journal)->untracked(), 0u);
  EXPECT_EQ((*journal)->retired(), ours.size() - std::min<uint64_t>(bound, ours.size()));
  // Each partition keeps its newest acks, and the newest of all is tracked.
  AckJournal::Tracked tracked = (*journal)->Snapshot();
  for (const auto& [partition, offsets] : tracked["t"]) {
    std::vector<uint64_t> want;
    for (const Appended& a : ours) {
      if (a.partition == partition) want.push_back(a.seq);
    }
    want.erase(want.begin(), want.end() - static_cast<long>(offsets.size()));
    std::vector<uint64_t> have;
    for (const auto& [offset, seq] : offsets) have.push_back(seq);
    EXPECT_EQ(have, want) << "partition " << partition;
  }
  EXPECT_EQ(tracked["t"][ours.back().partition].rbegin()->second, ours.back().seq);
  // The newest event is lost: found.
  const Appended victim = ours.back();
  FaultLog faulty(**log, "t", victim.partition, Fault::kDrop, victim.offset);
  Auditor auditor(sim, faulty, **journal, ao);
  AuditReport report = auditor.Run();
  const std::vector<Finding> expected = {
      {FindingKind::kMissing, "t", victim.partition, victim.seq, victim.offset, victim.offset}};
  EXPECT_EQ(report.findings, expected);
  // And stays tracked (unverified) while newer acks need room: they take verified ones first.
  Event e;
  e.set_id("last");
  e.set_source("/test");
  e.set_type("t.happened");
  StampEvent(&e, *producer, ours.size() + 1);
  std::string value;
  ASSERT_TRUE(EncodeBinary(e, &value).ok());
  RecordView rv{e.id(), {}, value, 0};
  auto r = (*log)->Append("t", std::span<const RecordView>(&rv, 1));
  ASSERT_TRUE(r.ok());
  ASSERT_TRUE((*journal)->Record({{"t", (*r)[0].partition, (*r)[0].offset, ours.size() + 1}}).ok());
  AuditReport again = Auditor(sim, faulty, **journal, ao).Run();
  EXPECT_EQ(again.findings, expected);
}

TEST(AuditSimTest, SlidingWindowKeepsCheckingNewEvents) {
  for (uint64_t s : Seeds()) RunSlidingWindowSeed(s);
}

// The journal survives a reopen (what a restart of the sidecar sees), and a torn tail loses
// only the acks in it.
TEST(AuditJournalTest, ReopenKeepsAcks) {
  sim::SimEnv sim(1);
  {
    auto j = AckJournal::Open(sim, "/a", 10);
    ASSERT_TRUE(j.ok());
    ASSERT_TRUE((*j)->Record({{"t", 0, 0, 1}, {"t", 1, 0, 2}}).ok());
    ASSERT_TRUE((*j)->Sync().ok());
  }
  auto j = AckJournal::Open(sim, "/a", 10);
  ASSERT_TRUE(j.ok());
  EXPECT_EQ((*j)->tracked(), 2u);
  AckJournal::Tracked t = (*j)->Snapshot();
  EXPECT_EQ(t["t"][1].find(0)->second, 2u);
  // Past the bound, new acks are kept and old ones make room: nothing was verified, so the
  // oldest of the new acks' partition go, counted as untracked.
  std::vector<Ack> many;
  for (uint64_t i = 0; i < 20; ++i) many.push_back({"u", 0, i, i + 10});
  ASSERT_TRUE((*j)->Record(many).ok());
  EXPECT_EQ((*j)->tracked(), 10u);
  EXPECT_EQ((*j)->untracked(), 12u);
  t = (*j)->Snapshot();
  EXPECT_EQ(t["t"][0].size() + t["t"][1].size(), 2u);
  EXPECT_EQ(t["u"][0].size(), 8u);
  EXPECT_EQ(t["u"][0].begin()->first, 12u);
  // A reopen under a smaller bound keeps the newest of what the file holds.
  ASSERT_TRUE((*j)->Sync().ok());
  j = AckJournal::Open(sim, "/a", 4);
  ASSERT_TRUE(j.ok());
  EXPECT_EQ((*j)->tracked(), 4u);
}

// The log wrapper: stamps CloudEvents (through every append call), journals what was
// appended, leaves other values alone, records nothing for a deduplicated retry, and appends
// a batch the stamps made too large as it came.
TEST(AuditedLogTest, StampsJournalsAndNeverRefusesWhatTheLogTakes) {
  sim::SimEnv sim(1);
  LogOptions lo;
  lo.dir = "/data/log";
  auto base = Log::Open(sim, lo);
  ASSERT_TRUE(base.ok());
  auto journal = AckJournal::Open(sim, "/data/audit", 1000);
  ASSERT_TRUE(journal.ok());
  Stamper stamper("p0", 1);
  AuditedLog log(std::move(*base), stamper, **journal);
  TopicOptions to;
  to.partitions = 2;
  to.max_record_bytes = 400;
  ASSERT_TRUE(log.CreateTopic("t", to).ok());
  auto encoded = [](const std::string& id, size_t pad) {
    Event e;
    e.set_id(id);
    e.set_source("/s");
    e.set_type("t.e");
    EXPECT_TRUE(e.SetJsonData("\"" + std::string(pad, 'x') + "\"").ok());
    std::string v;
    EXPECT_TRUE(EncodeBinary(e, &v).ok());
    return v;
  };
  auto stored = [&](uint32_t p, uint64_t offset) {
    auto b = log.Read("t", p, offset, 1, 1 << 20);
    EXPECT_TRUE(b.ok() && !b->records.empty());
    return std::string(b->records[0].value);
  };
  const std::string small = encoded("a", 10);
  const std::string big = encoded("b", 0);
  const std::string too_big_stamped = encoded("c", 400 - 40 - big.size());  // fits unstamped
  ASSERT_LE(too_big_stamped.size() + 1, 400u);
  const std::string other = "not a cloudevent";
  // A record that is not a CloudEvent is appended unchanged; with an id (a dead letter has
  // one) its ack is journaled under the id's key, without one it is not audited.
  std::vector<RecordView> batch = {{"a", "k", small, 0}, {"o", "k", other, 0}, {"", "k", other, 0}};
  auto r = log.Append("t", batch);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  std::optional<Stamp> st = ReadStamp(stored((*r)[0].partition, (*r)[0].offset));
  ASSERT_TRUE(st.has_value());
  EXPECT_EQ(st->producer, "p0");
  EXPECT_EQ(st->seq, (uint64_t{1} << 40) + 1);
  EXPECT_EQ(stored((*r)[1].partition, (*r)[1].offset), other);
  EXPECT_EQ(stored((*r)[2].partition, (*r)[2].offset), other);
  EXPECT_EQ((*journal)->tracked(), 2u);
  const AckJournal::Tracked tracked = (*journal)->Snapshot();
  const AckJournal::Offsets& acks = tracked.at("t").at((*r)[1].partition);
  auto at_o = acks.find((*r)[1].offset);
  ASSERT_NE(at_o, acks.end());
  EXPECT_EQ(at_o->second, IdKey("o"));
  EXPECT_TRUE(IsIdKey(IdKey("o")));
  EXPECT_FALSE(IsIdKey(st->seq));
  // A retry of the same id is dropped by the log: nothing recorded.
  r = log.Append("t", std::span<const RecordView>(batch.data(), 2));
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE((*r)[0].duplicate);
  EXPECT_TRUE((*r)[1].duplicate);
  EXPECT_EQ((*journal)->tracked(), 2u);
  // Too large once stamped: appended as it came, not checked.
  RecordView c{"c", {}, too_big_stamped, 0};
  r = log.AppendToPartition("t", 1, std::span<const RecordView>(&c, 1));
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(stored(1, (*r)[0].offset), too_big_stamped);
  EXPECT_EQ((*journal)->tracked(), 2u);
  // The same through AppendAsync (the publish route's call).
  RecordView c2{"c2", {}, too_big_stamped, 0};
  std::optional<Result<std::vector<AppendResult>>> done;
  log.AppendAsync("t", std::span<const RecordView>(&c2, 1),
                  [&](Result<std::vector<AppendResult>> res) { done = std::move(res); });
  ASSERT_TRUE(done.has_value());
  ASSERT_TRUE(done->ok()) << done->status().ToString();
  EXPECT_EQ(stored((**done)[0].partition, (**done)[0].offset), too_big_stamped);
  RecordView b{"b", {}, big, 0};
  done.reset();
  log.AppendAsync("t", std::span<const RecordView>(&b, 1),
                  [&](Result<std::vector<AppendResult>> res) { done = std::move(res); });
  ASSERT_TRUE(done.has_value() && done->ok());
  EXPECT_EQ((*journal)->tracked(), 3u);
  // Still refused when the record is bad without its stamp too.
  const std::string huge = encoded("d", 1000);
  RecordView d{"d", {}, huge, 0};
  EXPECT_EQ(log.Append("t", std::span<const RecordView>(&d, 1)).status().code(),
            StatusCode::kInvalidArgument);
  // What was journaled audits clean.
  AuditorOptions ao;
  ao.producer = "p0";
  AuditReport report = Auditor(sim, log, **journal, ao).Run();
  EXPECT_EQ(report.checked, 3u);
  EXPECT_TRUE(report.findings.empty());
}

// The service runs on the Env's timers (virtual time here) and stops cleanly.
TEST(AuditServiceTest, RunsEveryIntervalOnTheEnvTimers) {
  sim::SimEnv sim(3);
  LogOptions lo;
  lo.dir = "/data/log";
  auto log = Log::Open(sim, lo);
  ASSERT_TRUE(log.ok());
  auto journal = AckJournal::Open(sim, "/data/audit", 100);
  ASSERT_TRUE(journal.ok());
  AuditorOptions ao;
  ao.producer = "p";
  AuditService service(sim, **log, **journal, ao, 1000);
  service.Start();
  sim.RunFor(int64_t{999} * 1'000'000);
  EXPECT_EQ(service.last().runs, 0u);
  sim.RunFor(int64_t{2001} * 1'000'000);
  EXPECT_EQ(service.last().runs, 3u);
  service.Stop();
  sim.RunFor(int64_t{5000} * 1'000'000);
  EXPECT_EQ(service.last().runs, 3u);
}

}  // namespace
}  // namespace converge::audit
