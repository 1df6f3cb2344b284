#include "log/dedup_table.h"

#include <algorithm>
#include <utility>

namespace converge::internal {
namespace {
constexpr size_t kMinSlots = 1024;
}  // namespace

DedupTable::DedupTable(uint64_t max_ids, int64_t window_micros)
    : max_per_generation_(max_ids == 0 ? 0 : std::max<uint64_t>(1, max_ids / 2)),
      window_micros_(window_micros) {}

const DedupTable::Entry* DedupTable::Table::Find(const Hash128& hash) const {
  if (count == 0) return nullptr;
  const size_t mask = slots.size() - 1;
  for (size_t i = hash.lo & mask;; i = (i + 1) & mask) {
    const Entry& e = slots[i];
    if (e.partition == Entry::kEmpty) return nullptr;
    if (e.hash == hash) return &e;
  }
}

DedupTable::Entry* DedupTable::Table::Slot(const Hash128& hash) {
  const size_t mask = slots.size() - 1;
  for (size_t i = hash.lo & mask;; i = (i + 1) & mask) {
    Entry& e = slots[i];
    if (e.partition == Entry::kEmpty || e.hash == hash) return &e;
  }
}

void DedupTable::Table::Clear() {
  std::fill(slots.begin(), slots.end(), Entry{});
  count = 0;
}

const DedupTable::Entry* DedupTable::Find(const Hash128& hash, int64_t now_micros) const {
  if (!enabled()) return nullptr;
  const Entry* e = current_.Find(hash);
  if (e == nullptr) e = previous_.Find(hash);
  if (e == nullptr || e->append_micros < now_micros - window_micros_) return nullptr;
  return e;
}

void DedupTable::Grow(Table& t) {
  std::vector<Entry> old = std::move(t.slots);
  t.slots.assign(std::max(kMinSlots, old.size() * 2), Entry{});
  for (const Entry& e : old) {
    if (e.partition != Entry::kEmpty) *t.Slot(e.hash) = e;
  }
}

void DedupTable::Rotate() {
  std::swap(previous_, current_);
  // Reuse the dropped generation's memory unless it grew far past what one generation needs.
  current_.Clear();
}

void DedupTable::Insert(const Hash128& hash, uint32_t partition, uint64_t offset,
                        int64_t append_micros) {
  if (!enabled()) return;
  if (current_.count >= max_per_generation_ ||
      (current_.count > 0 && append_micros - current_.first_micros > window_micros_)) {
    Rotate();
  }
  // Keep the load factor at or below 3/4.
  if ((current_.count + 1) * 4 > current_.slots.size() * 3) Grow(current_);
  Entry* slot = current_.Slot(hash);
  if (slot->partition == Entry::kEmpty) {
    if (current_.count == 0) current_.first_micros = append_micros;
    ++current_.count;
  }
  slot->hash = hash;
  slot->partition = partition;
  slot->offset = offset;
  slot->append_micros = append_micros;
}

}  // namespace converge::internal
