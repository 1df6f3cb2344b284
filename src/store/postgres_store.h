// The PostgreSQL implementation of converge::Store: the shared store's collections, documents,
// conditional writes, transactions and change feed kept in PostgreSQL tables (through the one
// database layer, converge/sql.h), so that several `converge serve` processes share one store.
// docs/formats/store-postgres.md has the table layout and why the change feed is in commit
// order.
//
// Contract: everything converge/store.h promises, with these differences.
// - Durability is PostgreSQL's: an OK means COMMIT returned OK (synchronous_commit decides
//   whether that survives a machine crash). StoreOptions::durability, dir and the WAL and
//   checkpoint options are not used (Sync and Checkpoint return OK at once).
// - Reads never wait for a sync (a committed row is as durable as PostgreSQL makes it); TryGet
//   answers Unavailable (so a caller on an I/O thread hands the read to GetAsync, which runs on
//   StoreOptions::background), and Get blocks for one round trip.
// - Commit sequence numbers are assigned by a one-row counter that every writing transaction
//   locks first and bumps just before COMMIT; so commits are serialized across every process,
//   sequence numbers follow commit order without gaps between committed writes (a rolled-back
//   transaction's number is taken by the next), and the change feed is a plain "seq > cursor"
//   tail that never skips a late commit.
// - Change feed: every process publishes every committed change (its own and other processes')
//   into options.feed_topic of its own options.feed_log, tailing the changes table in sequence
//   order (after each local commit and every feed_poll_interval_ms). Event ids as in store.h,
//   so a re-publication after a restart is deduplicated by the log.
// - Unavailable also when PostgreSQL cannot be reached. A write answered Unavailable because the
//   connection broke during COMMIT may have been committed (the outcome is unknown); a client
//   that must not apply a write twice sends If-Match / If-None-Match: * (docs/scaling.md).
// - WriteCounts are this process's (each process counts the writes it handled).
// - Health: Unavailable when PostgreSQL does not answer (checked at most every
//   health_check_interval_ms).
//
// Thread-safety: thread-safe. Blocking: every call but TryGet, GetAsync and CommitAsync (with
// StoreOptions::background set) blocks on PostgreSQL, bounded by the connect and statement
// timeouts; at most max_connections calls run at once, others wait for a connection.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "converge/env.h"
#include "converge/status.h"
#include "converge/store.h"

namespace converge {

struct PostgresStoreOptions {
  std::string conninfo;                         // libpq conninfo or URI (required)
  std::string table_prefix = "converge_store";  // [a-z_][a-z0-9_]{0,39}: tables <prefix>_*
  int64_t connect_timeout_ms = 5'000;
  int64_t statement_timeout_ms = 30'000;
  size_t max_connections = 16;
  int64_t feed_poll_interval_ms = 20;  // how often other processes' changes are looked for
  int64_t health_check_interval_ms = 250;
  // Tests: called inside every writing transaction just before its COMMIT, with its commit
  // sequence number (the counter row is locked meanwhile).
  std::function<void(uint64_t seq)> before_commit_for_testing;
};

// InvalidArgument naming the field.
Status ValidatePostgresStoreOptions(const PostgresStoreOptions& options);

// Connects, creates the tables if missing (safe when several processes start at once), reads
// the change-feed cursor from options.feed_log and starts tailing. InvalidArgument for bad
// options; Unavailable if PostgreSQL cannot be reached; the database's error otherwise.
Result<std::unique_ptr<Store>> OpenPostgresStore(Env& env, const StoreOptions& options,
                                                 const PostgresStoreOptions& pg);

}  // namespace converge
