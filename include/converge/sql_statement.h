// SqlStatement: SQL text with its parameters, as the two-phase-commit participants and the SQL
// saga ledger take them. Placeholders are $1, $2, ... for PostgreSQL and ?1, ?2, ... for SQLite;
// a parameter is a string (the database converts it to the column's type) or NULL.
// Thread-safety: a value type.
#pragma once

#include <optional>
#include <string>
#include <vector>

namespace converge {

struct SqlStatement {
  std::string sql;
  std::vector<std::optional<std::string>> params;
};

}  // namespace converge
