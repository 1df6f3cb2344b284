// The memory of recently appended event ids for idempotent publish (one per topic).
//
// Maps a 128-bit fingerprint of an id to where the record went. Bounded two ways: an entry
// older than the window is ignored, and memory holds at most `max_ids` entries in two
// generations: inserts go to the current generation; when it holds max_ids/2 entries, or it is
// older than the window, the previous generation is dropped and the current one takes its
// place. So at least the newest max_ids/2 ids inside the window are always remembered, and
// never more than max_ids.
//
// Each generation is an open-addressing table (linear probing, load <= 1/2, no deletions) of
// 8-byte slots (a 32-bit tag and an index) over a dense array of entries, so a probe usually
// touches one cache line; Prefetch lets the caller hide that miss for ids it will look up soon.
// About 28 bytes of slots and 40 of entries per remembered id at worst.
//
// Thread-safety: none; the topic's write leader owns it.
#pragma once

#include <cstdint>
#include <vector>

#include "log/hash.h"

namespace converge::internal {

class DedupTable {
 public:
  struct Entry {
    Hash128 hash;
    uint64_t offset = 0;
    int64_t append_micros = 0;
    uint32_t partition = 0;
  };

  DedupTable(uint64_t max_ids, int64_t window_micros);

  // The entry for `hash` appended at or after now_micros - window, or nullptr.
  const Entry* Find(const Hash128& hash, int64_t now_micros) const;
  // If `hash` has a live entry, returns it and changes nothing. Otherwise remembers `hash` at
  // (partition, offset) appended at now_micros and returns nullptr.
  const Entry* FindOrInsert(const Hash128& hash, uint32_t partition, uint64_t offset,
                            int64_t now_micros);
  // Undoes a FindOrInsert that returned nullptr for (hash, partition, offset): the id is
  // forgotten (its entry can no longer match). Used when the append that remembered it failed
  // and was rolled back, so a retry is not taken for a duplicate.
  void Forget(const Hash128& hash, uint32_t partition, uint64_t offset);
  // Hints that `hash` will be looked up soon.
  void Prefetch(const Hash128& hash) const;

  uint64_t size() const { return current_.entries.size() + previous_.entries.size(); }
  bool enabled() const { return max_per_generation_ > 0; }

 private:
  struct Slot {
    uint32_t tag = 0;
    uint32_t index = 0;  // 1 + position in `entries`; 0 = empty
  };
  struct Table {
    std::vector<Slot> slots;  // power-of-two size (or empty)
    std::vector<Entry> entries;
    int64_t first_micros = 0;  // append time of the first entry
    // The slot holding `hash`, or the empty slot where it would go. Requires slots non-empty.
    Slot* Probe(const Hash128& hash);
    const Entry* Find(const Hash128& hash) const;
    void Grow();
  };
  bool Live(const Entry& e, int64_t now_micros) const {
    return e.append_micros >= now_micros - window_micros_;
  }

  uint64_t max_per_generation_;
  int64_t window_micros_;
  Table current_;
  Table previous_;
};

}  // namespace converge::internal
