// Internal hooks into the PostgreSQL implementation of converge/sql.h, for the relay's
// PostgreSQL adapter (which drives LISTEN/NOTIFY on the raw connection).
#pragma once

#include <string_view>

#include "converge/status.h"

namespace converge::sql::internal {

// The Status for a failed libpq result (`conn` is a PGconn*, `result` a PGresult*, may be null).
Status PgStatusFromResult(void* conn, const void* result, std::string_view what);

}  // namespace converge::sql::internal
