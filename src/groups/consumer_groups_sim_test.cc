// Randomized simulation of consumer groups: several consumers fetch, ack, nack, delay, reject,
// leave, go silent and come back while records are produced, virtual time passes, dead-letter
// appends fail and the machine crashes (at random moments, at armed crash points inside
// operations, with torn writes). Invariants checked on every delivery and at the end:
//   - per-key order: a record is delivered only when every earlier record of its key in its
//     partition is done (acked or dead-lettered);
//   - within one process lifetime, a done record is never delivered again;
//   - an ack that returned OK in kSync mode (or before a successful Flush in kPeriodic mode) is
//     never redelivered, even after a crash;
//   - nothing is lost: in the end every record was acked or is in the dead-letter topic, and
//     the committed offsets reach the end of every partition.
// Seeds: CONVERGE_SIM_SEEDS=N runs seeds 1..N (default 100 per configuration);
// CONVERGE_SIM_SEED=S reruns the one seed a failure printed.
#include <gtest/gtest.h>

#include <cstdlib>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "converge/consumer_group.h"
#include "groups/testing/harness.h"

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wrestrict"  // GCC bug 105329 on "literal" + std::string
#endif

namespace converge {
namespace {

using groups_testing::Harness;
using groups_testing::kMsNs;

constexpr char kTopic[] = "events";
constexpr char kGroup[] = "workers";
constexpr char kDlq[] = "_dlq.events.workers";

struct SimConfig {
  bool crashes = false;
  CommitMode mode = CommitMode::kSync;
  bool dead_letter_faults = false;
  bool torn_writes = false;
  int records = 400;
  int keys = 12;
  uint32_t partitions = 3;
  int consumers = 4;
};

int SeedCount() {
  const char* s = std::getenv("CONVERGE_SIM_SEEDS");
  return s != nullptr ? std::max(1, std::atoi(s)) : 100;
}

using RecordId = std::pair<uint32_t, uint64_t>;  // (partition, offset)

class Driver {
 public:
  Driver(uint64_t seed, SimConfig config)
      : h_(seed), rng_(seed * 0x9E3779B97F4A7C15ull + 1), config_(config) {}

  void Run() {
    ConsumerGroupsOptions go = groups_testing::DefaultGroupsOptions();
    go.commit_mode = config_.mode;
    go.commit_interval_ms = 50;
    go_ = go;
    h_.env.sim_fs().SetTornWrites(config_.torn_writes);
    ASSERT_TRUE(h_.Open(go).ok());
    ASSERT_TRUE(h_.CreateTopic(kTopic, config_.partitions).ok());
    GroupOptions o;
    o.lease_ms = 100 + static_cast<int64_t>(rng_() % 700);
    o.max_deliveries = 3 + static_cast<uint32_t>(rng_() % 4);
    o.session_timeout_ms = 2000;
    o.max_in_flight_per_partition = 8;
    o.max_in_flight_per_member = 10;
    o.max_pending_per_partition = 40;
    o.dead_letter_retry_ms = 100;
    ASSERT_TRUE(h_.groups->CreateGroup(kTopic, kGroup, o).ok());
    consumers_.resize(config_.consumers);
    for (int i = 0; i < config_.consumers; ++i) consumers_[i].name = "c" + std::to_string(i);

    int steps = 0;
    while (produced_ < config_.records && steps < 20'000) {
      ++steps;
      Step(/*drain=*/false);
      if (HasFatalFailure()) return;
    }
    // Drain: no more faults or crashes; consumers ack everything.
    if (crash_armed_) Crash();  // an armed crash point may have taken the filesystem down
    if (HasFatalFailure()) return;
    h_.faulty->FailAppends(kDlq, false);
    for (int i = 0; i < 200'000 && !AllDone(); ++i) {
      Step(/*drain=*/true);
      if (HasFatalFailure()) return;
    }
    EXPECT_TRUE(deferred_checks_.empty());
    FinalChecks();
  }

 private:
  struct Consumer {
    std::string name;
    bool joined = false;
    int64_t silent_until_ns = 0;
    std::vector<Delivery> held;
    std::vector<std::shared_ptr<const void>> storage;
  };

  static bool HasFatalFailure() { return ::testing::Test::HasFatalFailure(); }

  void Produce() {
    const int n = 1 + static_cast<int>(rng_() % 5);
    for (int i = 0; i < n && produced_ < config_.records; ++i) {
      const std::string key = "k" + std::to_string(rng_() % config_.keys);
      const std::string value = "r" + std::to_string(produced_);
      AppendResult r = h_.Produce(kTopic, key, value);
      const RecordId id{r.partition, r.offset};
      key_of_[id] = key;
      value_of_[id] = value;
      by_key_[{r.partition, key}].push_back(r.offset);
      ++produced_;
    }
  }

  bool Done(const RecordId& id) {
    return durable_done_.count(id) || volatile_done_.count(id) || maybe_done_.count(id) ||
           InDeadLetters(id);
  }

  bool InDeadLetters(const RecordId& id) {
    if (dead_.count(id)) return true;
    RefreshDeadLetters();
    return dead_.count(id) > 0;
  }

  // Returns false if the dead letters could not be read (the filesystem is down at an armed
  // crash point).
  bool RefreshDeadLetters() {
    while (true) {
      auto page = h_.groups->ListDeadLetters(kTopic, kGroup, dead_next_, 1000);
      if (!page.ok() && crash_armed_) return false;
      EXPECT_TRUE(page.ok()) << page.status().ToString();
      if (!page.ok()) return false;
      for (const DeadLetter& dl : page->dead_letters) {
        const RecordId id{dl.partition, dl.offset};
        EXPECT_EQ(dl.topic, kTopic);
        EXPECT_EQ(dl.key, key_of_[id]);
        EXPECT_EQ(dl.value, value_of_[id]);
        EXPECT_GE(dl.delivery_count, 1u);
        dead_.insert(id);
        // A dead letter appended before the last crash may have lost its commit: its record
        // can legitimately come back in this life.
        if (dl.dead_letter_offset >= dead_letters_at_restart_) done_this_life_.insert(id);
      }
      if (page->dead_letters.empty() || page->next_offset == dead_next_) break;
      dead_next_ = page->next_offset;
    }
    return true;
  }

  void OnDelivery(const Delivery& d) {
    const RecordId id{d.partition, d.offset};
    ASSERT_TRUE(key_of_.count(id)) << "unknown record " << d.partition << "/" << d.offset;
    ASSERT_EQ(d.key, key_of_[id]);
    ASSERT_EQ(d.value, value_of_[id]);
    ASSERT_FALSE(durable_done_.count(id))
        << "record " << d.partition << "/" << d.offset << " redelivered after a durable ack";
    ASSERT_FALSE(done_this_life_.count(id))
        << "record " << d.partition << "/" << d.offset << " redelivered after it was done";
    if (maybe_done_.erase(id) > 0 || dead_.erase(id) > 0) {
      ++redelivered_after_crash_;  // its commit did not survive the crash: allowed
    }
    for (uint64_t earlier : by_key_[{d.partition, key_of_[id]}]) {
      if (earlier >= d.offset) break;
      if (crash_armed_ && !Done({d.partition, earlier})) {
        // Maybe dead-lettered just before the filesystem went down: check after the restart.
        deferred_checks_.push_back({{d.partition, earlier}, id});
        continue;
      }
      ASSERT_TRUE(Done({d.partition, earlier}))
          << "per-key order broken: " << d.partition << "/" << d.offset << " (key " << key_of_[id]
          << ") delivered before " << d.partition << "/" << earlier << " was done";
    }
    ++deliveries_;
  }

  void Fetch(Consumer& c) {
    const uint32_t max = 1 + static_cast<uint32_t>(rng_() % 6);
    auto r = h_.groups->Fetch(kTopic, kGroup, c.name, max, 1 << 20);
    if (!r.ok()) {
      if (r.status().code() == StatusCode::kFailedPrecondition) {
        c.joined = false;  // expired
        c.held.clear();
        return;
      }
      ASSERT_TRUE(crash_armed_) << r.status().ToString();
      return;
    }
    ASSERT_LE(r->deliveries.size(), max);
    for (const Delivery& d : r->deliveries) {
      OnDelivery(d);
      if (HasFatalFailure()) return;
      c.held.push_back(d);
    }
    for (auto& s : r->storage) c.storage.push_back(s);
  }

  void MarkAcked(const RecordId& id) {
    done_this_life_.insert(id);
    if (config_.mode == CommitMode::kSync) {
      durable_done_.insert(id);
    } else {
      volatile_done_.insert(id);
    }
  }

  void Process(Consumer& c, bool drain) {
    std::vector<Delivery> keep;
    std::vector<LeaseRef> batch;
    std::vector<RecordId> batch_ids;
    for (const Delivery& d : c.held) {
      const int action = drain ? 0 : static_cast<int>(rng_() % 100);
      const RecordId id{d.partition, d.offset};
      if (action < 55) {
        batch.push_back(d.lease());
        batch_ids.push_back(id);
      } else if (action < 65) {
        NackOptions nack;
        nack.delay_ms = static_cast<int64_t>(rng_() % 300);
        nack.reason = "transient";
        Status s = h_.groups->Nack(kTopic, kGroup, c.name, d.lease(), nack);
        if (!s.ok() && s.code() != StatusCode::kFailedPrecondition &&
            s.code() != StatusCode::kUnavailable) {
          ASSERT_TRUE(crash_armed_) << s.ToString();
        }
      } else if (action < 67) {
        NackOptions nack;
        nack.permanent = true;
        nack.reason = "poison";
        Status s = h_.groups->Nack(kTopic, kGroup, c.name, d.lease(), nack);
        if (!s.ok() && s.code() != StatusCode::kFailedPrecondition &&
            s.code() != StatusCode::kUnavailable) {
          ASSERT_TRUE(crash_armed_) << s.ToString();
        }
      } else if (action < 90) {
        keep.push_back(d);  // still working on it (the lease may run out)
      }
      // else: drop it silently (crashed handler): the lease expires
    }
    if (!batch.empty()) {
      auto r = h_.groups->AckBatch(kTopic, kGroup, c.name, batch);
      if (r.ok()) {
        std::set<size_t> lost(r->lost.begin(), r->lost.end());
        for (size_t i = 0; i < batch.size(); ++i) {
          if (!lost.count(i)) MarkAcked(batch_ids[i]);
        }
      } else {
        ASSERT_TRUE(crash_armed_) << r.status().ToString();
        // Refused: not applied in memory (under kSync the record is delivered again in this
        // life), but the journal may hold the ack's bytes when the machine goes down, so after
        // the next crash the record may or may not be done.
        for (const RecordId& id : batch_ids) {
          maybe_done_.insert(id);
          refused_acks_.insert(id);
        }
      }
    }
    c.held = std::move(keep);
    if (c.held.empty()) c.storage.clear();
  }

  void Crash() {
    h_.Crash();
    crash_armed_ = false;
    // What was not known durable may come back.
    for (const RecordId& id : volatile_done_) maybe_done_.insert(id);
    for (const RecordId& id : refused_acks_) maybe_done_.insert(id);
    refused_acks_.clear();
    volatile_done_.clear();
    done_this_life_.clear();
    for (Consumer& c : consumers_) {
      c.joined = false;
      c.held.clear();
      c.storage.clear();
    }
    ASSERT_TRUE(h_.Open(go_).ok());
    auto dlq = h_.log->DescribeTopic(kDlq);
    ASSERT_TRUE(dlq.ok());
    dead_letters_at_restart_ = dlq->partitions[0].end_offset;
    ASSERT_TRUE(RefreshDeadLetters());
    for (const auto& [earlier, later] : deferred_checks_) {
      EXPECT_TRUE(dead_.count(earlier) || durable_done_.count(earlier) ||
                  maybe_done_.count(earlier))
          << "per-key order broken: " << later.first << "/" << later.second << " delivered before "
          << earlier.first << "/" << earlier.second << " was done";
    }
    deferred_checks_.clear();
    // Dead letters of earlier lives: their records may come back.
    for (const RecordId& id : dead_) maybe_done_.insert(id);
    ++crashes_;
  }

  void Step(bool drain) {
    // (Not while a crash point is armed: an append that fails there has an unknown outcome.)
    if (!drain && !crash_armed_ && produced_ < config_.records && rng_() % 3 == 0) Produce();
    Consumer& c = consumers_[rng_() % consumers_.size()];
    const int64_t now = h_.env.now_nanos();
    if (!drain && c.silent_until_ns > now) {
      // silent: no calls at all (the session may expire)
    } else if (!c.joined) {
      auto a = h_.groups->Join(kTopic, kGroup, c.name);
      if (a.ok()) {
        c.joined = true;
      } else {
        ASSERT_TRUE(crash_armed_) << a.status().ToString();
      }
    } else {
      Fetch(c);
      if (HasFatalFailure()) return;
      Process(c, drain);
      if (HasFatalFailure()) return;
      if (!drain) {
        const int r = static_cast<int>(rng_() % 1000);
        if (r < 10) {
          if (h_.groups->Leave(kTopic, kGroup, c.name).ok()) {
            c.joined = false;
            c.held.clear();
            c.storage.clear();
          }
        } else if (r < 15) {
          c.silent_until_ns = now + static_cast<int64_t>(rng_() % 4000) * kMsNs;
        }
      }
    }
    if (!drain && config_.mode == CommitMode::kPeriodic && rng_() % 20 == 0 && !crash_armed_) {
      if (h_.groups->Flush().ok()) {
        for (const RecordId& id : volatile_done_) durable_done_.insert(id);
        volatile_done_.clear();
      }
    }
    if (!drain && config_.dead_letter_faults && rng_() % 50 == 0) {
      dlq_failing_ = !dlq_failing_;
      h_.faulty->FailAppends(kDlq, dlq_failing_);
    }
    h_.env.RunFor(static_cast<int64_t>(rng_() % (drain ? 200 : 40)) * kMsNs);
    if (!drain && config_.crashes) {
      const int r = static_cast<int>(rng_() % 1000);
      if (crash_armed_ && r < 100) {
        Crash();
      } else if (!crash_armed_ && r < 3) {
        Crash();
      } else if (!crash_armed_ && r < 6) {
        // A crash point inside the next operations: some calls fail, then the machine dies.
        h_.env.sim_fs().CrashAfterOps(1 + rng_() % 8);
        crash_armed_ = true;
      }
    }
  }

  bool AllDone() {
    if (produced_ < config_.records) return false;
    auto d = h_.groups->DescribeGroup(kTopic, kGroup);
    if (!d.ok()) return false;
    for (const PartitionDescription& p : d->partitions) {
      if (p.committed != p.end_offset) return false;
    }
    return true;
  }

  void FinalChecks() {
    ASSERT_TRUE(AllDone()) << "the group did not commit everything: nothing may stall";
    RefreshDeadLetters();
    for (const auto& [id, key] : key_of_) {
      const bool acked = durable_done_.count(id) || volatile_done_.count(id) ||
                         maybe_done_.count(id) || done_this_life_.count(id);
      EXPECT_TRUE(acked || dead_.count(id))
          << "record " << id.first << "/" << id.second << " was lost";
    }
    EXPECT_GT(deliveries_, static_cast<uint64_t>(config_.records) / 2);
  }

  Harness h_;
  std::mt19937_64 rng_;
  SimConfig config_;
  ConsumerGroupsOptions go_;
  std::vector<Consumer> consumers_;
  int produced_ = 0;
  std::map<RecordId, std::string> key_of_;
  std::map<RecordId, std::string> value_of_;
  std::map<std::pair<uint32_t, std::string>, std::vector<uint64_t>> by_key_;
  std::set<RecordId> durable_done_;   // acks known durable
  std::set<RecordId> volatile_done_;  // acked OK, not yet known durable (kPeriodic)
  std::set<RecordId> maybe_done_;     // done before a crash, durability unknown
  std::set<RecordId> refused_acks_;   // acks refused in this life (their bytes may survive)
  std::set<RecordId> done_this_life_;
  std::set<RecordId> dead_;
  uint64_t dead_next_ = 0;
  uint64_t dead_letters_at_restart_ = 0;
  std::vector<std::pair<RecordId, RecordId>> deferred_checks_;  // (must be done, delivered)
  bool crash_armed_ = false;
  bool dlq_failing_ = false;

 public:
  uint64_t deliveries_ = 0;
  uint64_t crashes_ = 0;
  uint64_t redelivered_after_crash_ = 0;
};

void RunSeeds(const SimConfig& config) {
  uint64_t crashes = 0, deliveries = 0;
  int first = 1, last = SeedCount();
  if (const char* one = std::getenv("CONVERGE_SIM_SEED")) first = last = std::atoi(one);
  for (int seed = first; seed <= last; ++seed) {
    SCOPED_TRACE("seed " + std::to_string(seed) +
                 " (rerun: CONVERGE_SIM_SEED=" + std::to_string(seed) + ")");
    Driver driver(static_cast<uint64_t>(seed), config);
    driver.Run();
    crashes += driver.crashes_;
    deliveries += driver.deliveries_;
    if (::testing::Test::HasFailure()) {
      ADD_FAILURE() << "failing seed: " << seed;
      return;
    }
  }
  if (config.crashes) {
    EXPECT_GT(crashes, 0u);
  }
  std::printf("  %d seeds, %llu deliveries, %llu crashes\n", last - first + 1,
              static_cast<unsigned long long>(deliveries),
              static_cast<unsigned long long>(crashes));
}

TEST(GroupsSimTest, PerKeyOrderWithParallelConsumers) { RunSeeds(SimConfig{}); }

TEST(GroupsSimTest, DeadLetterAppendFaults) {
  SimConfig c;
  c.dead_letter_faults = true;
  RunSeeds(c);
}

TEST(GroupsSimTest, CrashesWithSyncCommits) {
  SimConfig c;
  c.crashes = true;
  c.dead_letter_faults = true;
  RunSeeds(c);
}

TEST(GroupsSimTest, CrashesWithTornWrites) {
  SimConfig c;
  c.crashes = true;
  c.torn_writes = true;
  RunSeeds(c);
}

TEST(GroupsSimTest, CrashesWithPeriodicCommits) {
  SimConfig c;
  c.crashes = true;
  c.mode = CommitMode::kPeriodic;
  RunSeeds(c);
}

// Group administration under crashes: groups are created, deleted and seeked at random while
// crash points fire inside the calls (the journal write, the snapshot, the Log). Every call
// answered with an error must have changed nothing (in memory now, and after the crash); every
// call answered OK must survive the crash. Before the journal-first fix a refused create, delete
// or seek was already applied in memory.
TEST(GroupsSimTest, AdminMutationsAreJournalFirstUnderCrashes) {
  constexpr int kGroups = 4;
  constexpr uint32_t kPartitions = 2;
  int first = 1, last = SeedCount();
  if (const char* one = std::getenv("CONVERGE_SIM_SEED")) first = last = std::atoi(one);
  uint64_t refused = 0, crashes = 0;
  for (int seed = first; seed <= last; ++seed) {
    SCOPED_TRACE("seed " + std::to_string(seed) +
                 " (rerun: CONVERGE_SIM_SEED=" + std::to_string(seed) + ")");
    std::mt19937_64 rng(static_cast<uint64_t>(seed) * 0x9E3779B97F4A7C15ull + 7);
    Harness h(static_cast<uint64_t>(seed));
    ConsumerGroupsOptions go = groups_testing::DefaultGroupsOptions();
    go.tick_interval_ms = 0;
    go.journal_max_bytes = 4096;  // compactions happen too
    ASSERT_TRUE(h.Open(go).ok());
    ASSERT_TRUE(h.CreateTopic(kTopic, kPartitions).ok());
    for (uint32_t p = 0; p < kPartitions; ++p) {
      for (int i = 0; i < 10; ++i) h.ProduceTo(kTopic, p, "", "v");
    }
    ASSERT_TRUE(h.log->Sync().ok());
    // The model: per group, absent or its committed offsets.
    std::map<std::string, std::vector<uint64_t>> model;
    auto check = [&](const char* when) {
      std::vector<std::string> want;
      for (const auto& [name, committed] : model) want.push_back(name);
      ASSERT_EQ(h.groups->ListGroups(kTopic), want) << when;
      for (const auto& [name, committed] : model) {
        auto d = h.groups->DescribeGroup(kTopic, name);
        if (!d.ok()) continue;  // the Log may be down at an armed crash point
        for (uint32_t p = 0; p < kPartitions; ++p) {
          ASSERT_EQ(d->partitions[p].committed, committed[p])
              << when << ": group " << name << " partition " << p;
        }
      }
    };
    bool armed = false;
    for (int step = 0; step < 60; ++step) {
      if (!armed && rng() % 4 == 0) {
        h.env.sim_fs().CrashAfterOps(1 + rng() % 6);
        armed = true;
      }
      const std::string name = "g" + std::to_string(rng() % kGroups);
      const bool exists = model.count(name) != 0;
      Status s;
      std::vector<uint64_t> after;
      switch (rng() % 3) {
        case 0: {
          GroupOptions o;
          o.start = rng() % 2 == 0 ? StartPosition::kEarliest : StartPosition::kLatest;
          s = h.groups->CreateGroup(kTopic, name, o);
          after.assign(kPartitions, o.start == StartPosition::kEarliest ? 0 : 10);
          if (s.ok()) {
            ASSERT_FALSE(exists);
            model[name] = after;
          }
          break;
        }
        case 1:
          s = h.groups->DeleteGroup(kTopic, name, /*force=*/false);
          if (s.ok()) {
            ASSERT_TRUE(exists);
            model.erase(name);
          }
          break;
        default: {
          SeekTarget t;
          t.kind = SeekTarget::Kind::kOffset;
          t.offset = rng() % 13;
          if (rng() % 2 == 0) t.partition = static_cast<uint32_t>(rng() % kPartitions);
          s = h.groups->Seek(kTopic, name, t);
          if (s.ok()) {
            ASSERT_TRUE(exists);
            for (uint32_t p = 0; p < kPartitions; ++p) {
              if (!t.partition.has_value() || *t.partition == p) {
                model[name][p] = std::min<uint64_t>(t.offset, 10);
              }
            }
          }
          break;
        }
      }
      if (!s.ok()) {
        if (s.code() == StatusCode::kNotFound || s.code() == StatusCode::kAlreadyExists) {
          ASSERT_TRUE(exists == (s.code() == StatusCode::kAlreadyExists)) << s.ToString();
        } else {
          ASSERT_TRUE(armed) << s.ToString();
          ++refused;
        }
      }
      check("after the call");
      if (armed && rng() % 3 == 0) {
        h.Crash();
        armed = false;
        ++crashes;
        ASSERT_TRUE(h.Open(go).ok());
        check("after the crash");
      }
    }
    if (armed) {
      h.Crash();
      ASSERT_TRUE(h.Open(go).ok());
      check("after the last crash");
    }
    if (::testing::Test::HasFailure()) {
      ADD_FAILURE() << "failing seed: " << seed;
      return;
    }
  }
  EXPECT_GT(refused, 0u);
  EXPECT_GT(crashes, 0u);
  std::printf("  %d seeds, %llu refused calls, %llu crashes\n", last - first + 1,
              static_cast<unsigned long long>(refused), static_cast<unsigned long long>(crashes));
}

}  // namespace
}  // namespace converge
