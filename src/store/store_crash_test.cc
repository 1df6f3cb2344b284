// Real process crashes: runs store_crash_writer (several threads committing multi-key
// transactions under fsync, with the change feed on the event log), kills it with SIGKILL at a
// random moment, reopens store and log in this process, and checks that
//   - every transaction the writer saw acknowledged is there, and each thread's documents all
//     carry the same transaction number (a transaction is never half applied);
//   - the change feed holds exactly one event per committed write, in commit order.
// Several rounds on the same directory, so recovery also runs over earlier recoveries.
#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <filesystem>
#include <map>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "converge/event.h"
#include "converge/log.h"
#include "converge/store.h"
#include "store/feed.h"
#include "store/store_crash_common.h"
#include "support/kill_after_lines.h"
#include "support/temp_dir.h"

namespace converge {
namespace {

using namespace store_crash;  // NOLINT

// One temporary directory per test (tests/support/temp_dir.h).
using ::converge::testing::TempDir;

struct Ack {
  int thread = 0;
  long n = 0;
  uint64_t seq = 0;
};

// Runs the writer until it printed `kill_after_lines` lines, kills it, returns its complete
// lines.
std::vector<Ack> RunAndKill(const std::string& dir, size_t kill_after_lines) {
  Result<testing::KilledRun> r =
      testing::RunAndKillAfterLines({STORE_CRASH_WRITER, dir}, kill_after_lines);
  if (!r.ok()) {
    ADD_FAILURE() << r.status().ToString();
    return {};
  }
  EXPECT_TRUE(r->EndedBySigkill()) << "writer status " << r->wait_status;
  std::vector<Ack> acks;
  for (const std::string& line : r->lines) {
    Ack a;
    unsigned long long seq = 0;
    std::istringstream fields(line);
    if (fields >> a.thread >> a.n >> seq) {
      a.seq = seq;
      acks.push_back(a);
    }
  }
  return acks;
}

TEST(StoreCrashTest, SigkillKeepsAcknowledgedTransactionsWholeAndTheFeedExact) {
  TempDir tmp;
  ASSERT_FALSE(tmp.path().empty());
  // A fresh seed each run; CONVERGE_SIM_SEED=<n> replays the one a failure printed.
  const char* env_seed = std::getenv("CONVERGE_SIM_SEED");
  const uint64_t seed = env_seed ? std::strtoull(env_seed, nullptr, 0) : std::random_device()();
  SCOPED_TRACE("seed " + std::to_string(seed) +
               " (replay with CONVERGE_SIM_SEED=" + std::to_string(seed) + ")");
  std::mt19937_64 rng(seed);
  std::map<int, long> last_acked;  // thread -> highest acknowledged transaction number
  const int rounds = 4;
  for (int round = 0; round < rounds; ++round) {
    const size_t kill_after = 100 + rng() % 3000;
    std::vector<Ack> acks = RunAndKill(tmp.path(), kill_after);
    ASSERT_GE(acks.size(), kill_after / 2) << "round " << round;
    for (const Ack& a : acks) last_acked[a.thread] = std::max(last_acked[a.thread], a.n);

    LogOptions lo;
    lo.dir = tmp.path() + "/log";
    auto log = Log::Open(Env::Default(), lo);
    ASSERT_TRUE(log.ok()) << log.status().ToString();
    StoreOptions so;
    so.dir = tmp.path() + "/store";
    so.feed_log = log->get();
    auto opened = Store::Open(Env::Default(), so);
    ASSERT_TRUE(opened.ok()) << opened.status().ToString();
    std::unique_ptr<Store> store = std::move(*opened);

    // State: whole transactions, nothing acknowledged missing.
    std::map<int, long> current;
    for (int t = 0; t < kThreads; ++t) {
      long n = -1;
      uint64_t version = 0;
      for (int k = 0; k < kKeysPerThread; ++k) {
        auto doc = store->Get(kCollection, KeyFor(t, k));
        if (!doc.ok()) {
          ASSERT_EQ(doc.status().code(), StatusCode::kNotFound);
          ASSERT_EQ(n, -1) << "thread " << t << ": key " << k << " missing, others present";
          continue;
        }
        const long got = std::strtol(doc->value.c_str() + 5, nullptr, 10);
        ASSERT_EQ(doc->value, ValueFor(got, k));
        if (k == 0) {
          n = got;
          version = doc->version;
        }
        ASSERT_EQ(got, n) << "thread " << t << ": transaction half applied";
        ASSERT_EQ(doc->version, version);
      }
      if (last_acked.count(t)) {
        ASSERT_GE(n, last_acked[t]) << "thread " << t << ": acknowledged transaction lost";
        ASSERT_LE(n, last_acked[t] + 1) << "thread " << t;
      }
      current[t] = n;
      if (n >= 0) last_acked[t] = n;  // an unacknowledged survivor is now the base
    }

    // Feed: one event per committed write, in commit order, each thread's transactions 0..n.
    ASSERT_TRUE(store->FlushFeed().ok());
    std::set<std::string> ids;
    std::map<int, std::vector<uint64_t>> seqs_by_thread;
    uint64_t prev_seq = 0;
    uint64_t next = 0;
    while (true) {
      auto batch = (*log)->Read(kTopic, 0, next, 4096, 4 << 20);
      ASSERT_TRUE(batch.ok()) << batch.status().ToString();
      if (batch->records.empty()) break;
      for (const StoredRecord& r : batch->records) {
        ASSERT_TRUE(ids.insert(std::string(r.id)).second) << "duplicate event " << r.id;
        uint64_t seq = 0;
        ASSERT_TRUE(store_internal::SeqFromFeedEventId(r.id, &seq)) << r.id;
        ASSERT_GE(seq, prev_seq) << "out of commit order: " << r.id;
        prev_seq = seq;
        auto event = DecodeBinary(r.value);
        ASSERT_TRUE(event.ok()) << event.status().ToString();
        const std::string subject = event->subject().value_or("");
        const int t = std::atoi(subject.c_str() + 1);
        auto& v = seqs_by_thread[t];
        if (v.empty() || v.back() != seq) v.push_back(seq);
      }
      next = batch->next_offset;
    }
    for (int t = 0; t < kThreads; ++t) {
      ASSERT_EQ(static_cast<long>(seqs_by_thread[t].size()), current[t] + 1)
          << "thread " << t << ": events of " << seqs_by_thread[t].size()
          << " transactions, state at transaction " << current[t];
    }
    EXPECT_EQ(ids.size(), static_cast<size_t>(kKeysPerThread) *
                              (current[0] + current[1] + current[2] + current[3] + 4));
  }
}

}  // namespace
}  // namespace converge
