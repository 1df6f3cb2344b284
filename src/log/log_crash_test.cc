// Real process crashes: runs log_crash_writer (appending under fsync from several threads),
// kills it with SIGKILL at a random moment, reopens the log with the production Env and checks
// that every record the writer saw acknowledged is present and intact. Several rounds on the
// same directory, so recovery also runs over earlier recoveries.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "converge/log.h"
#include "log/log_crash_common.h"
#include "log/test_env.h"
#include "support/kill_after_lines.h"

namespace converge {
namespace {

struct Ack {
  uint32_t partition = 0;
  uint64_t offset = 0;
  std::string id;
  bool duplicate = false;
};

// Starts the writer, kills it with SIGKILL after `kill_after_lines` acknowledgements, and
// returns every acknowledgement it printed completely.
std::vector<Ack> RunAndKill(const std::string& dir, const std::string& run,
                            size_t kill_after_lines) {
  Result<testing::KilledRun> r =
      testing::RunAndKillAfterLines({LOG_CRASH_WRITER, dir, run, "3"}, kill_after_lines);
  if (!r.ok()) {
    ADD_FAILURE() << r.status().ToString();
    return {};
  }
  EXPECT_TRUE(r->EndedBySigkill()) << "writer status " << r->wait_status;
  std::vector<Ack> acks;
  for (const std::string& line : r->lines) {
    Ack a;
    std::istringstream fields(line);
    int dup = 0;
    unsigned long long offset = 0;
    if (fields >> a.partition >> offset >> a.id >> dup) {
      a.offset = offset;
      a.duplicate = dup != 0;
      acks.push_back(a);
    }
  }
  return acks;
}

TEST(LogCrashTest, SigkillLosesNoAcknowledgedRecord) {
  test::TempDir tmp;
  ASSERT_FALSE(tmp.path().empty());
  const std::string dir = tmp.path() + "/log";
  // A fresh seed each run; CONVERGE_SIM_SEED=<n> replays the one a failure printed.
  const char* env_seed = std::getenv("CONVERGE_SIM_SEED");
  const uint64_t seed = env_seed ? std::strtoull(env_seed, nullptr, 0) : std::random_device()();
  std::string trace = "seed ";
  trace += std::to_string(seed);
  trace += " (replay with CONVERGE_SIM_SEED=";
  trace += std::to_string(seed);
  trace += ")";
  SCOPED_TRACE(trace);
  std::mt19937_64 rng(seed);
  std::vector<Ack> all;
  const int rounds = 5;
  for (int round = 0; round < rounds; ++round) {
    const size_t kill_after = 200 + rng() % 6000;
    std::string run = "r";
    run += std::to_string(round);
    std::vector<Ack> acks = RunAndKill(dir, run, kill_after);
    ASSERT_GE(acks.size(), kill_after / 2) << "round " << round;
    all.insert(all.end(), acks.begin(), acks.end());

    LogOptions options;
    options.dir = dir;
    auto opened = Log::Open(Env::Default(), options);
    ASSERT_TRUE(opened.ok()) << opened.status().ToString();
    std::unique_ptr<Log> log = std::move(opened).value();
    // Every partition reads back dense and undamaged.
    auto info = log->DescribeTopic(test::kCrashTopic);
    ASSERT_TRUE(info.ok()) << info.status().ToString();
    std::vector<std::vector<std::string>> ids(test::kCrashPartitions);
    for (uint32_t p = 0; p < test::kCrashPartitions; ++p) {
      uint64_t next = 0;
      while (true) {
        auto batch = log->Read(test::kCrashTopic, p, next, 4096, 4 << 20);
        ASSERT_TRUE(batch.ok()) << "round " << round << " partition " << p << ": "
                                << batch.status().ToString();
        if (batch->records.empty()) break;
        for (const StoredRecord& r : batch->records) {
          ASSERT_EQ(r.offset, next);
          ASSERT_EQ(r.value, test::CrashValueFor(r.id)) << "offset " << r.offset;
          ids[p].emplace_back(r.id);
          ++next;
        }
      }
      EXPECT_EQ(next, info->partitions[p].end_offset);
    }
    for (const Ack& a : all) {
      ASSERT_LT(a.partition, test::kCrashPartitions);
      ASSERT_LT(a.offset, ids[a.partition].size())
          << "round " << round << ": acknowledged " << a.id << " at " << a.partition << "/"
          << a.offset << " is missing";
      if (a.duplicate) {
        // The original of a duplicate has the same id (ids within a run map one-to-one).
        ASSERT_EQ(ids[a.partition][a.offset], a.id);
      } else {
        ASSERT_EQ(ids[a.partition][a.offset], a.id) << a.partition << "/" << a.offset;
      }
    }
  }
}

}  // namespace
}  // namespace converge
