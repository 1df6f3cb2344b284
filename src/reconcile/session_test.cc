// The session state machines over a perfect in-process link: exact results, round trips and
// bytes for the cases the format doc promises, the fallback, and malformed input.
#include "reconcile/session.h"

#include <gtest/gtest.h>

#include <random>

#include "converge/sim_env.h"
#include "core/coding.h"

namespace converge::reconcile {
namespace {

// Runs a session to the end; `between` runs before each request is delivered.
ReconcileResult RunSession(ReconcileSet& local, ReconcileSet& remote, Env& env, SessionStats* stats,
                           InitiatorOptions io = {}, const std::function<void()>& between = {}) {
  Responder responder(remote, env);
  Initiator initiator(local, 42, io);
  std::string request = initiator.Start();
  for (int i = 0; i < 1000; ++i) {
    if (between) between();
    Result<std::optional<std::string>> reply = responder.Handle(request);
    EXPECT_TRUE(reply.ok()) << reply.status().ToString();
    EXPECT_TRUE(reply->has_value());
    Result<Initiator::Step> step = initiator.OnReply(**reply);
    EXPECT_TRUE(step.ok()) << step.status().ToString();
    if (!step.ok() || step->kind == Initiator::Step::kDone) break;
    EXPECT_EQ(step->kind, Initiator::Step::kSend);
    request = step->message;
  }
  EXPECT_TRUE(initiator.done());
  *stats = initiator.stats();
  return initiator.result();
}

std::string Key(int i) {
  std::string s = "key-";
  s += std::to_string(i);
  return s;
}

class SessionTest : public ::testing::Test {
 protected:
  sim::SimEnv env_{1};
};

TEST_F(SessionTest, InSyncIsOneSmallRoundTrip) {
  ReconcileSet a, b;
  for (int i = 0; i < 1000; ++i) {
    a.Put(Key(i), i);
    b.Put(Key(i), i);
  }
  SessionStats s;
  ReconcileResult r = RunSession(a, b, env_, &s);
  EXPECT_EQ(r.differences(), 0u);
  EXPECT_EQ(s.round_trips, 1u);
  EXPECT_LE(s.bytes_sent + s.bytes_received, 1024u);
}

TEST_F(SessionTest, OneDifferenceInTwoRoundTrips) {
  ReconcileSet a, b;
  for (int i = 0; i < 1000; ++i) {
    a.Put(Key(i), i);
    b.Put(Key(i), i);
  }
  b.Put(Key(7), 100);
  SessionStats s;
  ReconcileResult r = RunSession(a, b, env_, &s);
  ASSERT_EQ(r.divergent.size(), 1u);
  EXPECT_EQ(r.divergent[0], (Difference{Key(7), 7, 100}));
  EXPECT_EQ(s.round_trips, 2u);
}

TEST_F(SessionTest, MissingExtraAndDivergentAreExact) {
  for (uint64_t seed = 1; seed <= 12; ++seed) {
    std::mt19937_64 rng(seed);
    ReconcileSet a(SetOptions{256}), b(SetOptions{128});
    std::map<std::string, Difference> expect;
    const int n = 2000, d = static_cast<int>(rng() % 700);
    for (int i = 0; i < n; ++i) {
      a.Put(Key(i), 1);
      b.Put(Key(i), 1);
    }
    for (int j = 0; j < d; ++j) {
      const int i = static_cast<int>(rng() % (n + 500));
      const std::string k = Key(i);
      switch (rng() % 3) {
        case 0:
          a.Erase(k);
          break;
        case 1:
          b.Erase(k);
          break;
        default:
          a.Put(k, 2 + rng() % 5);
          break;
      }
      const auto la = a.Get(k), lb = b.Get(k);
      if (la == lb) {
        expect.erase(k);
      } else {
        expect[k] = Difference{k, la, lb};
      }
    }
    SessionStats s;
    ReconcileResult r = RunSession(a, b, env_, &s);
    std::map<std::string, Difference> got;
    for (auto* v : {&r.missing_local, &r.missing_remote, &r.divergent}) {
      for (const Difference& x : *v) got[x.key] = x;
    }
    EXPECT_TRUE(r.changed_during_run.empty());
    EXPECT_EQ(got, expect) << "seed " << seed;
    for (const Difference& x : r.missing_local) EXPECT_FALSE(x.local_version);
    for (const Difference& x : r.missing_remote) EXPECT_FALSE(x.remote_version);
    EXPECT_LE(s.round_trips, 4u) << "seed " << seed;
  }
}

TEST_F(SessionTest, HugeDifferenceFallsBackToTheFullExchange) {
  ReconcileSet a, b;
  for (int i = 0; i < 500; ++i) a.Put(Key(i), 1);
  for (int i = 250; i < 900; ++i) b.Put(Key(i), 1);
  SessionStats s;
  ReconcileResult r = RunSession(a, b, env_, &s);
  EXPECT_EQ(r.missing_remote.size(), 250u);
  EXPECT_EQ(r.missing_local.size(), 400u);
  EXPECT_TRUE(s.full_exchange);
}

TEST_F(SessionTest, WritesDuringTheRunAreReportedAsChangedNotAsDifferences) {
  ReconcileSet a, b;
  for (int i = 0; i < 1000; ++i) {
    a.Put(Key(i), 1);
    b.Put(Key(i), 1);
  }
  for (int i = 0; i < 100; ++i) b.Put(Key(i), 2);  // drift: a lacks these updates
  int step = 0;
  SessionStats s;
  ReconcileResult r = RunSession(a, b, env_, &s, {}, [&] {
    // During the run: b writes key 5 again, a receives an update to key 6 and writes key 500.
    if (++step == 2) {
      b.Put(Key(5), 3);
      a.Put(Key(6), 2);
      a.Put(Key(500), 7);
    }
  });
  std::set<std::string> changed;
  for (const Difference& x : r.changed_during_run) changed.insert(x.key);
  EXPECT_EQ(changed, (std::set<std::string>{Key(5), Key(6)}));
  EXPECT_EQ(r.divergent.size(), 98u);
}

TEST_F(SessionTest, ResponderRestartMeansStartingOver) {
  ReconcileSet a, b;
  for (int i = 0; i < 300; ++i) {
    a.Put(Key(i), 1);
    b.Put(Key(i), i < 200 ? 1 : 2);
  }
  Initiator initiator(a, 9);
  auto responder = std::make_unique<Responder>(b, env_);
  std::string request = initiator.Start();
  int replies = 0;
  while (!initiator.done()) {
    if (++replies == 2) responder = std::make_unique<Responder>(b, env_);  // lost state
    auto reply = responder->Handle(request);
    ASSERT_TRUE(reply.ok());
    auto step = initiator.OnReply(**reply);
    ASSERT_TRUE(step.ok()) << step.status().ToString();
    if (step->kind == Initiator::Step::kSend) request = step->message;
    ASSERT_LT(replies, 50);
  }
  EXPECT_EQ(initiator.stats().restarts, 1u);
  EXPECT_EQ(initiator.result().divergent.size(), 100u);
}

TEST_F(SessionTest, DuplicateAndStaleRepliesAreIgnored) {
  ReconcileSet a, b;
  for (int i = 0; i < 300; ++i) {
    a.Put(Key(i), 1);
    b.Put(Key(i), i % 10 == 0 ? 2 : 1);
  }
  Initiator initiator(a, 9);
  Responder responder(b, env_);
  std::string request = initiator.Start();
  std::string last_reply;
  while (!initiator.done()) {
    auto reply = responder.Handle(request);
    ASSERT_TRUE(reply.ok());
    if (!last_reply.empty()) {
      auto stale = initiator.OnReply(last_reply);
      ASSERT_TRUE(stale.ok());
      EXPECT_EQ(stale->kind, Initiator::Step::kIgnored);
    }
    // The responder answers a repeated request the same way.
    auto again = responder.Handle(request);
    ASSERT_TRUE(again.ok());
    EXPECT_EQ(**again, **reply);
    auto step = initiator.OnReply(**reply);
    ASSERT_TRUE(step.ok());
    last_reply = **reply;
    if (step->kind == Initiator::Step::kSend) request = step->message;
  }
  EXPECT_EQ(initiator.result().divergent.size(), 30u);
}

TEST_F(SessionTest, MalformedRequestsChangeNothing) {
  ReconcileSet b;
  b.Put("x", 1);
  Responder responder(b, env_);
  for (std::string bad :
       {std::string(), std::string("\x01"), std::string("\x02\x01", 2),
        std::string("\x01\x01\x00", 3), std::string("\x01\x63", 2) + "12345678"}) {
    EXPECT_FALSE(responder.Handle(bad).ok());
  }
  // A valid header with a huge symbol count.
  std::string m = "\x01\x06";
  m += std::string(8, '\0');
  m += '\x01';
  m += std::string(8, '\0');    // snapshot
  m += "\xff\xff\xff\xff\x0f";  // 2^32 hashes, and no bytes for them
  auto r = responder.Handle(m);
  EXPECT_TRUE(r.ok());  // unknown session: answered without reading further
  EXPECT_EQ(responder.sessions(), 0u);

  // HELLOs asking for too much: refused, or answered without materialising the range.
  auto hello = [](uint64_t first, uint64_t probes, uint64_t probe_end) {
    std::string h = "\x01\x01";
    internal::PutFixed64(&h, 5);   // session
    internal::PutVarint64(&h, 1);  // seq
    internal::PutFixed64(&h, 0);   // snapshot
    internal::PutVarint64(&h, 0);  // digest: count, sum, mix_sum (differs from b's)
    internal::PutFixed64(&h, 0);
    internal::PutFixed64(&h, 0);
    internal::PutVarint64(&h, first);
    internal::PutVarint64(&h, probes);
    internal::PutVarint64(&h, probe_end);
    return h;
  };
  EXPECT_FALSE(responder.Handle(hello(64, 5000, 1 << 20)).ok());
  EXPECT_FALSE(responder.Handle(hello(2'000'000, 10, 1 << 20)).ok());
  EXPECT_FALSE(responder.Handle(hello(64, 10, (uint64_t{1} << 40) + 1)).ok());
  EXPECT_EQ(responder.sessions(), 0u);
  auto far = responder.Handle(hello(64, 4096, uint64_t{1} << 40));
  ASSERT_TRUE(far.ok()) << far.status().ToString();
  EXPECT_LT((*far)->size(), 64'000u);

  ReconcileSet a;
  Initiator initiator(a, 1);
  (void)initiator.Start();
  EXPECT_FALSE(initiator.OnReply("garbage").ok());
}

}  // namespace
}  // namespace converge::reconcile
