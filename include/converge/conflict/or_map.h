// OrMap: an observed-remove map whose values are themselves CRDTs, nested to any depth
// (bounded by DecodeLimits::max_depth) — the "causal CRDT" map of Almeida et al., "Delta state
// replicated data types" (2018), with the typed keys of Riak's maps.
//
// Contract
// - A field is named by its name *and* its kind (FieldKey), so two replicas that concurrently
//   put a counter and a flag under the same name get two fields instead of a type conflict.
// - Values (kinds):
//     kCounter      a PN counter. Each replica keeps one dot carrying its running total.
//     kFlag         an enable-wins flag.
//     kMvRegister   a multi-value register: AssignRegister supersedes the siblings observed
//                   here; concurrent assignments stay siblings.
//     kLwwRegister  a last-writer-wins register (concurrent assignments are all kept as dots;
//                   reads return the greatest stamp).
//     kOrSet        an add-wins observed-remove set.
//     kMap          a nested OrMap.
// - The whole map shares one causal context; every value is made of dots in it. Removing a
//   field (Remove) deletes exactly the dots observed under it, recursively, so an update made
//   concurrently with the removal survives (update wins) and a removed field leaves no
//   tombstone. Caveat for counters: a counter update concurrent with a removal survives
//   together with the updating replica's earlier contribution (its dot carries its running
//   total), so "remove then re-create" of a counter is only exact without concurrent updates.
// - Maps exist implicitly: a map field is present while something under it is.
// - Every mutator returns its delta (an OrMap holding just what changed plus the dots it
//   supersedes). Merge is commutative, associative, idempotent and inflationary.
// - Paths: a MapPath lists FieldKeys from the root; every element but the last must have kind
//   kMap, and the last must have the kind the call expects. A malformed path, or one deeper
//   than kMaxOrMapDepth, is InvalidArgument; reading a path that holds nothing is NotFound.
//
// Thread-safety: a value; one object is not synchronized.
#pragma once

#include <compare>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "converge/conflict/causality.h"
#include "converge/hlc.h"
#include "converge/status.h"

namespace converge::conflict {

namespace internal {
struct OrMapStore;
}  // namespace internal

enum class ValueKind : uint8_t {
  kCounter = 1,
  kFlag = 2,
  kMvRegister = 3,
  kLwwRegister = 4,
  kOrSet = 5,
  kMap = 6,
};
// "counter", "flag", "mv-register", "lww-register", "or-set", "map".
std::string_view ValueKindName(ValueKind kind);

struct FieldKey {
  std::string name;
  ValueKind kind = ValueKind::kMap;

  auto operator<=>(const FieldKey&) const = default;
  bool operator==(const FieldKey&) const = default;
};

using MapPath = std::vector<FieldKey>;

// The deepest path a mutator accepts (the decoder's bound is DecodeLimits::max_depth).
inline constexpr size_t kMaxOrMapDepth = 16;

class OrMap {
 public:
  OrMap();
  ~OrMap();
  OrMap(const OrMap& other);
  OrMap& operator=(const OrMap& other);
  OrMap(OrMap&& other) noexcept;
  OrMap& operator=(OrMap&& other) noexcept;

  // ---- reads: NotFound when nothing is at `path`, InvalidArgument for a malformed path.
  bool Contains(const MapPath& path) const;
  // Fields of the map at `map_path` (empty path = the root), sorted.
  Result<std::vector<FieldKey>> Keys(const MapPath& map_path = {}) const;
  // Sum of the counter, clamped to the int64 range.
  Result<int64_t> CounterValue(const MapPath& path) const;
  Result<bool> FlagValue(const MapPath& path) const;
  // The sibling values of a multi-value register, in dot order.
  Result<std::vector<std::string>> RegisterValues(const MapPath& path) const;
  // The value with the greatest (timestamp, replica) stamp.
  Result<std::string> LwwValue(const MapPath& path) const;
  // The elements, sorted.
  Result<std::vector<std::string>> SetElements(const MapPath& path) const;
  const CausalContext& context() const { return context_; }
  bool empty() const;

  // ---- mutations: each returns its delta. Common failures: InvalidArgument for replica 0 or
  // a malformed path; OutOfRange when the replica's dots are exhausted.
  // OutOfRange also when the replica's running counter total would overflow int64.
  Result<OrMap> IncrementCounter(ReplicaId replica, const MapPath& path, int64_t delta);
  Result<OrMap> EnableFlag(ReplicaId replica, const MapPath& path);
  Result<OrMap> DisableFlag(const MapPath& path);
  Result<OrMap> AssignRegister(ReplicaId replica, const MapPath& path, std::string value);
  // FailedPrecondition when (timestamp, replica) is not greater than the stamp read here.
  Result<OrMap> AssignLww(ReplicaId replica, const MapPath& path, HlcTimestamp timestamp,
                          std::string value);
  Result<OrMap> AddToSet(ReplicaId replica, const MapPath& path, std::string element);
  Result<OrMap> RemoveFromSet(const MapPath& path, std::string_view element);
  // Removes the field at `path` (any kind) and everything nested in it, as observed here.
  Result<OrMap> Remove(const MapPath& path);

  void Merge(const OrMap& other);

  bool operator==(const OrMap& other) const;

  // {"type":"or-map","context":{...},"fields":[{"name":"n","kind":"counter","value":[...]}]}
  std::string ToJson() const;
  static Result<OrMap> FromJson(std::string_view json, const DecodeLimits& limits = {});
  void AppendBinary(std::string* out) const;
  std::string ToBinary() const;
  static Result<OrMap> FromBinary(std::string_view bytes, const DecodeLimits& limits = {});

 private:
  friend struct internal::OrMapStore;
  std::unique_ptr<internal::OrMapStore> store_;
  CausalContext context_;
};

}  // namespace converge::conflict
