// The rules every Store implementation applies the same way (the embedded store and the
// PostgreSQL store): who may write or administer a collection, how refusals are counted and
// worded, the stateless checks of a transaction's ops and of a collection's config, and the
// merge functions a collection needs. Keeping one copy keeps the backends' answers identical.
// Thread-safety: pure functions.
#pragma once

#include <cstddef>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "converge/store.h"
#include "store/json_util.h"

namespace converge::store_internal {

bool CanWrite(const Caller& caller, const CollectionConfig& config);
bool CanAdminister(const Caller& caller, const CollectionConfig& config);
// Counts a refused write op in its collection's outcomes (see CollectionInfo::writes).
void CountRefusal(StatusCode code, WriteCounts* counts);
Status WriteDenied(const Caller& caller, const std::string& collection,
                   const CollectionConfig& config);
// "op <i>: <message>" when `indexed`.
std::string WithIndex(bool indexed, size_t i, std::string_view message);
Status Indexed(const Status& s, bool indexed, size_t i);
// 1..max printable bytes.
bool ValidName(std::string_view s, size_t max);

const MergeFunction* FindMergeFunction(const StoreOptions& options, const std::string& name);
// FailedPrecondition if a merge function the config names is not registered.
Result<FieldMergers> MergersFor(const StoreOptions& options, const CollectionConfig& config);
// InvalidArgument naming what is wrong with a collection's config.
Status ValidateCollectionConfig(const StoreOptions& options, const CollectionConfig& config);
// Whether `caller` may create a collection with `config` in a store holding `count` of at most
// `max` collections: ResourceExhausted when full, PermissionDenied when it may not administer it.
Status CheckNewCollection(const Caller& caller, const CollectionConfig& config, uint64_t count,
                          uint64_t max);
// InvalidArgument naming the bad field of a List request (limit, key bounds, page token).
Status ValidateListOptions(const StoreOptions& store, const ListOptions& options);

// An op of a transaction after the stateless checks.
struct CheckedOp {
  WriteOp::Kind kind = WriteOp::Kind::kPut;
  const WriteOp* op = nullptr;  // points into the span given to ValidateWriteOps
  bool if_match_any = false;
  std::optional<uint64_t> if_match_version;
};
// The stateless checks of a transaction (sizes, names, keys, preconditions, JSON); `indexed`
// prefixes errors with "op <i>: ".
Result<std::vector<CheckedOp>> ValidateWriteOps(const StoreOptions& options,
                                                std::span<const WriteOp> ops, bool indexed);

// The preconditions of an op (as checked by ValidateWriteOps) against the document's state
// (`exists`: present and not expired; `current`: its version, 0 if it does not exist):
// AlreadyExists for If-None-Match: * on a document that exists, Aborted for If-Match on one that
// does not, else OK. *stale tells whether If-Match names another version than `current` (StaleError
// words that refusal; a merging collection may merge instead).
Status CheckPreconditions(const WriteOp& op, bool if_match_any,
                          std::optional<uint64_t> if_match_version, bool exists, uint64_t current,
                          bool* stale);
Status StaleError(const WriteOp& op, uint64_t current, uint64_t named);

}  // namespace converge::store_internal
