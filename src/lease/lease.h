// Leases for singleton work shared by several `converge serve` instances (docs/scaling.md,
// "Leases"): an outbox relay source, the saga orchestrator, a replica. A lease is a row of a
// PostgreSQL table naming its holder and a fencing token; a LeaseKeeper takes it, renews it
// and tells its owner when it holds it and when it no longer does.
//
// The model
// - Expiry is decided by the database's clock only: a lease is live while
//   `expires_at > now()` in PostgreSQL, and every acquire and renewal sets
//   `expires_at = now() + ttl` there. No two machines' wall clocks are ever compared.
// - The holder counts on its own monotonic clock (Env::clock): after a successful acquire or
//   renewal whose request it sent at time s, it may run the work until s + ttl - margin. The
//   database ran the statement after s (in real time), so the row expires after s + ttl: as
//   long as the two clocks run at the same RATE (within margin per ttl), the holder stops
//   before anyone else can take the lease. A database clock that jumps forward by more than
//   the margin breaks that, as it would for any lease.
// - The fencing token grows by one on every acquire (every change of holder, and a holder
//   taking its own expired lease again), never on a renewal. A write to a shared place that
//   checks it (CheckFence, inside the writer's transaction on the lease database) is refused
//   once a newer holder exists.
// - Takeover bound: a holder that dies stops renewing; its row expires at most ttl after its
//   last renewal, and a standby tries to acquire every renew interval, so the work restarts
//   within ttl + renew_interval + (one acquire round trip and the work's start).
//
// Thread-safety: LeaseStore implementations are thread-safe (calls are serialized on one
// connection). LeaseKeeper is thread-safe.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "converge/env.h"
#include "converge/sql.h"
#include "converge/status.h"

namespace converge::lease {

// A successful acquire.
struct Acquired {
  int64_t token = 0;      // > every earlier token of this lease
  bool takeover = false;  // another holder had not released it (it expired)
};

// One lease as the database sees it (for admin views).
struct LeaseRecord {
  std::string name;
  std::string holder;  // empty once released
  int64_t token = 0;
  int64_t expires_in_ms = 0;  // by the database's clock; 0 when expired or released
};

// The shared table of leases. Every call blocks on the database (bounded by its timeouts).
class LeaseStore {
 public:
  virtual ~LeaseStore() = default;
  // Takes `name` for `holder` if no one else holds it (never held, released, expired by the
  // store's clock, or held by `holder` itself: an acquire whose reply was lost), for ttl_ms from
  // the store's now, with a new token. FailedPrecondition("held by ...") if another holder has
  // it; errors of the database otherwise (Unavailable: retry). Holder ids must be unique per
  // process incarnation: two processes with one id would share the lease.
  virtual Result<Acquired> Acquire(const std::string& name, const std::string& holder,
                                   int64_t ttl_ms) = 0;
  // Extends the lease to ttl_ms from the store's now if `holder` still holds it with `token`
  // and it has not expired. FailedPrecondition if it was lost; database errors otherwise (the
  // outcome is then unknown: the holder treats it as not renewed).
  virtual Status Renew(const std::string& name, const std::string& holder, int64_t token,
                       int64_t ttl_ms) = 0;
  // Takes `name` for `holder` at once from `dead_holder`, although its lease has not expired,
  // for a holder the caller knows to be dead (a restarted process taking its previous
  // incarnation's leases: docs/scaling.md, "A restarted sidecar"). Only while `dead_holder`
  // still holds it (not released, not expired); then for ttl_ms from the store's now with a new
  // token, so that any write the dead holder still has in flight is refused by CheckFence, and
  // takeover = true. FailedPrecondition when `dead_holder` does not hold it (any more: use
  // Acquire); errors of the database otherwise (Unavailable: the outcome is unknown, and an
  // Acquire by `holder` settles it).
  virtual Result<Acquired> TakeOver(const std::string& name, const std::string& holder,
                                    const std::string& dead_holder, int64_t ttl_ms) = 0;
  // Ends the lease now, so another may take it at once. OK also if it was already lost.
  virtual Status Release(const std::string& name, const std::string& holder, int64_t token) = 0;
  // Every lease of the table, by name.
  virtual Result<std::vector<LeaseRecord>> List() = 0;
};

struct PostgresLeaseStoreOptions {
  std::string conninfo;
  std::string table = "converge_leases";  // [a-z0-9_]{1,60}; created if missing
  int64_t connect_timeout_ms = 2'000;
  int64_t statement_timeout_ms = 2'000;
};

// Connects and creates the table if it is missing. InvalidArgument for a bad table name;
// Unavailable if PostgreSQL cannot be reached (the caller decides whether to retry). Later
// calls reconnect by themselves after a lost connection.
Result<std::unique_ptr<LeaseStore>> OpenPostgresLeaseStore(
    const PostgresLeaseStoreOptions& options);

// A fenced write: inside `txn` (a transaction on the lease database), OK only if `name` is
// still held with `token` and has not expired; the row is then locked (FOR SHARE) until the
// transaction ends, so no acquire can change the holder before the write commits.
// FailedPrecondition("fenced: ...") otherwise.
Status CheckFence(sql::Transaction& txn, std::string_view table, std::string_view name,
                  int64_t token);

struct LeaseKeeperOptions {
  std::string name;    // the lease
  std::string holder;  // who this keeper is (unique per process incarnation)
  int64_t ttl_ms = 10'000;
  // How often the holder renews and a standby tries to acquire; 0 = ttl / 3.
  int64_t renew_interval_ms = 0;
  // The holder's deadline is (start of the last successful call) + ttl - margin; 0 = ttl / 5.
  // Must exceed the time the owner needs to stop its work.
  int64_t safety_margin_ms = 0;
  // Where the store's blocking calls run. Default: Post on the Env's executor (for stores that
  // do not block, as in simulation); production passes a pool of its own.
  std::function<void(std::function<void()>)> run_blocking;
  // Called after held() changed (acquired, lost by its deadline, or lost as the store said),
  // from the executor or the run_blocking thread; must not block: it should look at held()
  // and token() and start or stop the work elsewhere.
  std::function<void()> on_change;
};

// Checks a keeper's options: name and holder non-empty, ttl >= 10 ms, renew interval and margin
// positive once defaulted, renew_interval + margin < ttl (a renewal must have time to land
// before the deadline). InvalidArgument naming the option.
Status ValidateKeeperOptions(const LeaseKeeperOptions& options);

struct LeaseKeeperStats {
  uint64_t acquisitions = 0;    // leases taken
  uint64_t takeovers = 0;       // of them: from a holder that had not released it
  uint64_t renewals = 0;        // successful renewals
  uint64_t renew_failures = 0;  // renewals that failed (database errors; lost ones included)
  uint64_t losses = 0;          // times held() went false without Stop
  std::string last_error;
};

class LeaseKeeper {
 public:
  // InvalidArgument for bad options. `env` and `store` must outlive the keeper.
  static Result<std::unique_ptr<LeaseKeeper>> Create(Env& env, LeaseStore& store,
                                                     LeaseKeeperOptions options);
  ~LeaseKeeper();  // Stop()

  // Starts trying to acquire (at once, then every renew interval).
  void Start();
  // Stops renewing; waits for a store call that is running; releases the lease if held (a
  // blocking call on this thread), so a standby takes it at once. on_change is not called.
  // Idempotent.
  void Stop();

  // True while the lease is held by the local deadline.
  bool held() const;
  // The fencing token of the held lease; 0 when not held.
  int64_t token() const;
  // Milliseconds left before the local deadline; 0 when not held.
  int64_t remaining_ms() const;
  const std::string& name() const;
  const std::string& holder() const;
  LeaseKeeperStats stats() const;

  struct Core;

 private:
  explicit LeaseKeeper(std::shared_ptr<Core> core) : core_(std::move(core)) {}
  std::shared_ptr<Core> core_;
};

}  // namespace converge::lease
