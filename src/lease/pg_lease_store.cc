// The lease table in PostgreSQL (lease/lease.h), on one connection of the sql layer, which
// bounds connecting and every statement. Every time comparison uses the server's now().
//
// Table (docs/scaling.md, "Leases"):
//   name text PRIMARY KEY, holder text, token bigint, released boolean,
//   expires_at timestamptz, acquired_at timestamptz
#include <mutex>

#include "lease/lease.h"
#include "sql/identifier.h"

namespace converge::lease {
namespace {

Status Ignore(const sql::Row&) { return Status::Ok(); }

class PostgresLeaseStore final : public LeaseStore {
 public:
  PostgresLeaseStore(std::unique_ptr<sql::Database> db, std::string table)
      : db_(std::move(db)), table_(std::move(table)) {}

  Result<Acquired> Acquire(const std::string& name, const std::string& holder,
                           int64_t ttl_ms) override {
    std::lock_guard<std::mutex> lock(mu_);
    Acquired out;
    Status s = db_->Transact([&](sql::Transaction& txn) -> Status {
      // The row exists from the first acquire on (released, expired), so that FOR UPDATE below
      // serializes every acquirer of the name.
      const sql::Value name_param[] = {sql::Value::Text(name)};
      CONVERGE_RETURN_IF_ERROR(
          txn.Execute("INSERT INTO " + table_ +
                          " (name, holder, token, released, expires_at, acquired_at) "
                          "VALUES ($1, '', 0, true, now(), now()) ON CONFLICT (name) DO NOTHING",
                      name_param)
              .status());
      std::string current;
      bool live = false;
      bool released = true;
      CONVERGE_RETURN_IF_ERROR(
          txn.Query("SELECT holder, released::int, (expires_at > now())::int FROM " + table_ +
                        " WHERE name = $1 FOR UPDATE",
                    name_param,
                    [&](const sql::Row& row) -> Status {
                      current = std::string(row.Bytes(0));
                      CONVERGE_ASSIGN_OR_RETURN(int64_t r, row.Int(1));
                      CONVERGE_ASSIGN_OR_RETURN(int64_t l, row.Int(2));
                      released = r != 0;
                      live = l != 0;
                      return Status::Ok();
                    })
              .status());
      // Its own row is taken again (with a new token): a holder that asks does not believe
      // it holds the lease (an acquire whose reply was lost), and nobody else can hold it.
      if (live && !released && current != holder) {
        return FailedPreconditionError("lease '" + name + "' is held by '" + current + "'");
      }
      out.takeover = !released && !current.empty() && current != holder;
      const sql::Value params[] = {sql::Value::Text(name), sql::Value::Text(holder),
                                   sql::Value::Int(ttl_ms)};
      Result<int64_t> n = txn.Query(
          "UPDATE " + table_ +
              " SET holder = $2, token = token + 1, released = false, acquired_at = now(), "
              "expires_at = now() + $3::bigint * interval '1 millisecond' WHERE name = $1 "
              "RETURNING token",
          params, [&](const sql::Row& row) -> Status {
            CONVERGE_ASSIGN_OR_RETURN(out.token, row.Int(0));
            return Status::Ok();
          });
      CONVERGE_RETURN_IF_ERROR(n.status());
      if (*n != 1) return InternalError("lease '" + name + "': row vanished during acquire");
      return Status::Ok();
    });
    if (!s.ok()) return s;
    return out;
  }

  Result<Acquired> TakeOver(const std::string& name, const std::string& holder,
                            const std::string& dead_holder, int64_t ttl_ms) override {
    if (holder == dead_holder) {
      return InvalidArgumentError("lease '" + name + "': a holder cannot take over from itself");
    }
    std::lock_guard<std::mutex> lock(mu_);
    Acquired out;
    out.takeover = true;
    // One statement: the row changes only while the dead holder still holds it, so a lease
    // it released or that another took meanwhile is left alone.
    const sql::Value params[] = {sql::Value::Text(name), sql::Value::Text(holder),
                                 sql::Value::Text(dead_holder), sql::Value::Int(ttl_ms)};
    CONVERGE_ASSIGN_OR_RETURN(
        int64_t n,
        db_->Query("UPDATE " + table_ +
                       " SET holder = $2, token = token + 1, released = false, acquired_at = "
                       "now(), expires_at = now() + $4::bigint * interval '1 millisecond' "
                       "WHERE name = $1 AND holder = $3 AND NOT released AND expires_at > now() "
                       "RETURNING token",
                   params, [&](const sql::Row& row) -> Status {
                     CONVERGE_ASSIGN_OR_RETURN(out.token, row.Int(0));
                     return Status::Ok();
                   }));
    if (n != 1) {
      return FailedPreconditionError("lease '" + name + "' is not held by '" + dead_holder + "'");
    }
    return out;
  }

  Status Renew(const std::string& name, const std::string& holder, int64_t token,
               int64_t ttl_ms) override {
    std::lock_guard<std::mutex> lock(mu_);
    const sql::Value params[] = {sql::Value::Text(name), sql::Value::Text(holder),
                                 sql::Value::Int(token), sql::Value::Int(ttl_ms)};
    CONVERGE_ASSIGN_OR_RETURN(
        int64_t n, db_->Execute("UPDATE " + table_ +
                                    " SET expires_at = now() + $4::bigint * interval '1 "
                                    "millisecond' WHERE name = $1 AND holder = $2 AND token = "
                                    "$3::bigint AND NOT released AND expires_at > now()",
                                params));
    if (n != 1) return FailedPreconditionError("lease '" + name + "' was lost");
    return Status::Ok();
  }

  Status Release(const std::string& name, const std::string& holder, int64_t token) override {
    std::lock_guard<std::mutex> lock(mu_);
    const sql::Value params[] = {sql::Value::Text(name), sql::Value::Text(holder),
                                 sql::Value::Int(token)};
    return db_
        ->Execute("UPDATE " + table_ +
                      " SET released = true, expires_at = now() WHERE name = $1 AND holder = $2 "
                      "AND token = $3::bigint AND NOT released",
                  params)
        .status();
  }

  Result<std::vector<LeaseRecord>> List() override {
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<LeaseRecord> out;
    Status s = db_->Query(
                      "SELECT name, CASE WHEN released THEN '' ELSE holder END, token, "
                      "CASE WHEN released OR expires_at <= now() THEN 0 ELSE "
                      "ceil(extract(epoch FROM expires_at - now()) * 1000)::bigint END FROM " +
                          table_ + " ORDER BY name",
                      {},
                      [&](const sql::Row& row) -> Status {
                        LeaseRecord r;
                        r.name = std::string(row.Bytes(0));
                        r.holder = std::string(row.Bytes(1));
                        CONVERGE_ASSIGN_OR_RETURN(r.token, row.Int(2));
                        CONVERGE_ASSIGN_OR_RETURN(r.expires_in_ms, row.Int(3));
                        if (r.expires_in_ms == 0) r.holder.clear();
                        out.push_back(std::move(r));
                        return Status::Ok();
                      })
                   .status();
    if (!s.ok()) return s;
    return out;
  }

 private:
  std::mutex mu_;  // one connection, one call at a time
  std::unique_ptr<sql::Database> db_;
  const std::string table_;
};

}  // namespace

Result<std::unique_ptr<LeaseStore>> OpenPostgresLeaseStore(
    const PostgresLeaseStoreOptions& options) {
  if (!sql::IsPlainTableName(options.table)) {
    return InvalidArgumentError("lease table '" + options.table + "': want [a-z0-9_]{1,60}");
  }
  sql::PostgresOptions o;
  o.conninfo = options.conninfo;
  o.connect_timeout_ms = options.connect_timeout_ms;
  o.statement_timeout_ms = options.statement_timeout_ms;
  o.lock_timeout_ms = options.statement_timeout_ms;
  o.reconnect = true;  // the session holds no state: any connection will do
  CONVERGE_ASSIGN_OR_RETURN(std::unique_ptr<sql::Database> db, sql::Database::ConnectPostgres(o));
  Status created =
      db->ExecuteScript("CREATE TABLE IF NOT EXISTS " + options.table +
                        " (name text PRIMARY KEY, holder text NOT NULL, token bigint NOT NULL, "
                        "released boolean NOT NULL, expires_at timestamptz NOT NULL, "
                        "acquired_at timestamptz NOT NULL)");
  // Two sidecars starting at once may both create it: PostgreSQL then reports a unique
  // violation of its catalog for the loser, whose table exists all the same.
  if (!created.ok() && created.code() != StatusCode::kAlreadyExists) {
    return created.WithContext("lease table");
  }
  return std::unique_ptr<LeaseStore>(new PostgresLeaseStore(std::move(db), options.table));
}

Status CheckFence(sql::Transaction& txn, std::string_view table, std::string_view name,
                  int64_t token) {
  if (!sql::IsPlainTableName(table)) return InvalidArgumentError("lease table: bad name");
  const sql::Value params[] = {sql::Value::Text(name), sql::Value::Int(token)};
  CONVERGE_ASSIGN_OR_RETURN(
      int64_t n, txn.Query("SELECT 1 FROM " + std::string(table) +
                               " WHERE name = $1 AND token = $2::bigint AND NOT released AND "
                               "expires_at > now() FOR SHARE",
                           params, Ignore));
  if (n != 1) {
    return FailedPreconditionError("fenced: lease '" + std::string(name) + "' with token " +
                                   std::to_string(token) + " is no longer held");
  }
  return Status::Ok();
}

}  // namespace converge::lease
