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
#include <vector>

#include "converge/conflict/causality.h"
#include "converge/conflict/flat_map.h"
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

class OrSet {
 public:
  OrSet() = default;

  bool Contains(std::string_view element) const {
    return elements_.Find(element) != ElementMap::npos;
  }
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

  bool operator==(const OrSet& other) const {
    return context_ == other.context_ && elements_ == other.elements_;
  }

  // {"type":"or-set","elements":[{"value":"a","dots":[{"replica":"1","counter":2}]}],
  //  "context":{"vv":{"1":2},"dots":[]}}
  std::string ToJson() const;
  static Result<OrSet> FromJson(std::string_view json, const DecodeLimits& limits = {});
  void AppendBinary(std::string* out) const;
  std::string ToBinary() const;
  static Result<OrSet> FromBinary(std::string_view bytes, const DecodeLimits& limits = {});

 private:
  using ElementMap = internal::FlatStringMap<internal::DotList>;

  void BuildIndex();
  // Removes element slot s (its dots already out of the index), then re-points the index
  // entries of the element moved into slot s.
  void EraseSlot(size_t s);
  // Decoding helper: adds an element with its dots (appending them to *all_dots, if given,
  // which the caller checks for a dot tagging two elements); InvalidArgument on a repeated
  // element or a dot outside the context.
  Status InsertDecoded(std::string element, internal::DotList dots, std::vector<Dot>* all_dots);

  // The slot of the element `d` tags here, or DotSlotIndex::kNone.
  uint32_t SlotOfDot(Dot d) const;
  // Notes `n` index entries left stale; rebuilds the index once they outnumber live ones.
  void AddStale(size_t n);

  ElementMap elements_;
  // Live dot -> slot of the element it tags. Built by the first merge that needs it (a delta
  // that is only shipped never pays for it), then kept up to date lazily: entries of dots that
  // left are not erased eagerly (each erase is a cache miss on the hot path) but recognized as
  // stale on lookup, and the index is rebuilt once stale entries outnumber live ones.
  internal::DotSlotIndex index_;
  bool index_valid_ = false;
  size_t stale_ = 0;
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
