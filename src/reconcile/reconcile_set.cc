#include "reconcile/reconcile_set.h"

#include <algorithm>
#include <cassert>
#include <cstdlib>

namespace converge::reconcile {

ReconcileSet::ReconcileSet(SetOptions options) : prefix_(options.maintained_symbols) {}

ReconcileSet::~ReconcileSet() {
  // A snapshot points at its set.
  if (!snapshots_.empty()) std::abort();
}

void ReconcileSet::Account(uint64_t h, int sign) {
  if (sign > 0) {
    digest_.Add(h);
  } else {
    digest_.Remove(h);
  }
  ApplyToRange(h, sign, 0, prefix_.data(), prefix_.size());
}

void ReconcileSet::Touch(std::string_view key, std::optional<uint64_t> before) {
  for (Snapshot* s : snapshots_) {
    if (s->touched_.find(key) == s->touched_.end()) s->touched_.emplace(std::string(key), before);
  }
}

void ReconcileSet::Put(std::string_view key, uint64_t version) {
  auto it = entries_.find(key);
  if (it != entries_.end()) {
    if (it->second == version) return;
    Touch(key, it->second);
    const uint64_t old = EntryHash(key, it->second);
    Account(old, -1);
    by_hash_.erase(old);
    it->second = version;
  } else {
    Touch(key, std::nullopt);
    it = entries_.emplace(std::string(key), version).first;
  }
  const uint64_t h = EntryHash(key, version);
  Account(h, +1);
  by_hash_[h] = &*it;
}

bool ReconcileSet::Erase(std::string_view key) {
  auto it = entries_.find(key);
  if (it == entries_.end()) return false;
  Touch(key, it->second);
  const uint64_t h = EntryHash(key, it->second);
  Account(h, -1);
  by_hash_.erase(h);
  entries_.erase(it);
  return true;
}

std::optional<uint64_t> ReconcileSet::Get(std::string_view key) const {
  auto it = entries_.find(key);
  if (it == entries_.end()) return std::nullopt;
  return it->second;
}

void ReconcileSet::Symbols(uint64_t begin, uint64_t end, std::vector<Symbol>* out) const {
  out->assign(end > begin ? end - begin : 0, Symbol{});
  if (end <= begin) return;
  const uint64_t kept_end = std::min<uint64_t>(end, prefix_.size());
  for (uint64_t i = begin; i < kept_end; ++i) (*out)[i - begin] = prefix_[i];
  if (end <= prefix_.size()) return;
  // Beyond the maintained prefix: a scan of every entry.
  const uint64_t from = std::max<uint64_t>(begin, prefix_.size());
  Symbol* dst = out->data() + (from - begin);
  for (const auto& [key, version] : entries_) {
    ApplyToRange(EntryHash(key, version), +1, from, dst, end - from);
  }
}

void ReconcileSet::SymbolsAt(const std::vector<uint64_t>& indices, std::vector<Symbol>* out) const {
  out->assign(indices.size(), Symbol{});
  std::vector<uint64_t> beyond;  // indices past the maintained prefix: one scan for all
  size_t first_beyond = indices.size();
  for (size_t i = 0; i < indices.size(); ++i) {
    if (indices[i] < prefix_.size()) {
      (*out)[i] = prefix_[indices[i]];
    } else {
      if (first_beyond == indices.size()) first_beyond = i;
      beyond.push_back(indices[i]);
    }
  }
  if (beyond.empty()) return;
  for (const auto& [key, version] : entries_) {
    ApplyToIndices(EntryHash(key, version), +1, beyond, out->data() + first_beyond);
  }
}

std::unique_ptr<Snapshot> ReconcileSet::OpenSnapshot() {
  std::unique_ptr<Snapshot> s(new Snapshot(this));
  snapshots_.push_back(s.get());
  return s;
}

Snapshot::~Snapshot() {
  auto& v = set_->snapshots_;
  v.erase(std::find(v.begin(), v.end(), this));
}

SetDigest Snapshot::digest() const {
  SetDigest d = set_->digest_;
  for (const auto& [key, before] : touched_) {
    if (auto now = set_->Get(key)) d.Remove(EntryHash(key, *now));
    if (before) d.Add(EntryHash(key, *before));
  }
  return d;
}

size_t Snapshot::size() const { return digest().count; }

void Snapshot::Symbols(uint64_t begin, uint64_t end, std::vector<Symbol>* out) const {
  set_->Symbols(begin, end, out);
  if (end <= begin) return;
  for (const auto& [key, before] : touched_) {
    if (auto now = set_->Get(key)) {
      ApplyToRange(EntryHash(key, *now), -1, begin, out->data(), end - begin);
    }
    if (before) ApplyToRange(EntryHash(key, *before), +1, begin, out->data(), end - begin);
  }
}

void Snapshot::SymbolsAt(const std::vector<uint64_t>& indices, std::vector<Symbol>* out) const {
  set_->SymbolsAt(indices, out);
  for (const auto& [key, before] : touched_) {
    if (auto now = set_->Get(key)) ApplyToIndices(EntryHash(key, *now), -1, indices, out->data());
    if (before) ApplyToIndices(EntryHash(key, *before), +1, indices, out->data());
  }
}

void Snapshot::ForEach(const std::function<void(std::string_view, uint64_t)>& fn) const {
  for (const auto& [key, version] : set_->entries_) {
    if (touched_.find(key) == touched_.end()) fn(key, version);
  }
  for (const auto& [key, before] : touched_) {
    if (before) fn(key, *before);
  }
}

void Snapshot::Lookup(const std::unordered_set<uint64_t>& hashes, std::vector<Entry>* out) const {
  // Entries untouched since the snapshot, through the live index; touched ones as they were.
  for (uint64_t h : hashes) {
    auto it = set_->by_hash_.find(h);
    if (it == set_->by_hash_.end() || touched_.count(it->second->first)) continue;
    out->push_back(Entry{it->second->first, it->second->second});
  }
  for (const auto& [key, before] : touched_) {
    if (before && hashes.count(EntryHash(key, *before))) out->push_back(Entry{key, *before});
  }
}

}  // namespace converge::reconcile
