// The sketch behind reconciliation (docs/formats/reconcile.md): entry hashes, the whole-set
// digest and a rateless invertible Bloom lookup table.
//
// An entry is (key, version); its identity is a 64-bit hash of both (EntryHash). Two sets are
// compared through
//  - SetDigest: count and two independent 64-bit sums of the entry hashes. Adding or removing
//    an entry is O(1), so an in-sync check compares 24 bytes and never rescans.
//  - coded symbols: an endless sequence; entry h is added to symbol 0 and to further symbols
//    at indices drawn from a generator seeded by h, with density about 1/(1 + i/2) at index i.
//    Subtracting one set's symbols from the other's leaves a sketch of the symmetric
//    difference only; peeling it recovers the differing hashes once about 1.35-1.7 symbols per
//    difference have arrived, however many entries the sets share. A prefix of the sequence
//    can be kept up to date on every write: each entry touches O(log prefix) symbols.
//
// Thread-safety: values and pure functions; a PeelingDecoder is used by one thread.
#pragma once

#include <cstdint>
#include <queue>
#include <string_view>
#include <vector>

namespace converge::reconcile {

// The identity of (key, version): XXH3-64 of the key seeded with the version.
uint64_t EntryHash(std::string_view key, uint64_t version);
// The identity of a key alone (for "keys written during the run" sent by a peer).
uint64_t KeyHash(std::string_view key);
// An independent 32-bit check of an entry hash, so a symbol holding exactly one entry is
// recognised (a pure symbol).
uint32_t CheckOf(uint64_t hash);
// A second, independent 64-bit image of an entry hash (the digest's second sum).
uint64_t MixOf(uint64_t hash);

struct SetDigest {
  uint64_t count = 0;
  uint64_t sum = 0;      // sum of entry hashes, mod 2^64
  uint64_t mix_sum = 0;  // sum of MixOf(hash), mod 2^64
  void Add(uint64_t h) {
    ++count;
    sum += h;
    mix_sum += MixOf(h);
  }
  void Remove(uint64_t h) {
    --count;
    sum -= h;
    mix_sum -= MixOf(h);
  }
  bool operator==(const SetDigest&) const = default;
};

// One coded symbol: how many entries it holds (signed once subtracted), the XOR of their
// hashes and the XOR of their checks.
struct Symbol {
  int64_t count = 0;
  uint64_t sum = 0;
  uint32_t check = 0;

  // sign +1 adds the entry, -1 removes it.
  void Apply(uint64_t h, int sign) {
    count += sign;
    sum ^= h;
    check ^= CheckOf(h);
  }
  // this - other (the difference of two sets' symbols at one index).
  void Subtract(const Symbol& other) {
    count -= other.count;
    sum ^= other.sum;
    check ^= other.check;
  }
  bool IsZero() const { return count == 0 && sum == 0 && check == 0; }
  bool IsPure() const { return (count == 1 || count == -1) && check == CheckOf(sum); }
  bool operator==(const Symbol&) const = default;
};

// The indices of the symbols an entry hash belongs to, ascending, starting at 0. Deterministic
// in the hash (and the same on every machine: integer generator, IEEE double arithmetic).
class IndexSequence {
 public:
  explicit IndexSequence(uint64_t hash) : state_(hash) {}
  uint64_t current() const { return current_; }
  void Next();

 private:
  uint64_t state_;
  uint64_t current_ = 0;
};

// Adds (sign +1) or removes (-1) entry `h` to/from symbols[begin, begin + symbols.size()),
// where symbols[0] is the symbol at index `begin`.
void ApplyToRange(uint64_t h, int sign, uint64_t begin, Symbol* symbols, size_t n);

// Adds (sign) entry `h` to the symbols at `indices` (ascending), where symbols[i] is the symbol
// at indices[i]. Walks h's sequence only up to the last index.
void ApplyToIndices(uint64_t h, int sign, const std::vector<uint64_t>& indices, Symbol* symbols);

// The probability that an entry belongs to the symbol at `index` (for estimating the size of
// a difference from which symbols came out empty).
double SymbolDensity(uint64_t index);

// Estimates the size of a symmetric difference from difference symbols at the given indices:
// empty[i] says whether the symbol at indices[i] was zero. Maximum likelihood over a
// geometric grid; returns 0 if every symbol was empty.
uint64_t EstimateDifference(const std::vector<uint64_t>& indices, const std::vector<bool>& empty);

// Recovers the hashes of a symmetric difference from difference symbols (remote minus local)
// fed in index order. Positive entries are in the remote set only, negative ones in the local
// set only.
class PeelingDecoder {
 public:
  // Adds the difference symbol at index size().
  void Add(Symbol diff);
  // Peels every pure symbol; call after a batch of Add.
  void Peel();
  uint64_t size() const { return symbols_.size(); }
  // Every difference was recovered: symbol 0 (which holds every entry) is empty after peeling.
  bool Decoded() const { return !symbols_.empty() && symbols_[0].IsZero(); }
  const std::vector<uint64_t>& remote_only() const { return remote_only_; }
  const std::vector<uint64_t>& local_only() const { return local_only_; }

 private:
  struct Recovered {
    uint64_t next;  // the next index of its sequence at or beyond size()
    uint64_t hash;
    IndexSequence seq;
    int sign;
    bool operator>(const Recovered& o) const { return next > o.next; }
  };
  std::vector<Symbol> symbols_;
  std::vector<uint64_t> pure_;
  std::priority_queue<Recovered, std::vector<Recovered>, std::greater<Recovered>> pending_;
  std::vector<uint64_t> remote_only_;
  std::vector<uint64_t> local_only_;
};

}  // namespace converge::reconcile
