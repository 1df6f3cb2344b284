// Names that converge splices into SQL text unquoted (table names and prefixes from the
// configuration): checked once, here, by every module that does.
#pragma once

#include <string_view>

namespace converge::sql {

// [a-z0-9_]{1,60}: no quoting needed in PostgreSQL or SQLite, and room for a suffix within
// PostgreSQL's 63-byte identifiers.
inline bool IsPlainTableName(std::string_view name) {
  if (name.empty() || name.size() > 60) return false;
  for (char c : name) {
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_')) return false;
  }
  return true;
}

}  // namespace converge::sql
