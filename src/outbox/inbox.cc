// The inbox dedup table and the consumer that runs handlers exactly once per event.
#include "converge/inbox.h"

#include <pthread.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <thread>
#include <unordered_map>

#include "converge/retry.h"
#include "outbox/lane.h"
#include "outbox/outbox_row.h"
#include "outbox/wakeup.h"
#include "sql/sql_internal.h"

namespace converge {

// ---------------------------------------------------------------------------------------
// Inbox

namespace {

constexpr std::string_view kSqliteInboxSchema = R"sql(
CREATE TABLE IF NOT EXISTS converge_inbox (
  consumer     TEXT NOT NULL,
  event_id     TEXT NOT NULL,
  processed_at INTEGER NOT NULL,
  PRIMARY KEY (consumer, event_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS converge_inbox_age ON converge_inbox (consumer, processed_at);
)sql";

constexpr std::string_view kPostgresInboxSchema = R"sql(
BEGIN;
SELECT pg_advisory_xact_lock(1668706609, 1);
CREATE TABLE IF NOT EXISTS converge_inbox (
  consumer     text NOT NULL,
  event_id     text NOT NULL,
  processed_at bigint NOT NULL,
  PRIMARY KEY (consumer, event_id)
);
CREATE INDEX IF NOT EXISTS converge_inbox_age ON converge_inbox (consumer, processed_at);
COMMIT;
)sql";

}  // namespace

Inbox::Inbox(Env& env, InboxOptions options) : env_(env), options_(std::move(options)) {}

Status Inbox::CreateSchema(sql::Database& db) {
  CONVERGE_ASSIGN_OR_RETURN(bool exists, outbox_internal::TableExists(db, "converge_inbox"));
  if (exists) return Status::Ok();
  return db.ExecuteScript(db.engine() == sql::Engine::kSqlite ? kSqliteInboxSchema
                                                              : kPostgresInboxSchema);
}

Status Inbox::Validate(const InboxOptions& o) {
  if (o.consumer.empty() || o.consumer.size() > 200) {
    return InvalidArgumentError("inbox: consumer must be 1..200 bytes");
  }
  if (o.retention_ms < 1) return InvalidArgumentError("inbox: retention_ms must be > 0");
  if (o.retention_max_ids < 1) return InvalidArgumentError("inbox: retention_max_ids must be > 0");
  if (o.cleanup_batch_rows < 1 || o.cleanup_batch_rows > 1'000'000) {
    return InvalidArgumentError("inbox: cleanup_batch_rows must be 1..1000000");
  }
  if (o.cleanup_interval_ms < 1) {
    return InvalidArgumentError("inbox: cleanup_interval_ms must be > 0");
  }
  return Status::Ok();
}

Result<bool> Inbox::Record(sql::Transaction& tx, std::string_view event_id) {
  sql::Value params[] = {sql::Value::Text(options_.consumer), sql::Value::Text(event_id),
                         sql::Value::Int(env_.clock().NowWallMicros())};
  CONVERGE_ASSIGN_OR_RETURN(
      int64_t inserted, tx.Execute("INSERT INTO converge_inbox (consumer, event_id, processed_at) "
                                   "VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                                   params));
  if (inserted > 0) {
    int64_t expected = estimated_ids_.load(std::memory_order_relaxed);
    if (expected >= 0) estimated_ids_.fetch_add(1, std::memory_order_relaxed);
  }
  return inserted > 0;
}

namespace {

// "INSERT ... VALUES ($1, $3, $2), ... ON CONFLICT DO NOTHING<suffix>", indexed by the number
// of rows: powers of two up to kMaxInboxRowsPerStatement (at most 9 distinct statements).
constexpr size_t kMaxInboxRowsPerStatement = 256;
std::vector<std::string> InboxInsertStatements(std::string_view suffix) {
  std::vector<std::string> all(kMaxInboxRowsPerStatement + 1);
  for (size_t n = 1; n <= kMaxInboxRowsPerStatement; n *= 2) {
    std::string sql = "INSERT INTO converge_inbox (consumer, event_id, processed_at) VALUES ";
    for (size_t i = 0; i < n; ++i) {
      if (i > 0) sql += ',';
      sql += "($1, $";
      sql += std::to_string(i + 3);
      sql += ", $2)";
    }
    sql += " ON CONFLICT DO NOTHING";
    sql += suffix;
    all[n] = std::move(sql);
  }
  return all;
}

// The SQLite fast path of RecordBatch: no RETURNING.
const std::string& PlainInsertSql(size_t rows) {
  static const std::vector<std::string> statements = InboxInsertStatements("");
  return statements[rows];
}

}  // namespace

Status Inbox::RecordBatchExpectingNew(sql::Transaction& tx,
                                      std::span<const std::string_view> ids,
                                      std::vector<bool>* fresh) {
  if (tx.engine() != sql::Engine::kPostgres || ids.empty()) return RecordBatch(tx, ids, fresh);
  std::string array =
      sql::internal::PgTextArray(std::vector<std::string_view>(ids.begin(), ids.end()));
  sql::Value params[] = {sql::Value::Text(options_.consumer), sql::Value::Text(array),
                         sql::Value::Int(env_.clock().NowWallMicros())};
  // A duplicate violates the primary key: AlreadyExists, and the caller redoes the batch.
  CONVERGE_ASSIGN_OR_RETURN(
      int64_t inserted,
      tx.Execute("INSERT INTO converge_inbox (consumer, event_id, processed_at) "
                 "SELECT $1, unnest($2::text[]), $3",
                 params));
  if (inserted != static_cast<int64_t>(ids.size())) {
    return InternalError("inbox: inserted " + std::to_string(inserted) + " of " +
                         std::to_string(ids.size()) + " ids");
  }
  fresh->assign(ids.size(), true);
  if (estimated_ids_.load(std::memory_order_relaxed) >= 0) {
    estimated_ids_.fetch_add(inserted, std::memory_order_relaxed);
  }
  return Status::Ok();
}

Status Inbox::RecordBatch(sql::Transaction& tx, std::span<const std::string_view> ids,
                          std::vector<bool>* fresh) {
  fresh->assign(ids.size(), false);
  if (ids.empty()) return Status::Ok();
  constexpr size_t kMaxPerStatement = kMaxInboxRowsPerStatement;
  static const std::vector<std::string> statements =
      InboxInsertStatements(" RETURNING event_id");
  const int64_t now = env_.clock().NowWallMicros();
  std::unordered_map<std::string_view, size_t> index;
  int64_t inserted = 0;
  auto on_row = [&](const sql::Row& row) -> Status {
    auto it = index.find(row.Bytes(0));
    if (it == index.end()) return InternalError("inbox: RETURNING an unknown id");
    (*fresh)[it->second] = true;
    ++inserted;
    return Status::Ok();
  };
  if (tx.engine() == sql::Engine::kPostgres) {
    // One statement for the whole batch (one round trip).
    for (size_t i = 0; i < ids.size(); ++i) index.emplace(ids[i], i);
    std::string array =
        sql::internal::PgTextArray(std::vector<std::string_view>(ids.begin(), ids.end()));
    sql::Value params[] = {sql::Value::Text(options_.consumer), sql::Value::Text(array),
                           sql::Value::Int(now)};
    CONVERGE_RETURN_IF_ERROR(
        tx.Query("INSERT INTO converge_inbox (consumer, event_id, processed_at) "
                 "SELECT $1, unnest($2::text[]), $3 ON CONFLICT DO NOTHING RETURNING event_id",
                 params, on_row)
            .status());
    if (estimated_ids_.load(std::memory_order_relaxed) >= 0) {
      estimated_ids_.fetch_add(inserted, std::memory_order_relaxed);
    }
    return Status::Ok();
  }
  // SQLite. RETURNING makes SQLite collect the inserted rows in a temporary table and hand
  // each back, which costs about as much as the insert. Redeliveries are rare, so first insert
  // without it inside a savepoint: if every row went in, every id is new. Only if some id was
  // already there, roll the savepoint back and learn which ones with RETURNING.
  CONVERGE_RETURN_IF_ERROR(tx.Execute("SAVEPOINT converge_inbox_record").status());
  bool all_new = true;
  std::vector<sql::Value> params;
  for (size_t done = 0; done < ids.size() && all_new;) {
    size_t chunk = kMaxPerStatement;
    while (chunk > ids.size() - done) chunk /= 2;
    params.clear();
    params.push_back(sql::Value::Text(options_.consumer));
    params.push_back(sql::Value::Int(now));
    for (size_t i = 0; i < chunk; ++i) params.push_back(sql::Value::Text(ids[done + i]));
    CONVERGE_ASSIGN_OR_RETURN(int64_t changed, tx.Execute(PlainInsertSql(chunk), params));
    all_new = changed == static_cast<int64_t>(chunk);
    done += chunk;
  }
  if (all_new) {
    CONVERGE_RETURN_IF_ERROR(tx.Execute("RELEASE SAVEPOINT converge_inbox_record").status());
    fresh->assign(ids.size(), true);
    inserted = static_cast<int64_t>(ids.size());
  } else {
    CONVERGE_RETURN_IF_ERROR(tx.Execute("ROLLBACK TO SAVEPOINT converge_inbox_record").status());
    CONVERGE_RETURN_IF_ERROR(tx.Execute("RELEASE SAVEPOINT converge_inbox_record").status());
    size_t done = 0;
    while (done < ids.size()) {
      size_t chunk = kMaxPerStatement;
      while (chunk > ids.size() - done) chunk /= 2;
      params.clear();
      params.push_back(sql::Value::Text(options_.consumer));
      params.push_back(sql::Value::Int(now));
      index.clear();
      for (size_t i = 0; i < chunk; ++i) {
        params.push_back(sql::Value::Text(ids[done + i]));
        index.emplace(ids[done + i], done + i);
      }
      CONVERGE_RETURN_IF_ERROR(tx.Query(statements[chunk], params, on_row).status());
      done += chunk;
    }
  }
  if (estimated_ids_.load(std::memory_order_relaxed) >= 0) {
    estimated_ids_.fetch_add(inserted, std::memory_order_relaxed);
  }
  return Status::Ok();
}

Result<uint64_t> Inbox::Cleanup(sql::Database& db, uint64_t max_rows) {
  uint64_t deleted = 0;
  const int64_t batch = options_.cleanup_batch_rows;
  // Deletes up to `batch` of the oldest rows with processed_at < cutoff; returns how many.
  auto delete_older = [&](int64_t cutoff) -> Result<int64_t> {
    sql::Value params[] = {sql::Value::Text(options_.consumer), sql::Value::Int(cutoff),
                           sql::Value::Int(batch)};
    return db.Execute(
        "DELETE FROM converge_inbox WHERE consumer = $1 AND event_id IN "
        "(SELECT event_id FROM converge_inbox WHERE consumer = $1 AND processed_at < $2 "
        "ORDER BY processed_at LIMIT $3)",
        params);
  };
  // By age.
  const int64_t age_cutoff = env_.clock().NowWallMicros() - options_.retention_ms * 1000;
  while (deleted < max_rows) {
    CONVERGE_ASSIGN_OR_RETURN(int64_t n, delete_older(age_cutoff));
    deleted += static_cast<uint64_t>(n);
    if (n < batch) break;
  }
  // By count: counted once, then tracked by Record and the deletes here.
  if (estimated_ids_.load() < 0) {
    int64_t count = 0;
    sql::Value params[] = {sql::Value::Text(options_.consumer)};
    CONVERGE_RETURN_IF_ERROR(db.Query("SELECT count(*) FROM converge_inbox WHERE consumer = $1",
                                      params,
                                      [&](const sql::Row& row) -> Status {
                                        CONVERGE_ASSIGN_OR_RETURN(count, row.Int(0));
                                        return Status::Ok();
                                      })
                                 .status());
    estimated_ids_.store(count);
  } else {
    estimated_ids_.fetch_sub(static_cast<int64_t>(deleted));
  }
  const int64_t limit = static_cast<int64_t>(options_.retention_max_ids);
  if (estimated_ids_.load() > limit && deleted < max_rows) {
    // The processed_at of the limit-th newest row: everything strictly older goes.
    std::optional<int64_t> cutoff;
    sql::Value params[] = {sql::Value::Text(options_.consumer), sql::Value::Int(limit - 1)};
    CONVERGE_RETURN_IF_ERROR(db.Query("SELECT processed_at FROM converge_inbox WHERE consumer = $1 "
                                      "ORDER BY processed_at DESC LIMIT 1 OFFSET $2",
                                      params,
                                      [&](const sql::Row& row) -> Status {
                                        CONVERGE_ASSIGN_OR_RETURN(int64_t v, row.Int(0));
                                        cutoff = v;
                                        return Status::Ok();
                                      })
                                 .status());
    uint64_t by_count = 0;
    while (cutoff && deleted < max_rows) {
      CONVERGE_ASSIGN_OR_RETURN(int64_t n, delete_older(*cutoff));
      deleted += static_cast<uint64_t>(n);
      by_count += static_cast<uint64_t>(n);
      if (n < batch) break;
    }
    estimated_ids_.fetch_sub(static_cast<int64_t>(by_count));
    if (estimated_ids_.load() < 0) estimated_ids_.store(0);
  }
  return deleted;
}

// ---------------------------------------------------------------------------------------
// InboxConsumer

namespace {

using outbox_internal::Lane;
using outbox_internal::LaneSlot;
using outbox_internal::Waker;

uint64_t HashBytes(std::string_view s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

Status ValidateConsumerOptions(const InboxConsumerOptions& o) {
  if (o.topic.empty()) return InvalidArgumentError("inbox consumer: topic is empty");
  if (o.group.empty()) return InvalidArgumentError("inbox consumer: group is empty");
  if (o.member.empty()) return InvalidArgumentError("inbox consumer: member is empty");
  CONVERGE_RETURN_IF_ERROR(Inbox::Validate(o.inbox));
  if (o.fetch_max_events < 1 || o.fetch_max_events > 10'000) {
    return InvalidArgumentError("inbox consumer: fetch_max_events must be 1..10000");
  }
  if (o.fetch_max_bytes < 1) return InvalidArgumentError("inbox consumer: fetch_max_bytes");
  if (o.workers < 1 || o.workers > 64) {
    return InvalidArgumentError("inbox consumer: workers must be 1..64");
  }
  if (o.retry_base_delay_ms < 0 || o.retry_max_delay_ms < o.retry_base_delay_ms ||
      o.retry_multiplier < 1.0 || o.retry_multiplier > 100.0) {
    return InvalidArgumentError("inbox consumer: bad handler retry settings");
  }
  if (o.db_retry_base_delay_ms < 1 || o.db_retry_max_delay_ms < o.db_retry_base_delay_ms) {
    return InvalidArgumentError("inbox consumer: bad database retry settings");
  }
  if (o.idle_poll_ms < 1) return InvalidArgumentError("inbox consumer: idle_poll_ms must be > 0");
  if (o.postgres_connect_timeout_ms <= 0 || o.postgres_statement_timeout_ms < 0) {
    return InvalidArgumentError(
        "inbox consumer: postgres_connect_timeout_ms must be > 0 and "
        "postgres_statement_timeout_ms >= 0");
  }
  return Status::Ok();
}

// One delivery of the current batch and what became of it.
struct Item {
  enum class Outcome : uint8_t { kPending, kHandled, kDuplicate, kRetry, kPermanent };
  const Delivery* delivery = nullptr;
  std::optional<Event> event;
  Outcome outcome = Outcome::kPending;
  std::string reason;
};

// Marks a handler failure inside the optimistic (no savepoint) transaction.
constexpr std::string_view kHandlerFailedMarker = "converge-inbox: handler failed";

class InboxConsumerImpl final : public InboxConsumer {
 public:
  InboxConsumerImpl(Env& env, ConsumerGroups& groups, sql::DatabaseTarget target,
                    InboxHandler handler, InboxBatchHandler batch_handler,
                    InboxConsumerOptions options)
      : env_(env),
        groups_(groups),
        target_(std::move(target)),
        handler_(std::move(handler)),
        batch_handler_(std::move(batch_handler)),
        options_(std::move(options)),
        inbox_(env, options_.inbox),
        slot_(std::make_shared<LaneSlot>()),
        waker_(std::make_shared<Waker>([slot = slot_, this] { slot->Post([this] { OnWake(); }); })),
        workers_(options_.workers) {
    if (!options_.is_retryable) {
      options_.is_retryable = [policy = RetryPolicy{}](const Status& s) {
        return policy.IsRetryable(s);
      };
    }
  }

  ~InboxConsumerImpl() override {
    Stop();
    StopPool();
  }

  Status Start() override {
    std::lock_guard<std::mutex> lock(lifecycle_mu_);
    if (lane_ != nullptr) return FailedPreconditionError("inbox consumer: already started");
    stopping_ = false;
    lane_ = options_.steps_on_env_executor ? outbox_internal::NewExecutorLane(env_.executor())
                                           : outbox_internal::NewThreadLane("cv-inbox");
    slot_->Set(lane_);
    lane_->Post([this] { Resume(); });
    return Status::Ok();
  }

  void Stop() override {
    std::lock_guard<std::mutex> lock(lifecycle_mu_);
    if (lane_ != nullptr) {
      stopping_ = true;
      slot_->Set(nullptr);  // wake-ups and timers from now on are dropped
      lane_->Shutdown();    // waits for the running step
      lane_.reset();
    }
    std::lock_guard<std::mutex> step(step_mu_);
    if (waiting_) env_.executor().Cancel(timer_);
    waiting_ = false;
    pending_wake_ = false;
    watch_.reset();
    if (joined_ && dead_.ok()) {
      groups_.Leave(options_.topic, options_.group, options_.member).IgnoreError();
      joined_ = false;
    }
  }

  Result<size_t> RunOnce() override {
    std::lock_guard<std::mutex> lock(step_mu_);
    return Step();
  }

  InboxStats stats() const override {
    std::lock_guard<std::mutex> lock(stats_mu_);
    return stats_;
  }

 private:
  // ---- one batch ----

  Result<size_t> Step() {
    if (!dead_.ok()) return dead_;
    CONVERGE_RETURN_IF_ERROR(EnsureJoined());
    MaybeCleanup();
    if (items_.empty()) {
      CONVERGE_RETURN_IF_ERROR(FetchBatch());
      if (items_.empty()) return size_t{0};
    } else {
      // Retrying events held back by a database failure: stay a live member meanwhile.
      Result<Assignment> a = groups_.Heartbeat(options_.topic, options_.group, options_.member);
      if (!a.ok() && a.status().code() == StatusCode::kFailedPrecondition) {
        CONVERGE_RETURN_IF_ERROR(
            groups_.Join(options_.topic, options_.group, options_.member).status());
      }
    }
    Status processed = ProcessAll();
    if (!dead_.ok()) return dead_;
    if (!processed.ok()) {
      // Settle what is settled (other workers may have committed), keep the rest pending.
      Result<size_t> settled = Settle();
      (void)settled;
      if (!dead_.ok()) return dead_;
      std::lock_guard<std::mutex> lock(stats_mu_);
      ++stats_.db_failures;
      stats_.last_error = processed.ToString();
      return processed;
    }
    if (Fault("inbox.committed")) return dead_;
    CONVERGE_ASSIGN_OR_RETURN(size_t settled, Settle());
    if (Fault("inbox.acked")) return dead_;
    {
      std::lock_guard<std::mutex> lock(stats_mu_);
      ++stats_.batches;
    }
    return settled;
  }

  Status EnsureJoined() {
    if (joined_) return Status::Ok();
    if (options_.create_group) {
      Status s = groups_.CreateGroup(options_.topic, options_.group, options_.group_options);
      if (!s.ok() && s.code() != StatusCode::kAlreadyExists) return s;
    }
    CONVERGE_RETURN_IF_ERROR(
        groups_.Join(options_.topic, options_.group, options_.member).status());
    std::weak_ptr<Waker> weak = waker_;
    CONVERGE_ASSIGN_OR_RETURN(watch_, groups_.WatchReady(options_.topic, options_.group, [weak] {
      if (auto w = weak.lock()) w->Signal();
    }));
    joined_ = true;
    return Status::Ok();
  }

  Status FetchBatch() {
    Result<FetchResult> fetched =
        groups_.Fetch(options_.topic, options_.group, options_.member, options_.fetch_max_events,
                      options_.fetch_max_bytes);
    if (!fetched.ok()) {
      if (fetched.status().code() == StatusCode::kFailedPrecondition) joined_ = false;  // rejoin
      return fetched.status();
    }
    batch_ = std::move(fetched).value();
    items_.clear();
    items_.resize(batch_.deliveries.size());
    for (size_t i = 0; i < batch_.deliveries.size(); ++i) {
      Item& item = items_[i];
      item.delivery = &batch_.deliveries[i];
      Result<Event> event = DecodeBinary(item.delivery->value);
      if (!event.ok()) {
        item.outcome = Item::Outcome::kPermanent;
        item.reason = "undecodable event: " + event.status().ToString();
        continue;
      }
      item.event = std::move(event).value();
    }
    return Status::Ok();
  }

  // Runs every pending item through the workers; OK if all workers committed.
  Status ProcessAll() {
    const size_t w = workers_.size();
    for (Worker& worker : workers_) worker.items.clear();
    for (Item& item : items_) {
      if (item.outcome != Item::Outcome::kPending) continue;
      std::string_view key = item.delivery->key.empty() ? item.delivery->id : item.delivery->key;
      workers_[w == 1 ? 0 : HashBytes(key) % w].items.push_back(&item);
    }
    if (w == 1) return RunWorker(workers_[0]);
    if (options_.steps_on_env_executor) {
      // One thread (the simulator's): the workers' transactions run one after another.
      for (Worker& worker : workers_) worker.result = RunWorker(worker);
    } else {
      RunPool();
    }
    for (Worker& worker : workers_) {
      if (!worker.result.ok()) return worker.result;
    }
    return Status::Ok();
  }

  struct Worker {
    std::unique_ptr<sql::Database> db;
    std::vector<Item*> items;
    Status result;
    // The last batch had no redelivered id: expect the next one's to be new too.
    bool expect_new = true;
  };

  Status RunWorker(Worker& worker) {
    if (worker.items.empty()) return Status::Ok();
    if (worker.db == nullptr) {
      if (target_.engine == sql::Engine::kSqlite) {
        sql::SqliteOptions so;
        so.path = target_.location;
        so.synchronous = options_.sqlite_synchronous;
        so.busy_timeout_ms = options_.sqlite_busy_timeout_ms;
        CONVERGE_ASSIGN_OR_RETURN(worker.db, sql::Database::OpenSqlite(so));
      } else {
        sql::PostgresOptions po;
        po.conninfo = target_.location;
        po.connect_timeout_ms = options_.postgres_connect_timeout_ms;
        po.statement_timeout_ms = options_.postgres_statement_timeout_ms;
        CONVERGE_ASSIGN_OR_RETURN(worker.db, sql::Database::ConnectPostgres(po));
      }
      Status s = Inbox::CreateSchema(*worker.db);
      if (!s.ok()) {
        worker.db.reset();
        return s;
      }
    } else if (!worker.db->healthy()) {
      CONVERGE_RETURN_IF_ERROR(worker.db->Reconnect());
    }
    // An id seen twice in one sub-batch (the same event appended twice after the log's dedup
    // window) waits for the next round, where the inbox recognizes it.
    std::vector<Item*> run;
    std::vector<std::string_view> ids;
    run.reserve(worker.items.size());
    ids.reserve(worker.items.size());
    {
      std::vector<std::string_view> sorted;
      sorted.reserve(worker.items.size());
      for (Item* item : worker.items) sorted.push_back(item->delivery->id);
      std::sort(sorted.begin(), sorted.end());
      const bool distinct = std::adjacent_find(sorted.begin(), sorted.end()) == sorted.end();
      for (Item* item : worker.items) {
        if (!distinct && std::find(ids.begin(), ids.end(), item->delivery->id) != ids.end()) {
          continue;  // stays pending
        }
        run.push_back(item);
        ids.push_back(item->delivery->id);
      }
    }

    // Optimistic: the whole sub-batch in one transaction, one inbox statement, one handler call
    // (batch handler) or one call per event, no savepoints. The inbox statement expects every
    // id to be new (cheaper) unless this worker's last batch had a duplicate; when one turns
    // up, the transaction is redone with the statement that sorts new from known ids.
    const Item* failed_item = nullptr;
    Status handler_status;
    std::vector<bool> fresh;
    std::vector<Item*> fresh_items;
    bool expect_new = worker.expect_new;
    auto attempt = [&](sql::Transaction& tx) -> Status {
      CONVERGE_RETURN_IF_ERROR(expect_new ? inbox_.RecordBatchExpectingNew(tx, ids, &fresh)
                                          : inbox_.RecordBatch(tx, ids, &fresh));
      fresh_items.clear();
      for (size_t i = 0; i < run.size(); ++i) {
        if (fresh[i]) {
          fresh_items.push_back(run[i]);
        } else {
          run[i]->outcome = Item::Outcome::kDuplicate;
        }
      }
      Status h = CallHandlers(tx, fresh_items, &failed_item);
      if (!h.ok()) {
        handler_status = std::move(h);
        return AbortedError(kHandlerFailedMarker);
      }
      for (Item* item : fresh_items) item->outcome = Item::Outcome::kHandled;
      if (Fault("inbox.handled")) return dead_;
      return Status::Ok();
    };
    Status s = worker.db->Transact(attempt);
    if (!s.ok() && expect_new && s.code() == StatusCode::kAlreadyExists && handler_status.ok() &&
        dead_.ok() && worker.db->healthy()) {
      // A redelivered id: redo the batch, telling new ids from known ones.
      ResetTentative(worker);
      expect_new = false;
      s = worker.db->Transact(attempt);
    }
    if (s.ok()) {
      worker.expect_new = fresh_items.size() == run.size();
      return Status::Ok();
    }
    ResetTentative(worker);
    if (!dead_.ok()) return dead_;
    if (handler_status.ok() || !worker.db->healthy()) return s;  // a database failure
    // A handler failed: redo the events one at a time, each in a savepoint, so that only the
    // failing events' writes are rolled back. An event known to have failed is not run again.
    s = worker.db->Transact([&](sql::Transaction& tx) -> Status {
      for (Item* item_ptr : run) {
        Item& item = *item_ptr;
        if (&item == failed_item) {
          Classify(item, handler_status);
          continue;
        }
        CONVERGE_RETURN_IF_ERROR(tx.Execute("SAVEPOINT converge_inbox_event").status());
        CONVERGE_ASSIGN_OR_RETURN(bool is_new, inbox_.Record(tx, item.delivery->id));
        if (!is_new) {
          item.outcome = Item::Outcome::kDuplicate;
        } else {
          std::vector<Item*> one = {&item};
          const Item* ignored = nullptr;
          Status h = CallHandlers(tx, one, &ignored);
          if (h.ok()) {
            item.outcome = Item::Outcome::kHandled;
          } else {
            CONVERGE_RETURN_IF_ERROR(
                tx.Execute("ROLLBACK TO SAVEPOINT converge_inbox_event").status());
            Classify(item, h);
          }
        }
        CONVERGE_RETURN_IF_ERROR(tx.Execute("RELEASE SAVEPOINT converge_inbox_event").status());
      }
      if (Fault("inbox.handled")) return dead_;
      return Status::Ok();
    });
    if (!s.ok()) {
      ResetTentative(worker);
      if (!dead_.ok()) return dead_;
      return s;
    }
    return Status::Ok();
  }

  // Runs the handler on `items` (all new). With a per-event handler, `*failed` names the item
  // that failed.
  Status CallHandlers(sql::Transaction& tx, const std::vector<Item*>& items, const Item** failed) {
    if (items.empty()) return Status::Ok();
    std::vector<InboxMessage> messages;
    messages.reserve(items.size());
    for (const Item* item : items) {
      const Delivery& d = *item->delivery;
      std::string_view tp;
      if (auto t = item->event->traceparent()) tp = *t;
      messages.push_back(
          InboxMessage{*item->event, options_.topic, d.partition, d.offset, d.attempt, tp});
    }
    if (batch_handler_) return batch_handler_(tx, messages);
    for (size_t i = 0; i < messages.size(); ++i) {
      Status h = handler_(tx, messages[i]);
      if (!h.ok()) {
        *failed = items[i];
        return h;
      }
    }
    return Status::Ok();
  }

  void Classify(Item& item, const Status& s) {
    item.outcome = options_.is_retryable(s) ? Item::Outcome::kRetry : Item::Outcome::kPermanent;
    item.reason = s.ToString();
  }

  // After a rolled-back transaction, nothing it decided stands (except decode failures and
  // outcomes from a previous, committed round).
  static void ResetTentative(Worker& worker) {
    for (Item* item : worker.items) {
      item->outcome = Item::Outcome::kPending;
      item->reason.clear();
    }
  }

  // Acks, delays and dead-letters the settled items; keeps pending ones. Returns how many were
  // settled.
  Result<size_t> Settle() {
    std::vector<LeaseRef> acks;
    size_t handled = 0, duplicates = 0, retried = 0, dead = 0;
    Status first_error;
    std::vector<Item> keep;
    for (Item& item : items_) {
      const Delivery& d = *item.delivery;
      switch (item.outcome) {
        case Item::Outcome::kPending:
          keep.push_back(std::move(item));
          continue;
        case Item::Outcome::kHandled:
          acks.push_back(d.lease());
          ++handled;
          break;
        case Item::Outcome::kDuplicate:
          acks.push_back(d.lease());
          ++duplicates;
          break;
        case Item::Outcome::kRetry: {
          NackOptions nack;
          nack.delay_ms = RetryDelayMs(d.attempt);
          nack.reason = item.reason;
          Status s = groups_.Nack(options_.topic, options_.group, options_.member, d.lease(), nack);
          if (!s.ok() && first_error.ok() && s.code() != StatusCode::kFailedPrecondition) {
            first_error = s;
          }
          ++retried;
          break;
        }
        case Item::Outcome::kPermanent: {
          NackOptions nack;
          nack.permanent = true;
          nack.reason = item.reason;
          // If the dead-letter append fails the group keeps the event pending (its key
          // blocked) and retries the append itself: nothing is dropped.
          Status s = groups_.Nack(options_.topic, options_.group, options_.member, d.lease(), nack);
          if (!s.ok() && first_error.ok() && s.code() != StatusCode::kFailedPrecondition) {
            first_error = s;
          }
          ++dead;
          break;
        }
      }
    }
    if (!acks.empty()) {
      Result<AckBatchResult> r =
          groups_.AckBatch(options_.topic, options_.group, options_.member, acks);
      if (!r.ok() && first_error.ok()) first_error = r.status();
    }
    const size_t settled = items_.size() - keep.size();
    items_ = std::move(keep);
    {
      std::lock_guard<std::mutex> lock(stats_mu_);
      stats_.handled += handled;
      stats_.duplicates += duplicates;
      stats_.retried += retried;
      stats_.dead_lettered += dead;
      if (!first_error.ok()) stats_.last_error = first_error.ToString();
    }
    return settled;
  }

  int64_t RetryDelayMs(uint32_t attempt) {
    double cap = static_cast<double>(options_.retry_base_delay_ms);
    for (uint32_t i = 1; i < attempt && cap < options_.retry_max_delay_ms; ++i) {
      cap *= options_.retry_multiplier;
    }
    int64_t capped = std::min<int64_t>(static_cast<int64_t>(cap), options_.retry_max_delay_ms);
    return env_.random().UniformRange(0, std::max<int64_t>(capped, 0));
  }

  void MaybeCleanup() {
    const int64_t now = env_.clock().NowMonotonicNanos();
    if (now < next_cleanup_ns_ || workers_[0].db == nullptr) return;
    next_cleanup_ns_ = now + options_.inbox.cleanup_interval_ms * 1'000'000;
    Result<uint64_t> n =
        inbox_.Cleanup(*workers_[0].db, uint64_t{options_.inbox.cleanup_batch_rows} * 16);
    std::lock_guard<std::mutex> lock(stats_mu_);
    if (n.ok()) {
      stats_.cleaned += *n;
    } else {
      stats_.last_error = n.status().ToString();
    }
  }

  // Runs the fault hook; a non-OK answer kills the consumer. Workers may call it concurrently.
  bool Fault(std::string_view point) {
    if (!options_.fault_point) return false;
    std::lock_guard<std::mutex> lock(fault_mu_);
    Status s = options_.fault_point(point);
    if (s.ok()) return false;
    dead_ = s;
    return true;
  }

  // ---- worker pool (workers 1..W-1 on their own threads, worker 0 on the caller's) ----

  void RunPool() {
    EnsurePool();
    {
      std::lock_guard<std::mutex> lock(pool_mu_);
      ++pool_generation_;
      pool_remaining_ = workers_.size() - 1;
    }
    pool_cv_.notify_all();
    workers_[0].result = RunWorker(workers_[0]);
    std::unique_lock<std::mutex> lock(pool_mu_);
    pool_done_cv_.wait(lock, [&] { return pool_remaining_ == 0; });
  }

  void EnsurePool() {
    if (!pool_.empty()) return;
    for (size_t i = 1; i < workers_.size(); ++i) {
      pool_.emplace_back([this, i] {
        pthread_setname_np(pthread_self(), "cv-inbox-w");
        uint64_t seen = 0;
        for (;;) {
          {
            std::unique_lock<std::mutex> lock(pool_mu_);
            pool_cv_.wait(lock, [&] { return pool_stop_ || pool_generation_ != seen; });
            if (pool_stop_) return;
            seen = pool_generation_;
          }
          workers_[i].result = RunWorker(workers_[i]);
          {
            std::lock_guard<std::mutex> lock(pool_mu_);
            --pool_remaining_;
          }
          pool_done_cv_.notify_all();
        }
      });
    }
  }

  void StopPool() {
    {
      std::lock_guard<std::mutex> lock(pool_mu_);
      pool_stop_ = true;
    }
    pool_cv_.notify_all();
    for (auto& t : pool_) t.join();
    pool_.clear();
  }

  // ---- the consumer on its lane ----

  void Resume() {
    std::lock_guard<std::mutex> lock(step_mu_);
    Pump();
  }

  // Runs batches until the consumer waits, stops or dies (on the simulator's executor, one
  // batch per task, so that other components interleave).
  void Pump() {
    while (!stopping_ && dead_.ok()) {
      Result<size_t> n = Step();
      if (!dead_.ok()) return;
      if (!n.ok()) {
        // Database (or group) failure: back off with full jitter, ignoring wake-ups.
        int64_t cap = options_.db_retry_base_delay_ms;
        for (uint32_t i = 0; i < failures_ && cap < options_.db_retry_max_delay_ms; ++i) cap *= 2;
        cap = std::min(cap, options_.db_retry_max_delay_ms);
        ++failures_;
        {
          std::lock_guard<std::mutex> s(stats_mu_);
          stats_.last_error = n.status().ToString();
        }
        pending_wake_ = false;
        return BeginWait(env_.random().UniformRange(0, cap) * 1'000'000, /*wake_early=*/false);
      }
      failures_ = 0;
      if (*n == 0 && items_.empty()) {
        // Idle: wait for the group's ready signal, the next due delay, or the idle poll.
        if (pending_wake_) {
          pending_wake_ = false;  // something became ready while the batch ran: look again
        } else {
          int64_t wait_ns = options_.idle_poll_ms * 1'000'000;
          Result<std::optional<int64_t>> due =
              groups_.NextDueMonotonicNanos(options_.topic, options_.group);
          if (due.ok() && due->has_value()) {
            // At least a millisecond: a deadline that is due but produced nothing to fetch
            // (the group applies it on its next tick) must not turn into a busy loop.
            wait_ns = std::max<int64_t>(std::min(wait_ns, **due - env_.clock().NowMonotonicNanos()),
                                        1'000'000);
          }
          return BeginWait(wait_ns, /*wake_early=*/true);
        }
      }
      if (options_.steps_on_env_executor) {
        slot_->Post([this] { Resume(); });
        return;
      }
    }
  }

  void BeginWait(int64_t ns, bool wake_early) {
    waiting_ = true;
    wait_wake_early_ = wake_early;
    wait_until_ns_ = env_.clock().NowMonotonicNanos() + ns;
    ++wait_generation_;
    ArmTimer(ns);
  }

  void ArmTimer(int64_t delay_ns) {
    timer_ = env_.executor().Schedule(delay_ns, [slot = slot_, this, gen = wait_generation_] {
      slot->Post([this, gen] { OnTimer(gen); });
    });
  }

  void EndWait() {
    waiting_ = false;
    env_.executor().Cancel(timer_);
    Pump();
  }

  void OnTimer(uint64_t generation) {
    std::lock_guard<std::mutex> lock(step_mu_);
    if (!waiting_ || generation != wait_generation_ || stopping_) return;
    const int64_t remaining = wait_until_ns_ - env_.clock().NowMonotonicNanos();
    if (remaining > 0) return ArmTimer(remaining);  // fired early: wait for the rest
    EndWait();
  }

  void OnWake() {
    std::lock_guard<std::mutex> lock(step_mu_);
    if (stopping_) return;
    if (!waiting_) {
      pending_wake_ = true;  // between steps: the next idle wait ends at once
      return;
    }
    if (!wait_wake_early_) return;  // a backoff runs to its end
    EndWait();
  }

  Env& env_;
  ConsumerGroups& groups_;
  sql::DatabaseTarget target_;
  InboxHandler handler_;  // one of the two is set
  InboxBatchHandler batch_handler_;
  InboxConsumerOptions options_;
  Inbox inbox_;
  std::shared_ptr<LaneSlot> slot_;  // shared with the waker and timers
  std::shared_ptr<Waker> waker_;

  std::mutex lifecycle_mu_;
  std::shared_ptr<Lane> lane_;  // while started; guarded by lifecycle_mu_
  std::mutex step_mu_;          // one batch at a time (lane or RunOnce); guards the wait state
  std::mutex fault_mu_;
  std::atomic<bool> stopping_{false};
  // The wait in progress (lane only).
  bool waiting_ = false;
  bool wait_wake_early_ = false;
  bool pending_wake_ = false;  // a ready signal arrived between steps
  int64_t wait_until_ns_ = 0;
  uint64_t wait_generation_ = 0;
  TimerId timer_ = 0;
  uint32_t failures_ = 0;  // consecutive failed batches
  Status dead_;  // set (under fault_mu_) when a fault point fired; read after workers joined
  bool joined_ = false;
  std::unique_ptr<ConsumerGroups::ReadyWatch> watch_;
  int64_t next_cleanup_ns_ = 0;

  FetchResult batch_;
  std::vector<Item> items_;  // the batch's unsettled deliveries
  std::vector<Worker> workers_;

  std::mutex pool_mu_;
  std::condition_variable pool_cv_;
  std::condition_variable pool_done_cv_;
  std::vector<std::thread> pool_;
  uint64_t pool_generation_ = 0;
  size_t pool_remaining_ = 0;
  bool pool_stop_ = false;

  mutable std::mutex stats_mu_;
  InboxStats stats_;
};

}  // namespace

namespace {

Result<std::unique_ptr<InboxConsumer>> CreateConsumer(Env& env, ConsumerGroups& groups,
                                                      const sql::DatabaseTarget& database,
                                                      InboxHandler handler,
                                                      InboxBatchHandler batch_handler,
                                                      InboxConsumerOptions options) {
  if (options.inbox.consumer.empty()) options.inbox.consumer = options.group;
  CONVERGE_RETURN_IF_ERROR(ValidateConsumerOptions(options));
  if (!handler && !batch_handler) return InvalidArgumentError("inbox consumer: no handler");
  if (database.location.empty()) return InvalidArgumentError("inbox consumer: no database");
  return std::unique_ptr<InboxConsumer>(std::make_unique<InboxConsumerImpl>(
      env, groups, database, std::move(handler), std::move(batch_handler), std::move(options)));
}

}  // namespace

Result<std::unique_ptr<InboxConsumer>> InboxConsumer::Create(Env& env, ConsumerGroups& groups,
                                                             const sql::DatabaseTarget& database,
                                                             InboxHandler handler,
                                                             InboxConsumerOptions options) {
  return CreateConsumer(env, groups, database, std::move(handler), nullptr, std::move(options));
}

Result<std::unique_ptr<InboxConsumer>> InboxConsumer::Create(Env& env, ConsumerGroups& groups,
                                                             const sql::DatabaseTarget& database,
                                                             InboxBatchHandler handler,
                                                             InboxConsumerOptions options) {
  return CreateConsumer(env, groups, database, nullptr, std::move(handler), std::move(options));
}

}  // namespace converge
