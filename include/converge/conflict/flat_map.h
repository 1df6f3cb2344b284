// Internal containers of the conflict types (namespace internal: not part of the API).
//
// FlatStringMap — an open-addressing hash map from byte strings to values: entries live in one
//   dense vector in insertion order (fast, cache-friendly iteration), and a power-of-two index
//   table of 64-bit words (32 bits of hash tag, 32 bits of slot number) is probed linearly at
//   load factor <= 1/2. Every entry keeps its hash, so merging one map into another never
//   rehashes a key, and two maps built in the same key order (e.g. decoded from the sorted
//   binary form) have their entries in the same positions, which merges can exploit.
// DotList — a sorted set of dots with room for one inline (the common case) before it
//   allocates.
// DotSlotIndex — a compact open-addressing index from dots to the slots holding them.
//
// The hash is seeded and fixed but need not be stable across machines: nothing derived from it
// is persisted or compared between processes.
//
// Thread-safety: values; one object is not synchronized.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "converge/conflict/causality.h"
#include "converge/status.h"

namespace converge::conflict::internal {

inline uint64_t Mix64(uint64_t h) {
  h ^= h >> 32;
  h *= 0xd6e8feb86659fd93ULL;
  h ^= h >> 32;
  h *= 0xd6e8feb86659fd93ULL;
  h ^= h >> 32;
  return h;
}

inline uint64_t HashString(std::string_view s) {
  uint64_t h = 0x9e3779b97f4a7c15ULL ^ (s.size() * 0xc6a4a7935bd1e995ULL);
  const char* p = s.data();
  size_t n = s.size();
  while (n >= 8) {
    uint64_t k;
    std::memcpy(&k, p, 8);
    h = (h ^ k) * 0xbf58476d1ce4e5b9ULL;
    h ^= h >> 29;
    p += 8;
    n -= 8;
  }
  uint64_t k = 0;
  std::memcpy(&k, p, n);
  return Mix64(h ^ k);
}

inline uint64_t HashDot(const Dot& d) {
  return Mix64(d.replica.value() * 0x9e3779b97f4a7c15ULL ^ d.counter);
}

template <typename V>
class FlatStringMap {
 public:
  static constexpr size_t npos = static_cast<size_t>(-1);
  // Slot numbers are 32-bit in the index table.
  static constexpr size_t kMaxSize = (size_t{1} << 31) - 1;

  struct Slot {
    uint64_t hash;
    std::string key;
    V value;
  };

  size_t size() const { return slots_.size(); }
  bool empty() const { return slots_.empty(); }
  const std::vector<Slot>& slots() const { return slots_; }
  Slot& slot(size_t i) { return slots_[i]; }
  const Slot& slot(size_t i) const { return slots_[i]; }

  size_t Find(std::string_view key, uint64_t hash) const {
    if (table_.empty()) {
      // Small maps (deltas, mostly) have no table: a scan of a few slots touches less memory.
      for (size_t s = 0; s < slots_.size(); ++s) {
        if (slots_[s].hash == hash && slots_[s].key == key) return s;
      }
      return npos;
    }
    const uint64_t tag = hash >> 32;
    for (size_t i = tag & mask_;; i = (i + 1) & mask_) {
      const uint64_t e = table_[i];
      if (e == 0) return npos;
      if ((e >> 32) == tag) {
        const size_t s = (e & 0xffffffffu) - 1;
        if (slots_[s].hash == hash && slots_[s].key == key) return s;
      }
    }
  }
  size_t Find(std::string_view key) const { return Find(key, HashString(key)); }

  // Hints for batched lookups: pull the table bucket of `hash`, or slot s, into the cache.
  void PrefetchBucket(uint64_t hash) const {
    if (!table_.empty()) __builtin_prefetch(&table_[(hash >> 32) & mask_]);
  }
  void PrefetchSlot(size_t s) const {
    const char* p = reinterpret_cast<const char*>(&slots_[s]);
    __builtin_prefetch(p);
    __builtin_prefetch(p + sizeof(Slot) - 1);
  }

  // Appends an entry for a key that is not present. Returns its slot number.
  size_t InsertNew(uint64_t hash, std::string key, V value) {
    CONVERGE_CHECK(slots_.size() < kMaxSize);
    slots_.push_back(Slot{hash, std::move(key), std::move(value)});
    if (table_.empty()) {
      if (slots_.size() > kLinearMax) Rehash(4 * kLinearMax);
    } else if (slots_.size() * 2 > table_.size()) {
      Rehash(table_.size() * 2);
    } else {
      Place(hash, slots_.size());
    }
    return slots_.size() - 1;
  }

  // The slot of `key`, created with a default value if absent; second = created.
  std::pair<size_t, bool> FindOrInsert(std::string_view key, uint64_t hash) {
    const size_t s = Find(key, hash);
    if (s != npos) return {s, false};
    return {InsertNew(hash, std::string(key), V()), true};
  }

  // Removes slot i by moving the last slot into its place. Returns the slot number the moved
  // entry had (so callers can fix references to it), or npos when i was the last slot.
  size_t EraseAt(size_t i) {
    if (!table_.empty()) RemoveFromTable(i + 1);
    const size_t last = slots_.size() - 1;
    if (i == last) {
      slots_.pop_back();
      return npos;
    }
    if (!table_.empty()) Retarget(slots_[last].hash, last + 1, i + 1);
    slots_[i] = std::move(slots_[last]);
    slots_.pop_back();
    return last;
  }

  // Keeps the slots for which keep(slot) is true; rebuilds the table. Returns how many went.
  template <typename Keep>
  size_t Filter(Keep keep) {
    const size_t before = slots_.size();
    size_t out = 0;
    for (size_t i = 0; i < slots_.size(); ++i) {
      if (keep(slots_[i])) {
        if (out != i) slots_[out] = std::move(slots_[i]);
        ++out;
      }
    }
    slots_.resize(out);
    if (slots_.size() > kLinearMax) {
      Rehash(table_.empty() ? 4 * kLinearMax : table_.size());
    } else {
      table_.clear();
      mask_ = 0;
    }
    return before - out;
  }

  void Reserve(size_t n) {
    if (n > kLinearMax && n * 2 > table_.size()) {
      size_t cap = table_.empty() ? 4 * kLinearMax : table_.size();
      while (n * 2 > cap) cap *= 2;
      Rehash(cap);
    }
    slots_.reserve(n);
  }

  void Clear() {
    slots_.clear();
    table_.clear();
    mask_ = 0;
  }

  // Equal as maps: same keys with equal values, in any order.
  bool operator==(const FlatStringMap& other) const {
    if (slots_.size() != other.slots_.size()) return false;
    for (size_t i = 0; i < slots_.size(); ++i) {
      const Slot& s = slots_[i];
      // Same position first: maps built in the same key order compare without probing.
      if (i < other.slots_.size() && other.slots_[i].hash == s.hash &&
          other.slots_[i].key == s.key) {
        if (!(other.slots_[i].value == s.value)) return false;
        continue;
      }
      const size_t j = other.Find(s.key, s.hash);
      if (j == npos || !(other.slots_[j].value == s.value)) return false;
    }
    return true;
  }

 private:
  // Up to this many entries the map has no index table and Find scans the slots.
  static constexpr size_t kLinearMax = 8;

  void Place(uint64_t hash, size_t slot_plus_one) {
    const uint64_t tag = hash >> 32;
    size_t i = tag & mask_;
    while (table_[i] != 0) i = (i + 1) & mask_;
    table_[i] = (tag << 32) | slot_plus_one;
  }

  void Rehash(size_t capacity) {
    table_.assign(capacity, 0);
    mask_ = capacity - 1;
    for (size_t s = 0; s < slots_.size(); ++s) Place(slots_[s].hash, s + 1);
  }

  size_t PositionOf(size_t slot_plus_one) const {
    const uint64_t tag = slots_[slot_plus_one - 1].hash >> 32;
    for (size_t i = tag & mask_;; i = (i + 1) & mask_) {
      if ((table_[i] & 0xffffffffu) == slot_plus_one) return i;
    }
  }

  void Retarget(uint64_t hash, size_t from_plus_one, size_t to_plus_one) {
    const uint64_t tag = hash >> 32;
    for (size_t i = tag & mask_;; i = (i + 1) & mask_) {
      if ((table_[i] & 0xffffffffu) == from_plus_one) {
        table_[i] = (tag << 32) | to_plus_one;
        return;
      }
    }
  }

  // Linear-probing deletion with backward shift (no tombstones in the table either).
  void RemoveFromTable(size_t slot_plus_one) {
    size_t hole = PositionOf(slot_plus_one);
    size_t j = hole;
    for (;;) {
      j = (j + 1) & mask_;
      const uint64_t e = table_[j];
      if (e == 0) break;
      const size_t ideal = (e >> 32) & mask_;
      // Move e into the hole unless its ideal position lies cyclically in (hole, j].
      const bool stays = hole <= j ? (hole < ideal && ideal <= j) : (hole < ideal || ideal <= j);
      if (!stays) {
        table_[hole] = e;
        hole = j;
      }
    }
    table_[hole] = 0;
  }

  std::vector<Slot> slots_;
  std::vector<uint64_t> table_;
  size_t mask_ = 0;
};

// A sorted set of distinct dots; up to kInline dots are stored inline (no allocation).
class DotList {
 public:
  static constexpr uint32_t kInline = 2;

  DotList() {}
  explicit DotList(Dot d) : size_(1) { store_.inline_dots[0] = d; }
  DotList(const DotList& o) { CopyFrom(o); }
  DotList& operator=(const DotList& o) {
    if (this != &o) {
      Release();
      CopyFrom(o);
    }
    return *this;
  }
  DotList(DotList&& o) noexcept { StealFrom(o); }
  DotList& operator=(DotList&& o) noexcept {
    if (this != &o) {
      Release();
      StealFrom(o);
    }
    return *this;
  }
  ~DotList() { Release(); }

  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  const Dot* begin() const { return data(); }
  const Dot* end() const { return data() + size_; }
  const Dot& operator[](size_t i) const { return data()[i]; }

  void AssignOne(Dot d) {
    data()[0] = d;
    size_ = 1;
  }
  void Clear() { size_ = 0; }
  // Appends a dot greater than every dot present.
  void PushBack(Dot d) {
    Reserve(size_ + 1);
    data()[size_++] = d;
  }
  // Inserts `d` (not present) in sorted position.
  void Insert(Dot d) {
    Reserve(size_ + 1);
    Dot* p = data();
    uint32_t i = size_;
    while (i > 0 && d < p[i - 1]) {
      p[i] = p[i - 1];
      --i;
    }
    p[i] = d;
    ++size_;
  }
  void RemoveAt(size_t i) {
    Dot* p = data();
    for (size_t k = i + 1; k < size_; ++k) p[k - 1] = p[k];
    --size_;
  }
  // Removes `d` if present; returns whether it was.
  bool Remove(Dot d) {
    for (size_t i = 0; i < size_; ++i) {
      if (data()[i] == d) {
        RemoveAt(i);
        return true;
      }
    }
    return false;
  }
  bool Contains(Dot d) const {
    for (const Dot& x : *this) {
      if (x == d) return true;
    }
    return false;
  }
  std::vector<Dot> ToVector() const { return std::vector<Dot>(begin(), end()); }

  bool operator==(const DotList& o) const {
    if (size_ != o.size_) return false;
    for (size_t i = 0; i < size_; ++i) {
      if (data()[i] != o.data()[i]) return false;
    }
    return true;
  }

 private:
  bool on_heap() const { return capacity_ > kInline; }
  Dot* data() { return on_heap() ? store_.heap : store_.inline_dots; }
  const Dot* data() const { return on_heap() ? store_.heap : store_.inline_dots; }
  void Reserve(uint32_t n) {
    if (n <= capacity_) return;
    const uint32_t cap = std::max<uint32_t>(n, 2 * capacity_);
    Dot* heap = new Dot[cap];
    std::copy(data(), data() + size_, heap);
    Release();
    store_.heap = heap;
    capacity_ = cap;
  }
  void Release() {
    if (on_heap()) delete[] store_.heap;
    capacity_ = kInline;
  }
  void CopyFrom(const DotList& o) {
    size_ = 0;
    Reserve(o.size_);
    std::copy(o.data(), o.data() + o.size_, data());
    size_ = o.size_;
  }
  void StealFrom(DotList& o) {
    size_ = o.size_;
    capacity_ = o.capacity_;
    if (o.on_heap()) {
      store_.heap = o.store_.heap;
    } else {
      std::copy(o.store_.inline_dots, o.store_.inline_dots + o.size_, store_.inline_dots);
    }
    o.size_ = 0;
    o.capacity_ = kInline;
  }

  uint32_t size_ = 0;
  uint32_t capacity_ = kInline;
  union Store {
    Store() {}
    Dot inline_dots[kInline];
    Dot* heap;
  } store_;
};

// Dot -> slot number, for finding the element a dot tags. Each bucket is one 64-bit word:
// 32 bits of the dot's hash (which also give its position) and the slot number + 1; the dot
// itself is not stored. Lookups take a `holds(slot)` predicate that confirms a candidate slot
// really holds the dot, so fingerprint collisions and entries left behind by dots that have
// gone (the OR-Set does not erase those eagerly) are recognized, and the table stays 3x
// smaller than one storing dots — small enough to stay in cache.
class DotSlotIndex {
 public:
  static constexpr uint32_t kNone = UINT32_MAX;

  // Entries, including stale ones.
  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }

  template <typename Holds>
  uint32_t Find(Dot d, Holds holds) const {
    if (table_.empty()) return kNone;
    const uint64_t fp = Fingerprint(d);
    for (size_t i = fp & mask_;; i = (i + 1) & mask_) {
      const uint64_t e = table_[i];
      if (e == 0) return kNone;
      if ((e >> 32) == fp) {
        const uint32_t slot = static_cast<uint32_t>(e & 0xffffffffu) - 1;
        if (holds(slot)) return slot;
      }
    }
  }
  // Records that slot `slot` holds dot `d`.
  void Insert(Dot d, uint32_t slot) {
    if ((size_ + 1) * 2 > table_.size()) Rehash(table_.empty() ? 64 : table_.size() * 2);
    Place((Fingerprint(d) << 32) | (uint64_t{slot} + 1));
    ++size_;
  }
  // The entry saying `from` holds `d` now says `to` (after the element moved slots).
  void Retarget(Dot d, uint32_t from, uint32_t to) {
    const size_t i = PositionOf(d, from);
    if (i != kNotFound) table_[i] = (Fingerprint(d) << 32) | (uint64_t{to} + 1);
  }
  // Drops the entry saying `slot` holds `d`, if any.
  void Erase(Dot d, uint32_t slot) {
    size_t hole = PositionOf(d, slot);
    if (hole == kNotFound) return;
    --size_;
    size_t j = hole;
    for (;;) {
      j = (j + 1) & mask_;
      const uint64_t e = table_[j];
      if (e == 0) break;
      const size_t ideal = (e >> 32) & mask_;
      const bool stays = hole <= j ? (hole < ideal && ideal <= j) : (hole < ideal || ideal <= j);
      if (!stays) {
        table_[hole] = e;
        hole = j;
      }
    }
    table_[hole] = 0;
  }
  // Empties the index, sized for `expected` entries.
  void Reset(size_t expected) {
    size_t cap = 64;
    while (cap < 2 * expected + 2) cap *= 2;
    if (table_.size() == cap) {
      std::fill(table_.begin(), table_.end(), 0);
    } else {
      table_.assign(cap, 0);
    }
    mask_ = cap - 1;
    size_ = 0;
  }
  void Clear() {
    table_.clear();
    mask_ = 0;
    size_ = 0;
  }

 private:
  static constexpr size_t kNotFound = static_cast<size_t>(-1);
  static uint64_t Fingerprint(Dot d) { return HashDot(d) >> 32; }

  void Place(uint64_t entry) {
    size_t i = (entry >> 32) & mask_;
    while (table_[i] != 0) i = (i + 1) & mask_;
    table_[i] = entry;
  }
  size_t PositionOf(Dot d, uint32_t slot) const {
    if (table_.empty()) return kNotFound;
    const uint64_t want = (Fingerprint(d) << 32) | (uint64_t{slot} + 1);
    for (size_t i = (want >> 32) & mask_;; i = (i + 1) & mask_) {
      if (table_[i] == 0) return kNotFound;
      if (table_[i] == want) return i;
    }
  }
  void Rehash(size_t capacity) {
    std::vector<uint64_t> old = std::move(table_);
    table_.assign(capacity, 0);
    mask_ = capacity - 1;
    for (uint64_t e : old) {
      if (e != 0) Place(e);
    }
  }

  std::vector<uint64_t> table_;
  size_t size_ = 0;
  size_t mask_ = 0;
};

}  // namespace converge::conflict::internal
