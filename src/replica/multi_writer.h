// Multi-writer collections (docs/formats/replica.md, "Multi-writer collections"): several nodes
// accept writes to the same keyed collection independently, also while cut off from each other,
// and a background exchange merges their copies with the collection's declared policy.
//
// Contract
// - Causal metadata per key (a KeyState): a version vector `vv` (per node, the highest dot
//   counter of that node's writes the state has seen) and the siblings: the writes no other
//   write of the state has seen, each with its dot (node, counter), its HLC timestamp and its
//   document or a tombstone. A node's dot counters are one sequence over all keys of the
//   collection (its origin sequence), so a node's knowledge of another node is one number.
// - Merge is a join (commutative, associative, idempotent): a sibling survives unless the
//   other side's vv covers its dot and the other side no longer holds it. kLww then keeps the
//   sibling with the greatest (hlc, node); kMultiValue, kCrdtFields and kResolver keep every
//   surviving sibling and resolve on read (kCrdtFields: the greatest sibling with each
//   declared field joined over the live siblings written after the latest delete; kResolver:
//   the fold of the live siblings).
// - A write mints the node's next dot and covers the versions it names (`context`, what a
//   reader was shown; kMultiValue and kResolver only), or everything the node holds for the
//   key; its vv also takes in the node's knowledge (everything it has pulled), so it covers
//   purged tombstones too. Its HLC is above everything the node ever wrote or merged.
// - A delete is a tombstone sibling, so an older write that arrives later is dominated and
//   never resurrects the key. A key whose siblings are all tombstones is purged after the
//   retention only once it is stable: every peer reported having seen its vv, and this node
//   has pulled every write each peer made before that report.
// - Exchange: each node exports its own writes only (its origin log: origin sequence -> key;
//   a page lists each key once with its current state), so nothing learned from a peer is
//   re-exported. A puller keeps, per peer, the next origin sequence it needs; it applies a
//   page only when the page starts there, merging each state and moving the position in one
//   Storage commit. A state that changes nothing is a no-op: no commit of that key, no change
//   record. The origin log is trimmed up to where every peer reports having pulled it.
// - Storage failures: after a failed Commit the node reloads its view from storage (the commit
//   may have happened), at once or, if that fails too, before its next operation.
//
// Thread-safety: none; one thread (or one simulated Env) drives a Node.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "converge/conflict/causality.h"
#include "converge/conflict/registers.h"
#include "converge/env.h"
#include "converge/hlc.h"
#include "converge/status.h"
#include "reconcile/reconcile_set.h"

namespace converge::replica::mw {

enum class Policy : uint8_t { kLww = 1, kMultiValue = 2, kCrdtFields = 3, kResolver = 4 };
// "lww", "multi-value", "crdt-fields", "resolver".
std::string_view PolicyName(Policy policy);
// InvalidArgument naming the allowed values.
Result<Policy> ParsePolicy(std::string_view name);

// Joins two values of one CRDT field (compact JSON text; `stored` empty when absent).
using FieldJoin =
    std::function<Result<std::string>(std::string_view stored, std::string_view written)>;

struct PolicySpec {
  Policy policy = Policy::kLww;
  // kCrdtFields: top-level field -> its join. Documents must be JSON objects.
  std::map<std::string, FieldJoin> crdt_fields;
  // kResolver: folded over the live siblings in dot order on read; pure and deterministic.
  std::string resolver_name;
  conflict::MergeFunction resolver;
  // kMultiValue / kResolver: a write that would leave more siblings fails (ResourceExhausted).
  size_t max_siblings = 64;
};
// InvalidArgument when the spec is incomplete for its policy.
Status ValidatePolicy(const PolicySpec& spec);

struct Sibling {
  conflict::Dot dot;
  HlcTimestamp hlc;
  bool deleted = false;
  std::string document;  // empty for a tombstone
  bool operator==(const Sibling&) const = default;
};

struct KeyState {
  conflict::VersionVector vv;
  std::vector<Sibling> siblings;  // sorted by dot, distinct dots
  // True when nothing is live: no sibling, or tombstones only.
  bool deleted() const;
  bool operator==(const KeyState&) const = default;

  void AppendBinary(std::string* out) const;
  static Result<KeyState> FromBinary(std::string_view* in);
};

// The join of two states under `spec` (see the contract).
Result<KeyState> Merge(const PolicySpec& spec, const KeyState& a, const KeyState& b);
// `current` after a local write with `dot` and `hlc` (document nullopt: a delete) that covers
// `context` (nullptr: all of `current`).
// `seen` (may be null): what the writer has seen besides the key's state (its node's
// knowledge), joined into the new vv; it covers writes the key no longer holds.
Result<KeyState> Write(const PolicySpec& spec, const KeyState& current, conflict::Dot dot,
                       HlcTimestamp hlc, std::optional<std::string> document,
                       const conflict::VersionVector* context,
                       const conflict::VersionVector* seen = nullptr);
// What a reader sees as the one document: kLww / kCrdtFields: the surviving sibling;
// kResolver: the fold of the live siblings; kMultiValue: the live sibling with the greatest
// (hlc, node) (the siblings themselves are in the state). nullopt: deleted.
Result<std::optional<std::string>> Resolve(const PolicySpec& spec, const KeyState& state);

// ---- the node: one collection on one node, its storage and the exchange ----

struct StoredKey {
  KeyState state;
  int64_t tombstone_since_us = 0;  // when the state last became all-tombstone (0: live)
  bool operator==(const StoredKey&) const = default;
};

struct PeerPosition {
  uint64_t next = 1;                  // the first origin sequence of the peer not yet applied
  conflict::VersionVector knowledge;  // what the peer last reported having seen
  bool operator==(const PeerPosition&) const = default;
};

struct Snapshot {
  std::map<std::string, StoredKey> keys;
  std::map<uint64_t, std::string> origin;  // own origin sequence -> key written
  uint64_t own_seq = 0;                    // the last dot counter this node minted
  uint64_t trimmed = 0;    // origin entries up to here are removed (every peer pulled them)
  HlcTimestamp hlc_floor;  // the greatest HLC the node wrote or applied
  std::map<uint64_t, PeerPosition> peers;  // by peer node id
};

// One atomic change of a node's storage.
struct Commit {
  std::vector<std::pair<std::string, std::optional<StoredKey>>> keys;  // nullopt: erase
  std::vector<std::pair<uint64_t, std::optional<std::string>>> origin;
  std::optional<uint64_t> own_seq;
  std::optional<uint64_t> trimmed;
  std::optional<HlcTimestamp> hlc_floor;
  // The peer position to store, only if the stored one's `next` is still `expect_next`
  // (otherwise Aborted and nothing is written): two pullers of one peer cannot both apply.
  std::optional<std::pair<uint64_t, PeerPosition>> peer;
  uint64_t expect_next = 0;
};

class Storage {
 public:
  virtual ~Storage() = default;
  virtual Result<Snapshot> Load() = 0;
  virtual Status Commit(const mw::Commit& commit) = 0;
};

// Storage in memory (the simulator's database): applies a Commit atomically; can be told to
// fail the next commit before or after applying it.
class MemoryStorage : public Storage {
 public:
  Result<Snapshot> Load() override { return data_; }
  Status Commit(const mw::Commit& commit) override;
  enum class Fault { kNone, kBeforeCommit, kAfterCommit };
  void FailNextCommit(Fault fault) { fault_ = fault; }
  Fault armed() const { return fault_; }
  const Snapshot& data() const { return data_; }
  // Direct access, for tests that edit the stored data behind the node (drift).
  Snapshot& mutable_data() { return data_; }

 private:
  Snapshot data_;
  Fault fault_ = Fault::kNone;
};

struct ExportEntry {
  uint64_t seq = 0;
  std::string key;
  KeyState state;
};

// A page of a node's origin log: the entries with origin sequence in [from, next) that are
// still the latest of their key (sparse), and the exporter's knowledge.
struct Page {
  uint64_t origin = 0;  // the exporting node
  uint64_t from = 1;
  uint64_t next = 1;
  uint64_t end = 1;  // one past the exporter's last origin sequence
  conflict::VersionVector knowledge;
  std::vector<ExportEntry> entries;

  std::string ToBinary() const;
  // InvalidArgument on garbage (never crashes).
  static Result<Page> FromBinary(std::string_view bytes);
};

// Key states by key, for a repair (binary; garbage is InvalidArgument).
std::string EncodeStates(const std::vector<std::pair<std::string, KeyState>>& states);
Result<std::vector<std::pair<std::string, KeyState>>> DecodeStates(std::string_view bytes);

struct NodeOptions {
  uint64_t self = 0;            // this node's id (>= 1), unique among the peers
  std::vector<uint64_t> peers;  // every other node writing the collection
  PolicySpec policy;
  int64_t tombstone_retention_ms = 7 * 24 * 3600 * 1000LL;  // 0: keep tombstones forever
  // Coded symbols the (key, state) digest keeps up to date (reconcile::SetOptions).
  uint64_t digest_symbols = uint64_t{1} << 15;
};

// The version of a key state in the reconciliation digest: a 64-bit hash of its binary form
// (equal states, equal versions; any change of the state, another version).
uint64_t StateVersion(const KeyState& state);

struct ApplyResult {
  size_t merged = 0;     // states that changed a key
  size_t unchanged = 0;  // states already covered (no-op)
  std::vector<std::string> changed_keys;
};

class Node {
 public:
  // `env` (clock) and `storage` must outlive the node.
  static Result<std::unique_ptr<Node>> Open(Env& env, Storage& storage, NodeOptions options);

  // A local write; nullopt document: delete. Returns the key's new state.
  Result<KeyState> Put(const std::string& key, std::string document,
                       const conflict::VersionVector* context = nullptr);
  Result<KeyState> Delete(const std::string& key, const conflict::VersionVector* context = nullptr);
  // The key's state (nullopt: never written or purged).
  std::optional<KeyState> Get(const std::string& key) const;

  // This node's origin log from `from`: at most `limit` keys, each once with its current
  // state. FailedPrecondition when `from` was trimmed (or is past the end).
  Result<Page> Export(uint64_t from, size_t limit) const;
  // Applies a page of `page.origin`'s log. Aborted (nothing applied) unless the page starts at
  // the position kept for that peer; InvalidArgument for an unknown peer or a bad page.
  Result<ApplyResult> Apply(const Page& page);
  // The position kept for a peer (where the next pull starts).
  uint64_t NextFrom(uint64_t peer) const;
  // Purges stable tombstones older than the retention, and trims the origin log up to where
  // every peer has pulled it. Returns how many keys were purged.
  Result<size_t> PurgeTombstones();

  // Anti-entropy (docs/formats/reconcile.md): the node's (key, StateVersion) set, kept up to
  // date on every change, for a reconciliation session with a peer (this node's Initiator or
  // Responder). Use it on the node's thread only.
  reconcile::ReconcileSet& digest() { return *digest_; }
  // Repairs a key found different by a reconciliation run: merges `remote` (the peer's state
  // now) into the key's state, as a pull would (a join: it never reverts a write, also one
  // made during the run). Returns whether the key changed.
  Result<bool> Repair(const std::string& key, const KeyState& remote);

  // {self: own_seq} and, per peer, the last origin sequence applied.
  conflict::VersionVector Knowledge() const;
  const std::map<std::string, StoredKey>& keys() const { return data_.keys; }
  const NodeOptions& options() const { return options_; }

 private:
  Node(Env& env, Storage& storage, NodeOptions options)
      : env_(env), storage_(storage), options_(std::move(options)), clock_(env.clock()) {}
  Status Reload();
  Status EnsureLoaded();
  void Failed();
  void Track(const std::string& key, const std::optional<StoredKey>& value);
  // A merged state may show this node's own later writes (its storage restored from a backup):
  // the origin sequence moves past them, so no dot is minted twice.
  void NoteOwnDots(const KeyState& state, Commit* commit) const;
  Result<KeyState> LocalWrite(const std::string& key, std::optional<std::string> document,
                              const conflict::VersionVector* context);

  Env& env_;
  Storage& storage_;
  NodeOptions options_;
  HybridClock clock_;
  Snapshot data_;
  std::unique_ptr<reconcile::ReconcileSet> digest_;
  bool stale_ = true;  // reload before the next operation
};

}  // namespace converge::replica::mw
