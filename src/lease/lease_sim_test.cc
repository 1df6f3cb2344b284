// The LeaseKeeper's timing logic under SimEnv: several keepers contend for one lease in an
// in-memory table whose clock is the simulator's (the "database clock", running at the same
// rate as the keepers' monotonic clocks). Store calls take random time (the request reaches
// the table after a delay, the reply comes back after another), some fail before or after
// being applied (a reply lost), and holders are partitioned from the table for long stretches.
// Invariants: at no instant do two keepers hold the lease; tokens grow with every acquisition;
// after the holder is cut off, another keeper holds the lease within
// ttl + renew interval + the longest call. CONVERGE_SIM_SEEDS sets the number of seeds
// (default 200); CONVERGE_SIM_SEED=<n> replays one.
#include <gtest/gtest.h>

#include <cstdlib>
#include <map>
#include <random>

#include "converge/sim_env.h"
#include "lease/lease.h"

namespace converge::lease {
namespace {

constexpr int64_t kMs = 1'000'000;

// The table, with the simulator's clock as the database's. A call first travels for
// request_delay (time passes on the caller's clock: the call blocks), is applied at the
// table's now, then the reply travels for reply_delay. A partitioned holder's calls hang for
// `hang_ms` and fail.
class SimLeaseStore : public LeaseStore {
 public:
  SimLeaseStore(sim::SimEnv& sim, uint64_t seed) : sim_(sim), rng_(seed) {}

  void SetPartitioned(const std::string& holder, bool cut) { partitioned_[holder] = cut; }
  int64_t max_call_ns() const { return max_call_ns_; }
  // Acquires applied whose caller heard an error: each may cost the taker one more interval.
  int64_t lost_acquire_replies() const { return lost_acquire_replies_; }

  Result<Acquired> Acquire(const std::string& name, const std::string& holder,
                           int64_t ttl_ms) override {
    CONVERGE_RETURN_IF_ERROR(Travel(holder));
    Row& row = rows_[name];
    Acquired out;
    if (!row.released && row.expires_ns > Now() && row.holder != holder) {
      ReplyTravel();
      return FailedPreconditionError(std::string("held by ").append(row.holder));
    }
    out.takeover = !row.released && !row.holder.empty() && row.holder != holder;
    row.holder = holder;
    row.token += 1;
    row.released = false;
    row.expires_ns = Now() + ttl_ms * kMs;
    out.token = row.token;
    Status reply = MaybeLoseReply();
    if (!reply.ok()) {
      ++lost_acquire_replies_;
      return reply;
    }
    return out;
  }

  Result<Acquired> TakeOver(const std::string& name, const std::string& holder,
                            const std::string& dead_holder, int64_t ttl_ms) override {
    CONVERGE_RETURN_IF_ERROR(Travel(holder));
    Row& row = rows_[name];
    if (row.released || row.expires_ns <= Now() || row.holder != dead_holder) {
      ReplyTravel();
      return FailedPreconditionError("not held by " + dead_holder);
    }
    row.holder = holder;
    row.token += 1;
    row.expires_ns = Now() + ttl_ms * kMs;
    Acquired out;
    out.token = row.token;
    out.takeover = true;
    CONVERGE_RETURN_IF_ERROR(MaybeLoseReply());
    return out;
  }

  Status Renew(const std::string& name, const std::string& holder, int64_t token,
               int64_t ttl_ms) override {
    CONVERGE_RETURN_IF_ERROR(Travel(holder));
    Row& row = rows_[name];
    if (row.holder != holder || row.token != token || row.released || row.expires_ns <= Now()) {
      ReplyTravel();
      return FailedPreconditionError("lost");
    }
    row.expires_ns = Now() + ttl_ms * kMs;
    return MaybeLoseReply();
  }

  Status Release(const std::string& name, const std::string& holder, int64_t token) override {
    Row& row = rows_[name];
    if (row.holder == holder && row.token == token && !row.released) {
      row.released = true;
      row.expires_ns = Now();
    }
    return Status::Ok();
  }

  Result<std::vector<LeaseRecord>> List() override { return std::vector<LeaseRecord>{}; }

 private:
  struct Row {
    std::string holder;
    int64_t token = 0;
    bool released = true;
    int64_t expires_ns = 0;
  };

  int64_t Now() const { return sim_.now_nanos(); }

  int64_t Uniform(int64_t lo, int64_t hi) {
    return std::uniform_int_distribution<int64_t>(lo, hi)(rng_);
  }

  void Spend(int64_t ns) {
    sim_.AdvanceTime(ns);
    call_ns_ += ns;
  }

  Status Travel(const std::string& holder) {
    call_ns_ = 0;
    if (partitioned_[holder]) {
      Spend(Uniform(0, 3 * kMs * 100));  // up to 300 ms, then the connection fails
      Finish();
      return UnavailableError("partitioned");
    }
    // Mostly fast, sometimes slow (a busy database).
    Spend(Uniform(0, 5) == 0 ? Uniform(0, 150 * kMs) : Uniform(0, 5 * kMs));
    return Status::Ok();
  }

  void ReplyTravel() {
    Spend(Uniform(0, 5 * kMs));
    Finish();
  }

  Status MaybeLoseReply() {
    ReplyTravel();
    // Applied, but the caller hears an error: its outcome is unknown to it.
    if (Uniform(0, 9) == 0) return UnavailableError("connection lost after the commit");
    return Status::Ok();
  }

  void Finish() { max_call_ns_ = std::max(max_call_ns_, call_ns_); }

  sim::SimEnv& sim_;
  std::mt19937_64 rng_;
  std::map<std::string, Row> rows_;
  std::map<std::string, bool> partitioned_;
  int64_t call_ns_ = 0;
  int64_t max_call_ns_ = 0;
  int64_t lost_acquire_replies_ = 0;
};

std::vector<uint64_t> Seeds() {
  if (const char* one = std::getenv("CONVERGE_SIM_SEED")) return {std::strtoull(one, nullptr, 10)};
  uint64_t n = 200;
  if (const char* many = std::getenv("CONVERGE_SIM_SEEDS")) n = std::strtoull(many, nullptr, 10);
  std::vector<uint64_t> seeds;
  for (uint64_t s = 1; s <= n; ++s) seeds.push_back(s);
  return seeds;
}

void RunSeed(uint64_t seed) {
  SCOPED_TRACE(std::string("CONVERGE_SIM_SEED=").append(std::to_string(seed)));
  sim::SimEnv sim(seed);
  std::mt19937_64 rng(seed * 7919 + 1);
  SimLeaseStore store(sim, seed);
  const int64_t ttl_ms = 1000;
  const int64_t interval_ms = 300;
  constexpr int kKeepers = 3;
  std::vector<std::unique_ptr<LeaseKeeper>> keepers;
  std::vector<int64_t> tokens_seen;
  for (int i = 0; i < kKeepers; ++i) {
    LeaseKeeperOptions o;
    o.name = "relay:orders";
    o.holder = std::string("k").append(std::to_string(i));
    o.ttl_ms = ttl_ms;
    o.renew_interval_ms = interval_ms;
    o.safety_margin_ms = 200;
    auto k = LeaseKeeper::Create(sim, store, o);
    ASSERT_TRUE(k.ok()) << k.status().ToString();
    keepers.push_back(std::move(k).value());
  }
  for (auto& k : keepers) k->Start();

  int64_t last_token = 0;
  int64_t cut_at = -1;  // when the holder was cut off (-1: none now)
  int cut_holder = -1;
  int64_t lost_at_cut = 0;
  const int64_t end = 120'000 * kMs;
  while (sim.now_nanos() < end && sim.RunOne()) {
    int holders = 0;
    int who = -1;
    for (int i = 0; i < kKeepers; ++i) {
      if (keepers[i]->held()) {
        ++holders;
        who = i;
      }
    }
    ASSERT_LE(holders, 1) << "two keepers hold the lease at " << sim.now_nanos() / kMs << " ms";
    if (who >= 0) {
      const int64_t t = keepers[who]->token();
      ASSERT_GE(t, last_token);
      last_token = t;
      if (cut_at >= 0 && who != cut_holder) {
        // Bound: the row expires at most ttl after the holder's last renewal (sent before the
        // cut), a standby tries every interval and its successful call takes at most the
        // longest call; one more interval (and call) covers a standby whose attempt was
        // refused just before expiry, and each acquire whose reply was lost costs one more.
        const int64_t lost = store.lost_acquire_replies() - lost_at_cut;
        const int64_t bound = (ttl_ms + 2 * interval_ms) * kMs + 2 * store.max_call_ns() +
                              lost * (interval_ms * kMs + store.max_call_ns());
        ASSERT_LE(sim.now_nanos() - cut_at, bound)
            << "takeover took " << (sim.now_nanos() - cut_at) / kMs << " ms";
        // Heal the old holder: it must find its lease gone and stand by.
        store.SetPartitioned(keepers[cut_holder]->holder(), false);
        cut_at = -1;
      }
      // Now and then cut the holder off from the table for a long stretch.
      if (cut_at < 0 && std::uniform_int_distribution<int>(0, 400)(rng) == 0) {
        cut_at = sim.now_nanos();
        cut_holder = who;
        lost_at_cut = store.lost_acquire_replies();
        store.SetPartitioned(keepers[who]->holder(), true);
      }
    }
  }
  EXPECT_GT(last_token, 0);
  for (auto& k : keepers) k->Stop();
}

TEST(LeaseSimTest, NeverTwoHoldersAndTakeoverWithinTheBound) {
  for (uint64_t s : Seeds()) {
    RunSeed(s);
    if (::testing::Test::HasFatalFailure() || ::testing::Test::HasNonfatalFailure()) return;
  }
}

// The holder stops by its own clock even when the call it is waiting on never returns, and
// a keeper that stops releases the lease so a standby takes it without waiting for expiry.
TEST(LeaseSimTest, DeadlineEndsTheLeaseAndStopReleasesIt) {
  sim::SimEnv sim(1);
  SimLeaseStore store(sim, 1);
  LeaseKeeperOptions o;
  o.name = "sagas";
  o.holder = "a";
  o.ttl_ms = 1000;
  int changes = 0;
  o.on_change = [&] { ++changes; };
  auto a = LeaseKeeper::Create(sim, store, o);
  ASSERT_TRUE(a.ok());
  (*a)->Start();
  auto run_until_held = [&](LeaseKeeper& k, int64_t within_ns) {
    const int64_t end = sim.now_nanos() + within_ns;
    while (!k.held() && sim.now_nanos() < end) {
      if (!sim.RunOne()) return false;
    }
    return k.held();
  };
  ASSERT_TRUE(run_until_held(**a, 2000 * kMs));
  EXPECT_GE((*a)->token(), 1);  // more when an acquire's reply was lost
  EXPECT_EQ(changes, 1);
  store.SetPartitioned("a", true);
  sim.RunFor(1000 * kMs);
  EXPECT_FALSE((*a)->held());  // its deadline passed without a renewal
  EXPECT_EQ(changes, 2);
  EXPECT_EQ((*a)->stats().losses, 1u);
  store.SetPartitioned("a", false);
  ASSERT_TRUE(run_until_held(**a, 3000 * kMs));  // taken again, with a new token
  EXPECT_GE((*a)->token(), 2);
  const int64_t a_token = (*a)->token();

  o.holder = "b";
  o.on_change = nullptr;
  auto b = LeaseKeeper::Create(sim, store, o);
  ASSERT_TRUE(b.ok());
  (*b)->Start();
  sim.RunFor(1000 * kMs);
  EXPECT_FALSE((*b)->held());
  const int64_t stopped_at = sim.now_nanos();
  (*a)->Stop();
  // Within one renew interval plus a call or two, not after the ttl.
  ASSERT_TRUE(run_until_held(**b, 700 * kMs));
  EXPECT_LT(sim.now_nanos() - stopped_at, 700 * kMs);
  EXPECT_EQ((*b)->token(), a_token + 1);
  EXPECT_EQ((*b)->stats().takeovers, 0u);  // released, not taken over
}

TEST(LeaseSimTest, OptionsAreChecked) {
  LeaseKeeperOptions o;
  o.name.assign("relay:x");
  o.holder.assign("holder-1");
  o.ttl_ms = 1000;
  EXPECT_TRUE(ValidateKeeperOptions(o).ok());
  o.renew_interval_ms = 900;
  EXPECT_EQ(ValidateKeeperOptions(o).code(), StatusCode::kInvalidArgument);
  o.renew_interval_ms = 0;
  o.holder.clear();
  EXPECT_EQ(ValidateKeeperOptions(o).code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace converge::lease
