#include <gtest/gtest.h>

#include <functional>
#include <optional>
#include <stdlib.h>

#include <atomic>
#include <filesystem>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "converge/consumer_group.h"
#include "groups/testing/harness.h"

// GCC 12 reports a false -Wrestrict on `"literal" + std::string` (GCC bug 105329).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wrestrict"
#endif

namespace converge {
namespace {

using groups_testing::Harness;
using groups_testing::kMsNs;

#define ASSERT_OK(expr)                                   \
  do {                                                    \
    const auto& status_or_ = (expr);                      \
    ASSERT_TRUE(status_or_.ok()) << StatusOf(status_or_); \
  } while (0)
#define EXPECT_OK(expr)                                   \
  do {                                                    \
    const auto& status_or_ = (expr);                      \
    EXPECT_TRUE(status_or_.ok()) << StatusOf(status_or_); \
  } while (0)

std::string StatusOf(const Status& s) { return s.ToString(); }
template <typename T>
std::string StatusOf(const Result<T>& r) {
  return r.status().ToString();
}

constexpr char kTopic[] = "orders";
constexpr char kGroup[] = "billing";

GroupOptions FastOptions() {
  GroupOptions o;
  o.lease_ms = 1000;
  o.session_timeout_ms = 5000;
  o.max_deliveries = 3;
  o.dead_letter_retry_ms = 200;
  return o;
}

class GroupsTest : public ::testing::Test {
 protected:
  GroupsTest() : h_(1234) {}

  void SetUp() override {
    ASSERT_OK(h_.Open());
    ASSERT_OK(h_.CreateTopic(kTopic, 1));
  }

  void Create(const GroupOptions& o = FastOptions(), const std::string& group = kGroup) {
    ASSERT_OK(h_.groups->CreateGroup(kTopic, group, o));
  }
  Assignment Join(const std::string& member, const std::string& group = kGroup) {
    auto a = h_.groups->Join(kTopic, group, member);
    EXPECT_TRUE(a.ok()) << a.status().ToString();
    return a.ok() ? *a : Assignment{};
  }
  std::vector<Delivery> Fetch(const std::string& member, uint32_t max = 100,
                              const std::string& group = kGroup) {
    auto r = h_.groups->Fetch(kTopic, group, member, max, 1 << 20);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    if (!r.ok()) return {};
    keep_.push_back(r->storage);
    return r->deliveries;
  }
  std::vector<uint64_t> Offsets(const std::vector<Delivery>& ds) {
    std::vector<uint64_t> out;
    for (const Delivery& d : ds) out.push_back(d.offset);
    return out;
  }
  GroupDescription Describe(const std::string& group = kGroup) {
    auto d = h_.groups->DescribeGroup(kTopic, group);
    EXPECT_TRUE(d.ok()) << d.status().ToString();
    return d.ok() ? *d : GroupDescription{};
  }
  std::vector<DeadLetter> DeadLetters(const std::string& group = kGroup) {
    auto page = h_.groups->ListDeadLetters(kTopic, group, 0, 1000);
    EXPECT_TRUE(page.ok()) << page.status().ToString();
    return page.ok() ? page->dead_letters : std::vector<DeadLetter>{};
  }

  Harness h_;
  std::vector<std::vector<std::shared_ptr<const void>>> keep_;
};

TEST_F(GroupsTest, LeaseExpiryRedeliversWithNewLease) {
  Create();
  h_.Produce(kTopic, "k", "v0");
  Join("m1");
  auto first = Fetch("m1");
  ASSERT_EQ(first.size(), 1u);
  EXPECT_EQ(first[0].offset, 0u);
  EXPECT_EQ(first[0].attempt, 1u);
  EXPECT_EQ(first[0].value, "v0");
  EXPECT_EQ(first[0].lease_expires_at_micros, h_.env.clock().NowWallMicros() + 1'000'000);
  // Still leased just before expiry.
  h_.env.AdvanceTime(999 * kMsNs);
  EXPECT_TRUE(Fetch("m1").empty());
  h_.env.AdvanceTime(1 * kMsNs);
  auto second = Fetch("m1");
  ASSERT_EQ(second.size(), 1u);
  EXPECT_EQ(second[0].offset, 0u);
  EXPECT_EQ(second[0].attempt, 2u);
  EXPECT_NE(second[0].lease_id, first[0].lease_id);
  // The first lease is lost now; the second acks.
  Status lost = h_.groups->Ack(kTopic, kGroup, "m1", first[0].lease());
  EXPECT_EQ(lost.code(), StatusCode::kFailedPrecondition) << lost.ToString();
  EXPECT_OK(h_.groups->Ack(kTopic, kGroup, "m1", second[0].lease()));
  // Acking again is fine (already done).
  EXPECT_OK(h_.groups->Ack(kTopic, kGroup, "m1", second[0].lease()));
  EXPECT_EQ(Describe().partitions[0].committed, 1u);
  h_.env.AdvanceTime(5000 * kMsNs);
  Join("m1");
  EXPECT_TRUE(Fetch("m1").empty());
}

TEST_F(GroupsTest, ExtendedLeaseOutlivesItsFirstExpiryAndOnlyLiveLeasesExtend) {
  Create();
  h_.Produce(kTopic, "a", "v0");
  h_.Produce(kTopic, "b", "v1");
  Join("m1");
  auto first = Fetch("m1");
  ASSERT_EQ(first.size(), 2u);
  h_.env.AdvanceTime(800 * kMsNs);
  const LeaseRef wrong{0, first[1].offset, first[1].lease_id + 1000};
  const LeaseRef refs[] = {first[0].lease(), wrong};
  auto extended = h_.groups->ExtendLeases(kTopic, kGroup, "m1", refs, 5000);
  ASSERT_OK(extended);
  EXPECT_EQ(extended->extended, 1u);
  EXPECT_EQ(extended->lost, std::vector<size_t>{1});
  EXPECT_EQ(extended->lease_expires_at_micros[0], h_.env.clock().NowWallMicros() + 5'000'000);
  EXPECT_EQ(extended->lease_expires_at_micros[1], 0);
  // Past the first expiry: only the record not extended comes again.
  h_.env.AdvanceTime(1000 * kMsNs);
  auto again = Fetch("m1");
  ASSERT_EQ(again.size(), 1u);
  EXPECT_EQ(again[0].offset, first[1].offset);
  EXPECT_EQ(again[0].attempt, 2u);
  // The expired lease cannot be revived; the extended one is still held and acks.
  const LeaseRef expired[] = {first[1].lease()};
  auto revived = h_.groups->ExtendLeases(kTopic, kGroup, "m1", expired, 5000);
  ASSERT_OK(revived);
  EXPECT_EQ(revived->extended, 0u);
  EXPECT_EQ(revived->lost, std::vector<size_t>{0});
  h_.env.AdvanceTime(3000 * kMsNs);
  EXPECT_OK(h_.groups->Ack(kTopic, kGroup, "m1", first[0].lease()));
  EXPECT_OK(h_.groups->Ack(kTopic, kGroup, "m1", again[0].lease()));
  EXPECT_EQ(Describe().partitions[0].committed, 2u);
  // An acked lease is no longer held either.
  auto done = h_.groups->ExtendLeases(kTopic, kGroup, "m1", refs, 5000);
  ASSERT_OK(done);
  EXPECT_EQ(done->extended, 0u);
  // Bad input changes nothing.
  EXPECT_EQ(h_.groups->ExtendLeases(kTopic, kGroup, "m1", refs, 0).status().code(),
            StatusCode::kInvalidArgument);
  const LeaseRef bad_partition[] = {LeaseRef{7, 0, 1}};
  EXPECT_EQ(h_.groups->ExtendLeases(kTopic, kGroup, "m1", bad_partition, 100).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(h_.groups->ExtendLeases(kTopic, "nope", "m1", refs, 100).status().code(),
            StatusCode::kNotFound);
}

TEST_F(GroupsTest, LeaseExpiryThroughTimerInVirtualTime) {
  Create();
  h_.Produce(kTopic, "k", "v0");
  Join("m1");
  ASSERT_EQ(Fetch("m1").size(), 1u);
  int notified = 0;
  auto watch = h_.groups->WatchReady(kTopic, kGroup, [&] { ++notified; });
  ASSERT_OK(watch);
  auto due = h_.groups->NextDueMonotonicNanos(kTopic, kGroup);
  ASSERT_OK(due);
  ASSERT_TRUE(due->has_value());
  EXPECT_EQ(**due, h_.env.now_nanos() + 1000 * kMsNs);
  // The background tick notices the expiry and notifies the waiting subscriber.
  h_.env.RunFor(1100 * kMsNs);
  EXPECT_GT(notified, 0);
  auto again = Fetch("m1");
  ASSERT_EQ(again.size(), 1u);
  EXPECT_EQ(again[0].attempt, 2u);
}

TEST_F(GroupsTest, AckAndNackWithDelay) {
  Create();
  h_.Produce(kTopic, "a", "a0");
  h_.Produce(kTopic, "b", "b0");
  Join("m1");
  auto ds = Fetch("m1");
  ASSERT_EQ(ds.size(), 2u);
  EXPECT_OK(h_.groups->Ack(kTopic, kGroup, "m1", ds[1].lease()));
  NackOptions nack;
  nack.delay_ms = 500;
  nack.reason = "database busy";
  EXPECT_OK(h_.groups->Nack(kTopic, kGroup, "m1", ds[0].lease(), nack));
  EXPECT_EQ(Describe().partitions[0].delayed, 1u);
  EXPECT_EQ(Describe().partitions[0].acked_above_committed, 1u);
  auto due = h_.groups->NextDueMonotonicNanos(kTopic, kGroup);
  ASSERT_OK(due);
  EXPECT_EQ(**due, h_.env.now_nanos() + 500 * kMsNs);
  h_.env.AdvanceTime(499 * kMsNs);
  EXPECT_TRUE(Fetch("m1").empty());
  h_.env.AdvanceTime(1 * kMsNs);
  auto redo = Fetch("m1");
  ASSERT_EQ(redo.size(), 1u);
  EXPECT_EQ(redo[0].offset, 0u);
  EXPECT_EQ(redo[0].attempt, 2u);
  // A nack of a lost lease fails; nack delay bounds are checked.
  NackOptions too_long;
  too_long.delay_ms = FastOptions().max_nack_delay_ms + 1;
  EXPECT_EQ(h_.groups->Nack(kTopic, kGroup, "m1", redo[0].lease(), too_long).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(h_.groups->Nack(kTopic, kGroup, "m1", ds[0].lease(), {}).code(),
            StatusCode::kFailedPrecondition);
  EXPECT_OK(h_.groups->Ack(kTopic, kGroup, "m1", redo[0].lease()));
  EXPECT_EQ(Describe().partitions[0].committed, 2u);
}

TEST_F(GroupsTest, DeadLetterAfterMaxDeliveriesWithReasonAndCoordinates) {
  Create();
  h_.Produce(kTopic, "poison", "p0");
  h_.Produce(kTopic, "poison", "p1");
  h_.Produce(kTopic, "other", "o0");
  Join("m1");
  const int64_t start_wall = h_.env.clock().NowWallMicros();
  for (uint32_t attempt = 1; attempt <= 3; ++attempt) {
    auto ds = Fetch("m1");
    std::vector<Delivery> poison;
    for (const Delivery& d : ds) {
      if (d.key == "poison") poison.push_back(d);
      if (d.key == "other") EXPECT_OK(h_.groups->Ack(kTopic, kGroup, "m1", d.lease()));
    }
    ASSERT_EQ(poison.size(), 1u) << "attempt " << attempt;  // p1 waits behind p0
    EXPECT_EQ(poison[0].offset, 0u);
    EXPECT_EQ(poison[0].attempt, attempt);
    NackOptions nack;
    const std::string reason = "handler threw: attempt " + std::to_string(attempt);
    nack.reason = reason;
    EXPECT_OK(h_.groups->Nack(kTopic, kGroup, "m1", poison[0].lease(), nack));
  }
  // p0 is dead-lettered; p1 is next.
  auto ds = Fetch("m1");
  ASSERT_EQ(ds.size(), 1u);
  EXPECT_EQ(ds[0].offset, 1u);
  EXPECT_EQ(ds[0].attempt, 1u);
  auto dls = DeadLetters();
  ASSERT_EQ(dls.size(), 1u);
  const DeadLetter& dl = dls[0];
  EXPECT_EQ(dl.topic, kTopic);
  EXPECT_EQ(dl.partition, 0u);
  EXPECT_EQ(dl.offset, 0u);
  EXPECT_EQ(dl.delivery_count, 3u);
  EXPECT_EQ(dl.reason, "max deliveries (3) exceeded");
  EXPECT_EQ(dl.last_error, "handler threw: attempt 3");
  EXPECT_GE(dl.dead_lettered_at_micros, start_wall);
  EXPECT_FALSE(dl.permanent);
  EXPECT_FALSE(dl.replayed);
  EXPECT_EQ(dl.key, "poison");
  EXPECT_EQ(dl.value, "p0");
  const GroupDescription d = Describe();
  EXPECT_EQ(d.dead_letters, 1u);
  EXPECT_EQ(d.partitions[0].committed, 1u);
  EXPECT_EQ(d.dead_letter_topic, "_dlq.orders.billing");
}

TEST_F(GroupsTest, DeadLetterAfterRepeatedLeaseExpiry) {
  Create();
  h_.Produce(kTopic, "k", "v");
  Join("m1");
  for (int i = 0; i < 3; ++i) {
    ASSERT_EQ(Fetch("m1").size(), 1u);
    h_.env.AdvanceTime(1000 * kMsNs);
    ASSERT_OK(h_.groups->Heartbeat(kTopic, kGroup, "m1"));
  }
  EXPECT_TRUE(Fetch("m1").empty());
  auto dls = DeadLetters();
  ASSERT_EQ(dls.size(), 1u);
  EXPECT_EQ(dls[0].delivery_count, 3u);
  EXPECT_EQ(dls[0].last_error, "lease expired");
  EXPECT_EQ(Describe().partitions[0].committed, 1u);
}

TEST_F(GroupsTest, PoisonEventDeadLetteredDirectly) {
  Create();
  h_.Produce(kTopic, "k", "not json");
  h_.Produce(kTopic, "k", "fine");
  Join("m1");
  auto ds = Fetch("m1");
  ASSERT_EQ(ds.size(), 1u);
  NackOptions nack;
  nack.permanent = true;
  nack.reason = "cannot parse: unexpected 'n'";
  EXPECT_OK(h_.groups->Nack(kTopic, kGroup, "m1", ds[0].lease(), nack));
  auto dls = DeadLetters();
  ASSERT_EQ(dls.size(), 1u);
  EXPECT_TRUE(dls[0].permanent);
  EXPECT_EQ(dls[0].delivery_count, 1u);
  EXPECT_EQ(dls[0].reason, "rejected: cannot parse: unexpected 'n'");
  EXPECT_EQ(dls[0].last_error, "cannot parse: unexpected 'n'");
  EXPECT_EQ(dls[0].value, "not json");
  auto next = Fetch("m1");
  ASSERT_EQ(next.size(), 1u);
  EXPECT_EQ(next[0].value, "fine");
}

TEST_F(GroupsTest, ReasonIsCutToBoundAtUtf8Boundary) {
  GroupOptions o = FastOptions();
  o.max_reason_bytes = 16;
  Create(o);
  h_.Produce(kTopic, "k", "v");
  Join("m1");
  auto ds = Fetch("m1");
  NackOptions nack;
  nack.permanent = true;
  nack.reason = "123456789012345\xC3\xA9tail";  // the 2-byte 'é' straddles byte 16
  EXPECT_OK(h_.groups->Nack(kTopic, kGroup, "m1", ds[0].lease(), nack));
  auto dls = DeadLetters();
  ASSERT_EQ(dls.size(), 1u);
  EXPECT_EQ(dls[0].last_error, "123456789012345");
}

TEST_F(GroupsTest, DeadLetterAppendFailureNeverDrops) {
  Create();
  h_.Produce(kTopic, "k", "poison");
  h_.Produce(kTopic, "k", "after");
  Join("m1");
  auto ds = Fetch("m1");
  ASSERT_EQ(ds.size(), 1u);
  h_.faulty->FailAppends("_dlq.orders.billing", true);
  NackOptions nack;
  nack.permanent = true;
  nack.reason = "bad";
  Status s = h_.groups->Nack(kTopic, kGroup, "m1", ds[0].lease(), nack);
  EXPECT_EQ(s.code(), StatusCode::kUnavailable) << s.ToString();
  GroupDescription d = Describe();
  EXPECT_EQ(d.partitions[0].committed, 0u);
  EXPECT_EQ(d.partitions[0].dead_letter_pending, 1u);
  EXPECT_NE(d.partitions[0].last_error.find("dead-letter append"), std::string::npos);
  // The key stays blocked; the retries keep failing while the fault lasts.
  h_.env.RunFor(1000 * kMsNs);
  EXPECT_TRUE(Fetch("m1").empty());
  EXPECT_GE(h_.faulty->failed_appends(), 3u);
  EXPECT_TRUE(DeadLetters().empty());
  // A restart while pending redelivers the record (it was never committed).
  h_.Restart();
  ASSERT_OK(h_.Open());
  h_.faulty->FailAppends("_dlq.orders.billing", true);
  Join("m1");
  auto again = Fetch("m1");
  ASSERT_EQ(again.size(), 1u);
  EXPECT_EQ(again[0].value, "poison");
  EXPECT_EQ(h_.groups->Nack(kTopic, kGroup, "m1", again[0].lease(), nack).code(),
            StatusCode::kUnavailable);
  // Healed: the background retry appends it, commits it and unblocks the key.
  h_.faulty->FailAppends("_dlq.orders.billing", false);
  h_.env.RunFor(300 * kMsNs);
  EXPECT_EQ(DeadLetters().size(), 1u);
  EXPECT_EQ(Describe().partitions[0].committed, 1u);
  auto next = Fetch("m1");
  ASSERT_EQ(next.size(), 1u);
  EXPECT_EQ(next[0].value, "after");
}

TEST_F(GroupsTest, ListAndReplayDeadLetters) {
  Create();
  ASSERT_OK(h_.CreateTopic("orders-retry", 1));
  for (int i = 0; i < 3; ++i) h_.Produce(kTopic, "k" + std::to_string(i), "v" + std::to_string(i));
  Join("m1");
  NackOptions nack;
  nack.permanent = true;
  std::vector<std::string> reasons;
  reasons.reserve(3);
  for (const Delivery& d : Fetch("m1")) {
    reasons.push_back("bad " + std::string(d.value));
    nack.reason = reasons.back();
    EXPECT_OK(h_.groups->Nack(kTopic, kGroup, "m1", d.lease(), nack));
  }
  ASSERT_EQ(DeadLetters().size(), 3u);
  // Paging.
  auto page = h_.groups->ListDeadLetters(kTopic, kGroup, 1, 1);
  ASSERT_OK(page);
  ASSERT_EQ(page->dead_letters.size(), 1u);
  EXPECT_EQ(page->dead_letters[0].dead_letter_offset, 1u);
  EXPECT_EQ(page->next_offset, 2u);
  EXPECT_EQ(page->end_offset, 3u);

  // Replay two to the original topic: they come back through the group.
  ReplayOptions replay;
  replay.to_offset = 2;
  auto r = h_.groups->ReplayDeadLetters(kTopic, kGroup, replay);
  ASSERT_OK(r);
  EXPECT_EQ(r->replayed, 2u);
  EXPECT_EQ(r->next_offset, 2u);
  auto dls = DeadLetters();
  EXPECT_TRUE(dls[0].replayed);
  EXPECT_TRUE(dls[1].replayed);
  EXPECT_FALSE(dls[2].replayed);
  auto back = Fetch("m1");
  ASSERT_EQ(back.size(), 2u);
  EXPECT_EQ(back[0].value, "v0");
  EXPECT_EQ(back[0].key, "k0");
  EXPECT_EQ(back[0].offset, 3u);
  EXPECT_EQ(back[1].value, "v1");
  for (const Delivery& d : back) EXPECT_OK(h_.groups->Ack(kTopic, kGroup, "m1", d.lease()));

  // Replaying everything again skips the two already replayed.
  r = h_.groups->ReplayDeadLetters(kTopic, kGroup, ReplayOptions{});
  ASSERT_OK(r);
  EXPECT_EQ(r->replayed, 1u);
  EXPECT_EQ(r->skipped_already_replayed, 2u);
  r = h_.groups->ReplayDeadLetters(kTopic, kGroup, ReplayOptions{});
  ASSERT_OK(r);
  EXPECT_EQ(r->replayed, 0u);
  EXPECT_EQ(r->skipped_already_replayed, 3u);
  EXPECT_EQ(Describe().dead_letters_replayed, 3u);

  // Forced replay to a chosen topic.
  replay = ReplayOptions{};
  replay.include_replayed = true;
  replay.target_topic = "orders-retry";
  r = h_.groups->ReplayDeadLetters(kTopic, kGroup, replay);
  ASSERT_OK(r);
  EXPECT_EQ(r->replayed, 3u);
  auto info = h_.log->DescribeTopic("orders-retry");
  ASSERT_OK(info);
  EXPECT_EQ(info->partitions[0].end_offset, 3u);

  // Marks survive a restart.
  h_.Restart();
  ASSERT_OK(h_.Open());
  r = h_.groups->ReplayDeadLetters(kTopic, kGroup, ReplayOptions{});
  ASSERT_OK(r);
  EXPECT_EQ(r->replayed, 0u);
  EXPECT_EQ(r->skipped_already_replayed, 3u);
}

TEST_F(GroupsTest, ReplayWorkPerCallIsBounded) {
  ConsumerGroupsOptions o = groups_testing::DefaultGroupsOptions();
  o.replay_max_records = 2;
  ASSERT_OK(h_.OpenGroups(o));
  Create();
  for (int i = 0; i < 25; ++i) h_.Produce(kTopic, "k" + std::to_string(i), "v");
  Join("m1");
  NackOptions nack;
  nack.permanent = true;
  while (DeadLetters().size() < 25) {
    for (const Delivery& d : Fetch("m1")) {
      EXPECT_OK(h_.groups->Nack(kTopic, kGroup, "m1", d.lease(), nack));
    }
  }
  ReplayOptions replay;
  replay.target_topic = kTopic;
  replay.max_records = 100;  // clamped to 2
  uint64_t replayed = 0;
  for (int call = 0; call < 13; ++call) {
    auto r = h_.groups->ReplayDeadLetters(kTopic, kGroup, replay);
    ASSERT_OK(r);
    EXPECT_LE(r->replayed, 2u);
    replayed += r->replayed;
    replay.from_offset = r->next_offset;
  }
  EXPECT_EQ(replayed, 25u);
  // Everything is marked now: a scan from 0 examines at most 20 per call.
  auto r = h_.groups->ReplayDeadLetters(kTopic, kGroup, ReplayOptions{});
  ASSERT_OK(r);
  EXPECT_EQ(r->replayed, 0u);
  EXPECT_EQ(r->skipped_already_replayed, 20u);
  EXPECT_EQ(r->next_offset, 20u);
}

TEST_F(GroupsTest, ReplayToUnknownTopicFailsWithoutMarking) {
  Create();
  h_.Produce(kTopic, "k", "v");
  Join("m1");
  NackOptions nack;
  nack.permanent = true;
  auto ds = Fetch("m1");
  EXPECT_OK(h_.groups->Nack(kTopic, kGroup, "m1", ds[0].lease(), nack));
  ReplayOptions replay;
  replay.target_topic = "nope";
  auto r = h_.groups->ReplayDeadLetters(kTopic, kGroup, replay);
  EXPECT_EQ(r.status().code(), StatusCode::kNotFound) << r.status().ToString();
  EXPECT_FALSE(DeadLetters()[0].replayed);
}

TEST_F(GroupsTest, PerKeyOrderAcrossConsumers) {
  GroupOptions o = FastOptions();
  Create(o);
  h_.Produce(kTopic, "a", "a0");
  h_.Produce(kTopic, "a", "a1");
  h_.Produce(kTopic, "b", "b0");
  h_.Produce(kTopic, "a", "a2");
  h_.Produce(kTopic, "b", "b1");
  Join("m1");
  // One partition: only m1 is assigned; a second member gets nothing to fetch.
  Join("m2");
  auto m1 = Fetch("m1", 1);
  auto more = Fetch("m1", 10);
  EXPECT_EQ(Offsets(m1), (std::vector<uint64_t>{0}));
  EXPECT_EQ(Offsets(more), (std::vector<uint64_t>{2}));  // a1 waits for a0, b1 for b0
  EXPECT_TRUE(Fetch("m2").empty());
  EXPECT_OK(h_.groups->Ack(kTopic, kGroup, "m1", more[0].lease()));
  EXPECT_EQ(Offsets(Fetch("m1")), (std::vector<uint64_t>{4}));
  EXPECT_OK(h_.groups->Ack(kTopic, kGroup, "m1", m1[0].lease()));
  EXPECT_EQ(Offsets(Fetch("m1")), (std::vector<uint64_t>{1}));
}

TEST_F(GroupsTest, RebalanceOnJoinLeaveAndSessionExpiry) {
  ASSERT_OK(h_.CreateTopic("wide", 4));
  GroupOptions o = FastOptions();
  o.lease_ms = 60'000;
  ASSERT_OK(h_.groups->CreateGroup("wide", "g", o));
  for (uint32_t p = 0; p < 4; ++p) h_.ProduceTo("wide", p, "k", "v" + std::to_string(p));
  auto a1 = h_.groups->Join("wide", "g", "m1");
  ASSERT_OK(a1);
  EXPECT_EQ(a1->partitions, (std::vector<uint32_t>{0, 1, 2, 3}));
  auto a2 = h_.groups->Join("wide", "g", "m2");
  ASSERT_OK(a2);
  EXPECT_EQ(a2->partitions, (std::vector<uint32_t>{1, 3}));
  EXPECT_GT(a2->generation, a1->generation);
  auto hb = h_.groups->Heartbeat("wide", "g", "m1");
  ASSERT_OK(hb);
  EXPECT_EQ(hb->partitions, (std::vector<uint32_t>{0, 2}));
  EXPECT_EQ(hb->generation, a2->generation);

  auto f1 = h_.groups->Fetch("wide", "g", "m1", 10, 1 << 20);
  ASSERT_OK(f1);
  ASSERT_EQ(f1->deliveries.size(), 2u);
  auto f2 = h_.groups->Fetch("wide", "g", "m2", 10, 1 << 20);
  ASSERT_OK(f2);
  ASSERT_EQ(f2->deliveries.size(), 2u);

  // m1 leaves: its leases are released at once (not counted as attempts), m2 takes over.
  ASSERT_OK(h_.groups->Leave("wide", "g", "m1"));
  auto f3 = h_.groups->Fetch("wide", "g", "m2", 10, 1 << 20);
  ASSERT_OK(f3);
  ASSERT_EQ(f3->deliveries.size(), 2u);
  for (const Delivery& d : f3->deliveries) {
    EXPECT_TRUE(d.partition == 0 || d.partition == 2);
    EXPECT_EQ(d.attempt, 1u);
  }
  auto described = h_.groups->DescribeGroup("wide", "g");
  ASSERT_OK(described);
  ASSERT_EQ(described->members.size(), 1u);
  EXPECT_EQ(described->members[0].in_flight, 4u);

  // m3 joins; m2 stops calling: after the session timeout it is removed and its leases expire.
  ASSERT_OK(h_.groups->Join("wide", "g", "m3"));
  for (int i = 0; i < 6; ++i) {
    h_.env.AdvanceTime(1000 * kMsNs);
    ASSERT_OK(h_.groups->Heartbeat("wide", "g", "m3"));
  }
  EXPECT_EQ(h_.groups->Heartbeat("wide", "g", "m2").status().code(),
            StatusCode::kFailedPrecondition);
  auto a3 = h_.groups->Heartbeat("wide", "g", "m3");
  ASSERT_OK(a3);
  EXPECT_EQ(a3->partitions, (std::vector<uint32_t>{0, 1, 2, 3}));
  auto f4 = h_.groups->Fetch("wide", "g", "m3", 10, 1 << 20);
  ASSERT_OK(f4);
  EXPECT_EQ(f4->deliveries.size(), 4u);
  // Partitions 1 and 3: m2's first delivery expired with its session. Partitions 0 and 2: the
  // release by m1 did not count, m2's delivery did.
  for (const Delivery& d : f4->deliveries) EXPECT_EQ(d.attempt, 2u);
  // Fetch by a non-member is refused.
  EXPECT_EQ(h_.groups->Fetch("wide", "g", "m2", 10, 1 << 20).status().code(),
            StatusCode::kFailedPrecondition);
}

TEST_F(GroupsTest, SeekByOffsetAndTime) {
  Create();
  std::vector<int64_t> times;
  for (int i = 0; i < 10; ++i) {
    times.push_back(h_.env.clock().NowWallMicros());
    h_.Produce(kTopic, "k" + std::to_string(i), "v" + std::to_string(i));
    h_.env.AdvanceTime(10 * kMsNs);
  }
  Join("m1");
  auto all = Fetch("m1");
  ASSERT_EQ(all.size(), 10u);
  std::vector<LeaseRef> leases;
  for (const Delivery& d : all) leases.push_back(d.lease());
  auto acked = h_.groups->AckBatch(kTopic, kGroup, "m1", leases);
  ASSERT_OK(acked);
  EXPECT_EQ(acked->acked, 10u);
  EXPECT_EQ(Describe().partitions[0].committed, 10u);
  EXPECT_EQ(Describe().total_lag, 0u);

  SeekTarget to_offset;
  to_offset.kind = SeekTarget::Kind::kOffset;
  to_offset.offset = 3;
  ASSERT_OK(h_.groups->Seek(kTopic, kGroup, to_offset));
  EXPECT_EQ(Describe().partitions[0].committed, 3u);
  EXPECT_EQ(Describe().partitions[0].lag, 7u);
  EXPECT_EQ(Offsets(Fetch("m1", 2)), (std::vector<uint64_t>{3, 4}));

  SeekTarget to_time;
  to_time.kind = SeekTarget::Kind::kTime;
  to_time.time_micros = times[6];
  ASSERT_OK(h_.groups->Seek(kTopic, kGroup, to_time));
  EXPECT_EQ(Offsets(Fetch("m1", 2)), (std::vector<uint64_t>{6, 7}));
  // The leases from before the seek are lost.
  EXPECT_EQ(h_.groups->Ack(kTopic, kGroup, "m1", leases[3]).code(), StatusCode::kOk)
      << "offset 3 is below the new position: done";

  SeekTarget latest;
  latest.kind = SeekTarget::Kind::kLatest;
  ASSERT_OK(h_.groups->Seek(kTopic, kGroup, latest));
  EXPECT_TRUE(Fetch("m1").empty());
  SeekTarget earliest;
  earliest.kind = SeekTarget::Kind::kEarliest;
  ASSERT_OK(h_.groups->Seek(kTopic, kGroup, earliest));
  EXPECT_EQ(Fetch("m1").size(), 10u);
  // Seek position is durable.
  h_.Crash();
  ASSERT_OK(h_.Open());
  EXPECT_EQ(Describe().partitions[0].committed, 0u);
  SeekTarget bad;
  bad.partition = 7;
  EXPECT_EQ(h_.groups->Seek(kTopic, kGroup, bad).code(), StatusCode::kInvalidArgument);
}

TEST_F(GroupsTest, StartPositions) {
  for (int i = 0; i < 5; ++i) h_.Produce(kTopic, "k", "v" + std::to_string(i));
  GroupOptions latest = FastOptions();
  latest.start = StartPosition::kLatest;
  Create(latest, "late");
  GroupOptions at = FastOptions();
  at.start = StartPosition::kOffset;
  at.start_offset = 3;
  Create(at, "at3");
  GroupOptions early = FastOptions();
  Create(early, "early");
  Join("m", "late");
  Join("m", "at3");
  Join("m", "early");
  EXPECT_TRUE(Fetch("m", 100, "late").empty());
  EXPECT_EQ(Offsets(Fetch("m", 100, "at3")), (std::vector<uint64_t>{3}));
  EXPECT_EQ(Offsets(Fetch("m", 100, "early")), (std::vector<uint64_t>{0}));
  h_.Produce(kTopic, "k2", "new");
  EXPECT_EQ(Offsets(Fetch("m", 100, "late")), (std::vector<uint64_t>{5}));
  EXPECT_EQ(h_.groups->ListGroups(kTopic), (std::vector<std::string>{"at3", "early", "late"}));
}

TEST_F(GroupsTest, CommittedOffsetsAndAckedAboveSurviveRestart) {
  Create();
  for (int i = 0; i < 6; ++i) h_.Produce(kTopic, "k" + std::to_string(i), "v");
  Join("m1");
  auto ds = Fetch("m1");
  ASSERT_EQ(ds.size(), 6u);
  // Ack 0, 1, 3, 5: committed 2, acked above {3, 5}.
  for (int i : {0, 1, 3, 5}) EXPECT_OK(h_.groups->Ack(kTopic, kGroup, "m1", ds[i].lease()));
  h_.Crash();
  ASSERT_OK(h_.Open());
  EXPECT_EQ(Describe().partitions[0].committed, 2u);
  Join("m1");
  EXPECT_EQ(Offsets(Fetch("m1")), (std::vector<uint64_t>{2, 4}));
}

// Regression: an ack of a record already done in memory returned OK although the commit that
// made it done had failed, so a "durable" ack was redelivered after the crash.
TEST_F(GroupsTest, AckOfAlreadyDoneRecordIsOkOnlyWhenDurable) {
  Create();
  h_.Produce(kTopic, "k", "v");
  Join("m1");
  auto ds = Fetch("m1");
  ASSERT_EQ(ds.size(), 1u);
  h_.env.sim_fs().CrashAfterOps(1);  // the journal write of the ack fails
  EXPECT_EQ(h_.groups->Ack(kTopic, kGroup, "m1", ds[0].lease()).code(), StatusCode::kInternal);
  // Done in memory, not durable: a second ack must not claim otherwise.
  EXPECT_EQ(h_.groups->Ack(kTopic, kGroup, "m1", ds[0].lease()).code(), StatusCode::kInternal);
  h_.Crash();
  ASSERT_OK(h_.Open());
  Join("m1");
  auto again = Fetch("m1");
  ASSERT_EQ(again.size(), 1u);
  EXPECT_EQ(again[0].offset, 0u);
  EXPECT_OK(h_.groups->Ack(kTopic, kGroup, "m1", again[0].lease()));
  // Once durable, acking again is OK and the record stays done across a crash.
  EXPECT_OK(h_.groups->Ack(kTopic, kGroup, "m1", again[0].lease()));
  h_.Crash();
  ASSERT_OK(h_.Open());
  Join("m1");
  EXPECT_TRUE(Fetch("m1").empty());
}

// AckBatchAsync (kSync) neither syncs nor blocks on the calling thread: its commit goes to the
// background, where one task syncs every ack queued meanwhile and then answers them all. A
// refused batch is answered at once; a failed sync refuses every waiting ack, and a refused
// ack changes nothing (the records are delivered again after a crash).
TEST_F(GroupsTest, AckBatchAsyncSharesOneBackgroundSyncAndRefusesLikeAckBatch) {
  std::vector<std::function<void()>> tasks;
  ConsumerGroupsOptions o = groups_testing::DefaultGroupsOptions();
  o.background = [&tasks](std::function<void()> task) { tasks.push_back(std::move(task)); };
  ASSERT_OK(h_.OpenGroups(o));
  Create();
  for (int i = 0; i < 5; ++i) h_.Produce(kTopic, "k" + std::to_string(i), "v");
  Join("m1");
  auto run_tasks = [&tasks] {
    while (!tasks.empty()) {
      std::function<void()> task = std::move(tasks.front());
      tasks.erase(tasks.begin());
      task();
    }
  };
  for (bool sync_fails : {true, false}) {
    SCOPED_TRACE(sync_fails ? "the sync fails" : "the sync succeeds");
    auto ds = Fetch("m1");
    ASSERT_EQ(ds.size(), 5u);
    std::vector<LeaseRef> refs;
    for (const Delivery& d : ds) refs.push_back(d.lease());
    std::vector<std::optional<Result<AckBatchResult>>> answers(refs.size());
    for (size_t i = 0; i < refs.size(); ++i) {
      h_.groups->AckBatchAsync(kTopic, kGroup, "m1", std::span<const LeaseRef>(&refs[i], 1),
                               [&answers, i](Result<AckBatchResult> r) { answers[i] = r; });
    }
    for (const auto& a : answers) EXPECT_FALSE(a.has_value()) << "answered before the sync";
    EXPECT_EQ(tasks.size(), 1u);  // one commit task for all five

    const LeaseRef bad{7, 0, refs[0].lease_id};
    std::optional<Result<AckBatchResult>> refused;
    h_.groups->AckBatchAsync(kTopic, kGroup, "m1", std::span<const LeaseRef>(&bad, 1),
                             [&refused](Result<AckBatchResult> r) { refused = r; });
    ASSERT_TRUE(refused.has_value());
    EXPECT_EQ(refused->status().code(), StatusCode::kInvalidArgument);

    if (sync_fails) h_.env.sim_fs().CrashAfterOps(1);  // the journal write fails
    run_tasks();
    for (const auto& a : answers) {
      ASSERT_TRUE(a.has_value());
      if (sync_fails) {
        EXPECT_EQ(a->status().code(), StatusCode::kInternal);
      } else {
        ASSERT_OK(*a);
        EXPECT_EQ((*a)->acked, 1u);
      }
    }
    h_.Crash();
    ASSERT_OK(h_.OpenGroups(o));
    Join("m1");
    // Refused acks changed nothing (the next round fetches all five again); acks answered OK
    // were durable.
    if (!sync_fails) {
      EXPECT_TRUE(Fetch("m1").empty());
    }
  }
}

TEST_F(GroupsTest, PeriodicCommitLosesOnlyTheWindowNeverRecords) {
  ConsumerGroupsOptions o = groups_testing::DefaultGroupsOptions();
  o.commit_mode = CommitMode::kPeriodic;
  o.commit_interval_ms = 100;
  ASSERT_OK(h_.OpenGroups(o));
  Create();
  for (int i = 0; i < 4; ++i) h_.Produce(kTopic, "k" + std::to_string(i), "v");
  Join("m1");
  auto ds = Fetch("m1");
  ASSERT_EQ(ds.size(), 4u);
  EXPECT_OK(h_.groups->Ack(kTopic, kGroup, "m1", ds[0].lease()));
  EXPECT_OK(h_.groups->Ack(kTopic, kGroup, "m1", ds[1].lease()));
  h_.env.RunFor(150 * kMsNs);                                      // the periodic commit runs
  EXPECT_OK(h_.groups->Ack(kTopic, kGroup, "m1", ds[2].lease()));  // within the window
  h_.Crash();
  ASSERT_OK(h_.OpenGroups(o));
  Join("m1");
  EXPECT_EQ(Offsets(Fetch("m1")), (std::vector<uint64_t>{2, 3}));
}

TEST_F(GroupsTest, DamagedLogRangeIsSkippedAndReportedNotStalled) {
  Create();
  for (int i = 0; i < 5; ++i)
    h_.Produce(kTopic, "k" + std::to_string(i), "payload-" + std::to_string(i));
  const std::string segment = "/data/log/topics/orders/0000/00000000000000000000.log";
  auto content = h_.env.fs().ReadFileToString(segment);
  ASSERT_OK(content);
  const size_t at = content->find("payload-2");
  ASSERT_NE(at, std::string::npos);
  ASSERT_OK(h_.env.sim_fs().CorruptByte(segment, at, 0x01));
  Join("m1");
  std::vector<uint64_t> seen;
  for (int i = 0; i < 5 && seen.size() < 4; ++i) {
    for (const Delivery& d : Fetch("m1")) {
      seen.push_back(d.offset);
      EXPECT_OK(h_.groups->Ack(kTopic, kGroup, "m1", d.lease()));
    }
  }
  EXPECT_EQ(seen, (std::vector<uint64_t>{0, 1, 3, 4}));
  const GroupDescription d = Describe();
  EXPECT_EQ(d.partitions[0].committed, 5u);
  EXPECT_NE(d.partitions[0].last_error.find("skipped damaged records [2, 3)"), std::string::npos)
      << d.partitions[0].last_error;
}

TEST_F(GroupsTest, BoundsAreEnforced) {
  ASSERT_OK(h_.CreateTopic("wide", 2));
  GroupOptions o = FastOptions();
  o.max_in_flight_per_partition = 3;
  o.max_in_flight_per_member = 5;
  o.max_members = 2;
  ASSERT_OK(h_.groups->CreateGroup("wide", "g", o));
  for (int i = 0; i < 20; ++i) h_.ProduceTo("wide", i % 2, "k" + std::to_string(i), "0123456789");
  ASSERT_OK(h_.groups->Join("wide", "g", "m1"));
  ASSERT_OK(h_.groups->Join("wide", "g", "m2"));
  EXPECT_EQ(h_.groups->Join("wide", "g", "m3").status().code(), StatusCode::kResourceExhausted);
  // m2 has partition 1 only: at most 3 in flight there.
  auto f = h_.groups->Fetch("wide", "g", "m2", 100, 1 << 20);
  ASSERT_OK(f);
  EXPECT_EQ(f->deliveries.size(), 3u);
  ASSERT_OK(h_.groups->Leave("wide", "g", "m2"));
  // m1 has both partitions now: 3 + 3 capped by the member bound of 5.
  f = h_.groups->Fetch("wide", "g", "m1", 100, 1 << 20);
  ASSERT_OK(f);
  EXPECT_EQ(f->deliveries.size(), 5u);
  // Fetch bytes: each record is 2..3 + 10 bytes; at least one is returned.
  ASSERT_OK(h_.groups->Seek("wide", "g", SeekTarget{SeekTarget::Kind::kEarliest, 0, 0, {}}));
  f = h_.groups->Fetch("wide", "g", "m1", 100, 1);
  ASSERT_OK(f);
  EXPECT_EQ(f->deliveries.size(), 1u);
  f = h_.groups->Fetch("wide", "g", "m1", 100, 26);
  ASSERT_OK(f);
  EXPECT_EQ(f->deliveries.size(), 2u);
  f = h_.groups->Fetch("wide", "g", "m1", 1, 1 << 20);
  ASSERT_OK(f);
  EXPECT_EQ(f->deliveries.size(), 1u);
  EXPECT_EQ(h_.groups->Fetch("wide", "g", "m1", 0, 1).status().code(),
            StatusCode::kInvalidArgument);

  // Pending bound: a blocked key cannot make the window grow past max_pending.
  GroupOptions tight = FastOptions();
  tight.max_in_flight_per_partition = 2;
  tight.max_pending_per_partition = 4;
  Create(tight, "tight");
  for (int i = 0; i < 10; ++i) h_.Produce(kTopic, "same", "v");
  Join("m", "tight");
  EXPECT_EQ(Fetch("m", 100, "tight").size(), 1u);
  EXPECT_EQ(Describe("tight").partitions[0].pending, 4u);

  // Options and names are validated.
  GroupOptions bad = FastOptions();
  bad.lease_ms = 0;
  EXPECT_EQ(h_.groups->CreateGroup(kTopic, "x", bad).code(), StatusCode::kInvalidArgument);
  bad = FastOptions();
  bad.max_pending_per_partition = bad.max_in_flight_per_partition - 1;
  EXPECT_EQ(h_.groups->CreateGroup(kTopic, "x", bad).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(h_.groups->CreateGroup(kTopic, "bad.name", FastOptions()).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(h_.groups->CreateGroup(kTopic, std::string(65, 'a'), FastOptions()).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(h_.groups->CreateGroup("missing", "x", FastOptions()).code(), StatusCode::kNotFound);
  EXPECT_EQ(h_.groups->CreateGroup(kTopic, "tight", FastOptions()).code(),
            StatusCode::kAlreadyExists);
  EXPECT_EQ(h_.groups->Join(kTopic, "tight", "bad member!").status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(h_.groups->Join(kTopic, "nope", "m").status().code(), StatusCode::kNotFound);
}

TEST_F(GroupsTest, MaxGroupsIsEnforced) {
  ConsumerGroupsOptions o = groups_testing::DefaultGroupsOptions();
  o.max_groups = 2;
  ASSERT_OK(h_.OpenGroups(o));
  Create(FastOptions(), "g1");
  Create(FastOptions(), "g2");
  EXPECT_EQ(h_.groups->CreateGroup(kTopic, "g3", FastOptions()).code(),
            StatusCode::kResourceExhausted);
}

TEST_F(GroupsTest, DescribeReportsLagAndInFlight) {
  Create();
  for (int i = 0; i < 5; ++i) h_.Produce(kTopic, "k" + std::to_string(i), "v");
  Join("m1");
  auto ds = Fetch("m1", 2);
  GroupDescription d = Describe();
  ASSERT_EQ(d.partitions.size(), 1u);
  EXPECT_EQ(d.partitions[0].end_offset, 5u);
  EXPECT_EQ(d.partitions[0].committed, 0u);
  EXPECT_EQ(d.partitions[0].lag, 5u);
  EXPECT_EQ(d.partitions[0].in_flight, 2u);
  EXPECT_EQ(d.partitions[0].member, "m1");
  ASSERT_EQ(d.members.size(), 1u);
  EXPECT_EQ(d.members[0].in_flight, 2u);
  EXPECT_OK(h_.groups->Ack(kTopic, kGroup, "m1", ds[0].lease()));
  d = Describe();
  EXPECT_EQ(d.partitions[0].lag, 4u);
  EXPECT_EQ(d.total_lag, 4u);
}

TEST_F(GroupsTest, WatchReadyFiresOnAppendAndOnRelease) {
  Create();
  Join("m1");
  int calls = 0;
  auto watch = h_.groups->WatchReady(kTopic, kGroup, [&] { ++calls; });
  ASSERT_OK(watch);
  h_.Produce(kTopic, "k", "v");
  EXPECT_GE(calls, 1);
  const int after_append = calls;
  auto ds = Fetch("m1");
  ASSERT_EQ(ds.size(), 1u);
  EXPECT_OK(h_.groups->Nack(kTopic, kGroup, "m1", ds[0].lease(), {}));
  EXPECT_GT(calls, after_append);
  watch->reset();
  const int before = calls;
  h_.Produce(kTopic, "k", "v");
  EXPECT_EQ(calls, before);
}

// A member watcher is told which member a change concerns, so a waiter per member wakes only
// for what it can fetch: records appended or acked past in a partition go to its owner, a
// rebalance to the members given new partitions; changes of the whole group name nobody ("").
TEST_F(GroupsTest, WatchReadyByMemberNamesOnlyTheMembersAChangeConcerns) {
  Create();
  for (const char* m : {"m1", "m2", "m3", "m4"}) Join(m);  // m1 sorts first: it owns p0
  std::map<std::string, int> told;
  auto watch = h_.groups->WatchReadyByMember(kTopic, kGroup,
                                             [&](std::string_view m) { ++told[std::string(m)]; });
  ASSERT_OK(watch);
  h_.Produce(kTopic, "k1", "v");
  h_.Produce(kTopic, "k1", "w");  // behind v (same key)
  EXPECT_EQ(told, (std::map<std::string, int>{{"m1", 2}}));
  told.clear();
  auto ds = Fetch("m1");
  ASSERT_EQ(ds.size(), 1u);
  EXPECT_OK(h_.groups->Ack(kTopic, kGroup, "m1", ds[0].lease()));  // unblocks w, for m1
  EXPECT_EQ(told, (std::map<std::string, int>{{"m1", 1}}));
  told.clear();
  ASSERT_OK(h_.groups->Leave(kTopic, kGroup, "m1"));  // p0 goes to m2 (m3 and m4 stay idle)
  EXPECT_EQ(told, (std::map<std::string, int>{{"m2", 1}}));
  told.clear();
  ds = Fetch("m2");
  ASSERT_EQ(ds.size(), 1u);
  EXPECT_OK(h_.groups->Nack(kTopic, kGroup, "m2", ds[0].lease(), {}));
  EXPECT_EQ(told, (std::map<std::string, int>{{"", 1}}));
  told.clear();
  watch->reset();
  h_.Produce(kTopic, "k2", "x");
  EXPECT_TRUE(told.empty());
}

TEST_F(GroupsTest, DeleteGroupProtectsUnreplayedDeadLetters) {
  Create();
  h_.Produce(kTopic, "k", "v");
  Join("m1");
  auto ds = Fetch("m1");
  NackOptions nack;
  nack.permanent = true;
  EXPECT_OK(h_.groups->Nack(kTopic, kGroup, "m1", ds[0].lease(), nack));
  EXPECT_EQ(h_.groups->DeleteGroup(kTopic, kGroup).code(), StatusCode::kFailedPrecondition);
  EXPECT_OK(h_.groups->DeleteGroup(kTopic, kGroup, /*force=*/true));
  EXPECT_EQ(h_.log->DescribeTopic("_dlq.orders.billing").status().code(), StatusCode::kNotFound);
  EXPECT_TRUE(h_.groups->ListGroups(kTopic).empty());
  EXPECT_EQ(h_.groups->Fetch(kTopic, kGroup, "m1", 1, 1).status().code(), StatusCode::kNotFound);
  // Deletion is durable.
  h_.Crash();
  ASSERT_OK(h_.Open());
  EXPECT_TRUE(h_.groups->ListGroups(kTopic).empty());
  // And the name can be used again, from scratch.
  Create();
  Join("m1");
  EXPECT_EQ(Offsets(Fetch("m1")), (std::vector<uint64_t>{0}));
}

TEST_F(GroupsTest, SecondInstanceOnSameDirIsRefused) {
  auto second = ConsumerGroups::Open(h_.env, *h_.faulty, groups_testing::DefaultGroupsOptions());
  EXPECT_EQ(second.status().code(), StatusCode::kFailedPrecondition) << second.status().ToString();
}

TEST_F(GroupsTest, CorruptSnapshotIsDataLossNotAGuess) {
  Create();
  h_.Restart();
  ASSERT_OK(h_.env.sim_fs().CorruptByte("/data/groups/SNAPSHOT", 10, 0x40));
  ASSERT_OK(h_.OpenLog());
  auto g = ConsumerGroups::Open(h_.env, *h_.faulty, groups_testing::DefaultGroupsOptions());
  EXPECT_EQ(g.status().code(), StatusCode::kDataLoss) << g.status().ToString();
}

TEST_F(GroupsTest, JournalCompactsPastItsBound) {
  ConsumerGroupsOptions o = groups_testing::DefaultGroupsOptions();
  o.journal_max_bytes = 4096;
  ASSERT_OK(h_.OpenGroups(o));
  Create();
  for (int i = 0; i < 500; ++i) h_.Produce(kTopic, "k" + std::to_string(i % 7), "v");
  Join("m1");
  int acked = 0;
  while (acked < 500) {
    auto ds = Fetch("m1");
    ASSERT_FALSE(ds.empty());
    for (const Delivery& d : ds) {
      EXPECT_OK(h_.groups->Ack(kTopic, kGroup, "m1", d.lease()));
      ++acked;
    }
  }
  auto size = h_.env.fs().GetFileSize("/data/groups/SNAPSHOT");
  ASSERT_OK(size);
  auto names = h_.env.fs().ListDir("/data/groups");
  ASSERT_OK(names);
  int journals = 0;
  for (const auto& n : *names) {
    if (n.rfind("journal-", 0) == 0) {
      ++journals;
      auto js = h_.env.fs().GetFileSize("/data/groups/" + n);
      ASSERT_OK(js);
      EXPECT_LT(*js, 4096u + 1024u);
    }
  }
  EXPECT_EQ(journals, 1);
  h_.Crash();
  ASSERT_OK(h_.OpenGroups(o));
  EXPECT_EQ(Describe().partitions[0].committed, 500u);
}

}  // namespace
}  // namespace converge

namespace converge {
namespace {

// The production Env and the real Log on real files: real threads, the real clock, the Asio
// executor running the background tick. Four consumers and a producer run concurrently; every
// record is processed exactly once (leases are long, so none expires), per-key order holds, and the
// group commits everything.
TEST(GroupsThreadedTest, ConcurrentConsumersOnProductionEnv) {
  Env& env = Env::Default();
  char tmpl[] = "/tmp/converge_groups_test_XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  const std::string dir = tmpl;
  LogOptions lo;
  lo.dir = dir + "/log";
  auto log_opened = Log::Open(env, lo);
  ASSERT_OK(log_opened);
  std::unique_ptr<Log> log_owner = std::move(log_opened).value();
  Log& log = *log_owner;
  TopicOptions to;
  to.partitions = 4;
  to.durability = Durability::kNone;  // the producer's durability is not under test here
  ASSERT_OK(log.CreateTopic("t", to));
  ConsumerGroupsOptions o;
  o.dir = dir + "/groups";
  o.tick_interval_ms = 5;
  auto opened = ConsumerGroups::Open(env, log, o);
  ASSERT_OK(opened);
  std::unique_ptr<ConsumerGroups> groups = std::move(opened).value();
  GroupOptions go;
  go.lease_ms = 600'000;
  go.session_timeout_ms = 600'000;
  ASSERT_OK(groups->CreateGroup("t", "g", go));

  constexpr int kRecords = 20'000;
  constexpr int kKeys = 50;
  std::mutex mu;
  std::map<std::pair<uint32_t, uint64_t>, std::string> key_of;
  std::map<std::pair<uint32_t, std::string>, std::vector<uint64_t>> by_key;
  std::set<std::pair<uint32_t, uint64_t>> acked;
  std::atomic<int> processed{0};
  std::atomic<bool> failed{false};
  std::string failure;

  std::thread producer([&] {
    for (int i = 0; i < kRecords; i += 100) {
      std::vector<std::string> keys;
      std::vector<RecordView> views;
      for (int j = i; j < i + 100; ++j) keys.push_back("key" + std::to_string(j % kKeys));
      for (const std::string& k : keys) views.push_back(RecordView{"", k, "value", 0});
      std::lock_guard<std::mutex> lock(mu);  // so consumers see key_of before deliveries
      auto r = log.Append("t", views);
      if (!r.ok()) {
        failed = true;
        return;
      }
      for (size_t j = 0; j < keys.size(); ++j) {
        key_of[{(*r)[j].partition, (*r)[j].offset}] = keys[j];
        by_key[{(*r)[j].partition, keys[j]}].push_back((*r)[j].offset);
      }
    }
  });
  std::vector<std::thread> consumers;
  for (int c = 0; c < 4; ++c) {
    consumers.emplace_back([&, c] {
      const std::string member = "m" + std::to_string(c);
      if (!groups->Join("t", "g", member).ok()) {
        failed = true;
        return;
      }
      std::vector<LeaseRef> leases;
      while (processed.load() < kRecords && !failed.load()) {
        auto f = groups->Fetch("t", "g", member, 64, 1 << 20);
        if (!f.ok()) {
          failed = true;
          return;
        }
        leases.clear();
        {
          std::lock_guard<std::mutex> lock(mu);
          for (const Delivery& d : f->deliveries) {
            const std::pair<uint32_t, uint64_t> id{d.partition, d.offset};
            if (acked.count(id) || key_of[id] != d.key) {
              failed = true;
              failure = "duplicate or wrong record " + std::to_string(d.offset);
            }
            for (uint64_t earlier : by_key[{d.partition, std::string(d.key)}]) {
              if (earlier >= d.offset) break;
              if (!acked.count({d.partition, earlier})) {
                failed = true;
                failure = "per-key order broken at " + std::to_string(d.offset);
              }
            }
            acked.insert(id);  // before the ack: another thread may get the next one at once
            leases.push_back(d.lease());
          }
        }
        if (leases.empty()) {
          std::this_thread::yield();
          continue;
        }
        auto r = groups->AckBatch("t", "g", member, leases);
        if (!r.ok() || !r->lost.empty()) {
          failed = true;
          return;
        }
        processed += static_cast<int>(r->acked);
      }
    });
  }
  producer.join();
  for (auto& t : consumers) t.join();
  ASSERT_FALSE(failed.load()) << failure;
  EXPECT_EQ(processed.load(), kRecords);
  auto d = groups->DescribeGroup("t", "g");
  ASSERT_OK(d);
  EXPECT_EQ(d->total_lag, 0u);
  groups.reset();
  log_owner.reset();
  std::filesystem::remove_all(dir);
}

// A member whose consumer vanished (its stream closed) leaves at once, and the leases it held
// count as delivery attempts, so a record that kills every consumer ends as a dead letter.
TEST_F(GroupsTest, AbandonEndsLeasesAsFailedAttemptsAndDeadLettersAtTheLast) {
  GroupOptions o = FastOptions();
  o.lease_ms = 600'000;
  o.session_timeout_ms = 600'000;
  Create(o);
  h_.Produce(kTopic, "k", "poison");
  for (uint32_t attempt = 1; attempt <= 3; ++attempt) {
    Join("m" + std::to_string(attempt));
    auto got = Fetch("m" + std::to_string(attempt));
    ASSERT_EQ(got.size(), 1u) << attempt;
    EXPECT_EQ(got[0].attempt, attempt);
    ASSERT_OK(h_.groups->Abandon(kTopic, kGroup, "m" + std::to_string(attempt), "stream closed"));
    EXPECT_TRUE(Describe().members.empty());
  }
  // The third failed attempt dead-lettered it within Abandon, with the reason given.
  auto dls = DeadLetters();
  ASSERT_EQ(dls.size(), 1u);
  EXPECT_EQ(dls[0].delivery_count, 3u);
  EXPECT_EQ(dls[0].last_error, "stream closed");
  EXPECT_EQ(Describe().total_lag, 0u);
  // Not a member: OK; no group: NotFound.
  EXPECT_OK(h_.groups->Abandon(kTopic, kGroup, "nobody", "x"));
  EXPECT_EQ(h_.groups->Abandon(kTopic, "nope", "m1", "x").code(), StatusCode::kNotFound);
}

TEST_F(GroupsTest, IncludeReplayedAppendsAnotherCopyToTheOriginalTopic) {
  GroupOptions o = FastOptions();
  o.max_deliveries = 1;
  Create(o);
  h_.Produce(kTopic, "k", "v");
  Join("m1");
  auto got = Fetch("m1");
  ASSERT_EQ(got.size(), 1u);
  NackOptions nack;
  nack.permanent = true;
  ASSERT_OK(h_.groups->Nack(kTopic, kGroup, "m1", got[0].lease(), nack));
  auto end = [&] { return h_.log->DescribeTopic(kTopic)->partitions[0].end_offset; };
  auto r = h_.groups->ReplayDeadLetters(kTopic, kGroup, ReplayOptions{});
  ASSERT_OK(r);
  EXPECT_EQ(r->replayed, 1u);
  EXPECT_EQ(end(), 2u);
  ReplayOptions again;
  again.include_replayed = true;
  for (uint64_t i = 0; i < 2; ++i) {
    r = h_.groups->ReplayDeadLetters(kTopic, kGroup, again);
    ASSERT_OK(r);
    EXPECT_EQ(r->replayed, 1u);
    EXPECT_EQ(r->deduplicated, 0u);
    EXPECT_EQ(end(), 3u + i);
  }
}

TEST(DeadLetterTopicName, FitsTheLogLimitForEveryValidPair) {
  EXPECT_EQ(DefaultDeadLetterTopic("orders", "billing"), "_dlq.orders.billing");
  const std::string group(64, 'g');
  // The longest unshortened name: exactly 200 characters.
  const std::string t129(129, 't');
  EXPECT_EQ(DefaultDeadLetterTopic(t129, group), "_dlq." + t129 + "." + group);
  std::set<std::string> names;
  for (size_t len : {130u, 195u, 199u, 200u}) {
    for (const std::string& g : {group, std::string(63, 'g') + "h", std::string("g")}) {
      const std::string topic(len, 't');
      const std::string name = DefaultDeadLetterTopic(topic, g);
      EXPECT_LE(name.size(), 200u) << len;
      if (name.size() > 5 && name.compare(0, 5, "_dlq-") == 0) {
        EXPECT_EQ(name.size(), 200u);
        EXPECT_EQ(name.substr(name.size() - g.size()), g);  // the group stays readable
      }
      EXPECT_TRUE(names.insert(name).second) << name;
      EXPECT_EQ(name, DefaultDeadLetterTopic(topic, g));  // stable
    }
  }
  // Topics that share the kept prefix still get different names.
  EXPECT_NE(DefaultDeadLetterTopic(std::string(199, 't') + "a", group),
            DefaultDeadLetterTopic(std::string(199, 't') + "b", group));
}

TEST(DeadLetterTopicName, LongestNamesCanHaveGroups) {
  Harness h(99);
  ASSERT_OK(h.Open());
  const std::string topic(200, 't');
  ASSERT_OK(h.CreateTopic(topic, 1));
  for (const std::string& g : {std::string(64, 'g'), std::string(64, 'h')}) {
    ASSERT_OK(h.groups->CreateGroup(topic, g, FastOptions()));
    auto d = h.groups->DescribeGroup(topic, g);
    ASSERT_OK(d);
    EXPECT_EQ(d->dead_letter_topic, DefaultDeadLetterTopic(topic, g));
    EXPECT_OK(h.log->DescribeTopic(d->dead_letter_topic));
  }
  // A chosen name past the limit is refused, naming the option.
  GroupOptions o = FastOptions();
  o.dead_letter_topic = "_" + std::string(200, 'x');
  Status s = h.groups->CreateGroup(topic, "other", o);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.ToString().find("dead_letter_topic"), std::string::npos) << s.ToString();
}

}  // namespace
}  // namespace converge
