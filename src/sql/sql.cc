// Engine-independent parts of converge/sql.h.
#include "converge/sql.h"

#include <libpq-fe.h>
#include <sqlite3.h>

#include <algorithm>
#include <string>

#include "sql/sql_internal.h"

namespace converge::sql {

std::string_view EngineName(Engine engine) {
  return engine == Engine::kSqlite ? "sqlite" : "postgres";
}

namespace {

bool StartsWith(std::string_view s, std::string_view prefix) {
  return s.substr(0, prefix.size()) == prefix;
}
bool EndsWith(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

}  // namespace

Result<DatabaseTarget> ParseDatabaseTarget(std::string_view text) {
  if (text.empty()) return InvalidArgumentError("database: empty target");
  if (StartsWith(text, "sqlite:")) {
    std::string_view path = text.substr(7);
    if (StartsWith(path, "//")) path.remove_prefix(2);
    if (path.empty()) return InvalidArgumentError("database: 'sqlite:' without a path");
    return DatabaseTarget{Engine::kSqlite, std::string(path)};
  }
  if (StartsWith(text, "postgres://") || StartsWith(text, "postgresql://") ||
      text.find("dbname=") != std::string_view::npos ||
      text.find("host=") != std::string_view::npos) {
    return DatabaseTarget{Engine::kPostgres, std::string(text)};
  }
  if (EndsWith(text, ".db") || EndsWith(text, ".sqlite") || EndsWith(text, ".sqlite3")) {
    return DatabaseTarget{Engine::kSqlite, std::string(text)};
  }
  return InvalidArgumentError(
      "database: expected 'sqlite:<path>', a *.db path or a PostgreSQL conninfo/URI, got '" +
      std::string(text) + "'");
}

Result<std::unique_ptr<Database>> OpenDatabase(const DatabaseTarget& target,
                                               std::string_view sqlite_synchronous) {
  if (target.engine == Engine::kSqlite) {
    SqliteOptions options;
    options.path = target.location;
    options.synchronous = std::string(sqlite_synchronous);
    return Database::OpenSqlite(options);
  }
  PostgresOptions options;
  options.conninfo = target.location;
  return Database::ConnectPostgres(options);
}

namespace internal {

namespace {

// Scanner state shared by the two rewriters: skips quoted strings, identifiers, comments and
// dollar-quoted bodies, calling `on_code(i)` for each character of plain SQL.
template <typename OnCode>
void ScanSql(std::string_view sql, OnCode on_code) {
  size_t i = 0;
  while (i < sql.size()) {
    char c = sql[i];
    if (c == '\'' || c == '"') {
      size_t j = i + 1;
      while (j < sql.size()) {
        if (sql[j] == c) {
          if (j + 1 < sql.size() && sql[j + 1] == c) {
            j += 2;
            continue;
          }
          break;
        }
        ++j;
      }
      size_t end = std::min(j + 1, sql.size());
      on_code(i, end, false);
      i = end;
      continue;
    }
    if (c == '-' && i + 1 < sql.size() && sql[i + 1] == '-') {
      size_t j = sql.find('\n', i);
      j = j == std::string_view::npos ? sql.size() : j;
      on_code(i, j, false);
      i = j;
      continue;
    }
    if (c == '/' && i + 1 < sql.size() && sql[i + 1] == '*') {
      size_t j = sql.find("*/", i + 2);
      j = j == std::string_view::npos ? sql.size() : j + 2;
      on_code(i, j, false);
      i = j;
      continue;
    }
    if (c == '$' && i + 1 < sql.size() && sql[i + 1] == '$') {
      size_t j = sql.find("$$", i + 2);
      j = j == std::string_view::npos ? sql.size() : j + 2;
      on_code(i, j, false);
      i = j;
      continue;
    }
    on_code(i, i + 1, true);
    ++i;
  }
}

}  // namespace

bool InTransaction(Database& db) {
  if (db.engine() == Engine::kSqlite) {
    return sqlite3_get_autocommit(static_cast<sqlite3*>(db.native_handle())) == 0;
  }
  auto* conn = static_cast<PGconn*>(db.native_handle());
  if (conn == nullptr || PQstatus(conn) != CONNECTION_OK) return false;
  const PGTransactionStatusType st = PQtransactionStatus(conn);
  return st == PQTRANS_INTRANS || st == PQTRANS_INERROR || st == PQTRANS_ACTIVE;
}

std::string ToSqlitePlaceholders(std::string_view sql) {
  std::string out;
  out.reserve(sql.size());
  ScanSql(sql, [&](size_t from, size_t to, bool code) {
    if (code && sql[from] == '$' && from + 1 < sql.size() && sql[from + 1] >= '0' &&
        sql[from + 1] <= '9') {
      out.push_back('?');
    } else {
      out.append(sql.substr(from, to - from));
    }
  });
  return out;
}

namespace {

void AppendQuoted(std::string_view item, std::string* out) {
  out->push_back('"');
  for (char c : item) {
    if (c == '"' || c == '\\') out->push_back('\\');
    out->push_back(c);
  }
  out->push_back('"');
}

}  // namespace

std::string PgTextArray(const std::vector<std::optional<std::string_view>>& items) {
  size_t size = 2;
  for (const auto& i : items) size += (i ? i->size() + 3 : 5);
  std::string out;
  out.reserve(size);
  out.push_back('{');
  for (size_t i = 0; i < items.size(); ++i) {
    if (i > 0) out.push_back(',');
    if (items[i]) {
      AppendQuoted(*items[i], &out);
    } else {
      out.append("NULL");
    }
  }
  out.push_back('}');
  return out;
}

std::string PgTextArray(const std::vector<std::string_view>& items) {
  size_t size = 2;
  for (const auto& i : items) size += i.size() + 3;
  std::string out;
  out.reserve(size);
  out.push_back('{');
  for (size_t i = 0; i < items.size(); ++i) {
    if (i > 0) out.push_back(',');
    AppendQuoted(items[i], &out);
  }
  out.push_back('}');
  return out;
}

std::string PgByteaArray(const std::vector<std::optional<std::string_view>>& items) {
  static constexpr char kHex[] = "0123456789abcdef";
  size_t size = 2;
  for (const auto& i : items) size += (i ? i->size() * 2 + 6 : 5);
  std::string out;
  out.reserve(size);
  out.push_back('{');
  for (size_t i = 0; i < items.size(); ++i) {
    if (i > 0) out.push_back(',');
    if (!items[i]) {
      out.append("NULL");
      continue;
    }
    // Inside a quoted array element a backslash is escaped: "\\x..." is the bytea "\x...".
    out.append("\"\\\\x");
    for (unsigned char c : *items[i]) {
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 15]);
    }
    out.push_back('"');
  }
  out.push_back('}');
  return out;
}

std::string PgIntArray(const std::vector<int64_t>& items) {
  std::string out = "{";
  for (size_t i = 0; i < items.size(); ++i) {
    if (i > 0) out.push_back(',');
    out += std::to_string(items[i]);
  }
  out.push_back('}');
  return out;
}

}  // namespace internal
}  // namespace converge::sql
