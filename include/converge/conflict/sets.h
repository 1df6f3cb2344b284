// Sets and the flag.
//
// GSet — grow-only set of byte strings; merge is union.
//
// OrSet — observed-remove set, add-wins, in the optimized dot form (Bieniusa et al., "An
//   optimized conflict-free replicated set"; Almeida et al., "Delta state replicated data
//   types"). Each add tags the element with a fresh dot; a remove deletes the dots it observed.
//   The set keeps one causal context (version vector + dot cloud) of every dot it has seen, so
//   a dot that is in the context but under no element was removed: removals leave no
//   per-element tombstone, and the context stays as small as the number of writers plus the
//   out-of-order dots still in flight. An add concurrent with a remove of the same element
//   survives (its dot was not observed by the remove): add wins.
//
// EwFlag — enable-wins flag: a boolean where a concurrent enable beats a disable (same dot
//   mechanism as OrSet, a single element). Disabling leaves no tombstone either.
//
// Every mutator returns its delta (a small state of the same type). Merge is commutative,
// associative, idempotent and inflationary, so replicas that receive the same deltas or states
// in any order, with duplicates, converge.
//
// Thread-safety: values; one object is not synchronized.
#pragma once

#include <cstdint>
#include <functional>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "converge/conflict/causality.h"
#include "converge/status.h"

namespace converge::conflict {

class GSet {
 public:
  GSet() = default;

  bool Contains(std::string_view element) const { return elements_.count(element) != 0; }
  size_t size() const { return elements_.size(); }
  // Sorted.
  const std::set<std::string, std::less<>>& elements() const { return elements_; }

  // Adds `element`; returns the delta (the one-element set).
  GSet Add(std::string element);
  void Merge(const GSet& other);

  bool operator==(const GSet&) const = default;

  // {"type":"g-set","elements":["a","b"]}
  std::string ToJson() const;
  static Result<GSet> FromJson(std::string_view json, const DecodeLimits& limits = {});
  void AppendBinary(std::string* out) const;
  std::string ToBinary() const;
  static Result<GSet> FromBinary(std::string_view bytes, const DecodeLimits& limits = {});

 private:
  std::set<std::string, std::less<>> elements_;
};

namespace internal {
struct DotHash {
  size_t operator()(const Dot& d) const noexcept {
    uint64_t h = d.replica.value() * 0x9e3779b97f4a7c15ULL ^ d.counter;
    h ^= h >> 29;
    h *= 0xbf58476d1ce4e5b9ULL;
    return static_cast<size_t>(h ^ (h >> 32));
  }
};
struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>{}(s); }
};
}  // namespace internal

class OrSet {
 public:
  OrSet() = default;
  OrSet(const OrSet& other);
  OrSet& operator=(const OrSet& other);
  OrSet(OrSet&&) noexcept = default;
  OrSet& operator=(OrSet&&) noexcept = default;

  bool Contains(std::string_view element) const { return elements_.count(element) != 0; }
  size_t size() const { return elements_.size(); }
  bool empty() const { return elements_.empty(); }
  // The elements, sorted.
  std::vector<std::string> Elements() const;
  // Calls `fn` for each element, in unspecified order.
  void ForEach(const std::function<void(std::string_view)>& fn) const;
  // The dots currently tagging `element`, sorted (empty if absent).
  std::vector<Dot> DotsOf(std::string_view element) const;
  const CausalContext& context() const { return context_; }

  // Adds `element` tagged with a fresh dot of `replica` (replacing the dots it had here).
  // Returns the delta. InvalidArgument: replica 0. OutOfRange: the replica's dots are exhausted.
  Result<OrSet> Add(ReplicaId replica, std::string element);
  // Removes `element` as observed here; a concurrent add elsewhere survives. Returns the delta
  // (empty if the element is absent).
  OrSet Remove(std::string_view element);

  void Merge(const OrSet& other);

  bool operator==(const OrSet& other) const;

  // {"type":"or-set","elements":[{"value":"a","dots":[{"replica":"1","counter":2}]}],
  //  "context":{"vv":{"1":2},"dots":[]}}
  std::string ToJson() const;
  static Result<OrSet> FromJson(std::string_view json, const DecodeLimits& limits = {});
  void AppendBinary(std::string* out) const;
  std::string ToBinary() const;
  static Result<OrSet> FromBinary(std::string_view bytes, const DecodeLimits& limits = {});

 private:
  using DotList = std::vector<Dot>;  // sorted, distinct
  using ElementMap =
      std::unordered_map<std::string, DotList, internal::StringHash, std::equal_to<>>;

  void RebuildIndex();
  void IndexDots(const std::string* key, const DotList& dots);
  void UnindexDots(const DotList& dots);
  // Decoding helper: adds an element with its dots; InvalidArgument on a repeated element/dot.
  Status InsertDecoded(std::string element, DotList dots);
  Status ValidateDecoded() const;

  ElementMap elements_;
  // Every live dot -> the key (owned by elements_, node-stable) of the element it tags.
  std::unordered_map<Dot, const std::string*, internal::DotHash> index_;
  CausalContext context_;
};

class EwFlag {
 public:
  EwFlag() = default;

  bool value() const { return !dots_.empty(); }
  const std::vector<Dot>& dots() const { return dots_; }
  const CausalContext& context() const { return context_; }

  // Sets the flag. Returns the delta. InvalidArgument: replica 0. OutOfRange: dots exhausted.
  Result<EwFlag> Enable(ReplicaId replica);
  // Clears the flag as observed here; a concurrent Enable elsewhere wins. Returns the delta.
  EwFlag Disable();

  void Merge(const EwFlag& other);

  bool operator==(const EwFlag&) const = default;

  // {"type":"flag","dots":[...],"context":{...}}
  std::string ToJson() const;
  static Result<EwFlag> FromJson(std::string_view json, const DecodeLimits& limits = {});
  void AppendBinary(std::string* out) const;
  std::string ToBinary() const;
  static Result<EwFlag> FromBinary(std::string_view bytes, const DecodeLimits& limits = {});

 private:
  std::vector<Dot> dots_;  // sorted, all in context_
  CausalContext context_;
};

}  // namespace converge::conflict
