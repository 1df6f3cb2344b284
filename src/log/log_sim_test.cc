// Crash and corruption tests of the event log on the simulated filesystem.
//
// Crash: for every seed, append random batches under fsync with a crash point armed at a
// random mutating operation, crash the simulated machine (unsynced bytes are lost or, with torn
// writes, partly kept and garbled), reopen, and check that every acknowledged record is there
// with its exact content, offsets are dense, nothing corrupt or partial is returned, and the
// dedup memory still knows the acknowledged ids. CONVERGE_SIM_SEEDS sets the number of seeds
// (default 5000); CONVERGE_SIM_SEED=<n> replays one seed.
//
// Corruption: flipped bits and truncated segments are reported as DataLoss naming the damaged
// range; everything else stays readable.
#include <gtest/gtest.h>

#include <cstdlib>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "converge/log.h"
#include "converge/sim_env.h"
#include "log/record_format.h"

namespace converge {
namespace {

constexpr char kDir[] = "/data/log";

uint64_t EnvNumber(const char* name, uint64_t fallback) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return fallback;
  return std::strtoull(v, nullptr, 10);
}

// The value stored for an id: derived from it so any record read back can be checked.
std::string ValueFor(const std::string& id, size_t len) {
  std::string v;
  v.reserve(len);
  uint64_t x = std::hash<std::string>()(id) | 1;
  while (v.size() < len) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    v.push_back(static_cast<char>('a' + x % 26));
  }
  return id + ":" + v;
}

std::unique_ptr<Log> OpenLog(Env& env) {
  LogOptions options;
  options.dir = kDir;
  auto log = Log::Open(env, options);
  EXPECT_TRUE(log.ok()) << log.status().ToString();
  return log.ok() ? std::move(log).value() : nullptr;
}

struct Expected {
  std::string id;
  std::string key;
  int64_t timestamp = 0;
};

// Reads a whole partition. Returns false (with a test failure) on any error, including
// DataLoss, since after a crash of an fsync log nothing acknowledged may be damaged.
bool ReadPartition(Log& log, const std::string& topic, uint32_t p,
                   std::vector<std::string>* values) {
  uint64_t next = 0;
  while (true) {
    auto batch = log.Read(topic, p, next, 64, 64 << 10);
    if (!batch.ok()) {
      ADD_FAILURE() << "read partition " << p << " at " << next << ": "
                    << batch.status().ToString();
      return false;
    }
    if (batch->records.empty()) return true;
    for (const StoredRecord& r : batch->records) {
      if (r.offset != next) {
        ADD_FAILURE() << "partition " << p << ": offset " << r.offset << ", expected " << next;
        return false;
      }
      ++next;
      values->emplace_back(r.value);
      if (r.value != ValueFor(std::string(r.id), r.value.size() - r.id.size() - 1)) {
        ADD_FAILURE() << "partition " << p << " offset " << r.offset << ": content mismatch";
        return false;
      }
    }
  }
}

// One seed: a few crash/recover cycles.
void RunCrashSeed(uint64_t seed) {
  SCOPED_TRACE("seed " + std::to_string(seed) +
               " (replay with CONVERGE_SIM_SEED=" + std::to_string(seed) + ")");
  sim::SimEnv sim(seed);
  std::mt19937_64 rng(seed * 0x9E3779B97F4A7C15ull + 1);
  auto uniform = [&](uint64_t lo, uint64_t hi) { return lo + rng() % (hi - lo + 1); };
  sim.sim_fs().SetTornWrites(seed % 2 == 1);

  TopicOptions options;
  options.partitions = static_cast<uint32_t>(uniform(1, 3));
  options.segment_max_bytes = uniform(1024, 6000);
  options.dedup_window_ms = 3'600'000;
  // (partition, offset) -> what was acknowledged there.
  std::map<std::pair<uint32_t, uint64_t>, Expected> acked;
  std::map<std::string, std::pair<uint32_t, uint64_t>> acked_ids;
  uint64_t next_id = 0;

  {
    std::unique_ptr<Log> log = OpenLog(sim);
    ASSERT_NE(log, nullptr);
    ASSERT_TRUE(log->CreateTopic("t", options).ok());
  }

  const int cycles = static_cast<int>(uniform(1, 3));
  for (int cycle = 0; cycle < cycles; ++cycle) {
    std::unique_ptr<Log> log = OpenLog(sim);
    ASSERT_NE(log, nullptr) << "cycle " << cycle;

    // Everything acknowledged so far is intact, dense and in place.
    for (uint32_t p = 0; p < options.partitions; ++p) {
      std::vector<std::string> values;
      ASSERT_TRUE(ReadPartition(*log, "t", p, &values)) << "cycle " << cycle;
      for (const auto& [where, exp] : acked) {
        if (where.first != p) continue;
        ASSERT_LT(where.second, values.size())
            << "acknowledged record lost: partition " << p << " offset " << where.second;
        const std::string& v = values[where.second];
        ASSERT_EQ(v.substr(0, exp.id.size() + 1), exp.id + ":")
            << "partition " << p << " offset " << where.second;
      }
    }

    // Acknowledged ids are still remembered.
    if (!acked_ids.empty()) {
      auto it = acked_ids.begin();
      std::advance(it, static_cast<long>(uniform(0, acked_ids.size() - 1)));
      const std::string id = it->first;
      const std::string value = ValueFor(id, 10);
      RecordView r{id, "", value, 0};
      auto res = log->Append("t", std::span<const RecordView>(&r, 1));
      ASSERT_TRUE(res.ok()) << res.status().ToString();
      EXPECT_TRUE((*res)[0].duplicate) << "id " << id << " appended twice";
      EXPECT_EQ((*res)[0].partition, it->second.first);
      EXPECT_EQ((*res)[0].offset, it->second.second);
    }

    // Append until the crash point hits.
    sim.sim_fs().CrashAfterOps(uniform(1, 120));
    for (int b = 0; b < 60; ++b) {
      const size_t n = uniform(1, 12);
      std::vector<std::string> ids, keys, values;
      for (size_t i = 0; i < n; ++i) {
        // Sometimes reuse an id inside the batch or from before to exercise dedup.
        std::string id;
        if (i > 0 && uniform(0, 9) == 0) {
          id = ids[uniform(0, i - 1)];
        } else {
          id = "s" + std::to_string(seed) + "-" + std::to_string(next_id++);
        }
        ids.push_back(id);
        keys.push_back(uniform(0, 3) == 0 ? "" : "k" + std::to_string(uniform(0, 20)));
        values.push_back(ValueFor(id, uniform(0, 300)));
      }
      std::vector<RecordView> records;
      for (size_t i = 0; i < n; ++i) records.push_back(RecordView{ids[i], keys[i], values[i], 0});
      auto res = log->Append("t", records);
      if (!res.ok()) {
        ASSERT_TRUE(sim.sim_fs().crashed()) << res.status().ToString();
        break;
      }
      for (size_t i = 0; i < n; ++i) {
        const AppendResult& r = (*res)[i];
        if (r.duplicate) {
          ASSERT_EQ(acked_ids.count(ids[i]), 1u) << "duplicate of an unknown id " << ids[i];
          EXPECT_EQ(acked_ids[ids[i]], std::make_pair(r.partition, r.offset));
          continue;
        }
        ASSERT_EQ(acked.count({r.partition, r.offset}), 0u)
            << "offset handed out twice: " << r.partition << "/" << r.offset;
        acked[{r.partition, r.offset}] = Expected{ids[i], keys[i], 0};
        acked_ids[ids[i]] = {r.partition, r.offset};
      }
      if (uniform(0, 7) == 0) {
        // A read in the middle must not disturb anything.
        auto batch = log->Read("t", 0, uniform(0, 20), 10, 4096);
        if (!batch.ok()) {
          ASSERT_TRUE(sim.sim_fs().crashed()) << batch.status().ToString();
        }
      }
    }
    sim.sim_fs().Crash();
    log.reset();
  }

  // Final check after the last crash.
  std::unique_ptr<Log> log = OpenLog(sim);
  ASSERT_NE(log, nullptr);
  uint64_t total = 0;
  for (uint32_t p = 0; p < options.partitions; ++p) {
    std::vector<std::string> values;
    ASSERT_TRUE(ReadPartition(*log, "t", p, &values));
    total += values.size();
    auto info = log->DescribeTopic("t");
    ASSERT_TRUE(info.ok());
    EXPECT_EQ(info->partitions[p].end_offset, values.size());
  }
  EXPECT_GE(total, acked.size());
  for (const auto& [where, exp] : acked) {
    auto batch = log->Read("t", where.first, where.second, 1, 1);
    ASSERT_TRUE(batch.ok()) << batch.status().ToString();
    ASSERT_EQ(batch->records.size(), 1u);
    EXPECT_EQ(batch->records[0].offset, where.second);
    EXPECT_EQ(batch->records[0].id, exp.id);
    EXPECT_EQ(batch->records[0].key, exp.key);
  }
}

TEST(LogSimTest, AcknowledgedRecordsSurviveCrashes) {
  const uint64_t only = EnvNumber("CONVERGE_SIM_SEED", 0);
  const uint64_t seeds = only != 0 ? 1 : EnvNumber("CONVERGE_SIM_SEEDS", 5000);
  for (uint64_t i = 0; i < seeds; ++i) {
    const uint64_t seed = only != 0 ? only : i + 1;
    RunCrashSeed(seed);
    if (::testing::Test::HasFailure()) {
      std::fprintf(stderr, "FAILING SEED: %llu\n", static_cast<unsigned long long>(seed));
      return;
    }
  }
}

// ---------------------------------------------------------------------------------------
// Asynchronous appends (Log::AppendAsync with LogOptions::background on the simulated
// executor): many appends in flight at once share group commits; every acknowledged one
// survives a crash, and every callback runs exactly once (OK, or an error for the appends the
// crash caught), none lost and none doubled.

void RunAsyncCrashSeed(uint64_t seed) {
  SCOPED_TRACE("seed " + std::to_string(seed) +
               " (replay with CONVERGE_SIM_SEED=" + std::to_string(seed) + ")");
  sim::SimEnv sim(seed);
  std::mt19937_64 rng(seed * 0xD1B54A32D192ED03ull + 7);
  auto uniform = [&](uint64_t lo, uint64_t hi) { return lo + rng() % (hi - lo + 1); };
  sim.sim_fs().SetTornWrites(seed % 2 == 1);
  auto open_log = [&sim]() -> std::unique_ptr<Log> {
    LogOptions options;
    options.dir = kDir;
    options.background = [&sim](std::function<void()> task) {
      sim.executor().Post(std::move(task));
    };
    auto log = Log::Open(sim, options);
    EXPECT_TRUE(log.ok()) << log.status().ToString();
    return log.ok() ? std::move(log).value() : nullptr;
  };

  TopicOptions options;
  options.partitions = static_cast<uint32_t>(uniform(1, 4));
  options.segment_max_bytes = uniform(1024, 8000);
  {
    std::unique_ptr<Log> log = open_log();
    ASSERT_NE(log, nullptr);
    ASSERT_TRUE(log->CreateTopic("t", options).ok());
  }
  // One in-flight append: its records (the views must outlive the callback) and its outcome.
  struct Pending {
    std::vector<std::string> ids, keys, values;
    std::vector<RecordView> records;
    int calls = 0;
    bool ok = false;
    std::vector<AppendResult> results;
  };
  std::map<std::pair<uint32_t, uint64_t>, std::string> acked;  // (partition, offset) -> id
  uint64_t next_id = 0;
  uint64_t max_group_seen = 0;

  const int cycles = static_cast<int>(uniform(1, 3));
  for (int cycle = 0; cycle < cycles; ++cycle) {
    std::unique_ptr<Log> log = open_log();
    ASSERT_NE(log, nullptr) << "cycle " << cycle;
    for (uint32_t p = 0; p < options.partitions; ++p) {
      std::vector<std::string> values;
      ASSERT_TRUE(ReadPartition(*log, "t", p, &values)) << "cycle " << cycle;
      for (const auto& [where, id] : acked) {
        if (where.first != p) continue;
        ASSERT_LT(where.second, values.size())
            << "acknowledged record lost: partition " << p << " offset " << where.second;
        ASSERT_EQ(values[where.second].substr(0, id.size() + 1), id + ":");
      }
    }
    sim.sim_fs().CrashAfterOps(uniform(5, 200));
    std::vector<std::unique_ptr<Pending>> pending;
    const size_t appends = uniform(10, 120);
    uint64_t in_flight = 0;
    for (size_t a = 0; a < appends; ++a) {
      auto p = std::make_unique<Pending>();
      const size_t n = uniform(1, 4);
      for (size_t i = 0; i < n; ++i) {
        p->ids.push_back("a" + std::to_string(seed) + "-" + std::to_string(next_id++));
        p->keys.push_back(uniform(0, 2) == 0 ? "" : "k" + std::to_string(uniform(0, 9)));
        p->values.push_back(ValueFor(p->ids.back(), uniform(0, 200)));
      }
      for (size_t i = 0; i < n; ++i) {
        p->records.push_back(RecordView{p->ids[i], p->keys[i], p->values[i], 0});
      }
      Pending* raw = p.get();
      pending.push_back(std::move(p));
      ++in_flight;
      log->AppendAsync("t", raw->records,
                       [raw, &in_flight](Result<std::vector<AppendResult>> r) {
                         ++raw->calls;
                         --in_flight;
                         raw->ok = r.ok();
                         if (r.ok()) raw->results = std::move(r).value();
                       });
      max_group_seen = std::max(max_group_seen, in_flight);
      // Let the background commits run now and then, so that groups of many appends form.
      for (uint64_t k = uniform(0, 3); k > 0; --k) sim.RunOne();
    }
    sim.RunUntilIdle();
    for (const auto& p : pending) {
      ASSERT_EQ(p->calls, 1) << "an append's callback ran " << p->calls << " times";
      if (!p->ok) {
        ASSERT_TRUE(sim.sim_fs().crashed()) << "an append failed without a crash";
        continue;
      }
      ASSERT_EQ(p->results.size(), p->ids.size());
      for (size_t i = 0; i < p->ids.size(); ++i) {
        const AppendResult& r = p->results[i];
        ASSERT_FALSE(r.duplicate);
        ASSERT_EQ(acked.count({r.partition, r.offset}), 0u)
            << "offset handed out twice: " << r.partition << "/" << r.offset;
        acked[{r.partition, r.offset}] = p->ids[i];
      }
    }
    sim.sim_fs().Crash();
    log.reset();
  }
  std::unique_ptr<Log> log = open_log();
  ASSERT_NE(log, nullptr);
  for (const auto& [where, id] : acked) {
    auto batch = log->Read("t", where.first, where.second, 1, 1);
    ASSERT_TRUE(batch.ok()) << batch.status().ToString();
    ASSERT_EQ(batch->records.size(), 1u) << "acknowledged record lost";
    EXPECT_EQ(batch->records[0].id, id);
  }
  EXPECT_GT(max_group_seen, 1u);
}

TEST(LogSimTest, AcknowledgedAsyncAppendsSurviveCrashes) {
  const uint64_t only = EnvNumber("CONVERGE_SIM_SEED", 0);
  const uint64_t seeds = only != 0 ? 1 : EnvNumber("CONVERGE_SIM_SEEDS", 5000) / 5 + 1;
  for (uint64_t i = 0; i < seeds; ++i) {
    const uint64_t seed = only != 0 ? only : i + 1;
    RunAsyncCrashSeed(seed);
    if (::testing::Test::HasFailure()) {
      std::fprintf(stderr, "FAILING SEED: %llu\n", static_cast<unsigned long long>(seed));
      return;
    }
  }
}

// Without a background executor the appending thread leads: a synchronous Append queued
// behind asynchronous ones completes, and so do they, on one thread.
TEST(LogSimTest, AsyncAppendsWithoutBackgroundCompleteInline) {
  sim::SimEnv sim(1);
  std::unique_ptr<Log> log = OpenLog(sim);
  ASSERT_NE(log, nullptr);
  ASSERT_TRUE(log->CreateTopic("t", TopicOptions{}).ok());
  int calls = 0;
  RecordView r{"x", "", "v", 0};
  log->AppendAsync("t", std::span<const RecordView>(&r, 1),
                   [&calls](Result<std::vector<AppendResult>> res) {
                     EXPECT_TRUE(res.ok());
                     ++calls;
                   });
  EXPECT_EQ(calls, 1);
  log->AppendAsync("missing", std::span<const RecordView>(&r, 1),
                   [&calls](Result<std::vector<AppendResult>> res) {
                     EXPECT_EQ(res.status().code(), StatusCode::kNotFound);
                     ++calls;
                   });
  EXPECT_EQ(calls, 2);
  RecordView y{"y", "", "v", 0};
  auto res = log->Append("t", std::span<const RecordView>(&y, 1));
  ASSERT_TRUE(res.ok());
  EXPECT_EQ((*res)[0].offset, 1u);
}

// ---------------------------------------------------------------------------------------
// What each durability policy promises across a machine crash

uint64_t EndAfterCrash(sim::SimEnv& sim, Durability durability, bool run_timers, bool call_sync) {
  std::unique_ptr<Log> log = OpenLog(sim);
  TopicOptions options;
  options.durability = durability;
  options.sync_interval_ms = 50;
  EXPECT_TRUE(log->CreateTopic("d", options).ok());
  std::vector<RecordView> records(10, RecordView{"", "", "payload", 0});
  EXPECT_TRUE(log->Append("d", records).ok());
  EXPECT_EQ(log->Read("d", 0, 0, 100, 1 << 20)->records.size(), 10u);  // readable at once
  if (run_timers) sim.RunFor(60'000'000);
  if (call_sync) {
    EXPECT_TRUE(log->Sync().ok());
  }
  sim.sim_fs().Crash();
  log.reset();
  log = OpenLog(sim);
  auto info = log->DescribeTopic("d");
  EXPECT_TRUE(info.ok()) << info.status().ToString();
  return info.ok() ? info->partitions[0].end_offset : 0;
}

TEST(LogDurabilityTest, FsyncSurvivesAtOnce) {
  sim::SimEnv sim(3);
  EXPECT_EQ(EndAfterCrash(sim, Durability::kFsync, false, false), 10u);
}

TEST(LogDurabilityTest, IntervalSurvivesOnceTheTimerRan) {
  {
    sim::SimEnv sim(4);
    EXPECT_EQ(EndAfterCrash(sim, Durability::kInterval, false, false), 0u);
  }
  {
    sim::SimEnv sim(5);
    EXPECT_EQ(EndAfterCrash(sim, Durability::kInterval, true, false), 10u);
  }
}

TEST(LogDurabilityTest, NoneSurvivesAfterSync) {
  {
    sim::SimEnv sim(6);
    EXPECT_EQ(EndAfterCrash(sim, Durability::kNone, true, false), 0u);
  }
  {
    sim::SimEnv sim(7);
    EXPECT_EQ(EndAfterCrash(sim, Durability::kNone, false, true), 10u);
  }
}

// Crashing at every step of CreateTopic and DeleteTopic leaves either the whole topic or none
// of it, and Open never fails.
TEST(LogSimTest, TopicCreateAndDeleteAreAtomicAcrossCrashes) {
  for (uint64_t step = 1; step < 80; ++step) {
    SCOPED_TRACE("crash after " + std::to_string(step) + " operations");
    sim::SimEnv sim(step);
    {
      std::unique_ptr<Log> log = OpenLog(sim);
      ASSERT_NE(log, nullptr);
      TopicOptions options;
      options.partitions = 3;
      ASSERT_TRUE(log->CreateTopic("keep", options).ok());
      std::vector<RecordView> records(5, RecordView{"", "", "v", 0});
      ASSERT_TRUE(log->Append("keep", records).ok());
      sim.sim_fs().CrashAfterOps(step);
      Status created = log->CreateTopic("new", options);
      Status deleted = log->DeleteTopic("keep");
      sim.sim_fs().Crash();
      (void)created;
      (void)deleted;
    }
    std::unique_ptr<Log> log = OpenLog(sim);
    ASSERT_NE(log, nullptr);
    for (const std::string& name : log->ListTopics()) {
      auto info = log->DescribeTopic(name);
      ASSERT_TRUE(info.ok()) << name << ": " << info.status().ToString();
      ASSERT_EQ(info->partitions.size(), 3u);
      if (name == "keep") {
        EXPECT_EQ(info->partitions[0].end_offset + info->partitions[1].end_offset +
                      info->partitions[2].end_offset,
                  5u);
      }
      std::vector<RecordView> records(2, RecordView{"", "", "w", 0});
      EXPECT_TRUE(log->Append(name, records).ok()) << name;
    }
    // Whatever is missing can be created again.
    for (const char* name : {"keep", "new"}) {
      Status s = log->CreateTopic(name, {});
      EXPECT_TRUE(s.ok() || s.code() == StatusCode::kAlreadyExists) << s.ToString();
    }
  }
}

// ---------------------------------------------------------------------------------------
// Corruption

class LogCorruptionTest : public ::testing::Test {
 protected:
  static constexpr int kRecords = 300;

  void SetUp() override {
    log_ = OpenLog(sim_);
    ASSERT_NE(log_, nullptr);
    TopicOptions options;
    options.segment_max_bytes = 4096;
    ASSERT_TRUE(log_->CreateTopic("t", options).ok());
    for (int i = 0; i < kRecords; ++i) {
      ids_.push_back("id-" + std::to_string(i));
      values_.push_back(ValueFor(ids_.back(), 20 + i % 17));
      RecordView r{ids_.back(), "", values_.back(), 0};
      ASSERT_TRUE(log_->Append("t", std::span<const RecordView>(&r, 1)).ok());
    }
  }

  std::string SegmentPath(uint64_t base) {
    char name[32];
    std::snprintf(name, sizeof(name), "%020llu.log", static_cast<unsigned long long>(base));
    return std::string(kDir) + "/topics/t/0000/" + name;
  }

  std::vector<uint64_t> SegmentBases() {
    auto names = sim_.fs().ListDir(std::string(kDir) + "/topics/t/0000");
    std::vector<uint64_t> out;
    for (const std::string& n : *names) {
      if (n.ends_with(".log")) out.push_back(std::stoull(n.substr(0, 20)));
    }
    return out;
  }

  // Byte position of the record with `offset` in its segment (walks the headers).
  std::pair<std::string, uint64_t> Locate(uint64_t offset) {
    std::vector<uint64_t> bases = SegmentBases();
    uint64_t base = 0;
    for (uint64_t b : bases) {
      if (b <= offset) base = b;
    }
    const std::string path = SegmentPath(base);
    auto data = sim_.fs().ReadFileToString(path);
    uint64_t pos = 0;
    for (uint64_t o = base; o < offset; ++o) {
      internal::RecordHeader h;
      EXPECT_TRUE(internal::DecodeHeader(reinterpret_cast<const uint8_t*>(data->data()) + pos, &h));
      pos += h.record_bytes();
    }
    return {path, pos};
  }

  // Reads everything, skipping damaged ranges. Returns offset -> value and the ranges reported.
  void ReadThrough(std::map<uint64_t, std::string>* got,
                   std::vector<std::pair<uint64_t, uint64_t>>* damaged) {
    uint64_t next = 0;
    for (int guard = 0; guard < 10000; ++guard) {
      auto batch = log_->Read("t", 0, next, 50, 1 << 20);
      if (!batch.ok()) {
        ASSERT_EQ(batch.status().code(), StatusCode::kDataLoss) << batch.status().ToString();
        const std::string msg(batch.status().message());
        EXPECT_NE(msg.find("topic 't' partition 0"), std::string::npos) << msg;
        auto resume = DataLossResumeOffset(batch.status());
        ASSERT_TRUE(resume.has_value()) << msg;
        ASSERT_GT(*resume, next) << msg;
        damaged->emplace_back(next, *resume);
        next = *resume;
        continue;
      }
      if (batch->records.empty()) return;
      for (const StoredRecord& r : batch->records) {
        ASSERT_GE(r.offset, next);
        ASSERT_EQ(r.id, ids_[r.offset]);
        ASSERT_EQ(r.value, values_[r.offset]);
        (*got)[r.offset] = std::string(r.value);
        next = r.offset + 1;
      }
      ASSERT_EQ(batch->next_offset, next);
    }
    FAIL() << "read did not finish";
  }

  void Reopen() {
    log_.reset();
    log_ = OpenLog(sim_);
    ASSERT_NE(log_, nullptr);
  }

  sim::SimEnv sim_{7};
  std::unique_ptr<Log> log_;
  std::vector<std::string> ids_;
  std::vector<std::string> values_;
};

TEST_F(LogCorruptionTest, FlippedBodyBitIsOneDamagedRecord) {
  for (bool reopen : {false, true}) {
    SCOPED_TRACE(reopen ? "after reopen" : "while open");
    if (reopen) Reopen();
    if (!reopen) {
      auto [path, pos] = Locate(100);
      ASSERT_TRUE(
          sim_.sim_fs().CorruptByte(path, pos + internal::kRecordHeaderBytes + 3, 0x10).ok());
    }
    std::map<uint64_t, std::string> got;
    std::vector<std::pair<uint64_t, uint64_t>> damaged;
    ReadThrough(&got, &damaged);
    ASSERT_EQ(damaged.size(), 1u);
    EXPECT_EQ(damaged[0], std::make_pair(uint64_t{100}, uint64_t{101}));
    EXPECT_EQ(got.size(), size_t{kRecords - 1});
    // Reading right at the damage reports it; the message names the range.
    auto at = log_->Read("t", 0, 100, 10, 1 << 20);
    ASSERT_EQ(at.status().code(), StatusCode::kDataLoss);
    EXPECT_NE(at.status().message().find("[100, 101)"), std::string_view::npos);
    // A read that starts before the damage returns the good records first.
    auto before = log_->Read("t", 0, 95, 100, 1 << 20);
    ASSERT_TRUE(before.ok());
    EXPECT_EQ(before->records.size(), 5u);
    EXPECT_EQ(before->next_offset, 100u);
  }
}

TEST_F(LogCorruptionTest, FlippedHeaderBitResynchronizes) {
  auto [path, pos] = Locate(150);
  ASSERT_TRUE(sim_.sim_fs().CorruptByte(path, pos + 9, 0x01).ok());  // inside the offset field
  for (bool reopen : {false, true}) {
    SCOPED_TRACE(reopen ? "after reopen" : "while open");
    if (reopen) Reopen();
    std::map<uint64_t, std::string> got;
    std::vector<std::pair<uint64_t, uint64_t>> damaged;
    ReadThrough(&got, &damaged);
    ASSERT_EQ(damaged.size(), 1u);
    EXPECT_EQ(damaged[0], std::make_pair(uint64_t{150}, uint64_t{151}));
    EXPECT_EQ(got.size(), size_t{kRecords - 1});
  }
}

TEST_F(LogCorruptionTest, DamageInTheActiveSegmentKeepsLaterRecordsAcrossRecovery) {
  const uint64_t target = kRecords - 3;  // in the newest segment, not at its tail
  auto [path, pos] = Locate(target);
  ASSERT_TRUE(sim_.sim_fs().CorruptByte(path, pos + 20, 0xFF).ok());
  Reopen();
  std::map<uint64_t, std::string> got;
  std::vector<std::pair<uint64_t, uint64_t>> damaged;
  ReadThrough(&got, &damaged);
  ASSERT_EQ(damaged.size(), 1u);
  EXPECT_EQ(damaged[0], std::make_pair(target, target + 1));
  EXPECT_EQ(got.size(), size_t{kRecords - 1});
  // Appends continue after the last record, not after the damage.
  RecordView r{"new", "", "v", 0};
  auto res = log_->Append("t", std::span<const RecordView>(&r, 1));
  ASSERT_TRUE(res.ok());
  EXPECT_EQ((*res)[0].offset, uint64_t{kRecords});
}

TEST_F(LogCorruptionTest, TruncatedSealedSegmentIsReportedUntilTheNextSegment) {
  std::vector<uint64_t> bases = SegmentBases();
  ASSERT_GE(bases.size(), 3u);
  const uint64_t base = bases[1];
  const uint64_t next_base = bases[2];
  auto [path, pos] = Locate(base + 3);
  ASSERT_TRUE(sim_.sim_fs().CorruptTruncate(path, pos + 10).ok());  // mid-record
  for (bool reopen : {false, true}) {
    SCOPED_TRACE(reopen ? "after reopen" : "while open");
    if (reopen) Reopen();
    std::map<uint64_t, std::string> got;
    std::vector<std::pair<uint64_t, uint64_t>> damaged;
    ReadThrough(&got, &damaged);
    ASSERT_EQ(damaged.size(), 1u);
    EXPECT_EQ(damaged[0], std::make_pair(base + 3, next_base));
    EXPECT_EQ(got.size(), size_t{kRecords} - (next_base - base - 3));
  }
}

TEST_F(LogCorruptionTest, TruncatedActiveSegmentShortensTheLog) {
  std::vector<uint64_t> bases = SegmentBases();
  auto [path, pos] = Locate(kRecords - 5);
  ASSERT_TRUE(sim_.sim_fs().CorruptTruncate(path, pos + 7).ok());
  Reopen();
  std::map<uint64_t, std::string> got;
  std::vector<std::pair<uint64_t, uint64_t>> damaged;
  ReadThrough(&got, &damaged);
  EXPECT_TRUE(damaged.empty());
  EXPECT_EQ(got.size(), size_t{kRecords - 5});
  EXPECT_EQ(log_->DescribeTopic("t")->partitions[0].end_offset, uint64_t{kRecords - 5});
}

TEST_F(LogCorruptionTest, RandomFlipsNeverCrashOrReturnBadRecords) {
  std::mt19937_64 rng(42);
  std::vector<uint64_t> bases = SegmentBases();
  int flips = 0;
  for (int i = 0; i < 12; ++i) {
    const std::string path = SegmentPath(bases[rng() % bases.size()]);
    auto size = sim_.fs().GetFileSize(path);
    ASSERT_TRUE(size.ok());
    if (*size == 0) continue;
    ASSERT_TRUE(
        sim_.sim_fs().CorruptByte(path, rng() % *size, static_cast<uint8_t>(1 + rng() % 255)).ok());
    ++flips;
  }
  for (bool reopen : {false, true}) {
    SCOPED_TRACE(reopen ? "after reopen" : "while open");
    if (reopen) Reopen();
    std::map<uint64_t, std::string> got;
    std::vector<std::pair<uint64_t, uint64_t>> damaged;
    ReadThrough(&got, &damaged);
    // Each flipped byte damages at most one record (recovery may also cut the newest one).
    EXPECT_GE(got.size(), size_t{kRecords} - static_cast<size_t>(flips));
  }
}

// Random damage over many seeds: flips anywhere (headers, bodies, several in one record) and
// cut segments, read while open and after recovery. Every record returned must be intact and
// at its offset, reads must finish, and appends must continue after recovery.
TEST(LogCorruptionFuzzTest, RandomDamageOverSeeds) {
  const uint64_t seeds = std::max<uint64_t>(1, EnvNumber("CONVERGE_SIM_SEEDS", 5000) / 10);
  // CONVERGE_SIM_SEED=<n> replays the one seed a failure printed.
  const uint64_t only = EnvNumber("CONVERGE_SIM_SEED", 0);
  for (uint64_t seed = only != 0 ? only : 1; seed <= (only != 0 ? only : seeds); ++seed) {
    SCOPED_TRACE("seed " + std::to_string(seed) +
                 " (replay with CONVERGE_SIM_SEED=" + std::to_string(seed) + ")");
    sim::SimEnv sim(seed);
    std::mt19937_64 rng(seed);
    std::unique_ptr<Log> log = OpenLog(sim);
    TopicOptions options;
    options.segment_max_bytes = 1024 + rng() % 4096;
    ASSERT_TRUE(log->CreateTopic("t", options).ok());
    std::vector<std::string> ids, values;
    const int n = 50 + static_cast<int>(rng() % 200);
    for (int i = 0; i < n; ++i) {
      ids.push_back("id-" + std::to_string(i));
      values.push_back(ValueFor(ids.back(), rng() % 120));
      RecordView r{ids.back(), "", values.back(), 0};
      ASSERT_TRUE(log->Append("t", std::span<const RecordView>(&r, 1)).ok());
    }
    const std::string pdir = std::string(kDir) + "/topics/t/0000";
    auto names = sim.fs().ListDir(pdir);
    ASSERT_TRUE(names.ok());
    const int damage = 1 + static_cast<int>(rng() % 6);
    for (int d = 0; d < damage; ++d) {
      const std::string path = pdir + "/" + (*names)[rng() % names->size()];
      auto size = sim.fs().GetFileSize(path);
      if (!size.ok() || *size == 0) continue;
      if (rng() % 5 == 0) {
        ASSERT_TRUE(sim.sim_fs().CorruptTruncate(path, rng() % *size).ok());
      } else {
        ASSERT_TRUE(sim.sim_fs()
                        .CorruptByte(path, rng() % *size, static_cast<uint8_t>(1 + rng() % 255))
                        .ok());
      }
    }
    for (int pass = 0; pass < 2; ++pass) {
      if (pass == 1) {
        log.reset();
        log = OpenLog(sim);
        ASSERT_NE(log, nullptr);
      }
      uint64_t next = 0;
      int guard = 0;
      for (; guard < 100000; ++guard) {
        auto batch = log->Read("t", 0, next, 1 + rng() % 20, rng() % 2000);
        if (!batch.ok()) {
          ASSERT_EQ(batch.status().code(), StatusCode::kDataLoss) << batch.status().ToString();
          auto resume = DataLossResumeOffset(batch.status());
          ASSERT_TRUE(resume.has_value());
          ASSERT_GT(*resume, next);
          next = *resume;
          continue;
        }
        if (batch->records.empty()) break;
        for (const StoredRecord& r : batch->records) {
          ASSERT_GE(r.offset, next);
          ASSERT_LT(r.offset, ids.size());
          ASSERT_EQ(r.id, ids[r.offset]);
          ASSERT_EQ(r.value, values[r.offset]);
          next = r.offset + 1;
        }
      }
      ASSERT_LT(guard, 100000) << "read did not finish";
      for (int64_t t : {int64_t{0}, int64_t{1} << 62}) {
        auto off = log->OffsetForTime("t", 0, t);
        ASSERT_TRUE(off.ok()) << off.status().ToString();
      }
    }
    RecordView r{"after", "", "after", 0};
    auto res = log->Append("t", std::span<const RecordView>(&r, 1));
    ASSERT_TRUE(res.ok()) << res.status().ToString();
    auto back = log->Read("t", 0, (*res)[0].offset, 1, 1);
    ASSERT_TRUE(back.ok()) << back.status().ToString();
    ASSERT_EQ(back->records.size(), 1u);
    EXPECT_EQ(back->records[0].value, "after");
    if (::testing::Test::HasFailure()) return;
  }
}

TEST_F(LogCorruptionTest, DamagedTopicMetadataDoesNotStopOpen) {
  ASSERT_TRUE(log_->CreateTopic("other", {}).ok());
  ASSERT_TRUE(
      sim_.sim_fs().CorruptByte(std::string(kDir) + "/topics/other/topic.json", 5, 0x55).ok());
  Reopen();
  EXPECT_EQ(log_->DescribeTopic("other").status().code(), StatusCode::kDataLoss);
  EXPECT_EQ(log_->ListTopics(), (std::vector<std::string>{"other", "t"}));
  std::map<uint64_t, std::string> got;
  std::vector<std::pair<uint64_t, uint64_t>> damaged;
  ReadThrough(&got, &damaged);
  EXPECT_EQ(got.size(), size_t{kRecords});
  EXPECT_TRUE(log_->DeleteTopic("other").ok());
  EXPECT_TRUE(log_->CreateTopic("other", {}).ok());
}

}  // namespace
}  // namespace converge
