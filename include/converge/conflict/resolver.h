// ResolverRegistry: which conflict strategy applies to which entity type or field, and the
// operations (write, replica merge, read) that apply it to stored states.
//
// Contract
// - Strategies (see docs/conflicts.md for when to choose which):
//     kRejectOnConflict  optimistic concurrency with ETags: a write carrying a stale If-Match
//                        fails with Aborted; replicas whose versions diverged fail to merge
//                        with Aborted. State: VersionedValue.
//     kLastWriterWins    the write with the greatest (HLC timestamp, replica) wins; concurrent
//                        writes are discarded by design. State: LwwRegister.
//     kMultiValue        concurrent writes are kept as siblings and surfaced to the
//                        application, which resolves them by writing with the context it
//                        read. State: MvRegister.
//     kCrdtMerge         the value is a CRDT of a chosen kind; writes are deltas of that CRDT
//                        and replicas merge by join. State: the CRDT.
//     kCustomMerge       siblings as in kMultiValue, resolved on read by a registered pure
//                        merge function folded over them in dot order. State: MvRegister.
// - There is no default: an entity type or field with no registered strategy is NotFound.
//   Last-writer-wins in particular is only ever used where it was registered explicitly.
// - A field-level registration takes precedence over the entity type's.
// - States are the binary forms of the types above; "" stands for "nothing stored yet".
//   Every operation returns a new state and never half-applies: on failure the caller keeps
//   its old state. A stored (local) state that fails to decode is DataLoss; a remote state or
//   a request that fails to decode is InvalidArgument.
// - Every state has an ETag (ETag::ForContent of its binary form); any write may carry
//   If-Match / If-None-Match preconditions, checked against it (Aborted / AlreadyExists).
// - Custom merge functions must be pure and deterministic (same inputs, same output, on every
//   replica); for resolved values to agree no matter how siblings were grouped, make them
//   commutative and associative too.
//
// Thread-safety: register everything before sharing the registry; after that the const
// operations may be called from any number of threads concurrently.
#pragma once

#include <cstddef>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "converge/conflict/causality.h"
#include "converge/conflict/crdt_kind.h"
#include "converge/conflict/registers.h"
#include "converge/conflict/versioned.h"
#include "converge/hlc.h"
#include "converge/status.h"

namespace converge::conflict {

enum class Strategy : uint8_t {
  kRejectOnConflict = 1,
  kLastWriterWins = 2,
  kMultiValue = 3,
  kCrdtMerge = 4,
  kCustomMerge = 5,
};
// "reject-on-conflict", "last-writer-wins", "multi-value", "crdt-merge", "custom-merge".
std::string_view StrategyName(Strategy strategy);

struct ResolverSpec {
  Strategy strategy = Strategy::kRejectOnConflict;
  // kRejectOnConflict: a write to an existing value must carry If-Match.
  bool require_if_match = true;
  // kMultiValue / kCustomMerge: a write that would leave more siblings than this fails with
  // ResourceExhausted (resolve first). >= 1.
  size_t max_siblings = 64;
  // kCrdtMerge: the CRDT (any kind but kVersionedValue, kLwwRegister, kMvRegister — use the
  // dedicated strategies for those).
  CrdtKind crdt_kind = CrdtKind::kPnCounter;
  // kCustomMerge: the function and a name for messages.
  std::string merge_name;
  MergeFunction merge;

  static ResolverSpec RejectOnConflict(bool require_if_match = true);
  static ResolverSpec LastWriterWins();
  static ResolverSpec MultiValue(size_t max_siblings = 64);
  static ResolverSpec CrdtMerge(CrdtKind kind);
  static ResolverSpec CustomMerge(std::string name, MergeFunction merge, size_t max_siblings = 64);
};

struct WriteRequest {
  ReplicaId replica;  // the writing replica; never 0
  // The new value. For kCrdtMerge: a delta (or state) of the CRDT in binary form.
  std::string value;
  // kLastWriterWins: the write's HLC timestamp, taken after observing the stored one.
  HlcTimestamp timestamp;
  WritePrecondition precondition;
  // kMultiValue / kCustomMerge: the context returned by the read this write is based on; the
  // write supersedes exactly the siblings in it. Absent: a blind write, concurrent with all.
  std::optional<CausalContext> context;
};

struct ReadResult {
  bool exists = false;
  // The single value: the value (kRejectOnConflict, kLastWriterWins), the merged value
  // (kCustomMerge), the CRDT's JSON form (kCrdtMerge), or the only sibling (kMultiValue).
  // Empty when there are several siblings under kMultiValue.
  std::string value;
  // kMultiValue / kCustomMerge: every sibling value, in dot order.
  std::vector<std::string> siblings;
  // Unresolved concurrent writes (kMultiValue with more than one sibling).
  bool conflict = false;
  // kMultiValue / kCustomMerge: pass back in WriteRequest::context.
  CausalContext context;
  ETag etag;
};

class ResolverRegistry {
 public:
  // Upper bound on registrations, so a configuration error cannot grow it without limit.
  static constexpr size_t kMaxRegistrations = 65536;

  // Registers the strategy of an entity type. InvalidArgument: empty type or invalid spec.
  // AlreadyExists: already registered. ResourceExhausted: kMaxRegistrations reached.
  Status Register(std::string_view entity_type, ResolverSpec spec);
  // Registers the strategy of one field (non-empty) of an entity type; same failures.
  Status RegisterField(std::string_view entity_type, std::string_view field, ResolverSpec spec);

  // The spec for (entity_type, field): the field's, else the entity type's. `field` empty
  // means the entity as a whole. NotFound when nothing applies.
  Result<const ResolverSpec*> Lookup(std::string_view entity_type,
                                     std::string_view field = {}) const;

  // Applies a client write to `state`; returns the new state. Failures: NotFound (no
  // strategy), DataLoss (stored state corrupt), InvalidArgument (bad request: replica 0,
  // missing timestamp, undecodable delta), Aborted / AlreadyExists (preconditions; also
  // kRejectOnConflict without If-Match on an existing value when required: FailedPrecondition),
  // FailedPrecondition (an LWW timestamp not after the stored one; a bounded counter delta
  // that would break its bound), ResourceExhausted (too many siblings).
  Result<std::string> ApplyWrite(std::string_view entity_type, std::string_view field,
                                 std::string_view state, const WriteRequest& request) const;
  // Joins a remote replica's state into the local one; returns the merged state.
  // Aborted: kRejectOnConflict and the versions are concurrent. Otherwise NotFound, DataLoss,
  // InvalidArgument as above.
  Result<std::string> Merge(std::string_view entity_type, std::string_view field,
                            std::string_view local, std::string_view remote) const;
  // What the application sees. Errors: NotFound, DataLoss; a custom merge function's error.
  Result<ReadResult> Read(std::string_view entity_type, std::string_view field,
                          std::string_view state) const;

  // A whole entity as field -> state; "" is the key of the entity-level state.
  using EntityState = std::map<std::string, std::string, std::less<>>;
  // Merges every field with its own strategy. All or nothing: the first failure is returned
  // (prefixed with the field name) and no merged state is produced.
  Result<EntityState> MergeEntity(std::string_view entity_type, const EntityState& local,
                                  const EntityState& remote) const;

 private:
  Status Add(std::string key, ResolverSpec spec);
  std::map<std::string, ResolverSpec, std::less<>> specs_;  // "type" or "type\x1f" "field"
};

}  // namespace converge::conflict
