#include "reconcile/riblt.h"

#include <xxhash.h>

#include <algorithm>
#include <cmath>

namespace converge::reconcile {
namespace {

uint64_t SplitMix64(uint64_t* state) {
  uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// Indices beyond this are never reached (a sequence that jumps here has left every sketch).
constexpr uint64_t kIndexCap = uint64_t{1} << 62;

}  // namespace

uint64_t EntryHash(std::string_view key, uint64_t version) {
  return XXH3_64bits_withSeed(key.data(), key.size(), version);
}

uint64_t KeyHash(std::string_view key) { return XXH3_64bits(key.data(), key.size()); }

uint32_t CheckOf(uint64_t hash) {
  uint64_t s = hash ^ 0x6a09e667f3bcc909ULL;
  return static_cast<uint32_t>(SplitMix64(&s) >> 32);
}

uint64_t MixOf(uint64_t hash) {
  uint64_t s = hash ^ 0xbb67ae8584caa73bULL;
  return SplitMix64(&s);
}

// P(the sequence skips past j | it is at i) = ((i + 1.5) / (j + 1.5))^2, which makes the
// density at index j about 2 / (j + 2): a draw u in (0, 1] gives the next index directly.
void IndexSequence::Next() {
  const uint64_t r = SplitMix64(&state_);
  const double u = static_cast<double>((r >> 11) + 1) * 0x1p-53;  // (0, 1]
  const double next = std::ceil((static_cast<double>(current_) + 1.5) / std::sqrt(u) - 1.5);
  if (!(next < static_cast<double>(kIndexCap))) {
    current_ = kIndexCap;
  } else if (static_cast<uint64_t>(next) <= current_) {
    current_ = current_ + 1;
  } else {
    current_ = static_cast<uint64_t>(next);
  }
}

void ApplyToRange(uint64_t h, int sign, uint64_t begin, Symbol* symbols, size_t n) {
  const uint64_t end = begin + n;
  IndexSequence seq(h);
  while (seq.current() < begin) seq.Next();
  while (seq.current() < end) {
    symbols[seq.current() - begin].Apply(h, sign);
    seq.Next();
  }
}

void ApplyToIndices(uint64_t h, int sign, const std::vector<uint64_t>& indices, Symbol* symbols) {
  if (indices.empty()) return;
  IndexSequence seq(h);
  auto it = indices.begin();
  while (seq.current() <= indices.back()) {
    // The sequence is sparse far out: find its index among the wanted ones, not the reverse.
    it = std::lower_bound(it, indices.end(), seq.current());
    if (it == indices.end()) break;
    if (*it == seq.current()) symbols[it - indices.begin()].Apply(h, sign);
    seq.Next();
  }
}

double SymbolDensity(uint64_t index) { return 2.0 / (static_cast<double>(index) + 2.0); }

uint64_t EstimateDifference(const std::vector<uint64_t>& indices, const std::vector<bool>& empty) {
  bool any = false;
  for (bool e : empty) any = any || !e;
  if (!any) return 0;
  double best_d = 1, best_ll = -INFINITY;
  for (double d = 1; d < 1e9; d = std::ceil(d * 1.03)) {
    double ll = 0;
    for (size_t i = 0; i < indices.size(); ++i) {
      const double p = std::min(SymbolDensity(indices[i]), 1 - 1e-12);
      const double log_none = d * std::log1p(-p);  // no differing entry in this symbol
      ll += empty[i] ? log_none : std::log(-std::expm1(log_none));
    }
    if (ll > best_ll) {
      best_ll = ll;
      best_d = d;
    }
  }
  return static_cast<uint64_t>(best_d);
}

void PeelingDecoder::Add(Symbol diff) {
  const uint64_t index = symbols_.size();
  // Entries recovered earlier belong to later symbols too: take them out as those arrive.
  while (!pending_.empty() && pending_.top().next == index) {
    Recovered r = pending_.top();
    pending_.pop();
    diff.Apply(r.hash, -r.sign);
    r.seq.Next();
    r.next = r.seq.current();
    pending_.push(r);
  }
  symbols_.push_back(diff);
  if (diff.IsPure()) pure_.push_back(index);
}

void PeelingDecoder::Peel() {
  while (!pure_.empty()) {
    const uint64_t index = pure_.back();
    pure_.pop_back();
    const Symbol s = symbols_[index];
    if (!s.IsPure()) continue;
    const uint64_t h = s.sum;
    const int sign = static_cast<int>(s.count);
    // A symbol whose check matches by chance: its hash does not map to this index.
    IndexSequence probe(h);
    while (probe.current() < index) probe.Next();
    if (probe.current() != index) continue;
    (sign > 0 ? remote_only_ : local_only_).push_back(h);
    IndexSequence seq(h);
    while (seq.current() < symbols_.size()) {
      Symbol& t = symbols_[seq.current()];
      t.Apply(h, -sign);
      if (t.IsPure()) pure_.push_back(seq.current());
      seq.Next();
    }
    pending_.push(Recovered{seq.current(), h, seq, sign});
  }
}

}  // namespace converge::reconcile
