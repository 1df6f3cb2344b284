// PostgreSQL peer of `converge bench store`: PostgreSQL 15 (Debian) started by the benchmark
// (tests/support/postgres_server.h: fsync and synchronous_commit on), one connection per
// client, prepared statements in autocommit:
//   read   SELECT value, version FROM counters WHERE key = $1
//   write  UPDATE counters SET value = $2, version = version + 1
//          WHERE key = $1 AND version = $3            (0 rows updated = a conflict)
#include "bench/store_bench.h"

#if __has_include("support/postgres_server.h")
#include <libpq-fe.h>

#include <cstdlib>
#include <string>

#include "support/postgres_server.h"

namespace converge::bench {
namespace {

Status PgError(const std::string& what, PGconn* conn) {
  return UnavailableError("postgres: " + what + ": " + PQerrorMessage(conn));
}

// Runs a command that returns no rows.
Status Exec(PGconn* conn, const std::string& sql) {
  PGresult* r = PQexec(conn, sql.c_str());
  const bool ok = PQresultStatus(r) == PGRES_COMMAND_OK;
  PQclear(r);
  return ok ? Status::Ok() : PgError(sql, conn);
}

class PgSession : public StoreSession {
 public:
  explicit PgSession(PGconn* conn) : conn_(conn) {}
  ~PgSession() override { PQfinish(conn_); }

  Status Prepare() {
    PGresult* r =
        PQprepare(conn_, "read", "SELECT value, version FROM counters WHERE key = $1", 1, nullptr);
    bool ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    PQclear(r);
    if (!ok) return PgError("prepare read", conn_);
    r = PQprepare(conn_, "write",
                  "UPDATE counters SET value = $2, version = version + 1 "
                  "WHERE key = $1 AND version = $3",
                  3, nullptr);
    ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    PQclear(r);
    return ok ? Status::Ok() : PgError("prepare write", conn_);
  }

  Status Read(const std::string& key, int64_t* value, std::string* version) override {
    const char* params[1] = {key.c_str()};
    PGresult* r = PQexecPrepared(conn_, "read", 1, params, nullptr, nullptr, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
      PQclear(r);
      return PgError("read", conn_);
    }
    if (PQntuples(r) == 0) {
      PQclear(r);
      return NotFoundError("postgres: no key " + key);
    }
    *value = std::strtoll(PQgetvalue(r, 0, 0), nullptr, 10);
    version->assign(PQgetvalue(r, 0, 1));
    PQclear(r);
    return Status::Ok();
  }

  Status Write(const std::string& key, int64_t value, const std::string& version) override {
    const std::string v = std::to_string(value);
    const char* params[3] = {key.c_str(), v.c_str(), version.c_str()};
    PGresult* r = PQexecPrepared(conn_, "write", 3, params, nullptr, nullptr, 0);
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
      PQclear(r);
      return PgError("write", conn_);
    }
    const bool updated = std::string(PQcmdTuples(r)) == "1";
    PQclear(r);
    return updated ? Status::Ok() : AbortedError("postgres: version changed");
  }

 private:
  PGconn* conn_;
};

class PostgresSystem : public StoreSystem {
 public:
  ~PostgresSystem() override { Stop().IgnoreError(); }
  std::string name() const override { return "postgres"; }
  std::string durability() const override { return "fsync"; }
  std::string note() const override {
    return "libpq prepared SELECT + UPDATE ... WHERE version = $3, synchronous_commit on";
  }

  Status Start(const StoreWorkload& w, const std::vector<std::string>& keys) override {
    testing::PostgresServerOptions options;
    options.base_dir = w.dir;
    // Room for every client plus the loader.
    options.settings.push_back("max_connections=" + std::to_string(w.clients + 20));
    CONVERGE_ASSIGN_OR_RETURN(server_, testing::PostgresServer::Start(options));
    PGconn* conn = PQconnectdb(server_->ConnInfo().c_str());
    if (PQstatus(conn) != CONNECTION_OK) {
      Status s = PgError("connect", conn);
      PQfinish(conn);
      return s;
    }
    Status s = Exec(conn,
                    "CREATE TABLE counters (key text PRIMARY KEY, value bigint NOT NULL, "
                    "version bigint NOT NULL)");
    // Load in batches of 1000 rows per statement (untimed).
    for (size_t i = 0; s.ok() && i < keys.size(); i += 1000) {
      std::string sql = "INSERT INTO counters VALUES ";
      for (size_t j = i; j < std::min(keys.size(), i + 1000); ++j) {
        if (j > i) sql += ",";
        sql += "('" + keys[j] + "',0,0)";
      }
      s = Exec(conn, sql);
    }
    if (s.ok()) s = Exec(conn, "VACUUM ANALYZE counters");
    PQfinish(conn);
    return s;
  }

  Result<std::unique_ptr<StoreSession>> NewSession() override {
    PGconn* conn = PQconnectdb(server_->ConnInfo().c_str());
    if (PQstatus(conn) != CONNECTION_OK) {
      Status s = PgError("connect", conn);
      PQfinish(conn);
      return s;
    }
    auto session = std::make_unique<PgSession>(conn);
    CONVERGE_RETURN_IF_ERROR(session->Prepare());
    return std::unique_ptr<StoreSession>(std::move(session));
  }

  Status Stop() override {
    if (server_ == nullptr) return Status::Ok();
    Status s = server_->Stop();
    server_.reset();
    return s;
  }

 private:
  std::unique_ptr<testing::PostgresServer> server_;
};

}  // namespace

std::unique_ptr<StoreSystem> MakePostgresStoreSystem() {
  return std::make_unique<PostgresSystem>();
}

}  // namespace converge::bench

#else  // the PostgreSQL fixture is not in this tree yet

namespace converge::bench {
std::unique_ptr<StoreSystem> MakePostgresStoreSystem() { return nullptr; }
}  // namespace converge::bench

#endif
