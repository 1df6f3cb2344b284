// Hashes used by the event log.
//
// Fnv1a64 picks a record's partition from its key (Log::PartitionForKey). It is part of the
// on-disk contract: changing it would move keys to other partitions and break per-key order,
// so it must never change. IdHash128 is the in-memory fingerprint of an event id for the
// dedup table (XXH3-128). It is never stored: the table is rebuilt from the records' ids when
// a partition opens, so the function may change between versions without a format change
// (docs/formats/log.md, "Idempotent publish").
// Thread-safety: pure functions.
#pragma once

#include <cstdint>
#include <string_view>

namespace converge::internal {

// 64-bit FNV-1a: offset basis 0xcbf29ce484222325, prime 0x100000001b3, one byte at a time.
uint64_t Fnv1a64(std::string_view data);

struct Hash128 {
  uint64_t lo = 0;
  uint64_t hi = 0;
  friend bool operator==(const Hash128&, const Hash128&) = default;
};

// A 128-bit fingerprint of `data`: XXH3_128bits with the default secret and seed 0
// (lo = low64, hi = high64). Publish deduplication decides on it alone, so it must be a
// well-analysed hash: a collision would drop a new event as a duplicate.
Hash128 IdHash128(std::string_view data);

}  // namespace converge::internal
