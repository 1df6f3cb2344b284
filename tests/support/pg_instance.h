// A throwaway PostgreSQL 15 server for the two-phase-commit tests and benchmark, started by the
// test itself: initdb into a fresh temporary directory, postmaster on 127.0.0.1 and a free port,
// fsync on, max_prepared_transactions set (PREPARE TRANSACTION needs it). When this process runs
// as root (CI), initdb, the postmaster and pg_ctl run as the `postgres` user. Not part of
// libconverge: link tests/support/pg_instance.cc and server_process.cc.
//
// (Branch `outbox` has a fuller PostgreSQL fixture, tests/support/postgres_server.h; once both
// are in main this one can become a thin wrapper over it with
// settings = {"max_prepared_transactions=..."}.)
//
// Thread-safety: none; one thread drives a PgInstance.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "converge/status.h"
#include "support/server_process.h"

namespace converge::testing {

struct PgInstanceOptions {
  std::string bin_dir = "/usr/lib/postgresql/15/bin";
  std::string base_dir;                  // where the temp dir goes; empty = $TMPDIR or /tmp
  std::string run_as_user = "postgres";  // when running as root
  uint32_t max_prepared_transactions = 64;
  uint32_t max_connections = 100;
  std::vector<std::string> settings;  // extra "name=value" server settings
  int64_t timeout_ms = 60'000;        // for start, stop and commands
};

class PgInstance {
 public:
  // NotFound if PostgreSQL is not installed (tests skip then); Unavailable/DeadlineExceeded/
  // Internal with the log tail when the server does not come up.
  static Result<std::unique_ptr<PgInstance>> Start(const PgInstanceOptions& options = {});
  ~PgInstance();
  PgInstance(const PgInstance&) = delete;
  PgInstance& operator=(const PgInstance&) = delete;

  uint16_t port() const { return port_; }
  // "host=127.0.0.1 port=P user=postgres dbname=D sslmode=disable".
  std::string ConnInfo(const std::string& dbname = "postgres") const;
  // CREATE DATABASE name ([a-z0-9_]+).
  Status CreateDatabase(const std::string& name);
  // Runs one SQL command on `dbname`; returns the first column of the first row ("" if none).
  Result<std::string> Query(const std::string& dbname, const std::string& sql);

  // pg_ctl stop -m fast (data kept). OK if stopped already.
  Status Stop();
  // SIGKILL of the postmaster (a crash; the next start recovers).
  Status Kill();
  // Starts again on the same data directory and port.
  Status Restart();
  std::string LogTail(size_t max_bytes = 3000) const;

 private:
  PgInstance(PgInstanceOptions options, TempDir dir)
      : options_(std::move(options)), dir_(std::move(dir)) {}
  Status RunToCompletion(const std::vector<std::string>& argv);
  Status Launch();
  Status WaitReady();

  PgInstanceOptions options_;
  TempDir dir_;
  uint16_t port_ = 0;
  pid_t pid_ = -1;
  bool drop_ = false;
  uid_t uid_ = 0;
  gid_t gid_ = 0;
};

}  // namespace converge::testing
