// A replica target that is a read-only collection of this node's store (config
// `target.store_collection`, docs/formats/replica.md, "A store collection as the target").
//
// Layout
// - The copy: collection <collection>, one document per live key, the source's document as it
//   is (a text document of a change event is stored as a JSON string). Deleted keys have no
//   document. Created by the target (owner "converge-replica") if missing.
// - Its bookkeeping: collection "converge-replica.<replica>" with
//     "r"        {"source":"<topic>","collection":"<copy>"}  (a re-pointed replica is refused)
//     "p/<n>"    {"next_offset":N,"commitseq":C,"purge_watermark":W,"updated_us":U}  (position)
//     "v/<key>"  {"v":version,"d":deleted,"p":partition,"c":commit_us,"a":applied_us}
//   The position, the copy's documents and their "v/" entries of a batch are one store
//   transaction: exactly once, as with a SQL table. A tombstone is a "v/" entry with d=true.
// - Both collections are refused to writes through the HTTP API (the server checks
//   ReadOnlyCollections), admins included: only the applier writes them.
// Thread-safety: used by the replica's driving thread only (the store itself is thread-safe).
// Blocking: every call commits to / reads the store (may wait for its group sync).
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "converge/replica.h"
#include "converge/store.h"

namespace converge::server {

// The name of the bookkeeping collection of replica `replica`.
std::string ReplicaMetaCollection(const std::string& replica);

// InvalidArgument naming the problem (collection name; the bookkeeping collection's name).
Status ValidateStoreTarget(const std::string& replica, const std::string& collection);

// Creates the collections if missing. FailedPrecondition when the copy collection exists and is
// not this replica's (another owner), or the replica was set up with another source topic or
// copy collection. `store` must outlive the target.
Result<std::unique_ptr<replica::Target>> NewStoreTarget(Store& store, Env& env,
                                                        const std::string& replica,
                                                        const std::string& collection,
                                                        const std::string& source_topic);

// One row of the copy, as ReadRow of a SQL table answers it; nullopt when the key has none.
Result<std::optional<replica::Row>> ReadStoreTargetRow(Store& store, const std::string& replica,
                                                       const std::string& collection,
                                                       const std::string& key);

// The copy's live (key, version) entries (tombstones are not part of it), for a
// reconciliation run; a copy not created yet is empty.
Status ScanStoreTarget(Store& store, const std::string& replica,
                       const std::function<void(const std::string& key, uint64_t version)>& put);

// One repair of a reconciliation run (docs/formats/replica.md, "Reconciliation in converge
// serve"), in one store transaction: `now` is the source's document (nullopt: the key goes).
// An upsert over a lower or missing entry is version-gated like the applier's; the other
// repairs (the copy ahead of the source, or a key the source lacks) apply only while the
// entry is still the live one at `copy_version`. The transaction also rewrites the position
// (If-Match), so an applier's batch that read the entry before it fails and is read again.
// Returns false when the entry moved (nothing written), or before the replica's first batch.
Result<bool> RepairStoreTargetRow(Store& store, const std::string& replica,
                                  const std::string& collection, const std::string& key,
                                  std::optional<uint64_t> copy_version,
                                  const std::optional<Document>& now, int64_t now_us);

}  // namespace converge::server
