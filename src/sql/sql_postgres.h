// Internal hooks into the PostgreSQL implementation of converge/sql.h, for the relay's
// PostgreSQL adapter (which drives LISTEN/NOTIFY on the raw connection).
#pragma once

#include <string>
#include <string_view>

#include "converge/sql.h"
#include "converge/status.h"

namespace converge::sql::internal {

// Sends `sql` right after `tx` (a PostgreSQL transaction of converge/sql.h) commits, without
// waiting for its result (consumed by the connection's next call). Not sent if `tx` rolls back.
void PgSendAfterCommit(Transaction& tx, std::string sql);

// The SQLSTATE of the last failed statement on `db` (a PostgreSQL Database), e.g. "42704";
// "" if the last statement succeeded, failed without one (connection lost) or `db` is SQLite.
std::string PgLastSqlState(Database& db);

// The Status for a failed libpq result (`conn` is a PGconn*, `result` a PGresult*, may be null).
Status PgStatusFromResult(void* conn, const void* result, std::string_view what);

}  // namespace converge::sql::internal
