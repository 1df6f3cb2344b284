#include "log/dedup_table.h"

#include <algorithm>
#include <utility>

namespace converge::internal {
namespace {

constexpr size_t kMinSlots = 1024;

inline uint32_t TagOf(const Hash128& h) { return static_cast<uint32_t>(h.hi); }
inline size_t HomeOf(const Hash128& h, size_t mask) { return static_cast<size_t>(h.lo) & mask; }

}  // namespace

DedupTable::DedupTable(uint64_t max_ids, int64_t window_micros)
    : max_per_generation_(max_ids == 0 ? 0 : std::max<uint64_t>(1, max_ids / 2)),
      window_micros_(window_micros) {}

DedupTable::Slot* DedupTable::Table::Probe(const Hash128& hash) {
  const size_t mask = slots.size() - 1;
  const uint32_t tag = TagOf(hash);
  for (size_t i = HomeOf(hash, mask);; i = (i + 1) & mask) {
    Slot& s = slots[i];
    if (s.index == 0) return &s;
    if (s.tag == tag && entries[s.index - 1].hash == hash) return &s;
  }
}

const DedupTable::Entry* DedupTable::Table::Find(const Hash128& hash) const {
  if (entries.empty()) return nullptr;
  const size_t mask = slots.size() - 1;
  const uint32_t tag = TagOf(hash);
  for (size_t i = HomeOf(hash, mask);; i = (i + 1) & mask) {
    const Slot& s = slots[i];
    if (s.index == 0) return nullptr;
    if (s.tag == tag && entries[s.index - 1].hash == hash) return &entries[s.index - 1];
  }
}

void DedupTable::Table::Grow() {
  slots.assign(std::max(kMinSlots, slots.size() * 2), Slot{});
  const size_t mask = slots.size() - 1;
  for (size_t e = 0; e < entries.size(); ++e) {
    size_t i = HomeOf(entries[e].hash, mask);
    while (slots[i].index != 0) i = (i + 1) & mask;
    slots[i] = Slot{TagOf(entries[e].hash), static_cast<uint32_t>(e + 1)};
  }
}

const DedupTable::Entry* DedupTable::Find(const Hash128& hash, int64_t now_micros) const {
  if (!enabled()) return nullptr;
  const Entry* e = current_.Find(hash);
  if (e == nullptr) e = previous_.Find(hash);
  return e != nullptr && Live(*e, now_micros) ? e : nullptr;
}

void DedupTable::Prefetch(const Hash128& hash) const {
  if (!current_.slots.empty()) {
    __builtin_prefetch(&current_.slots[HomeOf(hash, current_.slots.size() - 1)]);
  }
  if (!previous_.entries.empty()) {
    __builtin_prefetch(&previous_.slots[HomeOf(hash, previous_.slots.size() - 1)]);
  }
}

const DedupTable::Entry* DedupTable::FindOrInsert(const Hash128& hash, uint32_t partition,
                                                  uint64_t offset, int64_t now_micros) {
  if (!enabled()) return nullptr;
  if (current_.entries.size() >= max_per_generation_ ||
      (!current_.entries.empty() && now_micros - current_.first_micros > window_micros_)) {
    // Everything in the previous generation is older than the current one's first entry.
    std::swap(previous_, current_);
    current_.entries.clear();
    std::fill(current_.slots.begin(), current_.slots.end(), Slot{});
  }
  if ((current_.entries.size() + 1) * 2 > current_.slots.size()) current_.Grow();
  Slot* slot = current_.Probe(hash);
  if (slot->index != 0) {
    Entry& e = current_.entries[slot->index - 1];
    if (Live(e, now_micros)) return &e;
    e = Entry{hash, offset, now_micros, partition};  // an expired id is appended again
    return nullptr;
  }
  if (const Entry* old = previous_.Find(hash); old != nullptr && Live(*old, now_micros)) {
    return old;
  }
  if (current_.entries.empty()) current_.first_micros = now_micros;
  current_.entries.push_back(Entry{hash, offset, now_micros, partition});
  *slot = Slot{TagOf(hash), static_cast<uint32_t>(current_.entries.size())};
  return nullptr;
}

void DedupTable::Forget(const Hash128& hash, uint32_t partition, uint64_t offset) {
  if (!enabled()) return;
  for (Table* t : {&current_, &previous_}) {
    const Entry* found = t->Find(hash);
    if (found == nullptr || found->partition != partition || found->offset != offset) continue;
    // Not live any more: FindOrInsert overwrites it, Find ignores it.
    t->entries[static_cast<size_t>(found - t->entries.data())].append_micros = INT64_MIN;
  }
}

}  // namespace converge::internal
