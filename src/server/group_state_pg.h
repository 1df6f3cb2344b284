// The state of one consumer group in PostgreSQL (docs/scaling.md, "Consumer groups across
// sidecars"): the groups' StateStore seam (groups/state_store.h) on a table of the cluster's
// database, so that whichever sidecar owns the group next recovers exactly what the last owner
// made durable.
//
// Table (created if missing): one scope per group ("<topic>/<group>"),
//   scope text, generation bigint, seq bigint, data bytea, PRIMARY KEY (scope, generation, seq)
// seq 0 of the newest generation is the snapshot (a header record and the group's records, as
// record-log frames without a file header); seq 1, 2, ... of that generation are the journal
// (each Append one row, the frames it was given). Compact deletes the scope's rows and writes
// the next generation's snapshot in one transaction.
//
// Fencing: every write (Append, Compact) runs lease::CheckFence on the group's lease with the
// owner's token in the same transaction, so a sidecar that lost the group (its lease expired
// or was taken over) can never write its state again: the write fails (FailedPrecondition,
// "fenced") and the store is broken, like a failed write to the files.
//
// Thread-safety: as the StateStore: the owner (ConsumerGroups) serializes calls. Blocks on
// PostgreSQL, bounded by the connection's timeouts.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "converge/sql.h"
#include "converge/status.h"
#include "groups/state_store.h"

namespace converge::server {

struct PgGroupStateOptions {
  std::string table = "converge_group_state";   // [a-z0-9_]{1,60}
  std::string lease_table = "converge_leases";  // the fence
  std::string scope;                            // "<topic>/<group>"
  std::string lease_name;                       // "group:<topic>/<group>"
  int64_t token = 0;                            // the owner's fencing token
};

// Creates the table if missing (on `db`). InvalidArgument for a bad table name.
Status CreatePgGroupStateTable(sql::Database& db, const std::string& table);

// Reads the scope's snapshot and journal (records as StateStore::Open returns them: header
// first; none for a scope never written) and returns the store writing to it. DataLoss if a
// row does not parse; database errors otherwise. `db` is the store's own connection.
Result<std::unique_ptr<::converge::internal::groups::StateStore>> OpenPgGroupState(
    std::unique_ptr<sql::Database> db, const PgGroupStateOptions& options,
    std::string* recovered_bytes, std::vector<std::string_view>* records);

}  // namespace converge::server
