// ReconcileSet: the (key, version) entries of one copy, with its digest and a prefix of its
// coded symbols kept up to date on every write, so a reconciliation starts without a rescan.
// A copy (a replica's target, a store collection, a scanned SQL table) mirrors its writes into
// one: Put on insert or update, Erase on delete.
//
// Snapshots: a reconciliation compares the copy as it was when the run began, while writes
// continue. A Snapshot records, for every key written after it was opened, the version the key
// had then (copy-on-write of the few keys touched), so its digest, symbols and entries are those
// of the moment it was opened; touched() lists the keys written during the run, which the
// session reports as "changed during run" instead of as differences to repair.
//
// Thread-safety: none; the owner serializes writes, snapshots and sessions (one strand). A set
// outlives its snapshots.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "reconcile/riblt.h"

namespace converge::reconcile {

struct Entry {
  std::string key;
  uint64_t version = 0;
  bool operator==(const Entry&) const = default;
};

struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>()(s); }
};
using EntryMap = std::unordered_map<std::string, uint64_t, StringHash, std::equal_to<>>;

struct SetOptions {
  // Coded symbols kept up to date on every write (each write touches about 2 ln(n/2) of
  // them). Differences up to about 0.6 times this decode without a scan; larger ones compute
  // the symbols beyond it by scanning the set. 2^15 symbols is 640 KiB.
  uint64_t maintained_symbols = uint64_t{1} << 15;
};

class Snapshot;

class ReconcileSet {
 public:
  explicit ReconcileSet(SetOptions options = {});
  ~ReconcileSet();
  ReconcileSet(const ReconcileSet&) = delete;
  ReconcileSet& operator=(const ReconcileSet&) = delete;

  // Inserts or updates `key` at `version`.
  void Put(std::string_view key, uint64_t version);
  // Removes `key`; false if it was absent.
  bool Erase(std::string_view key);
  std::optional<uint64_t> Get(std::string_view key) const;
  size_t size() const { return entries_.size(); }
  const SetDigest& digest() const { return digest_; }
  uint64_t maintained_symbols() const { return prefix_.size(); }
  // The coded symbols [begin, end) of the current entries.
  void Symbols(uint64_t begin, uint64_t end, std::vector<Symbol>* out) const;
  // The coded symbols at `indices` (ascending), without materialising the range between them.
  void SymbolsAt(const std::vector<uint64_t>& indices, std::vector<Symbol>* out) const;
  const EntryMap& entries() const { return entries_; }

  // Opens a snapshot of the current entries; it stays consistent while writes continue.
  std::unique_ptr<Snapshot> OpenSnapshot();

 private:
  friend class Snapshot;
  void Touch(std::string_view key, std::optional<uint64_t> before);
  void Account(uint64_t h, int sign);

  EntryMap entries_;
  // EntryHash -> the entry (map nodes do not move), so the entries behind recovered hashes
  // are found without a scan.
  std::unordered_map<uint64_t, const EntryMap::value_type*> by_hash_;
  SetDigest digest_;
  std::vector<Symbol> prefix_;
  std::vector<Snapshot*> snapshots_;
};

class Snapshot {
 public:
  ~Snapshot();
  Snapshot(const Snapshot&) = delete;
  Snapshot& operator=(const Snapshot&) = delete;

  SetDigest digest() const;
  size_t size() const;
  // The coded symbols [begin, end) of the entries as of the snapshot.
  void Symbols(uint64_t begin, uint64_t end, std::vector<Symbol>* out) const;
  void SymbolsAt(const std::vector<uint64_t>& indices, std::vector<Symbol>* out) const;
  // The snapshot's entries whose EntryHash is in `hashes`.
  void Lookup(const std::unordered_set<uint64_t>& hashes, std::vector<Entry>* out) const;
  // Calls fn(key, version) for every entry of the snapshot.
  void ForEach(const std::function<void(std::string_view, uint64_t)>& fn) const;
  // Keys written since the snapshot was opened -> their version then (nullopt: absent).
  const std::unordered_map<std::string, std::optional<uint64_t>, StringHash, std::equal_to<>>&
  touched() const {
    return touched_;
  }

 private:
  friend class ReconcileSet;
  explicit Snapshot(ReconcileSet* set) : set_(set) {}
  ReconcileSet* set_;
  std::unordered_map<std::string, std::optional<uint64_t>, StringHash, std::equal_to<>> touched_;
};

}  // namespace converge::reconcile
