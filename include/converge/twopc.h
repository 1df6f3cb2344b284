// Two-phase commit: strict atomicity across databases, for the few cases a saga's visible
// intermediate states are not acceptable.
//
// Protocol (presumed abort)
// 1. Prepare: each branch's work runs in a local transaction of its participant, which then
//    prepares it under a global id (gid): PostgreSQL PREPARE TRANSACTION; SQLite see below. A
//    participant that prepared has voted yes: the transaction survives a crash of the
//    participant until it is told the outcome. Phase 1 must finish within prepare_timeout_ms:
//    a timeout, a no vote or an unreachable participant before the decision means abort.
// 2. Decide: when every branch voted yes, the coordinator appends "commit <gid>" to its decision
//    log and syncs it (concurrent transactions share one sync). That record is the commit
//    point. No record is written for an abort: whatever is not logged as committed is aborted.
// 3. Complete: COMMIT PREPARED (or ROLLBACK PREPARED) on every branch, retried with backoff;
//    then "end <gid>" is appended (unsynced: losing it only repeats an idempotent commit).
// Recovery (Recover(), also run by Open): every participant's prepared transactions with this
// coordinator's gid prefix are resolved by the decision log: committed if logged, rolled back
// otherwise (unless in flight in this process); logged commits without an end are completed.
// So after a crash of the coordinator or a participant, every participant ends with the logged
// decision once Recover has run with all participants reachable.
//
// Participants
// - PostgreSQL (NewPostgresParticipant): the work runs on a pooled connection inside BEGIN ...
//   PREPARE TRANSACTION; the server needs max_prepared_transactions > 0. Row locks are held by
//   the server while prepared, across restarts.
// - SQLite (NewSqliteParticipant): SQLite has no prepared state, so the participant keeps the
//   branch's write transaction open (holding the database's write lock) between prepare and
//   decision, and records the work durably in a journal database beside the file
//   ("<path>-2pc") at prepare. The work also inserts its gid into converge_2pc_done in the same
//   transaction, which makes commit idempotent. After a crash of the participant process the
//   open transaction is gone but the journal keeps the vote: Commit re-executes the recorded
//   work (skipped if converge_2pc_done has the gid). Between that crash and the resolution the
//   database is not locked: another writer could make the re-execution fail, which Commit
//   reports as DataLoss and leaves the transaction in doubt for an operator.
//
// Statements are SQL text with parameters ($1, $2, ... for PostgreSQL; ?1, ?2, ... for SQLite);
// a parameter is a string or NULL.
//
// Thread-safety: the coordinator and both participants are thread-safe. Execute may be called
// from many threads at once (each call blocks on its own database round trips; decision-log
// syncs are shared).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "converge/env.h"
#include "converge/retry.h"
#include "converge/sql_statement.h"
#include "converge/status.h"

namespace converge {

// A resource manager taking part in two-phase commits.
class TxParticipant {
 public:
  virtual ~TxParticipant() = default;
  // Unique among the coordinator's participants: 1..64 of [A-Za-z0-9._-].
  virtual const std::string& name() const = 0;
  // Runs `work` and prepares it under `gid`, within `timeout_ms`. OK = voted yes. Aborted = voted
  // no (a statement failed; nothing is kept); DeadlineExceeded, Unavailable = no vote (counted as
  // no; a transaction it may have prepared anyway is rolled back by recovery).
  virtual Status Prepare(const std::string& gid, std::span<const SqlStatement> work,
                         int64_t timeout_ms) = 0;
  // Commits / rolls back the prepared transaction. Idempotent: OK when `gid` is not prepared
  // (already resolved). Unavailable when the database cannot be reached (retry); DataLoss when
  // a SQLite re-execution after a crash failed (stays in doubt).
  virtual Status CommitPrepared(const std::string& gid) = 0;
  virtual Status RollbackPrepared(const std::string& gid) = 0;
  // Prepared (in-doubt) transactions whose gid starts with `prefix`.
  virtual Result<std::vector<std::string>> ListPrepared(const std::string& prefix) = 0;
};

struct PostgresParticipantOptions {
  std::string name;
  std::string conninfo;                // key=value conninfo or a postgres:// URI (converge/sql.h)
  uint32_t max_connections = 16;       // pooled; callers beyond wait for a free one
  int64_t connect_timeout_ms = 5'000;  // > 0; each new connection, then Unavailable
  // The sessions' statement_timeout (0 = none): bounds COMMIT/ROLLBACK PREPARED and the
  // in-doubt listing (DeadlineExceeded). Prepare's work is bounded by its own timeout_ms.
  int64_t statement_timeout_ms = 30'000;
};
// InvalidArgument for bad options. Connects lazily.
Result<std::unique_ptr<TxParticipant>> NewPostgresParticipant(PostgresParticipantOptions options);

struct SqliteParticipantOptions {
  std::string name;
  std::string path;  // the database file; the journal is "<path>-2pc"
  int64_t busy_timeout_ms = 5'000;
  // Ids in converge_2pc_done older than this are deleted (a commit repeated after that would run
  // the work again).
  int64_t done_retention_ms = 7LL * 24 * 3600 * 1000;
};
// Opens (creating) the database and journal. Errors of SQLite (Internal, Unavailable if busy).
Result<std::unique_ptr<TxParticipant>> NewSqliteParticipant(Env& env,
                                                            SqliteParticipantOptions options);

// Where a test makes the coordinator stop as if it crashed. Points: "prepared" (every branch
// voted yes, nothing logged), "decided" (commit logged and synced, nothing committed),
// "committed-one" (the first branch committed). A non-OK status makes Execute return it at once,
// leaving everything as a crash would.
using TwoPhaseFaultPoint = std::function<Status(std::string_view point)>;

struct TwoPhaseOptions {
  std::string dir;  // the decision log; created if missing; one coordinator per directory
  // Prefix of every gid: "<coordinator_id>-<uuid>". 1..32 of [a-z0-9]. Recovery only touches
  // transactions with this prefix, so coordinators sharing databases need distinct ids.
  std::string coordinator_id = "cv";
  int64_t prepare_timeout_ms = 10'000;
  RetryPolicy complete_retry;  // phase 2, per branch; left to Recover when exhausted
  uint32_t max_branches = 16;
  uint64_t log_compact_after_bytes = 64ull << 20;
  TwoPhaseFaultPoint fault_point;  // tests only
};

enum class TxOutcome : uint8_t { kCommitted, kAborted };

struct TwoPhaseBranch {
  TxParticipant* participant = nullptr;
  std::vector<SqlStatement> work;
};

struct TwoPhaseResult {
  std::string gid;
  TxOutcome outcome = TxOutcome::kAborted;
  std::string reason;     // why it aborted
  bool completed = true;  // phase 2 reached every branch (otherwise Recover finishes it)
};

struct TwoPhaseRecovery {
  uint64_t committed = 0;    // in-doubt branches committed
  uint64_t rolled_back = 0;  // in-doubt branches rolled back
  uint64_t failed = 0;       // could not be resolved now (participant unreachable, DataLoss)
};

struct TwoPhaseStats {
  uint64_t committed = 0;
  uint64_t aborted = 0;
  uint64_t syncs = 0;
  uint64_t in_doubt = 0;  // logged commits whose phase 2 has not finished
};

class TwoPhaseCoordinator {
 public:
  // Recovers the decision log, then runs Recover() (its failures are not fatal: they are left
  // for the next Recover). `participants` must outlive the coordinator; names must be unique.
  // FailedPrecondition if another coordinator holds the directory; InvalidArgument for bad
  // options.
  static Result<std::unique_ptr<TwoPhaseCoordinator>> Open(
      Env& env, TwoPhaseOptions options, std::vector<TxParticipant*> participants);
  virtual ~TwoPhaseCoordinator() = default;

  // Runs one distributed transaction over `branches` (participants registered at Open, each at
  // most once). Returns the outcome once decided and phase 2 was tried. InvalidArgument for bad
  // branches; Internal/Unavailable when the decision could not be made durable (the outcome is
  // then settled by the next Recover: committed if the record reached the disk); a fault point's
  // status.
  virtual Result<TwoPhaseResult> Execute(std::span<const TwoPhaseBranch> branches) = 0;

  // Resolves in-doubt transactions (see the file comment). Errors only for the decision log.
  virtual Result<TwoPhaseRecovery> Recover() = 0;

  // The logged decision for `gid`: kCommitted if logged, kAborted otherwise (presumed abort);
  // FailedPrecondition while it is still in flight in this process.
  virtual Result<TxOutcome> Decision(const std::string& gid) = 0;

  virtual TwoPhaseStats stats() = 0;
};

}  // namespace converge
