// Randomized, seeded property tests of every conflict type.
//
// Each case builds a random history: a few replicas apply random operations (keeping the
// deltas), and exchange deltas and whole states at random. From that history it checks:
// - lattice laws of merge: commutative, associative, idempotent, inflationary;
// - delta decomposition: every replica's state equals the join of the deltas it incorporated;
// - convergence: observers that receive every delta in different random orders, with
//   duplicates and interleaved full states, end in the same state, equal to the join of all
//   replicas' states;
// - serialization round trips (binary and JSON);
// and, per type, oracles written against a model of causality rather than the implementation:
// a multi-value register never loses a concurrent write (nor keeps an overwritten one), LWW
// never lets a causally earlier write win, the bounded counter never drops below its bound,
// an OR-Set is add-wins and keeps no tombstones.
//
// Cases per property: CONVERGE_PROPERTY_CASES (default 100000). Seed: CONVERGE_SIM_SEED.
// A failure prints the seed and case index; CONVERGE_PROPERTY_CASE=<i> replays just that case.
#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "conflict/test_util.h"
#include "converge/conflict/causality.h"
#include "converge/conflict/counters.h"
#include "converge/conflict/lww_map.h"
#include "converge/conflict/or_map.h"
#include "converge/conflict/registers.h"
#include "converge/conflict/sets.h"

namespace converge::conflict {
namespace {

using testing::Rng;

// Runs `check(rng)` (returning "" on success or a description of the failure) for every case,
// stopping at the first failure and reporting how to replay it.
template <typename Check>
void RunProperty(std::string_view name, Check check) {
  const uint64_t seed = testing::PropertySeed();
  const uint64_t cases = testing::PropertyCases();
  const int64_t only = testing::PropertyOnlyCase();
  const uint64_t name_hash = testing::HashName(name);
  for (uint64_t i = 0; i < cases; ++i) {
    if (only >= 0 && static_cast<uint64_t>(only) != i) continue;
    Rng rng(testing::Mix(seed ^ name_hash, i));
    std::string failure = check(rng);
    if (!failure.empty()) {
      ADD_FAILURE() << "property '" << name << "' failed at case " << i << " of " << cases
                    << " (replay: CONVERGE_SIM_SEED=" << seed
                    << " CONVERGE_PROPERTY_CASE=" << i << ")\n"
                    << failure;
      return;
    }
  }
}

// ---- per-history context shared by the generators ---------------------------------------

struct Ctx {
  Ctx(Rng& rng, int replicas) {
    for (int r = 0; r < replicas; ++r) {
      // Wall clocks skewed by up to +-50 ms, well inside the HLC's 500 ms guard.
      walls.push_back(std::make_unique<testing::ManualClock>(1'700'000'000'000'000'000 +
                                                             rng.Range(-50'000'000, 50'000'000)));
      hlcs.push_back(std::make_unique<HybridClock>(*walls.back()));
    }
    bound = rng.Range(-5, 5);
  }
  // Advances replica r's wall clock by 0..2 ms (sometimes not at all, to force logical ticks).
  void Tick(int r, Rng& rng) {
    if (rng.Percent(70)) walls[r]->Advance(rng.Range(0, 2'000'000));
  }
  std::vector<std::unique_ptr<testing::ManualClock>> walls;
  std::vector<std::unique_ptr<HybridClock>> hlcs;
  std::vector<std::vector<CausalContext>> mv_snapshots;  // per replica, for stale contexts
  int64_t bound = 0;
  uint64_t next_value = 0;
};

ReplicaId Rid(int r) { return ReplicaId(static_cast<uint64_t>(r) + 1); }

template <typename T>
std::optional<T> FromResult(Result<T> r) {
  if (!r.ok()) return std::nullopt;
  return std::move(r).value();
}

// ---- generators: random operations of each type -----------------------------------------
// Op mutates the state and returns the delta (nullopt when the operation was refused).
// Join returns "" or an error. Check returns "" or a violated invariant.

template <typename T>
struct Gen;

template <typename T>
struct GenBase {
  static T Empty(const Ctx&) { return T(); }
  static std::string Join(T& a, const T& b) {
    a.Merge(b);
    return "";
  }
  static std::string Check(const T&, const Ctx&) { return ""; }
  static std::string CheckConverged(const T&) { return ""; }
};

template <>
struct Gen<GCounter> : GenBase<GCounter> {
  static std::optional<GCounter> Op(GCounter& s, int r, Rng& rng, Ctx&) {
    return FromResult(s.Increment(Rid(r), 1 + rng.Uniform(5)));
  }
};

template <>
struct Gen<PnCounter> : GenBase<PnCounter> {
  static std::optional<PnCounter> Op(PnCounter& s, int r, Rng& rng, Ctx&) {
    int64_t d = rng.Range(-5, 5);
    if (d == 0) d = 1;
    return FromResult(s.Add(Rid(r), d));
  }
};

template <>
struct Gen<BoundedCounter> : GenBase<BoundedCounter> {
  static BoundedCounter Empty(const Ctx& ctx) { return BoundedCounter(ctx.bound); }
  static std::string Join(BoundedCounter& a, const BoundedCounter& b) {
    Status s = a.Merge(b);
    return s.ok() ? "" : "merge failed: " + s.ToString();
  }
  static std::optional<BoundedCounter> Op(BoundedCounter& s, int r, Rng& rng, Ctx&) {
    const int kind = static_cast<int>(rng.Uniform(10));
    const BoundedCounter before = s;
    Result<BoundedCounter> d = BoundedCounter();
    if (kind < 4) {
      d = s.Increment(Rid(r), 1 + rng.Uniform(4));
    } else if (kind < 8) {
      d = s.Decrement(Rid(r), 1 + rng.Uniform(6));
    } else {
      d = s.TransferRights(Rid(r), Rid(static_cast<int>(rng.Uniform(4))), 1 + rng.Uniform(4));
    }
    if (!d.ok()) {
      // A refused operation must change nothing (checked by the caller via Check too).
      CONVERGE_CHECK(s == before);
      return std::nullopt;
    }
    return std::move(d).value();
  }
  static std::string Check(const BoundedCounter& s, const Ctx& ctx) {
    if (s.Value() < ctx.bound) {
      return "bounded counter value " + std::to_string(s.Value()) + " below bound " +
             std::to_string(ctx.bound) + ": " + s.ToJson();
    }
    return "";
  }
};

template <>
struct Gen<GSet> : GenBase<GSet> {
  static std::optional<GSet> Op(GSet& s, int, Rng& rng, Ctx&) {
    return s.Add(std::string(1, static_cast<char>('a' + rng.Uniform(10))));
  }
};

template <>
struct Gen<OrSet> : GenBase<OrSet> {
  static std::optional<OrSet> Op(OrSet& s, int r, Rng& rng, Ctx&) {
    std::string e(1, static_cast<char>('a' + rng.Uniform(6)));
    if (rng.Percent(60)) return FromResult(s.Add(Rid(r), std::move(e)));
    return s.Remove(e);
  }
  static std::string CheckConverged(const OrSet& s) {
    // Every dot ever minted has been delivered: the context must be a plain version vector and
    // hold nothing for removed elements.
    if (!s.context().IsCompact()) return "converged or-set context is not compact: " + s.ToJson();
    return "";
  }
};

template <>
struct Gen<EwFlag> : GenBase<EwFlag> {
  static std::optional<EwFlag> Op(EwFlag& s, int r, Rng& rng, Ctx&) {
    if (rng.Percent(55)) return FromResult(s.Enable(Rid(r)));
    return s.Disable();
  }
  static std::string CheckConverged(const EwFlag& s) {
    if (!s.context().IsCompact()) return "converged flag context is not compact: " + s.ToJson();
    return "";
  }
};

template <>
struct Gen<LwwRegister> : GenBase<LwwRegister> {
  static std::optional<LwwRegister> Op(LwwRegister& s, int r, Rng& rng, Ctx& ctx) {
    ctx.Tick(r, rng);
    const std::string v = "v" + std::to_string(ctx.next_value++);
    if (rng.Percent(85)) return FromResult(s.Set(Rid(r), *ctx.hlcs[r], v));
    Result<HlcTimestamp> ts = ctx.hlcs[r]->Update(s.stamp().timestamp);
    if (!ts.ok()) return std::nullopt;
    return FromResult(s.Clear(Rid(r), *ts));
  }
};

template <>
struct Gen<MvRegister> : GenBase<MvRegister> {
  static std::optional<MvRegister> Op(MvRegister& s, int r, Rng& rng, Ctx& ctx) {
    if (ctx.mv_snapshots.size() <= static_cast<size_t>(r)) ctx.mv_snapshots.resize(r + 1);
    auto& snaps = ctx.mv_snapshots[r];
    snaps.push_back(s.context());
    const std::string v = "w" + std::to_string(ctx.next_value++);
    const int kind = static_cast<int>(rng.Uniform(10));
    if (kind < 5) return FromResult(s.Write(Rid(r), v));
    const CausalContext& stale = snaps[rng.Uniform(snaps.size())];
    if (kind < 8) return FromResult(s.Write(Rid(r), v, stale));
    if (kind < 9) return s.Clear(stale);
    auto d =
        s.ResolveWith(Rid(r), [](std::string_view a, std::string_view b) -> Result<std::string> {
          return std::string(a) + "+" + std::string(b);
        });
    return FromResult(std::move(d));
  }
  static std::string Check(const MvRegister& s, const Ctx&) {
    const auto& sib = s.siblings();
    for (size_t i = 0; i < sib.size(); ++i) {
      if (!s.context().Contains(sib[i].version.dot)) return "sibling dot outside the context";
      for (size_t j = i + 1; j < sib.size(); ++j) {
        if (Compare(sib[i].version, sib[j].version) != Ordering::kConcurrent) {
          return "siblings " + sib[i].version.ToJson() + " and " + sib[j].version.ToJson() +
                 " are not concurrent: " + s.ToJson();
        }
      }
    }
    return "";
  }
  static std::string CheckConverged(const MvRegister& s) {
    if (!s.context().IsCompact()) return "converged register context is not compact";
    return "";
  }
};

template <>
struct Gen<LwwMap> : GenBase<LwwMap> {
  static std::optional<LwwMap> Op(LwwMap& s, int r, Rng& rng, Ctx& ctx) {
    ctx.Tick(r, rng);
    std::string key(1, static_cast<char>('k' + rng.Uniform(5)));
    if (rng.Percent(75)) {
      return FromResult(
          s.Set(Rid(r), *ctx.hlcs[r], std::move(key), "v" + std::to_string(ctx.next_value++)));
    }
    return FromResult(s.Remove(Rid(r), *ctx.hlcs[r], std::move(key)));
  }
};

template <>
struct Gen<OrMap> : GenBase<OrMap> {
  static MapPath RandomPath(Rng& rng, std::optional<ValueKind> leaf) {
    MapPath path;
    const int depth = 1 + static_cast<int>(rng.Uniform(3));
    for (int i = 0; i + 1 < depth; ++i) {
      path.push_back(
          FieldKey{std::string(1, static_cast<char>('a' + rng.Uniform(2))), ValueKind::kMap});
    }
    const ValueKind kind =
        leaf.value_or(static_cast<ValueKind>(1 + rng.Uniform(5)));  // counter .. or-set
    path.push_back(FieldKey{std::string(1, static_cast<char>('x' + rng.Uniform(2))), kind});
    return path;
  }
  static std::optional<OrMap> Op(OrMap& s, int r, Rng& rng, Ctx& ctx) {
    ctx.Tick(r, rng);
    if (rng.Percent(12)) {
      MapPath path = RandomPath(rng, std::nullopt);
      path.resize(1 + rng.Uniform(path.size()));
      if (path.size() < 3 && rng.Percent(50)) path.back().kind = ValueKind::kMap;
      return FromResult(s.Remove(path));
    }
    const MapPath path = RandomPath(rng, std::nullopt);
    const std::string v = "v" + std::to_string(ctx.next_value++);
    switch (path.back().kind) {
      case ValueKind::kCounter: {
        int64_t d = rng.Range(-3, 3);
        return FromResult(s.IncrementCounter(Rid(r), path, d == 0 ? 1 : d));
      }
      case ValueKind::kFlag:
        return rng.Percent(60) ? FromResult(s.EnableFlag(Rid(r), path))
                               : FromResult(s.DisableFlag(path));
      case ValueKind::kMvRegister:
        return FromResult(s.AssignRegister(Rid(r), path, v));
      case ValueKind::kLwwRegister:
        return FromResult(s.AssignLww(Rid(r), path, ctx.hlcs[r]->Now(), v));
      case ValueKind::kOrSet: {
        std::string e(1, static_cast<char>('p' + rng.Uniform(3)));
        return rng.Percent(60) ? FromResult(s.AddToSet(Rid(r), path, std::move(e)))
                               : FromResult(s.RemoveFromSet(path, e));
      }
      case ValueKind::kMap:
        break;
    }
    return std::nullopt;
  }
  static std::string CheckConverged(const OrMap& s) {
    if (!s.context().IsCompact()) return "converged or-map context is not compact";
    return "";
  }
};

// ---- random histories -------------------------------------------------------------------

template <typename T>
struct History {
  std::vector<T> states;      // per replica
  std::vector<uint64_t> has;  // per replica: bitmask of the deltas it incorporated
  std::vector<T> deltas;
};

constexpr int kMaxSteps = 14;  // <= 64 deltas so a bitmask tracks them

template <typename T>
std::string BuildHistory(Rng& rng, Ctx& ctx, int replicas, History<T>* h) {
  h->states.assign(replicas, Gen<T>::Empty(ctx));
  h->has.assign(replicas, 0);
  const int steps = 1 + static_cast<int>(rng.Uniform(kMaxSteps));
  for (int step = 0; step < steps; ++step) {
    const int r = static_cast<int>(rng.Uniform(replicas));
    const int kind = static_cast<int>(rng.Uniform(100));
    T& s = h->states[r];
    if (kind < 60 || h->deltas.empty()) {
      std::optional<T> d = Gen<T>::Op(s, r, rng, ctx);
      if (d.has_value()) {
        h->has[r] |= uint64_t{1} << h->deltas.size();
        h->deltas.push_back(std::move(*d));
      }
    } else if (kind < 85) {
      const size_t i = rng.Uniform(h->deltas.size());
      std::string err = Gen<T>::Join(s, h->deltas[i]);
      if (!err.empty()) return "history: " + err;
      h->has[r] |= uint64_t{1} << i;
    } else {
      const int p = static_cast<int>(rng.Uniform(replicas));
      if (p != r) {
        std::string err = Gen<T>::Join(s, h->states[p]);
        if (!err.empty()) return "history: " + err;
        h->has[r] |= h->has[p];
      }
    }
    std::string bad = Gen<T>::Check(s, ctx);
    if (!bad.empty()) return "history: " + bad;
  }
  return "";
}

template <typename T>
std::string Show(const T& v) {
  return v.ToJson();
}

template <typename T>
std::string RoundTrip(const T& v) {
  Result<T> b = T::FromBinary(v.ToBinary());
  if (!b.ok()) return "binary decode failed: " + b.status().ToString() + " for " + Show(v);
  if (!(*b == v)) return "binary round trip changed " + Show(v) + " into " + Show(*b);
  Result<T> j = T::FromJson(v.ToJson());
  if (!j.ok()) return "json decode failed: " + j.status().ToString() + " for " + Show(v);
  if (!(*j == v)) return "json round trip changed " + Show(v) + " into " + Show(*j);
  return "";
}

template <typename T>
std::string JoinOf(T a, const T& b, T* out) {
  std::string err = Gen<T>::Join(a, b);
  *out = std::move(a);
  return err;
}

// Merge is commutative, associative, idempotent and inflationary; every replica state is the
// join of the deltas it incorporated; states survive serialization.
template <typename T>
std::string CheckLattice(Rng& rng) {
  const int replicas = 2 + static_cast<int>(rng.Uniform(3));
  Ctx ctx(rng, replicas);
  History<T> h;
  std::string err = BuildHistory(rng, ctx, replicas, &h);
  if (!err.empty()) return err;

  std::vector<const T*> pool;
  for (const T& s : h.states) pool.push_back(&s);
  for (const T& d : h.deltas) pool.push_back(&d);
  const T empty = Gen<T>::Empty(ctx);
  pool.push_back(&empty);
  const T& a = *pool[rng.Uniform(pool.size())];
  const T& b = *pool[rng.Uniform(pool.size())];
  const T& c = *pool[rng.Uniform(pool.size())];

  T ab, ba, bc, ab_c, a_bc, aa, ab_a, ab_b;
  if (!(err = JoinOf(a, b, &ab)).empty()) return err;
  if (!(err = JoinOf(b, a, &ba)).empty()) return err;
  if (!(ab == ba)) {
    return "not commutative:\n a=" + Show(a) + "\n b=" + Show(b) + "\n a|b=" + Show(ab) +
           "\n b|a=" + Show(ba);
  }
  if (!(err = JoinOf(b, c, &bc)).empty()) return err;
  if (!(err = JoinOf(ab, c, &ab_c)).empty()) return err;
  if (!(err = JoinOf(a, bc, &a_bc)).empty()) return err;
  if (!(ab_c == a_bc)) {
    return "not associative:\n a=" + Show(a) + "\n b=" + Show(b) + "\n c=" + Show(c) +
           "\n (a|b)|c=" + Show(ab_c) + "\n a|(b|c)=" + Show(a_bc);
  }
  if (!(err = JoinOf(a, a, &aa)).empty()) return err;
  if (!(aa == a)) return "not idempotent:\n a=" + Show(a) + "\n a|a=" + Show(aa);
  if (!(err = JoinOf(ab, a, &ab_a)).empty()) return err;
  if (!(err = JoinOf(ab, b, &ab_b)).empty()) return err;
  if (!(ab_a == ab) || !(ab_b == ab)) {
    return "not inflationary (a|b does not include a and b):\n a=" + Show(a) + "\n b=" + Show(b) +
           "\n a|b=" + Show(ab);
  }
  if (!(err = Gen<T>::Check(ab, ctx)).empty()) return err;

  for (size_t r = 0; r < h.states.size(); ++r) {
    T joined = Gen<T>::Empty(ctx);
    for (size_t i = 0; i < h.deltas.size(); ++i) {
      if ((h.has[r] >> i) & 1) {
        if (!(err = Gen<T>::Join(joined, h.deltas[i])).empty()) return err;
      }
    }
    if (!(joined == h.states[r])) {
      return "replica state is not the join of its deltas:\n state=" + Show(h.states[r]) +
             "\n join=" + Show(joined);
    }
  }
  if (rng.Percent(25)) {
    if (!(err = RoundTrip(ab)).empty()) return err;
  }
  return "";
}

// Observers receiving every delta in random orders, with duplicates and interleaved replica
// states, converge to the same state: the join of all replica states.
template <typename T>
std::string CheckConvergence(Rng& rng) {
  const int replicas = 2 + static_cast<int>(rng.Uniform(3));
  Ctx ctx(rng, replicas);
  History<T> h;
  std::string err = BuildHistory(rng, ctx, replicas, &h);
  if (!err.empty()) return err;

  T reference = Gen<T>::Empty(ctx);
  for (const T& s : h.states) {
    if (!(err = Gen<T>::Join(reference, s)).empty()) return err;
  }
  std::optional<T> first;
  for (int observer = 0; observer < 2; ++observer) {
    // Deliveries: every delta once, some twice, and a few whole replica states.
    std::vector<const T*> deliveries;
    for (const T& d : h.deltas) {
      deliveries.push_back(&d);
      if (rng.Percent(30)) deliveries.push_back(&d);
    }
    for (const T& s : h.states) {
      if (rng.Percent(20)) deliveries.push_back(&s);
    }
    for (size_t i = deliveries.size(); i > 1; --i) {
      std::swap(deliveries[i - 1], deliveries[rng.Uniform(i)]);
    }
    T state = Gen<T>::Empty(ctx);
    for (const T* d : deliveries) {
      if (!(err = Gen<T>::Join(state, *d)).empty()) return "observer: " + err;
      if (!(err = Gen<T>::Check(state, ctx)).empty()) return "observer: " + err;
    }
    if (!(state == reference)) {
      return "observer " + std::to_string(observer) +
             " did not converge:\n observer=" + Show(state) + "\n reference=" + Show(reference);
    }
    if (!(err = Gen<T>::CheckConverged(state)).empty()) return err;
    if (!first.has_value()) first = std::move(state);
  }
  return "";
}

#define CONFLICT_LATTICE_TESTS(Type)                                                         \
  TEST(ConflictPropertyTest, Type##MergeIsASemilattice) {                                    \
    RunProperty(#Type "-lattice", [](Rng& rng) { return CheckLattice<Type>(rng); });         \
  }                                                                                          \
  TEST(ConflictPropertyTest, Type##ReplicasConverge) {                                       \
    RunProperty(#Type "-convergence", [](Rng& rng) { return CheckConvergence<Type>(rng); }); \
  }

CONFLICT_LATTICE_TESTS(GCounter)
CONFLICT_LATTICE_TESTS(PnCounter)
CONFLICT_LATTICE_TESTS(BoundedCounter)
CONFLICT_LATTICE_TESTS(GSet)
CONFLICT_LATTICE_TESTS(OrSet)
CONFLICT_LATTICE_TESTS(EwFlag)
CONFLICT_LATTICE_TESTS(LwwRegister)
CONFLICT_LATTICE_TESTS(MvRegister)
CONFLICT_LATTICE_TESTS(LwwMap)
CONFLICT_LATTICE_TESTS(OrMap)

// ---- oracles -------------------------------------------------------------------------------

// Model of a dot-based history: operations (writes/adds and overwrites/removes), what each
// observed, and which operations each replica has incorporated. Independent of the
// implementation: "observed" is what the model says the writer had seen.
struct CausalModel {
  std::vector<uint64_t> observed;  // per op: the write ops it supersedes
  std::vector<bool> creates;       // per op: adds a value (write/add) or only supersedes
  std::vector<uint64_t> inc;       // per replica: ops incorporated

  // Writes alive in a state that incorporated `ops`: created, and superseded by none.
  uint64_t Alive(uint64_t ops) const {
    uint64_t killed = 0, created = 0;
    for (size_t o = 0; o < observed.size(); ++o) {
      if ((ops >> o) & 1) {
        killed |= observed[o];
        if (creates[o]) created |= uint64_t{1} << o;
      }
    }
    return created & ~killed;
  }
  // Writes known (in the causal past) of a state that incorporated `ops`.
  uint64_t Seen(uint64_t ops) const {
    uint64_t seen = 0;
    for (size_t o = 0; o < observed.size(); ++o) {
      if ((ops >> o) & 1) seen |= observed[o] | (creates[o] ? uint64_t{1} << o : 0);
    }
    return seen;
  }
};

// A multi-value register never loses a concurrent write and never keeps an overwritten one:
// at every replica, at every step, the siblings are exactly the model's alive writes.
std::string CheckMvRegisterOracle(Rng& rng) {
  const int replicas = 2 + static_cast<int>(rng.Uniform(3));
  std::vector<MvRegister> states(replicas);
  std::vector<std::vector<std::pair<CausalContext, uint64_t>>> snapshots(replicas);
  std::vector<MvRegister> deltas;
  CausalModel model;
  model.inc.assign(replicas, 0);
  std::vector<Dot> dot_of;  // per op (creating ops only; others {})

  auto check = [&](const MvRegister& s, uint64_t ops, const std::string& where) -> std::string {
    const uint64_t alive = model.Alive(ops);
    std::vector<std::string> expected;
    for (size_t o = 0; o < model.observed.size(); ++o) {
      if ((alive >> o) & 1) expected.push_back("w" + std::to_string(o));
    }
    std::vector<std::string> actual;
    for (const auto& sib : s.siblings()) actual.push_back(sib.value);
    std::sort(expected.begin(), expected.end());
    std::sort(actual.begin(), actual.end());
    if (expected != actual) {
      std::string e, a;
      for (auto& x : expected) e += x + " ";
      for (auto& x : actual) a += x + " ";
      return where + ": siblings [" + a + "] but the concurrent writes are [" + e +
             "]: " + s.ToJson();
    }
    // The register's context must know exactly the writes the model says were seen.
    const uint64_t seen = model.Seen(ops);
    for (size_t o = 0; o < dot_of.size(); ++o) {
      if (!model.creates[o]) continue;
      if (s.context().Contains(dot_of[o]) != (((seen >> o) & 1) != 0)) {
        return where + ": context disagrees with the model about w" + std::to_string(o);
      }
    }
    return "";
  };

  const int steps = 1 + static_cast<int>(rng.Uniform(20));
  for (int step = 0; step < steps && model.observed.size() < 60; ++step) {
    const int r = static_cast<int>(rng.Uniform(replicas));
    MvRegister& s = states[r];
    const int kind = static_cast<int>(rng.Uniform(100));
    if (kind < 55 || deltas.empty()) {
      // A write (or a clear) based on the current state or on an earlier read.
      snapshots[r].emplace_back(s.context(), model.Seen(model.inc[r]));
      const auto& [ctx, seen_then] = snapshots[r][rng.Uniform(snapshots[r].size())];
      const size_t op = model.observed.size();
      const bool clear = rng.Percent(15);
      // What a write based on `ctx` supersedes: the writes alive in what it saw.
      uint64_t observed = 0;
      for (size_t o = 0; o < model.observed.size(); ++o) {
        if ((seen_then >> o) & 1) observed |= uint64_t{1} << o;
      }
      MvRegister delta;
      if (clear) {
        delta = s.Clear(ctx);
        dot_of.push_back(Dot{});
      } else {
        Result<MvRegister> d = s.Write(Rid(r), "w" + std::to_string(op), ctx);
        if (!d.ok()) return "write failed: " + d.status().ToString();
        dot_of.push_back(d->siblings().at(0).version.dot);
        delta = std::move(d).value();
      }
      model.observed.push_back(observed);
      model.creates.push_back(!clear);
      model.inc[r] |= uint64_t{1} << op;
      deltas.push_back(std::move(delta));
    } else if (kind < 85) {
      const size_t i = rng.Uniform(deltas.size());
      s.Merge(deltas[i]);
      model.inc[r] |= uint64_t{1} << i;
    } else {
      const int p = static_cast<int>(rng.Uniform(replicas));
      s.Merge(states[p]);
      model.inc[r] |= model.inc[p];
    }
    std::string err = check(s, model.inc[r], "replica " + std::to_string(r));
    if (!err.empty()) return err;
  }
  // Full convergence: every write that no other write saw is a sibling.
  MvRegister all;
  uint64_t every = 0;
  for (size_t i = 0; i < deltas.size(); ++i) {
    all.Merge(deltas[i]);
    every |= uint64_t{1} << i;
  }
  return check(all, every, "converged");
}

TEST(ConflictPropertyTest, MvRegisterNeverLosesAConcurrentWrite) {
  RunProperty("mv-register-oracle", CheckMvRegisterOracle);
}

// LWW never lets a causally earlier write win: the value at every replica is the write with
// the greatest stamp among those it incorporated, and that write is causally before none of
// them. Writers use HybridClocks with skewed wall clocks; a write with an explicit stale
// timestamp must be refused, not silently dropped.
std::string CheckLwwOracle(Rng& rng) {
  const int replicas = 2 + static_cast<int>(rng.Uniform(3));
  Ctx ctx(rng, replicas);
  std::vector<LwwRegister> states(replicas);
  std::vector<LwwRegister> deltas;
  std::vector<uint64_t> before;  // per write: writes causally before it
  std::vector<uint64_t> inc(replicas, 0);
  auto seen = [&](uint64_t ops) {
    uint64_t out = 0;
    for (size_t o = 0; o < before.size(); ++o) {
      if ((ops >> o) & 1) out |= before[o] | (uint64_t{1} << o);
    }
    return out;
  };
  auto check = [&](const LwwRegister& s, uint64_t ops) -> std::string {
    const uint64_t known = seen(ops);
    if (known == 0) return s.stamp().replica.valid() ? "value out of nowhere" : "";
    size_t best = 64;
    for (size_t o = 0; o < deltas.size(); ++o) {
      if (((known >> o) & 1) && (best == 64 || deltas[best].stamp() < deltas[o].stamp())) best = o;
    }
    if (!(s == deltas[best])) {
      return "register holds " + s.ToJson() + " but the greatest write is " + deltas[best].ToJson();
    }
    for (size_t o = 0; o < deltas.size(); ++o) {
      if (((known >> o) & 1) && ((before[o] >> best) & 1)) {
        return "causally earlier write " + deltas[best].ToJson() + " beat " + deltas[o].ToJson();
      }
    }
    return "";
  };
  const int steps = 1 + static_cast<int>(rng.Uniform(20));
  for (int step = 0; step < steps && deltas.size() < 60; ++step) {
    const int r = static_cast<int>(rng.Uniform(replicas));
    LwwRegister& s = states[r];
    const int kind = static_cast<int>(rng.Uniform(100));
    if (kind < 50 || deltas.empty()) {
      ctx.Tick(r, rng);
      const std::string v = "v" + std::to_string(deltas.size());
      Result<LwwRegister> d = LwwRegister();
      if (rng.Percent(80)) {
        d = s.Set(Rid(r), *ctx.hlcs[r], v);
      } else {
        // An explicit timestamp that may be stale: accepted only if it is after the current.
        const LwwRegister prior = s;
        HlcTimestamp ts = ctx.hlcs[r]->Peek();
        ts.physical_micros -= rng.Range(0, 3000);
        d = s.Set(Rid(r), ts, v);
        if (!d.ok()) {
          if (d.status().code() != StatusCode::kFailedPrecondition || !(s == prior) ||
              (prior.stamp() < LwwStamp{ts, Rid(r)})) {
            return "stale write not refused cleanly: " + d.status().ToString();
          }
          continue;
        }
      }
      if (!d.ok()) return "write failed: " + d.status().ToString();
      before.push_back(seen(inc[r]));
      inc[r] |= uint64_t{1} << deltas.size();
      deltas.push_back(std::move(d).value());
    } else if (kind < 85) {
      const size_t i = rng.Uniform(deltas.size());
      s.Merge(deltas[i]);
      inc[r] |= uint64_t{1} << i;
    } else {
      const int p = static_cast<int>(rng.Uniform(replicas));
      s.Merge(states[p]);
      inc[r] |= inc[p];
    }
    std::string err = check(s, inc[r]);
    if (!err.empty()) return "replica " + std::to_string(r) + ": " + err;
  }
  LwwRegister all;
  uint64_t every = 0;
  for (size_t i = 0; i < deltas.size(); ++i) {
    all.Merge(deltas[i]);
    every |= uint64_t{1} << i;
  }
  return check(all, every);
}

TEST(ConflictPropertyTest, LwwNeverLetsACausallyEarlierWriteWin) {
  RunProperty("lww-oracle", CheckLwwOracle);
}

// The bounded counter never drops below its bound, whatever subset of the deltas arrives in
// whatever order (with duplicates), and its final value is exactly the sum of the accepted
// operations.
std::string CheckBoundedCounterOracle(Rng& rng) {
  const int replicas = 2 + static_cast<int>(rng.Uniform(4));
  const int64_t bound = rng.Range(-10, 10);
  std::vector<BoundedCounter> states(replicas, BoundedCounter(bound));
  std::vector<BoundedCounter> deltas;
  int64_t accepted_sum = bound;
  const int steps = 1 + static_cast<int>(rng.Uniform(30));
  for (int step = 0; step < steps; ++step) {
    const int r = static_cast<int>(rng.Uniform(replicas));
    BoundedCounter& s = states[r];
    const int kind = static_cast<int>(rng.Uniform(100));
    if (kind < 25) {
      const uint64_t n = 1 + rng.Uniform(5);
      Result<BoundedCounter> d = s.Increment(Rid(r), n);
      if (!d.ok()) return d.status().ToString();
      accepted_sum += static_cast<int64_t>(n);
      deltas.push_back(std::move(d).value());
    } else if (kind < 65) {
      // Aggressive decrements: many will be refused for lack of local rights.
      const uint64_t n = 1 + rng.Uniform(8);
      const uint64_t rights = s.RightsOf(Rid(r));
      Result<BoundedCounter> d = s.Decrement(Rid(r), n);
      if (d.ok() != (rights >= n)) return "decrement accepted/refused against its rights";
      if (!d.ok()) {
        if (d.status().code() != StatusCode::kFailedPrecondition) return d.status().ToString();
        continue;
      }
      accepted_sum -= static_cast<int64_t>(n);
      deltas.push_back(std::move(d).value());
    } else if (kind < 80) {
      const int to = static_cast<int>(rng.Uniform(replicas));
      if (to == r) continue;
      Result<BoundedCounter> d = s.TransferRights(Rid(r), Rid(to), 1 + rng.Uniform(5));
      if (d.ok()) deltas.push_back(std::move(d).value());
    } else if (!deltas.empty()) {
      Status st = s.Merge(deltas[rng.Uniform(deltas.size())]);
      if (!st.ok()) return "merge failed: " + st.ToString();
    }
    if (s.Value() < bound) return "replica below bound: " + s.ToJson();
  }
  // Any interleaving: random subsets, random order, duplicates.
  for (int observer = 0; observer < 3; ++observer) {
    BoundedCounter o(bound);
    const size_t deliveries = rng.Uniform(2 * deltas.size() + 1);
    for (size_t k = 0; k < deliveries; ++k) {
      Status st = o.Merge(deltas[rng.Uniform(deltas.size())]);
      if (!st.ok()) return "observer merge failed: " + st.ToString();
      if (o.Value() < bound) return "observer below bound: " + o.ToJson();
    }
  }
  BoundedCounter all(bound);
  for (const BoundedCounter& d : deltas) {
    Status st = all.Merge(d);
    if (!st.ok()) return "merge failed: " + st.ToString();
  }
  if (all.Value() != accepted_sum) {
    return "converged value " + std::to_string(all.Value()) + " != accepted operations " +
           std::to_string(accepted_sum);
  }
  return "";
}

TEST(ConflictPropertyTest, BoundedCounterNeverDropsBelowItsBound) {
  RunProperty("bounded-counter-oracle", CheckBoundedCounterOracle);
}

// OR-Set: an element is present iff some add of it was observed by no remove and no later add
// (add wins over a concurrent remove), at every replica and after convergence; and a converged
// set holds no trace of removed elements (compact context, one dot per surviving add).
std::string CheckOrSetOracle(Rng& rng) {
  const int replicas = 2 + static_cast<int>(rng.Uniform(3));
  constexpr int kElements = 3;
  std::vector<OrSet> states(replicas);
  std::vector<OrSet> deltas;
  std::vector<CausalModel> models(kElements);  // one model per element; ops indexed globally
  std::vector<int> element_of;                 // per op
  std::vector<uint64_t> inc(replicas, 0);
  auto per_element = [&](uint64_t ops, int e) {
    uint64_t mask = 0;
    for (size_t o = 0; o < element_of.size(); ++o) {
      if (((ops >> o) & 1) && element_of[o] == e) mask |= uint64_t{1} << o;
    }
    return mask;
  };
  auto check = [&](const OrSet& s, uint64_t ops, const std::string& where) -> std::string {
    for (int e = 0; e < kElements; ++e) {
      const bool expected = models[e].Alive(per_element(ops, e)) != 0;
      const std::string name(1, static_cast<char>('a' + e));
      if (s.Contains(name) != expected) {
        return where + ": element " + name + (expected ? " missing" : " present") + ": " +
               s.ToJson();
      }
    }
    return "";
  };
  const int steps = 1 + static_cast<int>(rng.Uniform(20));
  for (int step = 0; step < steps && element_of.size() < 60; ++step) {
    const int r = static_cast<int>(rng.Uniform(replicas));
    OrSet& s = states[r];
    const int kind = static_cast<int>(rng.Uniform(100));
    if (kind < 55 || deltas.empty()) {
      const int e = static_cast<int>(rng.Uniform(kElements));
      const std::string name(1, static_cast<char>('a' + e));
      const size_t op = element_of.size();
      // Both add and remove supersede the adds of e alive here.
      const uint64_t observed = models[e].Alive(per_element(inc[r], e));
      const bool add = rng.Percent(60);
      OrSet delta;
      if (add) {
        Result<OrSet> d = s.Add(Rid(r), name);
        if (!d.ok()) return d.status().ToString();
        delta = std::move(d).value();
      } else {
        delta = s.Remove(name);
      }
      for (int k = 0; k < kElements; ++k) {
        models[k].observed.push_back(k == e ? observed : 0);
        models[k].creates.push_back(k == e && add);
      }
      element_of.push_back(e);
      inc[r] |= uint64_t{1} << op;
      deltas.push_back(std::move(delta));
    } else if (kind < 85) {
      const size_t i = rng.Uniform(deltas.size());
      s.Merge(deltas[i]);
      inc[r] |= uint64_t{1} << i;
    } else {
      const int p = static_cast<int>(rng.Uniform(replicas));
      s.Merge(states[p]);
      inc[r] |= inc[p];
    }
    std::string err = check(s, inc[r], "replica " + std::to_string(r));
    if (!err.empty()) return err;
  }
  OrSet all;
  uint64_t every = 0;
  for (size_t i = 0; i < deltas.size(); ++i) {
    all.Merge(deltas[i]);
    every |= uint64_t{1} << i;
  }
  std::string err = check(all, every, "converged");
  if (!err.empty()) return err;
  if (!all.context().IsCompact()) return "converged context keeps a dot cloud: " + all.ToJson();
  size_t live_dots = 0;
  for (const std::string& e : all.Elements()) live_dots += all.DotsOf(e).size();
  size_t alive_adds = 0;
  for (int e = 0; e < kElements; ++e) {
    alive_adds += std::popcount(models[e].Alive(per_element(every, e)));
  }
  if (live_dots != alive_adds) {
    return "converged set keeps " + std::to_string(live_dots) + " dots for " +
           std::to_string(alive_adds) + " surviving adds";
  }
  return "";
}

TEST(ConflictPropertyTest, OrSetIsAddWinsWithoutTombstones) {
  RunProperty("or-set-oracle", CheckOrSetOracle);
}

// ---- causality ---------------------------------------------------------------------------

// Explicit dot sets over replicas 1..3, counters 1..6, to check Compare by brute force.
using DotBits = uint32_t;  // bit (replica-1)*6 + (counter-1)
DotBits Bit(Dot d) { return DotBits{1} << ((d.replica.value() - 1) * 6 + (d.counter - 1)); }
DotBits BitsOf(const VersionVector& vv) {
  DotBits b = 0;
  for (const auto& e : vv.entries()) {
    for (uint64_t c = 1; c <= e.counter; ++c) b |= Bit(Dot{e.replica, c});
  }
  return b;
}
Ordering OrderOfSets(DotBits a, DotBits b) {
  const bool a_in_b = (a & ~b) == 0, b_in_a = (b & ~a) == 0;
  if (a_in_b && b_in_a) return Ordering::kEqual;
  if (a_in_b) return Ordering::kBefore;
  if (b_in_a) return Ordering::kAfter;
  return Ordering::kConcurrent;
}
VersionVector RandomVv(Rng& rng) {
  VersionVector vv;
  for (uint64_t r = 1; r <= 3; ++r) vv.Observe(ReplicaId(r), rng.Uniform(5));
  return vv;
}

std::string CheckCausality(Rng& rng) {
  // Version vectors.
  const VersionVector a = RandomVv(rng), b = RandomVv(rng);
  if (Compare(a, b) != OrderOfSets(BitsOf(a), BitsOf(b))) return "vv compare wrong";
  VersionVector m = a;
  m.Merge(b);
  if (BitsOf(m) != (BitsOf(a) | BitsOf(b))) return "vv merge is not the union";
  // Dotted version vectors: history = past + dot (possibly with a gap).
  auto random_dvv = [&]() {
    DottedVersionVector d;
    d.past = RandomVv(rng);
    const ReplicaId r(1 + rng.Uniform(3));
    d.dot = Dot{r, d.past.Get(r) + 1 + rng.Uniform(2)};
    return d;
  };
  const DottedVersionVector x = random_dvv(), y = random_dvv();
  if (Compare(x, y) != OrderOfSets(BitsOf(x.past) | Bit(x.dot), BitsOf(y.past) | Bit(y.dot))) {
    return "dvv compare wrong for " + x.ToJson() + " vs " + y.ToJson();
  }
  // Causal contexts: random dot sets, compacted.
  auto random_cc = [&](DotBits* bits) {
    CausalContext cc;
    *bits = 0;
    const int n = static_cast<int>(rng.Uniform(10));
    for (int i = 0; i < n; ++i) {
      const Dot d{ReplicaId(1 + rng.Uniform(3)), 1 + rng.Uniform(6)};
      cc.Add(d);
      *bits |= Bit(d);
    }
    return cc;
  };
  DotBits pb, qb;
  const CausalContext p = random_cc(&pb), q = random_cc(&qb);
  for (uint64_t r = 1; r <= 3; ++r) {
    for (uint64_t c = 1; c <= 6; ++c) {
      if (p.Contains(Dot{ReplicaId(r), c}) != (((pb & Bit(Dot{ReplicaId(r), c}))) != 0)) {
        return "causal context membership wrong: " + p.ToJson();
      }
    }
  }
  for (const Dot& d : p.cloud()) {
    if (d.counter <= p.compact().Get(d.replica) + 1) return "cloud not compacted: " + p.ToJson();
  }
  if (Compare(p, q) != OrderOfSets(pb, qb)) return "causal context compare wrong";
  CausalContext u = p;
  u.Merge(q);
  for (uint64_t r = 1; r <= 3; ++r) {
    for (uint64_t c = 1; c <= 6; ++c) {
      const Dot d{ReplicaId(r), c};
      if (u.Contains(d) != (((pb | qb) & Bit(d)) != 0)) return "causal context merge wrong";
    }
  }
  Result<CausalContext> rt = CausalContext::FromBinary(u.ToBinary());
  if (!rt.ok() || !(*rt == u)) return "causal context round trip";
  return "";
}

TEST(ConflictPropertyTest, CausalityComparesAsSetInclusion) {
  RunProperty("causality", CheckCausality);
}

}  // namespace
}  // namespace converge::conflict
