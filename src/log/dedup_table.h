// The memory of recently appended event ids for idempotent publish (one per topic).
//
// Maps a 128-bit fingerprint of an id to where the record went. Bounded two ways: an entry
// older than the window is ignored, and memory holds at most `max_ids` entries in two
// generations of open-addressing tables (linear probing, no deletions): inserts go to the
// current generation; when it holds max_ids/2 entries, or it is older than the window, the
// previous generation is dropped and the current one takes its place. So at least the newest
// max_ids/2 ids inside the window are always remembered, and never more than max_ids.
//
// Thread-safety: none; the topic's write leader owns it.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "log/hash.h"

namespace converge::internal {

class DedupTable {
 public:
  struct Entry {
    Hash128 hash;
    uint64_t offset = 0;
    int64_t append_micros = 0;
    uint32_t partition = kEmpty;
    static constexpr uint32_t kEmpty = UINT32_MAX;
  };

  DedupTable(uint64_t max_ids, int64_t window_micros);

  // The entry for `hash` appended at or after now_micros - window, or nullptr.
  const Entry* Find(const Hash128& hash, int64_t now_micros) const;
  // Remembers `hash` (replacing an older entry for it in the current generation).
  void Insert(const Hash128& hash, uint32_t partition, uint64_t offset, int64_t append_micros);

  uint64_t size() const { return current_.count + previous_.count; }
  bool enabled() const { return max_per_generation_ > 0; }

 private:
  struct Table {
    std::vector<Entry> slots;  // size is a power of two (or 0)
    uint64_t count = 0;
    int64_t first_micros = 0;  // append time of its first entry
    const Entry* Find(const Hash128& hash) const;
    Entry* Slot(const Hash128& hash);  // the entry for hash or the empty slot to fill
    void Clear();
  };
  void Grow(Table& t);
  void Rotate();

  uint64_t max_per_generation_;
  int64_t window_micros_;
  Table current_;
  Table previous_;
};

}  // namespace converge::internal
