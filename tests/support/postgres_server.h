// A real PostgreSQL 15 (Debian's /usr/lib/postgresql/15/bin) for integration tests and
// benchmarks, started by the test itself. Not part of libconverge: link
// tests/support/postgres_server.cc and server_process.cc into the program that uses it.
//
// Contract
// - initdb into a fresh temporary directory; the postmaster listens on 127.0.0.1 only, on a
//   free port, with its unix socket directory inside the temporary directory. fsync and
//   synchronous_commit are on, as in production.
// - PostgreSQL refuses to run as root: when this process is root (CI), initdb, the postmaster
//   and pg_ctl run as the `postgres` user and the temporary directory is owned by it.
// - The postmaster is a child of this process (it gets SIGQUIT, PostgreSQL's immediate
//   shutdown, if this process dies). Stop runs `pg_ctl stop -m fast`; the destructor stops the
//   server and removes the directory, also after a failure.
// - Start returns once the server accepts connections (PQping OK), or an error carrying the
//   tail of the server log.
// - The rule for every integration suite (PostgreSQL, nats-server, redis-server, the converge
//   binary): a missing server FAILS the test, it never skips, so a suite cannot pass by not
//   running. Start's NotFound names what to install.
//
// Thread-safety: none; one thread drives a PostgresServer.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "converge/status.h"
#include "support/server_process.h"

namespace converge::testing {

struct PostgresServerOptions {
  std::string bin_dir = "/usr/lib/postgresql/15/bin";
  std::string base_dir;                  // where the temp dir goes; empty = $TMPDIR or /tmp
  std::string run_as_user = "postgres";  // used only when running as root
  // Extra server settings, "name=value" each (passed as -c name=value), e.g.
  // "max_prepared_transactions=64" for PREPARE TRANSACTION.
  std::vector<std::string> settings;
  int64_t ready_timeout_ms = 60'000;
  int64_t stop_timeout_ms = 30'000;
};

class PostgresServer {
 public:
  // initdb + start. NotFound if the binaries are missing; Unavailable if the server exited
  // during start-up; DeadlineExceeded if it was not ready in time. Retries a taken port.
  static Result<std::unique_ptr<PostgresServer>> Start(const PostgresServerOptions& options = {});

  ~PostgresServer();
  PostgresServer(const PostgresServer&) = delete;
  PostgresServer& operator=(const PostgresServer&) = delete;

  uint16_t port() const { return port_; }
  const std::string& dir() const { return dir_.path(); }
  bool running() const { return pid_ > 0; }
  // "host=127.0.0.1 port=<port> user=postgres dbname=<dbname>".
  std::string ConnInfo(const std::string& dbname = "postgres") const;

  // `pg_ctl stop -m fast`, then reaps the postmaster. Data stays. OK if already stopped.
  Status Stop();
  // Starts the server again on the same data directory and port (after Stop or Kill; after a
  // Kill it retries while the old backends still hold the shared memory).
  Status Restart();
  // Kills the postmaster with SIGKILL (a crash; the next start runs recovery).
  Status Kill();

  // CREATE DATABASE <name> (name: [a-z0-9_]+).
  Status CreateDatabase(const std::string& name);
  // Runs one SQL command on `dbname` over a new connection; returns the first column of the
  // first row ("" if the command returns no rows). Unavailable if it cannot connect, Internal
  // with the server's message if the command fails.
  Result<std::string> Query(const std::string& dbname, const std::string& sql);

  // The last `max_bytes` of the server log.
  std::string LogTail(size_t max_bytes = 3000) const;

 private:
  PostgresServer(PostgresServerOptions options, TempDir dir)
      : options_(std::move(options)), dir_(std::move(dir)) {}
  Status InitDb();
  Status Launch();
  Status WaitReady();
  // Runs a command to completion (as the postgres user when root); output to the log.
  Status Run(const std::vector<std::string>& argv);

  PostgresServerOptions options_;
  TempDir dir_;
  uint16_t port_ = 0;
  pid_t pid_ = -1;
  uid_t uid_ = 0;
  gid_t gid_ = 0;
  bool drop_privileges_ = false;
};

}  // namespace converge::testing
