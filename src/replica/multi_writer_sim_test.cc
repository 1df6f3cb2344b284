// Multi-writer collections under the simulator (docs/formats/replica.md, "Multi-writer
// collections").
//
// For every seed: 2 or 3 nodes write the same few keys independently (puts, deletes, writes
// that name the versions a reader saw, and on crdt-fields seeds counter increments), under one
// policy per seed (lww, multi-value, crdt-fields, resolver). Each node pulls the others' origin
// logs through a simulated network. Faults, at random steps:
//   - requests and pages are dropped, delivered twice, delivered late and out of order;
//   - partitions cut pairs of nodes (both directions) for a while;
//   - a node crashes (its in-memory view is lost and it reopens from its storage);
//   - a node's storage fails a commit before it, or after it (the node is told it failed);
//   - virtual time jumps, so stable tombstones get purged while late pages still arrive.
// Then faults stop, every node pulls every other until caught up (and purges), and the test
// checks:
//   - all nodes hold equal states (a deleted key: all tombstones, or purged) and read equal
//     documents;
//   - none lost: each node's state is the join of every committed local write (the oracle);
//     on crdt-fields seeds a key never deleted counts every committed increment exactly once;
//   - no page entry is applied twice on a node (position gating across crashes);
//   - a deleted key never resurrects: a live write a node once saw covered never reappears.
// The drift test then injects drift on one node after the peers are in sync (states erased or
// rolled back to an older state, as a hand edit or a restored backup would; a peer's pages
// skipped, as lost feed events would), runs anti-entropy both ways (a reconciliation session
// over the nodes' (key, state) digests, with writes landing on both nodes between every two
// messages) and repairs by merging, and checks: every injected difference is repaired, only
// keys that differed are touched, a repair never loses anything a key held (states only grow),
// and after the usual pulls both nodes equal the oracle (no concurrent write reverted).
// CONVERGE_SIM_SEEDS sets the number of seeds (default 2000); CONVERGE_SIM_SEED=<n> replays one.
#include <gtest/gtest.h>

#include <boost/json.hpp>
#include <cstdlib>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "converge/conflict/counters.h"
#include "converge/sim_env.h"
#include "replica/replica_test_util.h"
#include "reconcile/session.h"
#include "replica/multi_writer.h"

namespace converge::replica::mw {
namespace {

using conflict::Dot;
using conflict::ReplicaId;
using conflict::VersionVector;

uint64_t EnvNumber(const char* name, uint64_t fallback) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return fallback;
  return std::strtoull(v, nullptr, 10);
}

struct Coverage {
  uint64_t seeds = 0, writes = 0, deletes = 0, context_writes = 0, applied_pages = 0,
           refused_pages = 0, merged = 0, unchanged = 0, dropped = 0, duplicated = 0, crashes = 0,
           storage_faults = 0, purged = 0, partitions = 0, siblings_seen = 0, drifted = 0,
           repaired = 0, reconcile_rounds = 0, changed_during_run = 0;
};
Coverage coverage;

PolicySpec SpecFor(Policy policy) {
  PolicySpec spec;
  spec.policy = policy;
  if (policy == Policy::kCrdtFields) {
    spec.crdt_fields["n"] = testing::GCounterFieldMerge();
  }
  if (policy == Policy::kResolver) {
    spec.resolver_name = "max";
    spec.resolver = [](std::string_view a, std::string_view b) -> Result<std::string> {
      return std::string(a < b ? b : a);
    };
  }
  spec.max_siblings = 1000;
  return spec;
}

struct Message {
  bool response = false;
  int from = 0, to = 0;  // node indexes
  uint64_t position = 0;
  std::string page;
  int due = 0;  // step
};

class Sim {
 public:
  explicit Sim(uint64_t seed, bool drift = false)
      : seed_(seed), drift_(drift), env_(seed), rng_(seed * 0x9e3779b97f4a7c15ULL + 7) {
    n_ = drift ? 2 : 2 + static_cast<int>(seed % 2);
    policy_ = static_cast<Policy>(1 + (seed / 2) % 4);
    spec_ = SpecFor(policy_);
    storage_.resize(n_);
    nodes_.resize(n_);
    prev_.resize(n_);
    ever_.resize(n_);
    applied_.resize(n_);
    for (int i = 0; i < n_; ++i) {
      storage_[i] = std::make_unique<MemoryStorage>();
      Reopen(i);
    }
  }

  void Run() {
    const int steps = 200 + static_cast<int>(rng_() % 200);
    for (int step = 0; step < steps && !::testing::Test::HasFatalFailure(); ++step) {
      step_ = step;
      const uint64_t r = rng_() % 100;
      const int node = static_cast<int>(rng_() % n_);
      if (r < 35) {
        LocalWrite(node);
      } else if (r < 65) {
        const int peer = (node + 1 + static_cast<int>(rng_() % (n_ - 1))) % n_;
        Send(Message{false, node, peer, nodes_[node]->NextFrom(Id(peer)), "", 0});
      } else if (r < 80) {
        Deliver();
      } else if (r < 84) {
        ++coverage.crashes;
        Reopen(node);
      } else if (r < 88) {
        ++coverage.storage_faults;
        storage_[node]->FailNextCommit(rng_() % 2 ? MemoryStorage::Fault::kBeforeCommit
                                                  : MemoryStorage::Fault::kAfterCommit);
      } else if (r < 91) {
        const int a = static_cast<int>(rng_() % n_), b = static_cast<int>(rng_() % n_);
        if (a != b) {
          ++coverage.partitions;
          cut_.insert({std::min(a, b), std::max(a, b)});
        }
      } else if (r < 94) {
        cut_.clear();
      } else if (r < 97) {
        env_.AdvanceTime((1 + static_cast<int64_t>(rng_() % 40)) * 1'000'000);
      } else {
        Purge(node);
      }
      CheckNoResurrection();
    }
    Heal();
    CheckConverged();
    if (drift_ && !::testing::Test::HasFatalFailure()) {
      InjectDriftAndReconcile();
      Heal();
      CheckConverged();
    }
  }

 private:
  static uint64_t Id(int index) { return static_cast<uint64_t>(index) + 1; }

  void Reopen(int i) {
    nodes_[i].reset();
    NodeOptions options;
    options.self = Id(i);
    for (int p = 0; p < n_; ++p) {
      if (p != i) options.peers.push_back(Id(p));
    }
    options.policy = spec_;
    options.tombstone_retention_ms = 50;
    options.digest_symbols = 256;
    auto node = Node::Open(env_, *storage_[i], options);
    ASSERT_TRUE(node.ok()) << node.status().ToString();
    nodes_[i] = std::move(*node);
  }

  std::string Document(int node, const std::string& key) {
    if (policy_ != Policy::kCrdtFields) {
      return "\"" + key + "-" + std::to_string(node) + "-" + std::to_string(step_) + "\"";
    }
    // An increment of this node's entry of counter n, from the node's current view.
    conflict::GCounter counter;
    if (auto state = nodes_[node]->Get(key)) {
      auto doc = Resolve(spec_, *state);
      if (doc.ok() && doc->has_value()) {
        boost::json::value v = boost::json::parse(**doc);
        if (const auto* n = v.as_object().if_contains("n")) {
          counter = *conflict::GCounter::FromJson(boost::json::serialize(*n));
        }
      }
    }
    EXPECT_TRUE(counter.Increment(ReplicaId(Id(node))).ok());
    return "{\"n\":" + counter.ToJson() + ",\"by\":" + std::to_string(node) + "}";
  }

  void LocalWrite(int node) {
    const std::string key = "k" + std::to_string(rng_() % 5);
    const bool del = rng_() % 5 == 0;
    std::optional<VersionVector> context;
    if (rng_() % 3 == 0) {
      // Name the versions a reader saw, here or on another node, maybe a while ago.
      const int reader = static_cast<int>(rng_() % n_);
      if (auto it = seen_.find({reader, key}); it != seen_.end()) context = it->second;
    }
    if (auto state = nodes_[node]->Get(key); state && rng_() % 2 == 0) {
      seen_[{node, key}] = state->vv;  // a read, for a later write
    }
    const bool increments = policy_ == Policy::kCrdtFields && !del;
    const std::string doc = del ? "" : Document(node, key);
    const MemoryStorage::Fault fault = storage_[node]->armed();
    Result<KeyState> result = del ? nodes_[node]->Delete(key, context ? &*context : nullptr)
                                  : nodes_[node]->Put(key, doc, context ? &*context : nullptr);
    std::optional<KeyState> committed;
    if (result.ok()) {
      committed = *result;
    } else if (fault == MemoryStorage::Fault::kAfterCommit) {
      // The node was told it failed; the storage has it (as after a lost COMMIT reply).
      committed = storage_[node]->data().keys.at(key).state;
    } else {
      ASSERT_NE(fault, MemoryStorage::Fault::kNone) << result.status().ToString();
      return;
    }
    ++coverage.writes;
    if (del) ++coverage.deletes;
    if (context) ++coverage.context_writes;
    if (committed->siblings.size() > 1) ++coverage.siblings_seen;
    KeyState& o = oracle_[key];
    auto merged = Merge(spec_, o, *committed);
    ASSERT_TRUE(merged.ok());
    o = *merged;
    if (del) ever_deleted_.insert(key);
    if (increments) ++increments_[key];
  }

  void Send(Message m) {
    m.due = step_ + static_cast<int>(rng_() % 6);
    if (rng_() % 10 == 0) {
      ++coverage.dropped;
      return;
    }
    if (rng_() % 10 == 0) {
      ++coverage.duplicated;
      Message dup = m;
      dup.due = step_ + static_cast<int>(rng_() % 12);
      inflight_.push_back(dup);
    }
    inflight_.push_back(std::move(m));
  }

  bool Cut(int a, int b) const { return cut_.count({std::min(a, b), std::max(a, b)}) != 0; }

  void Deliver() {
    // Deliver every due message, in a random order.
    std::vector<Message> due;
    for (auto it = inflight_.begin(); it != inflight_.end();) {
      if (it->due <= step_) {
        due.push_back(std::move(*it));
        it = inflight_.erase(it);
      } else {
        ++it;
      }
    }
    std::shuffle(due.begin(), due.end(), rng_);
    for (Message& m : due) {
      if (Cut(m.from, m.to)) {
        ++coverage.dropped;
        continue;
      }
      if (!m.response) {
        // m.to exports for m.from.
        Result<Page> page = nodes_[m.to]->Export(m.position, 1 + rng_() % 4);
        if (!page.ok()) {
          // An old request for a position the exporter trimmed since: the puller moved on.
          ASSERT_EQ(page.status().code(), StatusCode::kFailedPrecondition);
          ASSERT_GT(nodes_[m.from]->NextFrom(Id(m.to)), m.position);
          continue;
        }
        Send(Message{true, m.to, m.from, 0, page->ToBinary(), 0});
        continue;
      }
      Result<Page> page = Page::FromBinary(m.page);
      ASSERT_TRUE(page.ok()) << page.status().ToString();
      ApplyPage(m.to, *page);
      if (::testing::Test::HasFatalFailure()) return;
    }
  }

  void ApplyPage(int node, const Page& page) {
    const MemoryStorage::Fault fault = storage_[node]->armed();
    Result<ApplyResult> r = nodes_[node]->Apply(page);
    if (!r.ok()) {
      if (r.status().code() == StatusCode::kAborted) {
        ++coverage.refused_pages;
        return;
      }
      // A storage fault: the page counts as applied when it failed after the commit.
      ASSERT_EQ(r.status().code(), StatusCode::kUnavailable) << r.status().ToString();
      if (fault != MemoryStorage::Fault::kAfterCommit) return;
    } else {
      coverage.merged += r->merged;
      coverage.unchanged += r->unchanged;
    }
    ++coverage.applied_pages;
    for (const ExportEntry& e : page.entries) {
      ASSERT_TRUE(applied_[node].insert({page.origin, e.seq}).second)
          << "node " << node << " applied entry " << e.seq << " of node " << page.origin
          << " twice";
    }
  }

  void Purge(int node) {
    Result<size_t> n = nodes_[node]->PurgeTombstones();
    if (n.ok()) coverage.purged += *n;
  }

  // A live write a node once saw covered (or dropped) never comes back on that node.
  void CheckNoResurrection() {
    for (int i = 0; i < n_; ++i) {
      std::map<std::string, KeyState> now;
      for (const auto& [key, stored] : storage_[i]->data().keys) now[key] = stored.state;
      for (const auto& [key, state] : now) {
        const KeyState& before = prev_[i][key];
        if (!(state == before)) history_[i][key].push_back(state);
        VersionVector& ever = ever_[i][key];
        for (const Sibling& s : state.siblings) {
          if (s.deleted) continue;
          bool had = false;
          for (const Sibling& b : before.siblings) had = had || b.dot == s.dot;
          ASSERT_TRUE(had || !ever.Contains(s.dot))
              << "node " << i << " key " << key << ": write " << s.dot.ToString()
              << " came back after it was covered";
        }
        ever.Merge(state.vv);
      }
      prev_[i] = std::move(now);
    }
  }

  // Drift on node 0 (see the file comment), then anti-entropy both ways.
  void InjectDriftAndReconcile() {
    Snapshot& data = storage_[0]->mutable_data();
    std::set<std::string> drifted;
    std::map<std::string, KeyState> other_then;  // node 1's states at injection
    for (const auto& [key, stored] : storage_[1]->data().keys) other_then[key] = stored.state;
    const int edits = 1 + static_cast<int>(rng_() % 3);
    for (int e = 0; e < edits; ++e) {
      const std::string key = "k" + std::to_string(rng_() % 5);
      auto it = data.keys.find(key);
      if (it == data.keys.end()) continue;
      // An older state of the key that node 1's covers (a restored row), or none (lost).
      std::vector<KeyState> older;
      for (const KeyState& h : history_[0][key]) {
        auto m = Merge(spec_, other_then[key], h);
        if (m.ok() && *m == other_then[key] && !(h == it->second.state)) older.push_back(h);
      }
      if (!older.empty() && rng_() % 2 == 0) {
        it->second.state = older[rng_() % older.size()];
      } else {
        data.keys.erase(it);
      }
      drifted.insert(key);
    }
    if (rng_() % 2 == 0) {
      // Lost feed events: node 1 writes; node 0's position passes them unapplied.
      for (int w = 0; w < 3; ++w) {
        const std::string key = "k" + std::to_string(rng_() % 5);
        auto r = nodes_[1]->Put(key, Document(1, key));
        ASSERT_TRUE(r.ok()) << r.status().ToString();
        MergeIntoOracle(key, *r);
        if (policy_ == Policy::kCrdtFields) ++increments_[key];
        other_then[key] = *r;
        drifted.insert(key);
      }
      data.peers[Id(1)].next = storage_[1]->data().own_seq + 1;
    }
    coverage.drifted += drifted.size();
    // A writer on node 0 that increments from its rolled-back view until the repair counts
    // from a stale value of its own entry (a g-counter entry keeps the maximum): the exact
    // count is not checked for drifted keys (the oracle still is).
    for (const std::string& key : drifted) ever_deleted_.insert(key);
    // The edits are not the node's doing: they are its new baseline.
    prev_[0].clear();
    ever_[0].clear();
    for (const auto& [key, stored] : data.keys) {
      prev_[0][key] = stored.state;
      ever_[0][key] = stored.state.vv;
    }
    Reopen(0);
    CheckNoResurrection();
    std::set<std::string> written;  // during the runs
    // With writes during the runs, then once more without: a key written during a run is
    // left to the next one (changed_during_run).
    for (int a = 0; a < 2; ++a) ReconcileFrom(a, 1 - a, &written, drifted, /*writes=*/true);
    for (int a = 0; a < 2; ++a) ReconcileFrom(a, 1 - a, &written, drifted, /*writes=*/false);
    if (::testing::Test::HasFatalFailure()) return;
    // Every injected difference repaired: node 0 holds at least what node 1 held then.
    for (const std::string& key : drifted) {
      if (!other_then.count(key)) continue;
      std::optional<KeyState> got = nodes_[0]->Get(key);
      const KeyState now = got.value_or(KeyState{});
      auto m = Merge(spec_, now, other_then[key]);
      ASSERT_TRUE(m.ok());
      ASSERT_EQ(*m, now) << "drifted key " << key << " not repaired on node 0";
    }
  }

  void MergeIntoOracle(const std::string& key, const KeyState& state) {
    auto merged = Merge(spec_, oracle_[key], state);
    ASSERT_TRUE(merged.ok());
    oracle_[key] = *merged;
  }

  // Node a reconciles with node b (a session over their digests; a write lands on one of them
  // between every two messages), then repairs its own differing keys from b's states.
  void ReconcileFrom(int a, int b, std::set<std::string>* written,
                     const std::set<std::string>& drifted, bool writes) {
    ++coverage.reconcile_rounds;
    reconcile::Responder responder(nodes_[b]->digest(), env_);
    reconcile::Initiator initiator(nodes_[a]->digest(), rng_());
    std::string message = initiator.Start();
    for (int guard = 0; guard < 100 && !initiator.done(); ++guard) {
      if (writes && rng_() % 2 == 0) {
        const int w = static_cast<int>(rng_() % 2);
        const std::string key = "k" + std::to_string(rng_() % 5);
        auto r = nodes_[w]->Put(key, Document(w, key));
        ASSERT_TRUE(r.ok()) << r.status().ToString();
        MergeIntoOracle(key, *r);
        if (policy_ == Policy::kCrdtFields) ++increments_[key];
        written->insert(key);
      }
      Result<std::optional<std::string>> reply = responder.Handle(message);
      ASSERT_TRUE(reply.ok()) << reply.status().ToString();
      ASSERT_TRUE(reply->has_value());
      Result<reconcile::Initiator::Step> step = initiator.OnReply(**reply);
      ASSERT_TRUE(step.ok()) << step.status().ToString();
      if (step->kind == reconcile::Initiator::Step::kSend) message = step->message;
    }
    ASSERT_TRUE(initiator.done());
    const reconcile::ReconcileResult& result = initiator.result();
    coverage.changed_during_run += result.changed_during_run.size();
    std::vector<std::string> keys;
    for (const auto& d : result.missing_local) keys.push_back(d.key);
    for (const auto& d : result.divergent) keys.push_back(d.key);
    for (const std::string& key : keys) {
      // Only keys that differed: drifted, or written meanwhile.
      ASSERT_TRUE(drifted.count(key) || written->count(key)) << "key " << key << " touched";
      std::optional<KeyState> remote = nodes_[b]->Get(key);
      if (!remote) continue;  // purged meanwhile (a stable tombstone)
      const KeyState before = nodes_[a]->Get(key).value_or(KeyState{});
      Result<bool> changed = nodes_[a]->Repair(key, *remote);
      ASSERT_TRUE(changed.ok()) << changed.status().ToString();
      if (*changed) ++coverage.repaired;
      // A repair is a join: what the key held is still there.
      const KeyState after = nodes_[a]->Get(key).value_or(KeyState{});
      auto m = Merge(spec_, after, before);
      ASSERT_TRUE(m.ok());
      ASSERT_EQ(*m, after) << "a repair of " << key << " lost part of its state";
    }
    CheckNoResurrection();
  }

  void Heal() {
    cut_.clear();
    inflight_.clear();
    for (int i = 0; i < n_; ++i) {
      storage_[i]->FailNextCommit(MemoryStorage::Fault::kNone);
      Reopen(i);
    }
    for (int round = 0; round < 3; ++round) {
      for (int a = 0; a < n_; ++a) {
        for (int b = 0; b < n_; ++b) {
          if (a == b) continue;
          for (int guard = 0; guard < 10000; ++guard) {
            Result<Page> exported = nodes_[b]->Export(nodes_[a]->NextFrom(Id(b)), 3);
            ASSERT_TRUE(exported.ok()) << exported.status().ToString();
            const Page& page = *exported;
            ApplyPage(a, page);
            if (::testing::Test::HasFatalFailure()) return;
            if (page.next == page.end) break;
          }
        }
      }
      CheckNoResurrection();
      env_.AdvanceTime(100'000'000);
      for (int i = 0; i < n_; ++i) Purge(i);
      CheckNoResurrection();
    }
  }

  void CheckConverged() {
    if (::testing::Test::HasFatalFailure()) return;
    std::set<std::string> keys;
    for (int i = 0; i < n_; ++i) {
      for (const auto& [key, unused] : nodes_[i]->keys()) keys.insert(key);
    }
    for (const auto& [key, unused] : oracle_) keys.insert(key);
    for (const std::string& key : keys) {
      const KeyState& want = oracle_[key];
      std::optional<std::string> want_doc = *Resolve(spec_, want);
      for (int i = 0; i < n_; ++i) {
        std::optional<KeyState> got = nodes_[i]->Get(key);
        if (!got) {
          ASSERT_TRUE(want.deleted()) << "node " << i << " lost key " << key;
          continue;
        }
        ASSERT_EQ(got->siblings, want.siblings) << "node " << i << " key " << key;
        if (!want.deleted()) {
          ASSERT_EQ(got->vv, want.vv) << "node " << i << " key " << key;
        }
        ASSERT_EQ(*Resolve(spec_, *got), want_doc) << "node " << i << " key " << key;
      }
      if (policy_ == Policy::kCrdtFields && !ever_deleted_.count(key) && increments_[key] > 0) {
        ASSERT_TRUE(want_doc.has_value());
        boost::json::value v = boost::json::parse(*want_doc);
        auto counter = conflict::GCounter::FromJson(boost::json::serialize(v.as_object().at("n")));
        ASSERT_TRUE(counter.ok());
        ASSERT_EQ(counter->Value(), increments_[key]) << "key " << key;
      }
    }
  }

  uint64_t seed_;
  bool drift_ = false;
  sim::SimEnv env_;
  std::mt19937_64 rng_;
  int n_ = 2;
  Policy policy_ = Policy::kLww;
  PolicySpec spec_;
  int step_ = 0;
  std::vector<std::unique_ptr<MemoryStorage>> storage_;
  std::vector<std::unique_ptr<Node>> nodes_;
  std::deque<Message> inflight_;
  std::set<std::pair<int, int>> cut_;
  std::map<std::pair<int, std::string>, VersionVector> seen_;
  std::map<std::string, KeyState> oracle_;
  std::set<std::string> ever_deleted_;
  std::map<std::string, uint64_t> increments_;
  std::vector<std::map<std::string, KeyState>> prev_;
  std::vector<std::map<std::string, VersionVector>> ever_;
  std::map<int, std::map<std::string, std::vector<KeyState>>> history_;
  std::vector<std::set<std::pair<uint64_t, uint64_t>>> applied_;
};

void RunSeed(uint64_t seed, bool drift = false) {
  SCOPED_TRACE("seed " + std::to_string(seed) +
               " (replay with CONVERGE_SIM_SEED=" + std::to_string(seed) + ")");
  Sim sim(seed, drift);
  sim.Run();
  ++coverage.seeds;
}

TEST(MultiWriterSimTest, PeersEqualAfterFaults) {
  const uint64_t only = EnvNumber("CONVERGE_SIM_SEED", 0);
  const uint64_t seeds = only != 0 ? 1 : EnvNumber("CONVERGE_SIM_SEEDS", 2000);
  for (uint64_t i = 0; i < seeds; ++i) {
    RunSeed(only != 0 ? only : i + 1);
    if (::testing::Test::HasFatalFailure()) return;
  }
  std::printf(
      "seeds=%llu writes=%llu deletes=%llu context_writes=%llu pages=%llu refused=%llu "
      "merged=%llu unchanged=%llu dropped=%llu duplicated=%llu crashes=%llu storage_faults=%llu "
      "purged=%llu partitions=%llu sibling_states=%llu\n",
      (unsigned long long)coverage.seeds, (unsigned long long)coverage.writes,
      (unsigned long long)coverage.deletes, (unsigned long long)coverage.context_writes,
      (unsigned long long)coverage.applied_pages, (unsigned long long)coverage.refused_pages,
      (unsigned long long)coverage.merged, (unsigned long long)coverage.unchanged,
      (unsigned long long)coverage.dropped, (unsigned long long)coverage.duplicated,
      (unsigned long long)coverage.crashes, (unsigned long long)coverage.storage_faults,
      (unsigned long long)coverage.purged, (unsigned long long)coverage.partitions,
      (unsigned long long)coverage.siblings_seen);
  if (only == 0 && seeds >= 1000) {
    EXPECT_GT(coverage.purged, 0u);
    EXPECT_GT(coverage.refused_pages, 0u);
    EXPECT_GT(coverage.siblings_seen, 0u);
  }
}

TEST(MultiWriterSimTest, AntiEntropyRepairsInjectedDriftByMerging) {
  const uint64_t only = EnvNumber("CONVERGE_SIM_SEED", 0);
  const uint64_t seeds = only != 0 ? 1 : EnvNumber("CONVERGE_SIM_SEEDS", 2000);
  coverage = Coverage{};
  for (uint64_t i = 0; i < seeds; ++i) {
    RunSeed(only != 0 ? only : i + 1, /*drift=*/true);
    if (::testing::Test::HasFatalFailure()) return;
  }
  std::printf(
      "seeds=%llu drifted_keys=%llu repaired=%llu reconcile_runs=%llu "
      "changed_during_run=%llu\n",
      (unsigned long long)coverage.seeds, (unsigned long long)coverage.drifted,
      (unsigned long long)coverage.repaired, (unsigned long long)coverage.reconcile_rounds,
      (unsigned long long)coverage.changed_during_run);
  if (only == 0 && seeds >= 1000) {
    EXPECT_GT(coverage.drifted, 0u);
    EXPECT_GT(coverage.repaired, 0u);
  }
}

}  // namespace
}  // namespace converge::replica::mw
