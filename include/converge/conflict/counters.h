// Counters: G-Counter, PN-Counter and the escrow bounded counter.
//
// GCounter — grow-only: one entry per replica, that replica's total increments; the value is
//   the sum. Merge takes the per-replica maximum.
// PnCounter — increments and decrements: a pair of grow-only totals per replica.
// BoundedCounter — a counter whose value never drops below a bound under any interleaving of
//   concurrent operations, e.g. stock that must never go negative (escrow / "bounded counter",
//   Balegas et al., SRDS 2015). The amount above the bound is split into rights held by
//   replicas: incrementing at replica r gives r rights; r may decrement only within the rights
//   it holds locally and may transfer rights to another replica. Every entry of the state is
//   written by exactly one replica and only grows, so merge is a pointwise maximum, and since
//   each replica checks its own rights before spending them, the sum of all rights — the value
//   minus the bound — stays >= 0 in every state any replica can reach.
//   An operation that would break the bound fails with FailedPrecondition and changes nothing.
//   Its deltas carry the whole local state (small: one row per replica plus its transfers),
//   because a decrement is only safe together with the increments and transfers that granted
//   the rights; this keeps the bound even when deltas arrive out of order or are lost.
//
// All three: Merge is commutative, associative, idempotent and inflationary; each mutator
// returns its delta. Arithmetic never wraps: a mutation that would overflow 64 bits fails with
// OutOfRange and changes nothing; values summed across replicas saturate at the int64 limits.
//
// Thread-safety: values; one object is not synchronized.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "converge/conflict/causality.h"
#include "converge/status.h"

namespace converge::conflict {

class GCounter {
 public:
  struct Entry {
    ReplicaId replica;
    uint64_t count = 0;
    bool operator==(const Entry&) const = default;
  };

  GCounter() = default;

  // Sum of all increments, saturating at UINT64_MAX.
  uint64_t Value() const;
  // The total of one replica.
  uint64_t Get(ReplicaId replica) const;
  // Sorted by replica, every count >= 1.
  const std::vector<Entry>& entries() const { return entries_; }

  // Adds `amount` at `replica`; returns the delta. InvalidArgument: replica 0.
  // OutOfRange: the replica's total would exceed UINT64_MAX.
  Result<GCounter> Increment(ReplicaId replica, uint64_t amount = 1);
  void Merge(const GCounter& other);

  bool operator==(const GCounter&) const = default;

  // {"type":"g-counter","entries":{"1":5,"2":3}}
  std::string ToJson() const;
  static Result<GCounter> FromJson(std::string_view json, const DecodeLimits& limits = {});
  void AppendBinary(std::string* out) const;
  std::string ToBinary() const;
  static Result<GCounter> FromBinary(std::string_view bytes, const DecodeLimits& limits = {});

 private:
  std::vector<Entry> entries_;
};

class PnCounter {
 public:
  struct Entry {
    ReplicaId replica;
    uint64_t increments = 0;
    uint64_t decrements = 0;
    bool operator==(const Entry&) const = default;
  };

  PnCounter() = default;

  // Sum of increments minus sum of decrements, clamped to [INT64_MIN, INT64_MAX].
  int64_t Value() const;
  // Sorted by replica; an entry has increments or decrements >= 1.
  const std::vector<Entry>& entries() const { return entries_; }

  // Adds `delta` (negative to decrement) at `replica`; returns the delta state.
  // InvalidArgument: replica 0. OutOfRange: a per-replica total would exceed UINT64_MAX.
  Result<PnCounter> Add(ReplicaId replica, int64_t delta);
  Result<PnCounter> Increment(ReplicaId replica, uint64_t amount = 1);
  Result<PnCounter> Decrement(ReplicaId replica, uint64_t amount = 1);
  void Merge(const PnCounter& other);

  bool operator==(const PnCounter&) const = default;

  // {"type":"pn-counter","entries":{"1":{"p":5,"n":2}}}
  std::string ToJson() const;
  static Result<PnCounter> FromJson(std::string_view json, const DecodeLimits& limits = {});
  void AppendBinary(std::string* out) const;
  std::string ToBinary() const;
  static Result<PnCounter> FromBinary(std::string_view bytes, const DecodeLimits& limits = {});

 private:
  Entry& EntryFor(ReplicaId replica);
  std::vector<Entry> entries_;
};

class BoundedCounter {
 public:
  struct Transfer {
    ReplicaId to;
    uint64_t amount = 0;  // cumulative rights transferred to `to`
    bool operator==(const Transfer&) const = default;
  };
  // Everything written by one replica.
  struct Row {
    ReplicaId replica;
    uint64_t increments = 0;
    uint64_t decrements = 0;
    std::vector<Transfer> transfers;  // sorted by `to`, amounts >= 1, never to itself
    bool operator==(const Row&) const = default;
  };

  // A counter whose value starts at, and never drops below, `bound`.
  explicit BoundedCounter(int64_t bound = 0) : bound_(bound) {}

  int64_t bound() const { return bound_; }
  // bound + increments - decrements; always >= bound. Saturates at INT64_MAX.
  int64_t Value() const;
  // The rights `replica` holds in this state: how much it may decrement or transfer now.
  uint64_t RightsOf(ReplicaId replica) const;
  // Sorted by replica.
  const std::vector<Row>& rows() const { return rows_; }

  // Adds `amount` (>= 1); the rights go to `replica`. Returns the delta.
  // InvalidArgument: replica 0 or amount 0. OutOfRange: the value would exceed INT64_MAX.
  Result<BoundedCounter> Increment(ReplicaId replica, uint64_t amount = 1);
  // Subtracts `amount` (>= 1) using `replica`'s rights. Returns the delta.
  // InvalidArgument: replica 0 or amount 0. FailedPrecondition: `replica` holds fewer than
  // `amount` rights here (the value would or could drop below the bound); transfer rights
  // to it first. Nothing changes on failure.
  Result<BoundedCounter> Decrement(ReplicaId replica, uint64_t amount = 1);
  // Moves `amount` (>= 1) rights from `from` to `to` (executed at replica `from`). Returns the
  // delta. InvalidArgument: replica 0, from == to or amount 0. FailedPrecondition: `from`
  // holds fewer than `amount` rights. OutOfRange: the cumulative transfer overflows.
  Result<BoundedCounter> TransferRights(ReplicaId from, ReplicaId to, uint64_t amount);

  // Pointwise maximum. FailedPrecondition (and *this unchanged) if the bounds differ or if the
  // result would give some replica negative rights — impossible between correct replicas,
  // so it flags a forged or corrupted state instead of letting it break the bound.
  Status Merge(const BoundedCounter& other);

  bool operator==(const BoundedCounter&) const = default;

  // {"type":"bounded-counter","bound":0,"rows":{"1":{"p":10,"n":3,"t":{"2":4}}}}
  std::string ToJson() const;
  // Decoding also rejects (InvalidArgument) a state in which any replica has negative rights.
  static Result<BoundedCounter> FromJson(std::string_view json, const DecodeLimits& limits = {});
  void AppendBinary(std::string* out) const;
  std::string ToBinary() const;
  static Result<BoundedCounter> FromBinary(std::string_view bytes, const DecodeLimits& limits = {});

 private:
  Row& RowFor(ReplicaId replica);
  // The signed rights of each row (negative only in an invalid state); OK iff all >= 0.
  Status CheckRights() const;

  int64_t bound_ = 0;
  std::vector<Row> rows_;
};

}  // namespace converge::conflict
