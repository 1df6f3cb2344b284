#include "cdc/snapshot.h"

#include <libpq-fe.h>

#include <algorithm>
#include <memory>

#include "cdc/replication.h"

namespace converge::cdc {
namespace {

struct ConnCloser {
  void operator()(PGconn* c) const { PQfinish(c); }
};
struct ResultClearer {
  void operator()(PGresult* r) const { PQclear(r); }
};
using Conn = std::unique_ptr<PGconn, ConnCloser>;
using Res = std::unique_ptr<PGresult, ResultClearer>;

std::string Trimmed(std::string text) {
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  return text;
}

Status Failed(PGconn* conn, const PGresult* res, std::string_view what) {
  std::string text = Trimmed(res != nullptr ? PQresultErrorMessage(res) : "");
  if (text.empty()) text = Trimmed(PQerrorMessage(conn));
  const std::string message = "snapshot: " + std::string(what) + ": " + text;
  if (PQstatus(conn) == CONNECTION_BAD) return UnavailableError(message);
  return FailedPreconditionError(message);
}

Result<Res> Exec(PGconn* conn, const std::string& sql, std::string_view what) {
  Res res(PQexec(conn, sql.c_str()));
  const ExecStatusType st = res ? PQresultStatus(res.get()) : PGRES_FATAL_ERROR;
  if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) return Failed(conn, res.get(), what);
  return res;
}

std::string Literal(PGconn* conn, const std::string& s) {
  char* q = PQescapeLiteral(conn, s.data(), s.size());
  std::string out = q != nullptr ? q : "''";
  PQfreemem(q);
  return out;
}

std::string Identifier(PGconn* conn, const std::string& s) {
  char* q = PQescapeIdentifier(conn, s.data(), s.size());
  std::string out = q != nullptr ? q : "\"\"";
  PQfreemem(q);
  return out;
}

}  // namespace

Status ReadSnapshot(
    const std::string& conninfo, const std::string& snapshot_name, const std::string& publication,
    int64_t connect_timeout_ms,
    const std::function<Status(const Relation&, const std::vector<TupleValue>&)>& on_row) {
  CONVERGE_RETURN_IF_ERROR(CheckSlotName(publication, "publication"));
  const std::string timeout_s =
      std::to_string(std::max<int64_t>(2, (connect_timeout_ms + 999) / 1000));
  const char* keys[] = {"dbname", "connect_timeout", "application_name", nullptr};
  const char* values[] = {conninfo.c_str(), timeout_s.c_str(), "converge-snapshot", nullptr};
  Conn conn(PQconnectdbParams(keys, values, 1));
  if (!conn || PQstatus(conn.get()) != CONNECTION_OK) {
    return UnavailableError("snapshot: " +
                            Trimmed(conn ? PQerrorMessage(conn.get()) : "out of memory"));
  }
  PGconn* c = conn.get();
  CONVERGE_RETURN_IF_ERROR(
      Exec(c, "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY", "BEGIN").status());
  CONVERGE_RETURN_IF_ERROR(
      Exec(c, "SET TRANSACTION SNAPSHOT " + Literal(c, snapshot_name), "SET TRANSACTION SNAPSHOT")
          .status());
  CONVERGE_ASSIGN_OR_RETURN(
      Res pub, Exec(c, "SELECT 1 FROM pg_publication WHERE pubname = " + Literal(c, publication),
                    "publication"));
  if (PQntuples(pub.get()) == 0) {
    return NotFoundError("snapshot: publication '" + publication + "' does not exist");
  }
  CONVERGE_ASSIGN_OR_RETURN(
      Res tables, Exec(c,
                       "SELECT schemaname, tablename FROM pg_publication_tables WHERE pubname = " +
                           Literal(c, publication) + " ORDER BY 1, 2",
                       "tables"));
  for (int t = 0; t < PQntuples(tables.get()); ++t) {
    Relation rel;
    rel.schema = PQgetvalue(tables.get(), t, 0);
    rel.name = PQgetvalue(tables.get(), t, 1);
    const std::string qualified = Identifier(c, rel.schema) + "." + Identifier(c, rel.name);
    // The columns pgoutput publishes, and which of them are the replica identity.
    CONVERGE_ASSIGN_OR_RETURN(
        Res cols,
        Exec(c,
             "SELECT a.attname, a.atttypid, CASE c.relreplident"
             " WHEN 'f' THEN true"
             " WHEN 'n' THEN false"
             " WHEN 'i' THEN EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND"
             "   i.indisreplident AND a.attnum = ANY(i.indkey))"
             " ELSE EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary"
             "   AND a.attnum = ANY(i.indkey)) END"
             " FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid"
             " WHERE a.attrelid = " +
                 Literal(c, qualified) +
                 "::regclass AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''"
                 " ORDER BY a.attnum",
             "columns of " + qualified));
    std::string select = "SELECT ";
    for (int i = 0; i < PQntuples(cols.get()); ++i) {
      RelationColumn col;
      col.name = PQgetvalue(cols.get(), i, 0);
      col.type_oid = static_cast<uint32_t>(std::stoul(PQgetvalue(cols.get(), i, 1)));
      col.key = std::string_view(PQgetvalue(cols.get(), i, 2)) == "t";
      col.type_modifier = -1;
      if (i > 0) select += ", ";
      select += Identifier(c, col.name) + "::text";
      rel.columns.push_back(std::move(col));
    }
    if (rel.columns.empty()) continue;
    select += " FROM " + qualified;
    // One row at a time: a large table is not held in memory.
    if (PQsendQuery(c, select.c_str()) != 1 || PQsetSingleRowMode(c) != 1) {
      return Failed(c, nullptr, "read " + qualified);
    }
    Status status;
    std::vector<TupleValue> tuple(rel.columns.size());
    while (PGresult* raw = PQgetResult(c)) {
      Res res(raw);
      const ExecStatusType st = PQresultStatus(raw);
      if (st == PGRES_SINGLE_TUPLE && status.ok()) {
        for (size_t i = 0; i < tuple.size(); ++i) {
          const int col = static_cast<int>(i);
          if (PQgetisnull(raw, 0, col)) {
            tuple[i] = TupleValue{'n', {}};
          } else {
            tuple[i] =
                TupleValue{'t', std::string_view(PQgetvalue(raw, 0, col),
                                                 static_cast<size_t>(PQgetlength(raw, 0, col)))};
          }
        }
        status = on_row(rel, tuple);  // on error: drain the rest of the results, then return
      } else if (st != PGRES_SINGLE_TUPLE && st != PGRES_TUPLES_OK && status.ok()) {
        status = Failed(c, raw, "read " + qualified);
      }
    }
    CONVERGE_RETURN_IF_ERROR(status);
  }
  return Exec(c, "COMMIT", "COMMIT").status();
}

}  // namespace converge::cdc
