// Randomized simulation of push delivery (push_delivery.h): the real Log and ConsumerGroups on
// the simulated filesystem, a PushRunner, and a simulated endpoint that answers 2xx, 400, 408,
// 429 (with and without Retry-After), 500, times out, refuses connections and goes down for a
// while; events are published as time passes and the machine crashes (a restart with the
// runner gone mid-delivery). Checked at the end of every seed:
//   - per-key order: within one process lifetime, the endpoint accepts (2xx) a key's events in
//     log order, and each at most once; across lifetimes, the first acceptances of a key's
//     events are in log order too (a crash may deliver acknowledged-but-uncommitted events
//     again, never an older one after a newer one was first accepted);
//   - nothing lost: every event was accepted by the endpoint or is in the dead-letter topic;
//   - dead letters never dropped: an event the endpoint rejected with a 4xx is in the
//     dead-letter topic, unless the rejection was lost in a crash and it was accepted later.
// Seeds: CONVERGE_SIM_SEEDS=N runs seeds 1..N (default 60); CONVERGE_SIM_SEED=S reruns one.
#include <gtest/gtest.h>

#include <cstdlib>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "converge/consumer_group.h"
#include "groups/testing/harness.h"
#include "server/push_delivery.h"

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wrestrict"  // GCC bug 105329 on "literal" + std::string
#endif

namespace converge::server {
namespace {

using groups_testing::Harness;
using groups_testing::kMsNs;

constexpr char kTopic[] = "orders";
constexpr char kGroup[] = "push-orders";

int SeedCount() {
  const char* s = std::getenv("CONVERGE_SIM_SEEDS");
  return s != nullptr ? std::max(1, std::atoi(s)) : 60;
}

// The endpoint: answers after a random latency, and records what it accepted.
class SimEndpoint : public PushTransport {
 public:
  SimEndpoint(sim::SimEnv& env, std::mt19937_64& rng, int64_t timeout_ms)
      : env_(env), rng_(rng), timeout_ms_(timeout_ms) {}

  void Send(const PushRequest& request, std::function<void(PushOutcome)> done) override {
    PushOutcome out;
    int64_t latency_ms = 1 + static_cast<int64_t>(rng_() % 40);
    const int roll = static_cast<int>(rng_() % 100);
    const bool healthy = drain_ || env_.now_nanos() >= down_until_ns_;
    if (!healthy || (!drain_ && roll < 5)) {
      out.kind = PushOutcome::Kind::kConnectError;
      out.detail = "connection refused";
    } else if (!drain_ && roll < 12) {
      out.kind = PushOutcome::Kind::kTimeout;  // the request never reached the application
      latency_ms = timeout_ms_;
    } else if (!drain_ && roll < 20) {
      out.status = 500;
    } else if (!drain_ && roll < 26) {
      out.status = 429;
      if (rng_() % 2) out.retry_after_ms = static_cast<int64_t>(rng_() % 3) * 1000;
    } else if (!drain_ && roll < 29) {
      out.status = 408;
    } else if (!drain_ && roll < 32) {
      out.status = 400;
      rejected.insert(request.value);
    } else {
      out.status = 200;
      accepted[lifetime].push_back(request.value);
    }
    // Every answer carries a reference to this endpoint's lifetime: after a crash the
    // runner that asked is gone and drops it.
    env_.executor().Schedule(latency_ms * kMsNs,
                             [done = std::move(done), out]() mutable { done(std::move(out)); });
  }

  void GoDown(int64_t for_ns) { down_until_ns_ = env_.now_nanos() + for_ns; }

  int lifetime = 0;
  bool drain_ = false;
  std::map<int, std::vector<std::string>> accepted;  // by lifetime, in acceptance order
  std::set<std::string> rejected;

 private:
  sim::SimEnv& env_;
  std::mt19937_64& rng_;
  int64_t timeout_ms_;
  int64_t down_until_ns_ = 0;
};

class Driver {
 public:
  explicit Driver(uint64_t seed) : h_(seed), rng_(seed * 0x9E3779B97F4A7C15ull + 7) {}

  void Run() {
    ASSERT_TRUE(h_.Open().ok());
    ASSERT_TRUE(h_.CreateTopic(kTopic, 1 + static_cast<uint32_t>(rng_() % 3)).ok());
    GroupOptions o;
    o.lease_ms = 3 * kTimeoutMs;  // longer than a request can take
    o.max_deliveries = 4 + static_cast<uint32_t>(rng_() % 4);
    o.session_timeout_ms = 2000;
    o.max_nack_delay_ms = 10'000;
    o.dead_letter_retry_ms = 100;
    ASSERT_TRUE(h_.groups->CreateGroup(kTopic, kGroup, o).ok());
    policy_.max_concurrency = 1 + static_cast<uint32_t>(rng_() % 8);
    policy_.timeout_ms = kTimeoutMs;
    policy_.initial_backoff_ms = 20 + static_cast<int64_t>(rng_() % 100);
    policy_.max_backoff_ms = 2000;
    endpoint_ = std::make_unique<SimEndpoint>(h_.env, rng_, kTimeoutMs);
    StartRunner();

    const int records = 150 + static_cast<int>(rng_() % 150);
    const int keys = 1 + static_cast<int>(rng_() % 12);
    int crashes = 0;
    while (produced_ < records) {
      const int n = static_cast<int>(rng_() % 4);
      for (int i = 0; i < n && produced_ < records; ++i) {
        const std::string key = "k" + std::to_string(rng_() % keys);
        const std::string value = key + "/" + std::to_string(produced_++);
        h_.Produce(kTopic, key, value);
        order_[key].push_back(value);
        all_.push_back(value);
      }
      h_.env.RunFor(static_cast<int64_t>(rng_() % 60) * kMsNs);
      if (rng_() % 200 == 0) endpoint_->GoDown(static_cast<int64_t>(rng_() % 3000) * kMsNs);
      if (crashes < 3 && rng_() % 150 == 0) {
        ++crashes;
        Crash();
        if (::testing::Test::HasFatalFailure()) return;
      }
    }
    // Drain: the endpoint answers 200 from now on; the retries still pending run out.
    endpoint_->drain_ = true;
    for (int i = 0; i < 2000 && !AllCommitted(); ++i) h_.env.RunFor(100 * kMsNs);
    ASSERT_TRUE(AllCommitted()) << "events still pending at the end";
    runner_.reset();
    if (std::getenv("PUSH_SIM_VERBOSE") != nullptr) {
      std::printf("records=%d crashes=%d delivered=%lu retried=%lu dead=%lu lifetimes=%zu\n",
                  produced_, crashes, (unsigned long)stats_.delivered.load(),
                  (unsigned long)stats_.retried.load(), (unsigned long)stats_.dead_lettered.load(),
                  endpoint_->accepted.size());
    }
    Check();
  }

 private:
  static constexpr int64_t kTimeoutMs = 200;

  void StartRunner() {
    PushRunnerOptions ro;
    ro.name = "sim";
    ro.topic = kTopic;
    ro.group = kGroup;
    ro.policy = policy_;
    ro.error_retry_ms = 50;
    runner_ = std::make_unique<PushRunner>(h_.env, h_.env.executor(), *h_.groups, *endpoint_, ro,
                                           &stats_);
    ASSERT_TRUE(runner_->Start().ok());
  }

  void Crash() {
    runner_.reset();  // the process dies with its requests in flight
    h_.Crash();
    ASSERT_TRUE(h_.Open().ok());
    ++endpoint_->lifetime;
    StartRunner();
  }

  bool AllCommitted() {
    Result<GroupDescription> g = h_.groups->DescribeGroup(kTopic, kGroup);
    if (!g.ok()) return false;
    for (const PartitionDescription& p : g->partitions) {
      if (p.committed < p.end_offset || p.pending > 0) return false;
    }
    return true;
  }

  static std::string KeyOf(const std::string& value) { return value.substr(0, value.find('/')); }
  static int SeqOf(const std::string& value) {
    return std::atoi(value.c_str() + value.find('/') + 1);
  }

  void Check() {
    std::set<std::string> dead;
    uint64_t from = 0;
    while (true) {
      Result<DeadLetterPage> page = h_.groups->ListDeadLetters(kTopic, kGroup, from, 1000);
      ASSERT_TRUE(page.ok()) << page.status().ToString();
      for (const DeadLetter& d : page->dead_letters) dead.insert(d.value);
      if (page->dead_letters.empty() || page->next_offset <= from) break;
      from = page->next_offset;
    }
    std::set<std::string> accepted_ever;
    std::map<std::string, int> first_seq;  // per key: the last first-accepted sequence number
    for (const auto& [lifetime, list] : endpoint_->accepted) {
      std::set<std::string> seen;
      std::map<std::string, int> last_in_lifetime;
      for (const std::string& v : list) {
        EXPECT_TRUE(seen.insert(v).second) << v << " accepted twice in lifetime " << lifetime;
        const std::string key = KeyOf(v);
        auto it = last_in_lifetime.find(key);
        EXPECT_TRUE(it == last_in_lifetime.end() || it->second < SeqOf(v))
            << v << " accepted after " << key << "/" << it->second << " in lifetime " << lifetime;
        last_in_lifetime[key] = SeqOf(v);
        if (accepted_ever.insert(v).second) {
          auto f = first_seq.find(key);
          EXPECT_TRUE(f == first_seq.end() || f->second < SeqOf(v))
              << v << " first accepted after " << key << "/" << f->second;
          first_seq[key] = SeqOf(v);
        }
      }
    }
    for (const std::string& v : all_) {
      EXPECT_TRUE(accepted_ever.count(v) || dead.count(v)) << v << " was lost";
    }
    for (const std::string& v : endpoint_->rejected) {
      EXPECT_TRUE(dead.count(v) || accepted_ever.count(v))
          << v << " rejected but not dead-lettered";
    }
    EXPECT_EQ(stats_.in_flight.load(), 0);
  }

  Harness h_;
  std::mt19937_64 rng_;
  PushPolicy policy_;
  PushStats stats_;
  std::unique_ptr<SimEndpoint> endpoint_;
  std::unique_ptr<PushRunner> runner_;
  int produced_ = 0;
  std::map<std::string, std::vector<std::string>> order_;
  std::vector<std::string> all_;
};

TEST(PushDeliverySim, OrderNoLossDeadLettersAcrossCrashes) {
  std::vector<uint64_t> seeds;
  if (const char* one = std::getenv("CONVERGE_SIM_SEED")) {
    seeds.push_back(std::strtoull(one, nullptr, 10));
  } else {
    for (int i = 1; i <= SeedCount(); ++i) seeds.push_back(static_cast<uint64_t>(i));
  }
  for (uint64_t seed : seeds) {
    SCOPED_TRACE("CONVERGE_SIM_SEED=" + std::to_string(seed));
    Driver(seed).Run();
    if (::testing::Test::HasFailure()) break;
  }
}

// The rule table, one answer at a time.
TEST(PushDecide, RuleTable) {
  sim::SimEnv env(1);
  PushPolicy p;
  p.initial_backoff_ms = 100;
  p.max_backoff_ms = 1000;
  auto decide = [&](unsigned status, std::optional<int64_t> retry_after = std::nullopt,
                    uint32_t attempt = 1) {
    PushOutcome o;
    o.status = status;
    o.retry_after_ms = retry_after;
    return DecidePush(o, attempt, p, 5000, env.random());
  };
  using A = PushDecision::Action;
  EXPECT_EQ(decide(200).action, A::kAck);
  EXPECT_EQ(decide(204).action, A::kAck);
  EXPECT_EQ(decide(400).action, A::kDeadLetter);
  EXPECT_EQ(decide(404).action, A::kDeadLetter);
  EXPECT_EQ(decide(408).action, A::kRetry);
  EXPECT_EQ(decide(429).action, A::kRetry);
  EXPECT_EQ(decide(429, 3000).delay_ms, 3000);
  EXPECT_EQ(decide(429, 60'000).delay_ms, 5000);  // capped by the group's max nack delay
  EXPECT_EQ(decide(500).action, A::kRetry);
  EXPECT_EQ(decide(302).action, A::kRetry);
  for (uint32_t attempt = 1; attempt < 10; ++attempt) {
    const int64_t d = decide(503, std::nullopt, attempt).delay_ms;
    const int64_t full = std::min<int64_t>(1000, 100LL << (attempt - 1));
    EXPECT_GE(d, full / 2);
    EXPECT_LE(d, full);
  }
  PushOutcome timeout;
  timeout.kind = PushOutcome::Kind::kTimeout;
  EXPECT_EQ(DecidePush(timeout, 1, p, 5000, env.random()).action, A::kRetry);
  EXPECT_EQ(ParseRetryAfterMs("7", 0), 7000);
  EXPECT_EQ(ParseRetryAfterMs(" 0 ", 0), 0);
  EXPECT_EQ(ParseRetryAfterMs("soon", 0), std::nullopt);
  // 1994-11-06 08:49:37 UTC is 784111777 s after the epoch.
  EXPECT_EQ(ParseRetryAfterMs("Sun, 06 Nov 1994 08:49:37 GMT", 784111770LL * 1'000'000), 7000);
}

}  // namespace
}  // namespace converge::server
