// Table capture: a row of a pgoutput Relation as JSON, and its key from the replica identity
// (docs/formats/wal-outbox.md, "Table capture").
//
// Thread-safety: pure functions.
#pragma once

#include <string>
#include <vector>

#include "cdc/pgoutput.h"
#include "converge/status.h"

namespace converge::cdc {

// The row as a JSON object, columns in table order: NULL -> null; bool -> true/false;
// int2/int4/int8/oid/float4/float8/numeric -> a JSON number (NaN and infinities, which JSON
// cannot hold, as strings); json/jsonb -> the value itself; anything else -> its text form as a
// string. FailedPrecondition naming the column for an unchanged TOASTed value (not sent by the
// server unless the table has REPLICA IDENTITY FULL) or a binary value; DataLoss if the tuple
// does not have the relation's column count.
Result<std::string> RowJson(const Relation& relation, const std::vector<TupleValue>& tuple);

// The key: the text of the replica identity column when there is one; several identity columns
// as a JSON array of their texts. FailedPrecondition when the relation has no identity columns
// (REPLICA IDENTITY NOTHING, or no primary key) or one of them is NULL or not sent.
Result<std::string> RowKey(const Relation& relation, const std::vector<TupleValue>& tuple);

// "<schema>.<table>".
std::string QualifiedName(const Relation& relation);

}  // namespace converge::cdc
