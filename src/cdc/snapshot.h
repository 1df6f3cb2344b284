// Table capture's initial snapshot: every row of a publication's tables as of a snapshot
// exported by CREATE_REPLICATION_SLOT ... EXPORT_SNAPSHOT, so that the rows read here plus the
// changes streamed from the slot are each row's history without a gap or an overlap.
//
// Thread-safety: none.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "cdc/pgoutput.h"
#include "converge/status.h"

namespace converge::cdc {

// Connects (a plain connection), imports `snapshot_name` in a REPEATABLE READ READ ONLY
// transaction and calls `on_row` for every row of every table of `publication` (tables in
// name order), with a Relation built as pgoutput would send it (columns in table order,
// generated and dropped columns left out, key flags from the replica identity) and the values
// in text form. A non-OK `on_row` stops and is returned. NotFound if the publication does not
// exist; the server's error otherwise (an expired snapshot: FailedPrecondition/Internal).
Status ReadSnapshot(
    const std::string& conninfo, const std::string& snapshot_name, const std::string& publication,
    int64_t connect_timeout_ms,
    const std::function<Status(const Relation&, const std::vector<TupleValue>&)>& on_row);

}  // namespace converge::cdc
