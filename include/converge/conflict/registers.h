// Registers: a single value replicated across writers.
//
// LwwRegister — last writer wins. Every write carries an LwwStamp (HLC timestamp, replica id);
//   merge keeps the write with the greatest stamp, the replica id breaking ties between equal
//   timestamps. Because an HLC timestamp never goes backwards and exceeds everything its clock
//   observed, a write made after observing another (causally later) always has the greater
//   stamp, so LWW never lets a causally earlier write win. Concurrent writes lose silently to
//   the greater stamp — that is the point of LWW and why choosing it is an explicit opt-in
//   (see ResolverRegistry): nothing in converge falls back to LWW by default.
//   A local write whose stamp is not greater than the current one is rejected with
//   FailedPrecondition rather than silently discarded: it means the writer's clock had not
//   observed the value it overwrites (use the HybridClock overload, which observes it first).
//
// MvRegister — multi-value register with dotted version vectors. Each write gets a fresh dot
//   and supersedes exactly the siblings the writer observed (the causal context it read);
//   everything else stays as a sibling. So siblings are precisely the writes no other write
//   has seen: one per genuinely concurrent write, never a causally overwritten one, and a
//   concurrent write is never lost. The application sees siblings() and resolves them by
//   writing with the context it read (Resolve / ResolveWith). The register keeps one causal
//   context (version vector + dot cloud), so overwritten values leave no tombstones.
//
// Both are state-based CRDTs: Merge is commutative, associative and idempotent, and every
// mutator returns its delta (a small state of the same type) to ship to other replicas; merging
// deltas in any order, with duplicates, yields the same state as merging full states.
//
// Thread-safety: values; one object is not synchronized.
#pragma once

#include <compare>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "converge/conflict/causality.h"
#include "converge/hlc.h"
#include "converge/status.h"

namespace converge::conflict {

// The total order LWW resolves by: timestamp first, then replica id.
struct LwwStamp {
  HlcTimestamp timestamp;
  ReplicaId replica;

  auto operator<=>(const LwwStamp&) const = default;
  bool operator==(const LwwStamp&) const = default;
};

class LwwRegister {
 public:
  // An empty register: no value, the zero stamp.
  LwwRegister() = default;

  bool has_value() const { return has_value_; }
  // The current value; empty when !has_value().
  const std::string& value() const { return value_; }
  const LwwStamp& stamp() const { return stamp_; }

  // Writes `value` with stamp (timestamp, replica) and returns the delta.
  // InvalidArgument: replica 0. FailedPrecondition: the stamp is not greater than stamp().
  Result<LwwRegister> Set(ReplicaId replica, HlcTimestamp timestamp, std::string value);
  // As above with a timestamp from `clock`, which first observes the current stamp (so the
  // write always wins locally). FailedPrecondition when the clock rejects the current stamp
  // as too far ahead (its skew guard); the register is then unchanged.
  Result<LwwRegister> Set(ReplicaId replica, HybridClock& clock, std::string value);
  // Removes the value (an LWW write of "no value"); same stamp rules and failures as Set.
  Result<LwwRegister> Clear(ReplicaId replica, HlcTimestamp timestamp);

  // Keeps the greater of the two writes. Equal stamps with different contents (impossible
  // between correct replicas) resolve deterministically by content so merge stays a join.
  void Merge(const LwwRegister& other);

  bool operator==(const LwwRegister&) const = default;

  // {"type":"lww-register","timestamp":"1700000000000000.0","replica":"1","value":"x"}
  // ("value" is absent for an empty or cleared register).
  std::string ToJson() const;
  static Result<LwwRegister> FromJson(std::string_view json, const DecodeLimits& limits = {});
  void AppendBinary(std::string* out) const;
  std::string ToBinary() const;
  static Result<LwwRegister> FromBinary(std::string_view bytes, const DecodeLimits& limits = {});

 private:
  LwwStamp stamp_;
  bool has_value_ = false;
  std::string value_;
};

// Combines two sibling values into one; must be pure and deterministic. Used to resolve
// siblings: ResolveWith folds the siblings in dot order.
using MergeFunction = std::function<Result<std::string>(std::string_view, std::string_view)>;

class MvRegister {
 public:
  struct Sibling {
    std::string value;
    // version.dot identifies the write; version.past is the gap-free part of what its writer
    // had observed. Any two siblings of one register compare as kConcurrent.
    DottedVersionVector version;
    bool operator==(const Sibling&) const = default;
  };

  MvRegister() = default;

  // Sorted by dot. Empty for a never-written or cleared register.
  const std::vector<Sibling>& siblings() const { return siblings_; }
  bool empty() const { return siblings_.empty(); }
  // More than one sibling: concurrent writes the application has not resolved yet.
  bool HasConflict() const { return siblings_.size() > 1; }
  // Every write this register has seen. Hand it (with the siblings) to a client; the client
  // passes it back to Write/Resolve to supersede exactly what it read.
  const CausalContext& context() const { return context_; }

  // Writes `value` as a new sibling superseding every sibling whose dot is in `observed`.
  // Siblings the writer did not observe stay: they are concurrent with this write.
  // Returns the delta. InvalidArgument: replica 0. OutOfRange: the replica's dots are exhausted.
  Result<MvRegister> Write(ReplicaId replica, std::string value, const CausalContext& observed);
  // Local read-modify-write: observes the whole current context (leaves one sibling).
  Result<MvRegister> Write(ReplicaId replica, std::string value);
  // Replaces the siblings a client read (its `observed` context) with `resolved`. Siblings
  // that arrived after that read remain, so resolving never drops a write nobody saw.
  // Same failures as Write.
  Result<MvRegister> Resolve(ReplicaId replica, std::string resolved,
                             const CausalContext& observed) {
    return Write(replica, std::move(resolved), observed);
  }
  // Resolves the current siblings with `merge`, folded left in dot order, and writes the
  // result observing the current context. With fewer than two siblings it does nothing and
  // returns an empty delta. Returns the first error `merge` returns, leaving *this unchanged.
  Result<MvRegister> ResolveWith(ReplicaId replica, const MergeFunction& merge);
  // Removes the siblings in `observed` without writing a new value. Returns the delta.
  MvRegister Clear(const CausalContext& observed);

  void Merge(const MvRegister& other);

  bool operator==(const MvRegister&) const = default;

  // {"type":"mv-register","siblings":[{"value":"a","dot":{...},"past":{...}}],"context":{...}}
  std::string ToJson() const;
  static Result<MvRegister> FromJson(std::string_view json, const DecodeLimits& limits = {});
  void AppendBinary(std::string* out) const;
  std::string ToBinary() const;
  static Result<MvRegister> FromBinary(std::string_view bytes, const DecodeLimits& limits = {});

 private:
  // Checks the invariants a decoded register must satisfy.
  Status Validate() const;

  std::vector<Sibling> siblings_;  // sorted by version.dot, distinct dots
  CausalContext context_;          // contains every sibling's dot
};

}  // namespace converge::conflict
