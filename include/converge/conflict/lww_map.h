// LwwMap: a map of byte-string keys to byte-string values where each key is an independent
// last-writer-wins register (see registers.h for the LWW rules and why LWW is opt-in).
//
// Contract
// - Every write (Set or Remove) of a key carries an LwwStamp (HLC timestamp, replica id); for
//   each key merge keeps the write with the greatest stamp. A causally later write always has
//   the greater stamp, so it always wins; of concurrent writes one wins and the others are
//   discarded — by design, so choose LwwMap only where that is acceptable.
// - A local write whose stamp is not greater than the key's current stamp fails with
//   FailedPrecondition instead of being silently discarded (use the HybridClock overloads).
// - Remove writes a tombstone (a stamped "deleted" entry) so an older concurrent Set cannot
//   resurrect the key. Tombstones are bounded only by the keys ever written; reclaim them with
//   PurgeTombstonesBefore once every replica is known to have seen the deletes.
// - Mutators return their delta (an LwwMap holding just the written entry); Merge is
//   commutative, associative, idempotent and inflationary.
//
// Thread-safety: a value; one object is not synchronized.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "converge/conflict/causality.h"
#include "converge/conflict/flat_map.h"
#include "converge/conflict/registers.h"
#include "converge/hlc.h"
#include "converge/status.h"

namespace converge::conflict {

class LwwMap {
 public:
  struct Entry {
    LwwStamp stamp;
    bool deleted = false;
    std::string value;  // empty when deleted
    bool operator==(const Entry&) const = default;
  };

  LwwMap() = default;

  // The live value of `key`, or nullptr if absent or deleted. Valid until the next mutation.
  const std::string* Get(std::string_view key) const;
  bool Contains(std::string_view key) const { return Get(key) != nullptr; }
  // The entry of `key` including tombstones, or nullptr.
  const Entry* Find(std::string_view key) const;
  // Live keys.
  size_t size() const { return entries_.size() - tombstones_; }
  size_t tombstone_count() const { return tombstones_; }
  // Live keys, sorted.
  std::vector<std::string> Keys() const;
  // Calls `fn` for every entry, tombstones included, in unspecified order.
  void ForEach(const std::function<void(std::string_view key, const Entry&)>& fn) const;

  // Writes key = value with stamp (timestamp, replica); returns the delta.
  // InvalidArgument: replica 0. FailedPrecondition: the stamp is not greater than the key's.
  Result<LwwMap> Set(ReplicaId replica, HlcTimestamp timestamp, std::string key, std::string value);
  // As above, the timestamp taken from `clock` after it observes the key's current stamp.
  // FailedPrecondition when the clock's skew guard rejects that stamp.
  Result<LwwMap> Set(ReplicaId replica, HybridClock& clock, std::string key, std::string value);
  // Deletes `key` with a tombstone; same stamp rules and failures as Set.
  Result<LwwMap> Remove(ReplicaId replica, HlcTimestamp timestamp, std::string key);
  Result<LwwMap> Remove(ReplicaId replica, HybridClock& clock, std::string key);

  void Merge(const LwwMap& other);

  // Drops tombstones stamped before `horizon` and returns how many. Only safe when every
  // replica has received every write stamped before `horizon` (e.g. after a full
  // anti-entropy round); otherwise a stale write could bring the key back.
  size_t PurgeTombstonesBefore(HlcTimestamp horizon);

  bool operator==(const LwwMap& other) const {
    return tombstones_ == other.tombstones_ && entries_ == other.entries_;
  }

  // {"type":"lww-map","entries":[{"key":"k","timestamp":"1.0","replica":"1","value":"v"},
  //  {"key":"gone","timestamp":"2.0","replica":"1","deleted":true}]}   (sorted by key)
  std::string ToJson() const;
  static Result<LwwMap> FromJson(std::string_view json, const DecodeLimits& limits = {});
  void AppendBinary(std::string* out) const;
  std::string ToBinary() const;
  static Result<LwwMap> FromBinary(std::string_view bytes, const DecodeLimits& limits = {});

 private:
  using Map = internal::FlatStringMap<Entry>;
  Result<LwwMap> Write(ReplicaId replica, HlcTimestamp timestamp, std::string key, bool deleted,
                       std::string value);
  Status InsertDecoded(std::string key, Entry entry);

  Map entries_;
  size_t tombstones_ = 0;
};

}  // namespace converge::conflict
