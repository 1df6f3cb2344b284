// Internal: the join of dot sets shared by the dot-based types (Almeida et al., "Delta state
// replicated data types", the DotSet kernel).
#pragma once

#include <algorithm>
#include <cstdint>
#include <iterator>
#include <vector>

#include "converge/conflict/causality.h"

namespace converge::conflict::internal {

// (a ∩ b) ∪ (a \ cb) ∪ (b \ ca) for sorted, distinct a and b: a dot survives if both sides
// have it, or if the side lacking it never saw it. The result is sorted and distinct.
inline std::vector<Dot> JoinDotSets(const std::vector<Dot>& a, const CausalContext& ca,
                                    const std::vector<Dot>& b, const CausalContext& cb) {
  std::vector<Dot> out;
  out.reserve(a.size() + b.size());
  size_t i = 0, j = 0;
  while (i < a.size() || j < b.size()) {
    if (j == b.size() || (i < a.size() && a[i] < b[j])) {
      if (!cb.Contains(a[i])) out.push_back(a[i]);
      ++i;
    } else if (i == a.size() || b[j] < a[i]) {
      if (!ca.Contains(b[j])) out.push_back(b[j]);
      ++j;
    } else {
      out.push_back(a[i]);
      ++i;
      ++j;
    }
  }
  return out;
}

// The largest counter `cc` holds for `replica` (0 if none).
inline uint64_t MaxCounterOf(const CausalContext& cc, ReplicaId replica) {
  uint64_t top = cc.compact().Get(replica);
  const auto& cloud = cc.cloud();
  if (!cloud.empty()) {
    auto it = std::upper_bound(cloud.begin(), cloud.end(), Dot{replica, UINT64_MAX});
    if (it != cloud.begin() && std::prev(it)->replica == replica) {
      top = std::max(top, std::prev(it)->counter);
    }
  }
  return top;
}

}  // namespace converge::conflict::internal
