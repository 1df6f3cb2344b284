// Causality vocabulary for conflict resolution: replica ids, dots, version vectors, dotted
// version vectors and causal contexts, and how to compare them.
//
// Contract
// - A ReplicaId names one replica (a service instance, a sidecar, a client session) that
//   originates updates. It wraps a uint64; 0 is reserved for "no replica" and every mutator
//   that mints a dot rejects it with InvalidArgument. Each live replica must have its own id:
//   two writers sharing an id break every guarantee below.
// - A Dot (replica, counter >= 1) names exactly one update event. Replica r's updates carry
//   dots (r,1), (r,2), ... in the order r made them.
// - A VersionVector maps replicas to counters and stands for the set of dots
//   {(r,1..counter[r])}: a causal history with no gaps.
// - A DottedVersionVector (Preguiça, Baquero, Almeida et al.) is one event `dot` plus the
//   history `past` it causally follows. Its history past ∪ {dot} may have a gap, which is
//   what lets a server tell a client's concurrent write apart from one that saw everything.
// - A CausalContext is any finite set of dots, kept compact: a version vector for the
//   gap-free prefix of each replica plus a sorted "dot cloud" for the rest. Compaction runs on
//   every Add/Merge, so a context never holds a dot its vector already covers. This is what
//   lets the OR-Set and the multi-value register forget removed elements entirely: a removal
//   leaves no per-element tombstone, only dots in the context.
// - Compare returns kBefore/kAfter/kEqual/kConcurrent by inclusion of the histories: a is
//   before b iff history(a) ⊊ history(b). HLC timestamps are totally ordered and consistent
//   with causality (a happened before b implies ts(a) < ts(b)), but an HLC alone can never
//   prove two events concurrent, so Compare on HlcTimestamp never returns kConcurrent.
// - Serialization: ToJson/FromJson (text for the HTTP API) and AppendBinary/FromBinary
//   (compact varints). Decoding never crashes on garbage: it returns InvalidArgument naming
//   what was wrong, and the output is untouched.
//
// Thread-safety: all types here are values; distinct objects may be used from distinct
// threads, one object is not synchronized.
#pragma once

#include <compare>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "converge/hlc.h"
#include "converge/status.h"

namespace converge::conflict {

// Bounds applied when decoding untrusted bytes or JSON text. Sizes are always also checked
// against the input length, so no count in the input can trigger a large allocation.
struct DecodeLimits {
  size_t max_input_bytes = 64u << 20;  // longer inputs: ResourceExhausted
  uint32_t max_depth = 16;             // nesting of OR-Map values; deeper: InvalidArgument
};

class ReplicaId {
 public:
  constexpr ReplicaId() = default;
  constexpr explicit ReplicaId(uint64_t value) : value_(value) {}

  constexpr uint64_t value() const { return value_; }
  // False for the reserved id 0.
  constexpr bool valid() const { return value_ != 0; }

  auto operator<=>(const ReplicaId&) const = default;
  bool operator==(const ReplicaId&) const = default;

  // Decimal, e.g. "42" (the form used in JSON).
  std::string ToString() const;
  // InvalidArgument unless `text` is a decimal uint64 without sign or spaces.
  static Result<ReplicaId> Parse(std::string_view text);

 private:
  uint64_t value_ = 0;
};

struct Dot {
  ReplicaId replica;
  uint64_t counter = 0;  // >= 1 for a real event

  auto operator<=>(const Dot&) const = default;
  bool operator==(const Dot&) const = default;
  std::string ToString() const;  // "42:7"
};

enum class Ordering : uint8_t { kBefore, kAfter, kEqual, kConcurrent };
// "before", "after", "equal", "concurrent".
std::string_view OrderingName(Ordering ordering);

// Total order of HLC timestamps; never kConcurrent (see the contract above).
Ordering Compare(const HlcTimestamp& a, const HlcTimestamp& b);

class VersionVector {
 public:
  struct Entry {
    ReplicaId replica;
    uint64_t counter = 0;
    bool operator==(const Entry&) const = default;
  };

  VersionVector() = default;
  // Entries in any order; counters of 0 are dropped, duplicates keep the maximum.
  VersionVector(std::initializer_list<Entry> entries);

  // 0 for a replica not present.
  uint64_t Get(ReplicaId replica) const;
  // True iff the dot is in the history this vector stands for.
  bool Contains(Dot dot) const { return dot.counter != 0 && dot.counter <= Get(dot.replica); }
  // Raises replica's counter to at least `counter` (never lowers it).
  void Observe(ReplicaId replica, uint64_t counter);
  void Observe(Dot dot) { Observe(dot.replica, dot.counter); }
  // Advances `replica` by one and returns the new event's dot.
  // InvalidArgument for the reserved replica 0; OutOfRange if the counter is at its maximum.
  Result<Dot> Increment(ReplicaId replica);
  // Pointwise maximum (the join of the two histories).
  void Merge(const VersionVector& other);

  // Sorted by replica, every counter >= 1.
  const std::vector<Entry>& entries() const { return entries_; }
  bool empty() const { return entries_.empty(); }
  size_t size() const { return entries_.size(); }
  // Sum of the counters: how many events the history holds (saturates at UINT64_MAX).
  uint64_t EventCount() const;

  bool operator==(const VersionVector&) const = default;

  // {"1":3,"7":2}
  std::string ToJson() const;
  static Result<VersionVector> FromJson(std::string_view json, const DecodeLimits& limits = {});
  // Appends the binary form to `out`.
  void AppendBinary(std::string* out) const;
  std::string ToBinary() const;
  static Result<VersionVector> FromBinary(std::string_view bytes, const DecodeLimits& limits = {});

 private:
  friend class CausalContext;  // updates entries in place on its hot path
  std::vector<Entry> entries_;
};

// Inclusion of the two histories.
Ordering Compare(const VersionVector& a, const VersionVector& b);

struct DottedVersionVector {
  // The event; counter >= 1.
  Dot dot;
  // What the event causally follows; normally past.Get(dot.replica) < dot.counter.
  VersionVector past;

  // True iff `d` is in past ∪ {dot}.
  bool HistoryContains(Dot d) const { return d == dot || past.Contains(d); }
  bool operator==(const DottedVersionVector&) const = default;

  // {"dot":{"replica":"1","counter":3},"past":{...}}
  std::string ToJson() const;
  static Result<DottedVersionVector> FromJson(std::string_view json,
                                              const DecodeLimits& limits = {});
  void AppendBinary(std::string* out) const;
  static Result<DottedVersionVector> FromBinary(std::string_view bytes,
                                                const DecodeLimits& limits = {});
};

// Inclusion of the histories past ∪ {dot}.
Ordering Compare(const DottedVersionVector& a, const DottedVersionVector& b);

class CausalContext {
 public:
  CausalContext() = default;
  explicit CausalContext(VersionVector compact) : compact_(std::move(compact)) {}

  bool Contains(Dot dot) const;
  // Adds one dot (counter >= 1; a dot with counter 0 is ignored) and compacts.
  void Add(Dot dot);
  // Adds every dot of a version vector.
  void Add(const VersionVector& vv);
  // Set union, compacted.
  void Merge(const CausalContext& other);
  // The next unused dot for `replica`: one past the largest counter the context holds for it.
  // InvalidArgument for replica 0; OutOfRange if that counter is at its maximum.
  Result<Dot> NextDot(ReplicaId replica) const;

  // The gap-free part.
  const VersionVector& compact() const { return compact_; }
  // Dots beyond the gap-free part, sorted; never adjacent to or covered by compact().
  const std::vector<Dot>& cloud() const { return cloud_; }
  // True iff the context is exactly a version vector (no cloud).
  bool IsCompact() const { return cloud_.empty(); }
  // A version vector covering every dot of the context (the cloud rounded up; loses the gaps).
  VersionVector Ceiling() const;

  bool operator==(const CausalContext&) const = default;

  // {"vv":{"1":3},"dots":[{"replica":"2","counter":9}]}
  std::string ToJson() const;
  static Result<CausalContext> FromJson(std::string_view json, const DecodeLimits& limits = {});
  void AppendBinary(std::string* out) const;
  std::string ToBinary() const;
  static Result<CausalContext> FromBinary(std::string_view bytes, const DecodeLimits& limits = {});

 private:
  void AbsorbCloud();

  VersionVector compact_;
  std::vector<Dot> cloud_;
};

// Inclusion of the two dot sets.
Ordering Compare(const CausalContext& a, const CausalContext& b);

}  // namespace converge::conflict
