// Reconciliation under the simulator (converge/sim_env.h).
//
// For every seed: a source copy (the responder's set) and a replica (the initiator's) start
// equal; drift is injected into the replica (rows deleted, inserted, modified directly, an old
// snapshot of a key range restored, updates of the source never delivered); then a session runs
// over a simulated link that loses, duplicates and reorders messages and partitions for a
// while, the responder restarts (losing its sessions) or times sessions out, the initiator
// crashes and starts over, and writes keep arriving on both sides (each replicated to the other
// after a delay, some never). The test checks against the two copies as they were at the
// snapshots the finishing session compared:
//   - the report is exactly their difference, with both versions right;
//   - a key written on either side after its snapshot is reported only as changed during the
//     run, every other difference only as missing or divergent (so nothing written during the
//     run is repaired backwards);
//   - every injected difference on a key nobody wrote during the run is reported.
// CONVERGE_SIM_SEEDS sets the number of seeds (default 1000); CONVERGE_SIM_SEED=<n> replays one.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>

#include "converge/sim_env.h"
#include "reconcile/link.h"
#include "reconcile/session.h"

namespace converge::reconcile {
namespace {

uint64_t EnvNumber(const char* name, uint64_t fallback) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return fallback;
  return std::strtoull(v, nullptr, 10);
}

using Model = std::map<std::string, uint64_t>;

struct Coverage {
  uint64_t seeds = 0, differences = 0, changed = 0, restarts = 0, retransmits = 0, crashes = 0;
  uint64_t full = 0, in_sync = 0, dropped = 0, duplicated = 0;
};
Coverage coverage;

// Every change to either copy, numbered, so the test knows what was written after a snapshot.
uint64_t write_seq = 0;

// A set and its model, written together.
struct Copy {
  explicit Copy(uint64_t maintained) : set(SetOptions{maintained}) {}
  ReconcileSet set;
  Model model;
  std::vector<std::pair<uint64_t, std::string>> log;  // (write_seq, key) of every change
  void Put(const std::string& k, uint64_t v) {
    set.Put(k, v);
    auto it = model.find(k);
    if (it != model.end() && it->second == v) return;
    model[k] = v;
    log.emplace_back(++write_seq, k);
  }
  void Erase(const std::string& k) {
    set.Erase(k);
    if (model.erase(k)) log.emplace_back(++write_seq, k);
  }
  // Keys changed in (from, to].
  std::set<std::string> Written(uint64_t from, uint64_t to) const {
    std::set<std::string> out;
    for (const auto& [s, k] : log) {
      if (s > from && s <= to) out.insert(k);
    }
    return out;
  }
  std::optional<uint64_t> Get(const std::string& k) const {
    auto it = model.find(k);
    if (it == model.end()) return std::nullopt;
    return it->second;
  }
};

std::string KeyName(uint64_t i) {
  std::string s = "row/";
  s += std::to_string(i);
  return s;
}

void RunSeed(uint64_t seed) {
  sim::SimEnv env(seed);
  Random& rnd = env.random();
  sim::SimTransport& net = env.sim_transport();
  net.SetLatency(50'000, rnd.Bernoulli(0.5) ? 3'000'000 : 300'000);  // wide: reorders
  net.SetDropProbability(rnd.Bernoulli(0.3) ? 0.0 : rnd.NextDouble() * 0.25);
  net.SetDuplicateProbability(rnd.Bernoulli(0.5) ? 0.0 : 0.2);

  const uint64_t maintained_options[] = {0, 8, 64, 256, 1024};
  Copy source(maintained_options[rnd.Uniform(5)]);
  Copy replica(maintained_options[rnd.Uniform(5)]);
  uint64_t version = 0;  // versions are commit numbers of the source (monotonic)
  const uint64_t n = 1 + rnd.Uniform(rnd.Bernoulli(0.2) ? 2000 : 300);
  Model halfway;
  for (uint64_t i = 0; i < n; ++i) {
    const std::string k = KeyName(rnd.Uniform(n * 2));
    ++version;
    source.Put(k, version);
    replica.Put(k, version);
    if (i == n / 2) halfway = replica.model;
  }

  // ---- drift, injected into the replica (or withheld from it) ----
  std::set<std::string> injected;
  const uint64_t kinds = rnd.Uniform(6);  // 0: none; else up to that many kinds of drift
  const uint64_t amount = rnd.Bernoulli(0.1) ? n : 1 + rnd.Uniform(std::max<uint64_t>(1, n / 8));
  for (uint64_t j = 0; j < kinds * amount / 3 + (kinds > 0); ++j) {
    const std::string k = KeyName(rnd.Uniform(n * 2));
    switch (rnd.Uniform(5)) {
      case 0:  // deleted directly in the target
        replica.Erase(k);
        break;
      case 1:  // inserted directly in the target
        replica.Put(k, rnd.Uniform(version + 10));
        break;
      case 2:  // modified directly in the target
        if (replica.Get(k)) replica.Put(k, rnd.Uniform(version + 10));
        break;
      case 3: {  // an old snapshot restored (for a range of keys)
        auto it = halfway.lower_bound(k);
        for (int r = 0; r < 5 && it != halfway.end(); ++r, ++it) {
          replica.Put(it->first, it->second);
          injected.insert(it->first);
        }
        break;
      }
      default:  // an update of the source dropped on its way to the replica
        source.Put(k, ++version);
        break;
    }
    injected.insert(k);
  }
  // Only what really differs counts as injected.
  for (auto it = injected.begin(); it != injected.end();) {
    it = source.Get(*it) == replica.Get(*it) ? injected.erase(it) : std::next(it);
  }

  // ---- the session over the simulated link ----
  std::map<uint64_t, Model> source_at_open;  // snapshot -> the source when it opened
  std::map<uint64_t, uint64_t> seq_at_open;  // snapshot -> write_seq then
  // snapshot -> write_seq at the first and the last FETCH answered (the reply the initiator
  // took lists the keys written up to one of those moments).
  std::map<uint64_t, std::pair<uint64_t, uint64_t>> seq_at_fetch;
  std::map<uint64_t, std::vector<Model>> source_at_hello;  // for in-sync answers
  ResponderOptions ro;
  ro.session_timeout_ns = rnd.Bernoulli(0.2) ? 20'000'000 : 60'000'000'000;
  ro.on_open = [&](uint64_t, uint64_t snapshot) {
    source_at_open[snapshot] = source.model;
    seq_at_open[snapshot] = write_seq;
  };
  auto responder = std::make_unique<Responder>(source.set, env, ro);

  std::unique_ptr<Initiator> initiator;
  Model replica_at_start;
  uint64_t seq_at_start = 0;
  uint64_t seq_at_done = 0;
  std::set<std::string> written_during_run;
  std::unique_ptr<Endpoint> source_ep, replica_ep;
  uint64_t generation = 0;
  bool failed = false;

  auto start = [&] {
    ++generation;
    initiator = std::make_unique<Initiator>(replica.set, rnd.Next64());
    replica_at_start = replica.model;
    seq_at_start = write_seq;
    (void)replica_ep->Send("source", initiator->Start());
  };
  replica_ep = std::move(net.Listen("replica",
                                    [&](Message m) {
                                      if (!initiator || initiator->done() || failed) return;
                                      Result<Initiator::Step> step = initiator->OnReply(m.payload);
                                      if (!step.ok()) {
                                        ADD_FAILURE() << "initiator: " << step.status().ToString();
                                        failed = true;
                                        return;
                                      }
                                      if (step->kind == Initiator::Step::kSend) {
                                        (void)replica_ep->Send("source", step->message);
                                      } else if (step->kind == Initiator::Step::kDone) {
                                        seq_at_done = write_seq;
                                        (void)replica_ep->Send("source", initiator->Finish());
                                      }
                                    })
                             .value());
  source_ep = std::move(
      net.Listen("source",
                 [&](Message m) {
                   // The header (docs/formats/reconcile.md): format, type, session,
                   // seq (varint), snapshot.
                   uint64_t s = 0, snap = 0;
                   size_t at = 10;
                   if (m.payload.size() > 10) std::memcpy(&s, m.payload.data() + 2, 8);
                   while (at < m.payload.size() && (m.payload[at] & 0x80)) ++at;
                   if (at + 9 <= m.payload.size()) {
                     std::memcpy(&snap, m.payload.data() + at + 1, 8);
                   }
                   if (m.payload.size() > 10 && m.payload[1] == 1) {
                     source_at_hello[s].push_back(source.model);
                   }
                   if (m.payload.size() > 10 && m.payload[1] == 6) {
                     auto [it, fresh] = seq_at_fetch.emplace(snap, std::pair{write_seq, write_seq});
                     it->second.second = write_seq;
                   }
                   Result<std::optional<std::string>> reply = responder->Handle(m.payload);
                   if (!reply.ok()) {
                     ADD_FAILURE() << "responder: " << reply.status().ToString();
                     failed = true;
                     return;
                   }
                   if (reply->has_value()) (void)source_ep->Send(m.from, **reply);
                 })
          .value());

  // Retransmission: the initiator's caller resends the request in flight every 4 ms.
  std::function<void()> tick = [&] {
    if (failed || (initiator && initiator->done())) return;
    if (initiator) (void)replica_ep->Send("source", initiator->Retransmit());
    env.executor().Schedule(4'000'000, tick);
  };

  // Writes during the run on both sides, each replicated to the other after a delay (or lost).
  const uint64_t writes = rnd.Bernoulli(0.3) ? 0 : rnd.Uniform(30);
  for (uint64_t w = 0; w < writes; ++w) {
    env.executor().Schedule(static_cast<int64_t>(rnd.Uniform(30'000'000)), [&] {
      const std::string k = KeyName(rnd.Uniform(n * 2));
      const bool at_source = rnd.Bernoulli(0.7);
      const bool erase = rnd.Bernoulli(0.15);
      const uint64_t v = ++version;
      written_during_run.insert(k);
      Copy& here = at_source ? source : replica;
      Copy& there = at_source ? replica : source;
      erase ? here.Erase(k) : here.Put(k, v);
      if (rnd.Bernoulli(0.9)) {
        env.executor().Schedule(static_cast<int64_t>(rnd.Uniform(5'000'000)), [&, k, v, erase] {
          // Version-gated apply of the replicated write.
          auto cur = there.Get(k);
          if (erase) {
            there.Erase(k);
          } else if (!cur || *cur < v) {
            there.Put(k, v);
          }
        });
      }
    });
  }
  // Faults: a partition, a responder restart, an initiator crash.
  if (rnd.Bernoulli(0.2)) {
    env.executor().Schedule(static_cast<int64_t>(rnd.Uniform(10'000'000)), [&] {
      net.Partition("source", "replica");
      env.executor().Schedule(static_cast<int64_t>(rnd.Uniform(30'000'000)), [&] { net.Heal(); });
    });
  }
  if (rnd.Bernoulli(0.2)) {
    env.executor().Schedule(static_cast<int64_t>(rnd.Uniform(10'000'000)), [&] {
      responder = std::make_unique<Responder>(source.set, env, ro);
      ++coverage.crashes;
    });
  }
  if (rnd.Bernoulli(0.2)) {
    env.executor().Schedule(static_cast<int64_t>(rnd.Uniform(10'000'000)), [&] {
      if (initiator->done()) return;
      ++coverage.crashes;
      start();  // the crashed run's state is gone; a new one begins
    });
  }

  start();
  env.executor().Schedule(4'000'000, tick);
  const int64_t deadline = env.now_nanos() + 120'000'000'000;
  while (!failed && !initiator->done() && env.now_nanos() < deadline && env.RunOne()) {
  }
  ASSERT_FALSE(failed);
  ASSERT_TRUE(initiator->done()) << "no result within the deadline";
  env.RunUntilIdle();  // pending replicated writes land; they do not change the result

  // ---- checks ----
  const ReconcileResult& r = initiator->result();
  const uint64_t session = initiator->session_id();
  // The source as the session saw it.
  Model source_seen;
  const uint64_t snapshot = initiator->remote_snapshot();
  auto opened = source_at_open.find(snapshot);
  if (opened != source_at_open.end()) {
    source_seen = opened->second;
  } else {
    // Answered "in sync" without a session: the source equalled our snapshot at some HELLO.
    ASSERT_EQ(r.differences() + r.changed_during_run.size(), 0u);
    bool seen = false;
    for (const Model& m : source_at_hello[session]) seen = seen || m == replica_at_start;
    EXPECT_TRUE(seen) << "in sync, but the source never equalled the replica";
    ++coverage.in_sync;
    source_seen = replica_at_start;
  }
  std::map<std::string, Difference> expect;
  for (const auto& [k, v] : source_seen) {
    auto it = replica_at_start.find(k);
    if (it == replica_at_start.end()) {
      expect[k] = Difference{k, std::nullopt, v};
    } else if (it->second != v) {
      expect[k] = Difference{k, it->second, v};
    }
  }
  for (const auto& [k, v] : replica_at_start) {
    if (!source_seen.count(k)) expect[k] = Difference{k, v, std::nullopt};
  }
  // Written after a snapshot: reported as changed during the run. On the source, the keys
  // written before the FETCH answered must be, those written after the last one answered must
  // not (unless the replica wrote them too); in between, either.
  std::set<std::string> after = replica.Written(seq_at_start, seq_at_done);
  std::set<std::string> maybe;
  if (opened != source_at_open.end()) {
    const auto [lo, hi] = seq_at_fetch[snapshot];
    for (const std::string& k : source.Written(seq_at_open[snapshot], lo)) after.insert(k);
    maybe = source.Written(lo, hi);
  }
  std::map<std::string, Difference> got;
  auto take = [&](const std::vector<Difference>& v, bool changed) {
    for (const Difference& d : v) {
      EXPECT_TRUE(got.emplace(d.key, d).second) << "reported twice: " << d.key;
      if (maybe.count(d.key) && !after.count(d.key)) continue;
      EXPECT_EQ(changed, after.count(d.key) > 0)
          << (changed ? "reported as changed during the run but not written after a snapshot: "
                      : "written during the run, yet reported as a difference to repair: ")
          << d.key;
    }
  };
  take(r.missing_local, false);
  take(r.missing_remote, false);
  take(r.divergent, false);
  take(r.changed_during_run, true);
  EXPECT_EQ(got, expect);
  for (const Difference& d : r.missing_local) EXPECT_TRUE(!d.local_version && d.remote_version);
  for (const Difference& d : r.missing_remote) EXPECT_TRUE(d.local_version && !d.remote_version);
  for (const Difference& d : r.divergent) EXPECT_TRUE(d.local_version && d.remote_version);
  for (const std::string& k : injected) {
    if (!written_during_run.count(k)) {
      EXPECT_TRUE(got.count(k)) << "injected difference not found: " << k;
    }
  }
  ++coverage.seeds;
  coverage.differences += r.differences();
  coverage.changed += r.changed_during_run.size();
  coverage.restarts += initiator->stats().restarts;
  coverage.retransmits += initiator->stats().retransmits;
  coverage.full += initiator->stats().full_exchange;
  coverage.dropped += net.stats().dropped;
  coverage.duplicated += net.stats().duplicated;
}

TEST(ReconcileSimTest, FindsExactlyTheDriftAndNeverAConcurrentWrite) {
  const uint64_t only = EnvNumber("CONVERGE_SIM_SEED", 0);
  const uint64_t seeds = only != 0 ? 1 : EnvNumber("CONVERGE_SIM_SEEDS", 1000);
  for (uint64_t i = 0; i < seeds; ++i) {
    const uint64_t seed = only != 0 ? only : i + 1;
    RunSeed(seed);
    if (::testing::Test::HasFailure()) {
      std::fprintf(stderr, "FAILING SEED: %llu (replay with CONVERGE_SIM_SEED=%llu)\n",
                   static_cast<unsigned long long>(seed), static_cast<unsigned long long>(seed));
      return;
    }
  }
  std::fprintf(stderr,
               "%llu seeds: %llu differences, %llu changed during run, %llu restarts, %llu "
               "retransmits, %llu crashes, %llu full exchanges, %llu in sync, %llu messages "
               "dropped, %llu duplicated\n",
               (unsigned long long)coverage.seeds, (unsigned long long)coverage.differences,
               (unsigned long long)coverage.changed, (unsigned long long)coverage.restarts,
               (unsigned long long)coverage.retransmits, (unsigned long long)coverage.crashes,
               (unsigned long long)coverage.full, (unsigned long long)coverage.in_sync,
               (unsigned long long)coverage.dropped, (unsigned long long)coverage.duplicated);
  EXPECT_GT(coverage.changed, 0u);
  EXPECT_GT(coverage.restarts, 0u);
  EXPECT_GT(coverage.full, 0u);
}

// The transport drivers (link.h) over the simulator's links: loss, duplication, reordering, a
// partition and a responder restart at the same address; the result is exactly the drift.
void RunDriverSeed(uint64_t seed) {
  sim::SimEnv env(seed);
  Random& rnd = env.random();
  sim::SimTransport& net = env.sim_transport();
  net.SetLatency(50'000, 2'000'000);
  net.SetDropProbability(rnd.NextDouble() * 0.3);
  net.SetDuplicateProbability(rnd.NextDouble() * 0.3);
  ReconcileSet source(SetOptions{rnd.Uniform(300)}), replica(SetOptions{rnd.Uniform(300)});
  std::map<std::string, Difference> expect;
  const uint64_t n = 1 + rnd.Uniform(1000);
  for (uint64_t i = 0; i < n; ++i) {
    const std::string k = KeyName(i);
    source.Put(k, i + 1);
    replica.Put(k, i + 1);
  }
  const uint64_t d = rnd.Uniform(n / 2 + 2);
  for (uint64_t j = 0; j < d; ++j) {
    const std::string k = KeyName(rnd.Uniform(n + 50));
    switch (rnd.Uniform(3)) {
      case 0:
        replica.Erase(k);
        break;
      case 1:
        replica.Put(k, 5000 + j);
        break;
      default:
        source.Put(k, 9000 + j);
        break;
    }
  }
  for (uint64_t i = 0; i < n + 50; ++i) {
    const std::string k = KeyName(i);
    if (replica.Get(k) != source.Get(k)) expect[k] = Difference{k, replica.Get(k), source.Get(k)};
  }
  ResponderOptions ro;
  auto service = ResponderService::Listen(env, "source", source, ro);
  ASSERT_TRUE(service.ok());
  RunOptions o;
  o.retransmit_ns = 5'000'000;
  bool finished = false;
  Status outcome;
  std::map<std::string, Difference> got;
  auto run =
      ReconcileRun::Start(env, "replica", "source", replica, o,
                          [&](Status s, const ReconcileResult& r, const SessionStats&) {
                            finished = true;
                            outcome = s;
                            for (auto* v : {&r.missing_local, &r.missing_remote, &r.divergent}) {
                              for (const Difference& x : *v) got[x.key] = x;
                            }
                            EXPECT_TRUE(r.changed_during_run.empty());
                          });
  ASSERT_TRUE(run.ok());
  if (rnd.Bernoulli(0.3)) {
    env.executor().Schedule(static_cast<int64_t>(rnd.Uniform(8'000'000)), [&] {
      service->reset();  // the responder process dies and comes back, sessions lost
      service = ResponderService::Listen(env, "source", source, ro);
      ++coverage.crashes;
    });
  }
  if (rnd.Bernoulli(0.3)) {
    net.Partition("source", "replica");
    env.executor().Schedule(static_cast<int64_t>(rnd.Uniform(50'000'000)), [&] { net.Heal(); });
  }
  while (!finished && env.RunOne()) {
  }
  ASSERT_TRUE(finished);
  ASSERT_TRUE(outcome.ok()) << outcome.ToString();
  EXPECT_EQ(got, expect);
}

TEST(ReconcileSimTest, TransportDriversFindExactlyTheDrift) {
  const uint64_t only = EnvNumber("CONVERGE_SIM_SEED", 0);
  const uint64_t seeds =
      only != 0 ? 1 : std::max<uint64_t>(1, EnvNumber("CONVERGE_SIM_SEEDS", 1000) / 4);
  for (uint64_t i = 0; i < seeds; ++i) {
    const uint64_t seed = only != 0 ? only : i + 1;
    RunDriverSeed(seed);
    if (::testing::Test::HasFailure()) {
      std::fprintf(stderr, "FAILING SEED: %llu (replay with CONVERGE_SIM_SEED=%llu)\n",
                   static_cast<unsigned long long>(seed), static_cast<unsigned long long>(seed));
      return;
    }
  }
}

}  // namespace
}  // namespace converge::reconcile
