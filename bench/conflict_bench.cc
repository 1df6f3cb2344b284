// Benchmarks of conflict resolution (issue 6): LWW-map merge, OR-Set delta apply, PN-counter
// merge across 64 replicas, and the size of the serialized forms.
//
// Run: build/bench/conflict_bench --benchmark_min_time=2s
// Every benchmark reports items_per_second; the unit of an item is in its name and comment.
#include <benchmark/benchmark.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "converge/conflict/counters.h"
#include "converge/conflict/lww_map.h"
#include "converge/conflict/or_map.h"
#include "converge/conflict/registers.h"
#include "converge/conflict/sets.h"

namespace converge::conflict {
namespace {

class Rng {
 public:
  explicit Rng(uint64_t seed) : state_(seed) {}
  uint64_t Next() {
    uint64_t z = (state_ += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }
  uint64_t Uniform(uint64_t n) { return Next() % n; }

 private:
  uint64_t state_;
};

std::string Key(uint64_t i) {
  std::string s = "key:";
  s += std::to_string(1000000000 + i);  // 14 bytes, fits the small-string buffer
  return s;
}

std::string Value(uint64_t i, size_t size) {
  std::string s(size, 'v');
  for (size_t k = 0; k < size && i != 0; ++k, i /= 10) s[k] = static_cast<char>('0' + i % 10);
  return s;
}

constexpr int64_t kEpochMicros = 1'700'000'000'000'000;

// ---- LWW-map merge ------------------------------------------------------------------------
// One item = one incoming entry joined into the local map (a per-key merge). The incoming
// states are other replicas' full states over the same keys, newer for about half of them,
// so half the merges replace the local value and half keep it. With shuffled=0 the incoming
// maps hold their keys in the local map's order (as maps decoded from the sorted binary form
// do); with shuffled=1 every incoming map was built in its own random key order, so each
// entry costs a hash-table probe.
void BM_LwwMapMerge(benchmark::State& state) {
  const uint64_t keys = static_cast<uint64_t>(state.range(0));
  const size_t value_bytes = static_cast<size_t>(state.range(1));
  const bool shuffled = state.range(2) != 0;
  constexpr int kSources = 16;
  Rng rng(42);
  LwwMap base;
  for (uint64_t k = 0; k < keys; ++k) {
    (void)base.Set(ReplicaId(1), HlcTimestamp{kEpochMicros, 0}, Key(k), Value(k, value_bytes));
  }
  std::vector<LwwMap> sources(kSources);
  std::vector<uint64_t> order(keys);
  for (uint64_t k = 0; k < keys; ++k) order[k] = k;
  for (int s = 0; s < kSources; ++s) {
    if (shuffled) {
      for (uint64_t i = keys; i > 1; --i) std::swap(order[i - 1], order[rng.Uniform(i)]);
    }
    for (uint64_t k : order) {
      // Later sources carry later timestamps for a random half of the keys.
      const int64_t ts = kEpochMicros + (rng.Uniform(2) == 0 ? s + 1 : 0);
      (void)sources[s].Set(ReplicaId(2 + s), HlcTimestamp{ts, 0}, Key(k),
                           Value(k + s, value_bytes));
    }
  }
  LwwMap target = base;
  int next = 0;
  for (auto _ : state) {
    if (next == kSources) {
      state.PauseTiming();
      target = base;
      next = 0;
      state.ResumeTiming();
    }
    target.Merge(sources[next++]);
    benchmark::DoNotOptimize(target);
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * keys));
}
BENCHMARK(BM_LwwMapMerge)
    ->ArgNames({"keys", "value_bytes", "shuffled"})
    ->Args({1'000, 8, 0})
    ->Args({10'000, 8, 0})
    ->Args({100'000, 8, 0})
    ->Args({10'000, 64, 0})
    ->Args({1'000, 8, 1})
    ->Args({10'000, 8, 1})
    ->Args({100'000, 8, 1})
    ->Args({10'000, 64, 1});

// One item = one single-entry delta (as produced by LwwMap::Set at another replica) applied
// to a map of 100k keys; half the deltas touch new keys.
void BM_LwwMapDeltaApply(benchmark::State& state) {
  constexpr uint64_t kKeys = 100'000;
  constexpr size_t kDeltas = 100'000;
  Rng rng(7);
  LwwMap base;
  for (uint64_t k = 0; k < kKeys; ++k) {
    (void)base.Set(ReplicaId(1), HlcTimestamp{kEpochMicros, 0}, Key(k), Value(k, 8));
  }
  LwwMap origin;
  std::vector<LwwMap> deltas;
  deltas.reserve(kDeltas);
  for (size_t i = 0; i < kDeltas; ++i) {
    const uint64_t k = rng.Uniform(2 * kKeys);
    deltas.push_back(origin
                         .Set(ReplicaId(2),
                              HlcTimestamp{kEpochMicros + 1 + static_cast<int64_t>(i), 0}, Key(k),
                              Value(i, 8))
                         .value());
  }
  LwwMap target = base;
  size_t next = 0;
  for (auto _ : state) {
    if (next == kDeltas) {
      state.PauseTiming();
      target = base;
      next = 0;
      state.ResumeTiming();
    }
    target.Merge(deltas[next++]);
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
}
BENCHMARK(BM_LwwMapDeltaApply);

// ---- OR-Set delta apply -----------------------------------------------------------------
// One item = one delta (an add or a remove made at one of `origins` writer replicas, 70% adds)
// applied at a receiver, in the order the writers produced them, interleaved across writers
// (see OrSetDeltaStream for `lag`).
// Elements come from a universe of 10k, so adds often re-add and removes hit live elements;
// the receiver runs in steady state (never reset).
// The writers run outside the timed region in batches of 64k deltas, kept in binary form (as
// they would arrive); BM_OrSetDeltaApply decodes 256 at a time outside the timed region and
// times the apply alone, BM_OrSetDeltaDecodeApply times decode + apply.
class OrSetDeltaStream {
 public:
  // lag < 0: the writers never see each other's updates (every element collects concurrent
  // dots from each writer: the worst case). lag >= 0: each delta reaches the other writers
  // after `lag` more deltas were produced (replicas in sync up to a propagation delay).
  OrSetDeltaStream(int origins, int lag) : writers_(origins), rng_(11), lag_(lag) {}
  // The next delta in binary form.
  const std::string& Next() {
    if (next_ == wire_.size()) Produce();
    return wire_[next_++];
  }
  // True when Next() will have to run the writers first.
  bool NeedsProduce() const { return next_ == wire_.size(); }
  void Produce() {
    constexpr size_t kBatch = 65'536;
    constexpr uint64_t kUniverse = 10'000;
    wire_.clear();
    const int origins = static_cast<int>(writers_.size());
    for (size_t i = 0; i < kBatch; ++i) {
      const int r = static_cast<int>(rng_.Uniform(origins));
      const std::string e = Key(rng_.Uniform(kUniverse));
      OrSet delta = rng_.Uniform(10) < 7 ? writers_[r].Add(ReplicaId(r + 1), e).value()
                                         : writers_[r].Remove(e);
      wire_.push_back(delta.ToBinary());
      if (lag_ >= 0 && origins > 1) {
        in_flight_.emplace_back(r, std::move(delta));
        while (in_flight_.size() > static_cast<size_t>(lag_)) {
          for (int w = 0; w < origins; ++w) {
            if (w != in_flight_.front().first) writers_[w].Merge(in_flight_.front().second);
          }
          in_flight_.erase(in_flight_.begin());
        }
      }
    }
    next_ = 0;
  }

 private:
  std::vector<OrSet> writers_;
  Rng rng_;
  int lag_;
  std::vector<std::pair<int, OrSet>> in_flight_;
  std::vector<std::string> wire_;
  size_t next_ = 0;
};

void BM_OrSetDeltaApply(benchmark::State& state) {
  constexpr size_t kChunk = 256;
  OrSetDeltaStream stream(static_cast<int>(state.range(0)), static_cast<int>(state.range(1)));
  OrSet target;
  for (int i = 0; i < 200'000; ++i) target.Merge(OrSet::FromBinary(stream.Next()).value());
  std::vector<OrSet> deltas;
  auto decode_chunk = [&] {
    deltas.clear();
    for (size_t i = 0; i < kChunk; ++i) deltas.push_back(OrSet::FromBinary(stream.Next()).value());
  };
  decode_chunk();
  size_t next = 0;
  for (auto _ : state) {
    if (next == kChunk) {
      state.PauseTiming();
      decode_chunk();
      next = 0;
      state.ResumeTiming();
    }
    target.Merge(deltas[next++]);
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
  state.counters["elements"] = static_cast<double>(target.size());
}
BENCHMARK(BM_OrSetDeltaApply)
    ->ArgNames({"origins", "lag"})
    ->Args({1, 0})
    ->Args({4, 32})
    ->Args({4, -1});

void BM_OrSetDeltaDecodeApply(benchmark::State& state) {
  OrSetDeltaStream stream(static_cast<int>(state.range(0)), static_cast<int>(state.range(1)));
  OrSet target;
  for (int i = 0; i < 200'000; ++i) target.Merge(OrSet::FromBinary(stream.Next()).value());
  size_t bytes = 0;
  for (auto _ : state) {
    if (stream.NeedsProduce()) {
      state.PauseTiming();
      stream.Produce();
      state.ResumeTiming();
    }
    const std::string& wire = stream.Next();
    bytes += wire.size();
    target.Merge(OrSet::FromBinary(wire).value());
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
  state.counters["delta_bytes"] =
      static_cast<double>(bytes) / static_cast<double>(state.iterations());
}
BENCHMARK(BM_OrSetDeltaDecodeApply)
    ->ArgNames({"origins", "lag"})
    ->Args({1, 0})
    ->Args({4, 32})
    ->Args({4, -1});

// ---- PN-counter merge across 64 replicas ----------------------------------------------------
// 64 replicas each hold a PN counter with an entry for every replica (after gossip). One item
// = one whole-state merge of a 64-entry counter into another; "entries" counts per-replica
// entries joined.
void BM_PnCounterMerge64(benchmark::State& state) {
  constexpr int kReplicas = 64;
  Rng rng(3);
  std::vector<PnCounter> replicas(kReplicas);
  for (int round = 0; round < 4; ++round) {
    for (int r = 0; r < kReplicas; ++r) {
      (void)replicas[r].Add(ReplicaId(r + 1), static_cast<int64_t>(rng.Uniform(100)) - 40);
    }
    // Gossip: each replica learns a random subset of the others.
    for (int r = 0; r < kReplicas; ++r) {
      for (int k = 0; k < 16; ++k) replicas[r].Merge(replicas[rng.Uniform(kReplicas)]);
    }
  }
  for (int r = 0; r < kReplicas; ++r) {
    for (int k = 0; k < kReplicas; ++k) replicas[r].Merge(replicas[k]);
    (void)replicas[r].Add(ReplicaId(r + 1), 1);  // each ends a little ahead in its own entry
  }
  PnCounter target = replicas[0];
  int next = 0;
  for (auto _ : state) {
    target.Merge(replicas[next]);
    next = (next + 1) % kReplicas;
    benchmark::DoNotOptimize(target);
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
  state.counters["entries"] = benchmark::Counter(
      static_cast<double>(state.iterations()) * kReplicas, benchmark::Counter::kIsRate);
  state.counters["value"] = static_cast<double>(target.Value());
}
BENCHMARK(BM_PnCounterMerge64);

// One item = one gossip round in which a fresh replica merges the states of all 64 replicas.
void BM_PnCounterGossipRound64(benchmark::State& state) {
  constexpr int kReplicas = 64;
  std::vector<PnCounter> replicas(kReplicas);
  for (int r = 0; r < kReplicas; ++r) {
    for (int k = 0; k < kReplicas; ++k) (void)replicas[r].Add(ReplicaId(k + 1), r + k);
  }
  for (auto _ : state) {
    PnCounter acc;
    for (const PnCounter& c : replicas) acc.Merge(c);
    benchmark::DoNotOptimize(acc);
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
}
BENCHMARK(BM_PnCounterGossipRound64);

// ---- serialized size --------------------------------------------------------------------
// One item = one element encoded. Counters: binary and JSON bytes per element.
template <typename T>
void ReportSize(benchmark::State& state, const T& value, size_t elements) {
  size_t bytes = 0;
  for (auto _ : state) {
    std::string out;
    value.AppendBinary(&out);
    bytes = out.size();
    benchmark::DoNotOptimize(out);
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * elements));
  state.counters["binary_bytes_per_element"] = static_cast<double>(bytes) / elements;
  state.counters["json_bytes_per_element"] = static_cast<double>(value.ToJson().size()) / elements;
}

constexpr size_t kElements = 10'000;

// Keys "key:1000000000".."key:1000009999" (14 bytes), 8-byte values, HLC stamps.
void BM_SizeLwwMap(benchmark::State& state) {
  LwwMap m;
  for (uint64_t k = 0; k < kElements; ++k) {
    (void)m.Set(ReplicaId(1 + k % 4), HlcTimestamp{kEpochMicros + static_cast<int64_t>(k), 0},
                Key(k), Value(k, 8));
  }
  ReportSize(state, m, kElements);
}
BENCHMARK(BM_SizeLwwMap);

// 14-byte elements added by 4 replicas, 30% of adds later removed (no tombstones remain).
void BM_SizeOrSet(benchmark::State& state) {
  OrSet s;
  Rng rng(5);
  size_t live = 0;
  for (uint64_t k = 0; live < kElements; ++k) {
    (void)s.Add(ReplicaId(1 + rng.Uniform(4)), Key(k));
    if (rng.Uniform(10) < 3) {
      s.Remove(Key(k));
    } else {
      ++live;
    }
  }
  ReportSize(state, s, kElements);
}
BENCHMARK(BM_SizeOrSet);

void BM_SizeGSet(benchmark::State& state) {
  GSet s;
  for (uint64_t k = 0; k < kElements; ++k) s.Add(Key(k));
  ReportSize(state, s, kElements);
}
BENCHMARK(BM_SizeGSet);

// Element = one replica's entry.
void BM_SizePnCounter64(benchmark::State& state) {
  PnCounter c;
  for (int r = 0; r < 64; ++r) {
    (void)c.Add(ReplicaId(r + 1), 1000 + r);
    (void)c.Add(ReplicaId(r + 1), -(r * 3));
  }
  ReportSize(state, c, 64);
}
BENCHMARK(BM_SizePnCounter64);

// Element = one sibling (8-byte values, 4 concurrent writers).
void BM_SizeMvRegister(benchmark::State& state) {
  MvRegister reg;
  for (int r = 0; r < 4; ++r) reg.Merge(MvRegister().Write(ReplicaId(r + 1), Value(r, 8)).value());
  ReportSize(state, reg, 4);
}
BENCHMARK(BM_SizeMvRegister);

// Element = one leaf value: 1000 nested maps each with a counter, a register and a 2-element set.
void BM_SizeOrMap(benchmark::State& state) {
  OrMap m;
  constexpr size_t kMaps = 1000;
  for (size_t i = 0; i < kMaps; ++i) {
    const FieldKey map{Key(i), ValueKind::kMap};
    const ReplicaId r(1 + i % 4);
    (void)m.IncrementCounter(r, {map, FieldKey{"n", ValueKind::kCounter}}, 5);
    (void)m.AssignRegister(r, {map, FieldKey{"name", ValueKind::kMvRegister}}, Value(i, 8));
    (void)m.AddToSet(r, {map, FieldKey{"tags", ValueKind::kOrSet}}, "a");
    (void)m.AddToSet(r, {map, FieldKey{"tags", ValueKind::kOrSet}}, "b");
  }
  ReportSize(state, m, kMaps * 4);
}
BENCHMARK(BM_SizeOrMap);

}  // namespace
}  // namespace converge::conflict

BENCHMARK_MAIN();
