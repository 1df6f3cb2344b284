// PostgresStore: converge::Store over PostgreSQL tables (docs/formats/store-postgres.md).
//
// Why one counter row: a transaction's commit sequence number must be its place in commit
// order, or a feed reader tailing "seq > cursor" skips a transaction that took a lower number
// but committed after a higher one was read. Every writing transaction first locks the counter
// row (SELECT ... FOR UPDATE) and writes seq + 1 back just before COMMIT, so the next writer
// gets its number only after this one committed or rolled back: numbers follow commit order,
// a snapshot that sees number n sees every committed number below n, and the checks of a
// transaction run against the state every earlier one left (serializable, as the embedded
// store). The price is one commit at a time across all processes (see docs/scaling.md).
#include "store/postgres_store.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <utility>
#include <vector>

#include "converge/sql.h"
#include "store/codec.h"
#include "store/feed.h"
#include "store/format.h"
#include "store/json_util.h"
#include "store/rules.h"

namespace converge {
namespace store_internal {
namespace {

using sql::Row;
using sql::Transaction;
using sql::Value;

constexpr int kFormatVersion = 1;

bool ValidPrefix(std::string_view p) {
  if (p.empty() || p.size() > 40) return false;
  if (!(p[0] == '_' || (p[0] >= 'a' && p[0] <= 'z'))) return false;
  for (char c : p) {
    if (!(c == '_' || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'))) return false;
  }
  return true;
}

// Per-transaction view of a collection.
struct TxnCollection {
  CollectionConfig config;
  int64_t docs_delta = 0;
  int64_t bytes_delta = 0;
};

// A planned change of one op.
struct Planned {
  OpKind kind = OpKind::kPut;
  const WriteOp* op = nullptr;
  std::string value;  // kPut: what is stored
  int64_t expires_at_ms = 0;
};

class PostgresStore final : public Store {
 public:
  PostgresStore(Env& env, StoreOptions options, PostgresStoreOptions pg)
      : env_(env),
        opt_(std::move(options)),
        pg_(std::move(pg)),
        timer_(std::make_shared<TimerState>()) {}

  ~PostgresStore() override {
    {
      std::lock_guard<std::mutex> g(timer_->mu);
      timer_->store = nullptr;
      if (timer_->id != 0) env_.executor().Cancel(timer_->id);
    }
    // Background tasks run before the store is destroyed (StoreOptions::background); wait
    // for those that started.
    {
      std::unique_lock<std::mutex> l(mu_);
      cv_.wait(l, [&] { return tasks_running_ == 0; });
    }
    // Graceful close: one more try to publish what is committed (a restart re-publishes from
    // the topic's last event anyway).
    if (opt_.feed_log != nullptr) TailFeed().IgnoreError();
  }

  Status Init() {
    CONVERGE_RETURN_IF_ERROR(CreateTables());
    if (opt_.feed_log != nullptr) {
      CONVERGE_ASSIGN_OR_RETURN(feed_cursor_, FeedCursorFromLog(opt_));
      feed_published_.store(feed_cursor_);
      // Publish what the topic misses now (what fails is retried by every later tail).
      TailFeed().IgnoreError();
    }
    std::lock_guard<std::mutex> g(timer_->mu);
    timer_->store = this;
    ScheduleTimerLocked();
    return Status::Ok();
  }

  // ---- collections ----
  Status CreateCollection(const Caller& caller, const std::string& name,
                          const CollectionConfig& config) override {
    return CollectionChange(caller, name, &config, /*create=*/true);
  }
  Status UpdateCollection(const Caller& caller, const std::string& name,
                          const CollectionConfig& config) override {
    return CollectionChange(caller, name, &config, /*create=*/false);
  }
  Status DeleteCollection(const Caller& caller, const std::string& name) override {
    return CollectionChange(caller, name, nullptr, /*create=*/false);
  }

  Result<CollectionInfo> DescribeCollection(const std::string& name) override {
    CONVERGE_ASSIGN_OR_RETURN(Conn c, Acquire());
    CollectionInfo info;
    bool found = false;
    Status decoded = Status::Ok();
    const Value params[] = {Value::Text(name)};
    Result<int64_t> q =
        c->Query("SELECT config, documents, bytes FROM " + T("collections") + " WHERE name = $1",
                 params, [&](const Row& row) -> Status {
                   found = true;
                   decoded = DecodeConfigColumn(row.Bytes(0), &info.config);
                   CONVERGE_ASSIGN_OR_RETURN(int64_t d, row.Int(1));
                   CONVERGE_ASSIGN_OR_RETURN(int64_t b, row.Int(2));
                   info.documents = static_cast<uint64_t>(d);
                   info.bytes = static_cast<uint64_t>(b);
                   return Status::Ok();
                 });
    if (!q.ok()) return q.status();
    CONVERGE_RETURN_IF_ERROR(decoded);
    if (!found) return NotFoundError("collection '" + name + "' does not exist");
    info.name = name;
    std::lock_guard<std::mutex> g(mu_);
    info.writes = counts_[name];
    return info;
  }

  Status CheckWriteAccess(const Caller& caller, const std::string& collection,
                          bool administer) override {
    CONVERGE_ASSIGN_OR_RETURN(Conn c, Acquire());
    std::optional<CollectionConfig> cfg;
    CONVERGE_RETURN_IF_ERROR(ReadConfig(*c, collection, &cfg));
    if (!cfg) return NotFoundError("collection '" + collection + "' does not exist");
    if (administer) {
      if (CanAdminister(caller, *cfg)) return Status::Ok();
      return PermissionDeniedError("only the owner '" + cfg->owner +
                                   "' may change or delete collection '" + collection + "'");
    }
    if (CanWrite(caller, *cfg)) return Status::Ok();
    Status denied = WriteDenied(caller, collection, *cfg);
    Count(collection, denied.code());
    return denied;
  }

  std::vector<std::string> ListCollections() override {
    std::vector<std::string> names;
    Result<Conn> c = Acquire();
    if (!c.ok()) return names;
    (*c)->Query("SELECT name FROM " + T("collections") + " ORDER BY name", {},
                [&](const Row& row) -> Status {
                  names.emplace_back(row.Bytes(0));
                  return Status::Ok();
                })
        .status()
        .IgnoreError();
    return names;
  }

  // ---- documents ----
  Result<Document> Get(const std::string& collection, const std::string& key) override {
    CONVERGE_RETURN_IF_ERROR(ValidateKey(key, opt_.max_key_bytes));
    const int64_t now = NowMs();
    CONVERGE_ASSIGN_OR_RETURN(Conn c, Acquire());
    bool coll_found = false;
    bool doc_found = false;
    Document doc;
    const Value params[] = {Value::Text(collection), Value::Text(key)};
    Result<int64_t> q =
        c->Query("SELECT d.value, d.version, d.expires_at_ms, d.key IS NOT NULL FROM " +
                     T("collections") + " c LEFT JOIN " + T("documents") +
                     " d ON d.collection = c.name AND d.key = $2 WHERE c.name = $1",
                 params, [&](const Row& row) -> Status {
                   coll_found = true;
                   if (row.IsNull(1)) return Status::Ok();
                   doc_found = true;
                   doc.value.assign(row.Bytes(0));
                   CONVERGE_ASSIGN_OR_RETURN(int64_t v, row.Int(1));
                   CONVERGE_ASSIGN_OR_RETURN(int64_t e, row.Int(2));
                   doc.version = static_cast<uint64_t>(v);
                   doc.expires_at_ms = e;
                   return Status::Ok();
                 });
    if (!q.ok()) return q.status();
    if (!coll_found) return NotFoundError("collection '" + collection + "' does not exist");
    if (!doc_found || (doc.expires_at_ms != 0 && doc.expires_at_ms <= now)) {
      return NotFoundError("document '" + key + "' does not exist in collection '" + collection +
                           "'");
    }
    doc.key = key;
    doc.etag = ETagForVersion(doc.version);
    return doc;
  }

  Result<Document> TryGet(const std::string&, const std::string&) override {
    return UnavailableError("the PostgreSQL store answers reads through Get or GetAsync");
  }

  void GetAsync(const std::string& collection, const std::string& key, GetCallback done) override {
    RunTask([this, collection, key, done = std::move(done)]() { done(Get(collection, key)); });
  }

  Result<ListResult> List(const std::string& collection, const ListOptions& options) override {
    CONVERGE_RETURN_IF_ERROR(ValidateListOptions(opt_, options));
    const int64_t now = NowMs();
    const std::string& from = std::max(options.start_key, options.prefix);
    const bool after_token = !options.page_token.empty() && options.page_token >= from;
    const std::string& lower = after_token ? options.page_token : from;

    CONVERGE_ASSIGN_OR_RETURN(Conn c, Acquire());
    ListResult out;
    bool coll_found = false;
    // One statement: one snapshot for the page. The collection row comes first (key NULL).
    std::string q = "SELECT NULL, NULL, NULL, NULL FROM " + T("collections") +
                    " WHERE name = $1 UNION ALL (SELECT key, value, version, expires_at_ms FROM " +
                    T("documents") + " WHERE collection = $1 AND key " +
                    (after_token ? ">" : ">=") +
                    " $2 AND (expires_at_ms = 0 OR expires_at_ms > $3) AND starts_with(key, $4)";
    if (!options.end_key.empty()) q += " AND key < $6";
    q += " ORDER BY key LIMIT $5)";
    std::vector<Value> params = {Value::Text(collection), Value::Text(lower), Value::Int(now),
                                 Value::Text(options.prefix),
                                 Value::Int(static_cast<int64_t>(options.limit) + 1)};
    if (!options.end_key.empty()) params.push_back(Value::Text(options.end_key));
    uint64_t bytes = 0;
    bool full = false;
    Result<int64_t> r = c->Query(q, params, [&](const Row& row) -> Status {
      if (row.IsNull(0)) {
        coll_found = true;
        return Status::Ok();
      }
      if (full) return Status::Ok();
      if (out.documents.size() == options.limit ||
          (!out.documents.empty() && bytes >= opt_.list_max_bytes)) {
        out.next_page_token = out.documents.back().key;
        full = true;
        return Status::Ok();
      }
      Document d;
      d.key.assign(row.Bytes(0));
      d.value.assign(row.Bytes(1));
      CONVERGE_ASSIGN_OR_RETURN(int64_t v, row.Int(2));
      CONVERGE_ASSIGN_OR_RETURN(int64_t e, row.Int(3));
      d.version = static_cast<uint64_t>(v);
      d.etag = ETagForVersion(d.version);
      d.expires_at_ms = e;
      bytes += d.value.size();
      out.documents.push_back(std::move(d));
      return Status::Ok();
    });
    if (!r.ok()) return r.status();
    if (!coll_found) return NotFoundError("collection '" + collection + "' does not exist");
    return out;
  }

  Result<WriteResult> Put(const Caller& caller, const std::string& collection,
                          const std::string& key, std::string_view value,
                          const Precondition& precondition, int64_t ttl_ms) override {
    const WriteOp op = WriteOp::Put(collection, key, std::string(value), precondition, ttl_ms);
    CONVERGE_ASSIGN_OR_RETURN(CommitResult r,
                              CommitOps(caller, std::span<const WriteOp>(&op, 1), false));
    return std::move(r.results[0]);
  }

  Result<WriteResult> Delete(const Caller& caller, const std::string& collection,
                             const std::string& key, const Precondition& precondition) override {
    const WriteOp op = WriteOp::Delete(collection, key, precondition);
    CONVERGE_ASSIGN_OR_RETURN(CommitResult r,
                              CommitOps(caller, std::span<const WriteOp>(&op, 1), false));
    return std::move(r.results[0]);
  }

  Result<CommitResult> Commit(const Caller& caller, std::span<const WriteOp> ops) override {
    return CommitOps(caller, ops, ops.size() > 1);
  }

  void CommitAsync(const Caller& caller, std::vector<WriteOp> ops, CommitCallback done) override {
    // Refused on the calling thread when the ops themselves are malformed.
    if (Result<std::vector<CheckedOp>> checked = ValidateWriteOps(opt_, ops, ops.size() > 1);
        !checked.ok()) {
      return done(checked.status());
    }
    RunTask([this, caller, ops = std::move(ops), done = std::move(done)]() {
      done(CommitOps(caller, ops, ops.size() > 1));
    });
  }

  // ---- maintenance ----
  Result<size_t> ExpireDue() override;
  Status Checkpoint() override { return Status::Ok(); }
  Status Sync() override { return Status::Ok(); }
  Status FlushFeed() override {
    if (opt_.feed_log == nullptr) return Status::Ok();
    return TailFeed();
  }
  StoreStats Stats() override;
  Status Health() override;

 private:
  // A pooled connection, returned on destruction.
  class Conn {
   public:
    Conn(PostgresStore* store, std::unique_ptr<sql::Database> db)
        : store_(store), db_(std::move(db)) {}
    Conn(Conn&& o) noexcept : store_(o.store_), db_(std::move(o.db_)) {}
    Conn& operator=(Conn&&) = delete;
    ~Conn() {
      if (db_ != nullptr) store_->Release(std::move(db_));
    }
    sql::Database* operator->() { return db_.get(); }
    sql::Database& operator*() { return *db_; }

   private:
    PostgresStore* store_;
    std::unique_ptr<sql::Database> db_;
  };

  Result<Conn> Acquire() {
    {
      std::unique_lock<std::mutex> l(pool_mu_);
      pool_cv_.wait(l, [&] { return !idle_.empty() || open_ < pg_.max_connections; });
      if (!idle_.empty()) {
        std::unique_ptr<sql::Database> db = std::move(idle_.back());
        idle_.pop_back();
        return Conn(this, std::move(db));
      }
      ++open_;
    }
    sql::PostgresOptions o;
    o.conninfo = pg_.conninfo;
    o.connect_timeout_ms = pg_.connect_timeout_ms;
    o.statement_timeout_ms = pg_.statement_timeout_ms;
    Result<std::unique_ptr<sql::Database>> db = sql::Database::ConnectPostgres(o);
    if (!db.ok()) {
      std::lock_guard<std::mutex> g(pool_mu_);
      --open_;
      pool_cv_.notify_one();
      return db.status().WithContext("store: connecting to PostgreSQL");
    }
    return Conn(this, std::move(*db));
  }

  void Release(std::unique_ptr<sql::Database> db) {
    std::lock_guard<std::mutex> g(pool_mu_);
    idle_.push_back(std::move(db));
    pool_cv_.notify_one();
  }

  std::string T(std::string_view table) const {
    return pg_.table_prefix + "_" + std::string(table);
  }
  int64_t NowMs() { return env_.clock().NowWallNanos() / 1'000'000; }

  void Count(const std::string& collection, StatusCode code) {
    std::lock_guard<std::mutex> g(mu_);
    CountRefusal(code, &counts_[collection]);
  }

  static Status DecodeConfigColumn(std::string_view bytes, CollectionConfig* config) {
    Reader r(bytes);
    if (!DecodeConfig(&r, config) || !r.done()) {
      return DataLossError("store: a collection's config in PostgreSQL is malformed");
    }
    return Status::Ok();
  }

  // The collection's config (nullopt: no such collection), on any connection or transaction.
  template <typename Q>
  Status ReadConfig(Q& q, const std::string& name, std::optional<CollectionConfig>* out) {
    Status decoded = Status::Ok();
    const Value params[] = {Value::Text(name)};
    Result<int64_t> r = q.Query("SELECT config FROM " + T("collections") + " WHERE name = $1",
                                params, [&](const Row& row) -> Status {
                                  out->emplace();
                                  decoded = DecodeConfigColumn(row.Bytes(0), &**out);
                                  return Status::Ok();
                                });
    if (!r.ok()) return r.status();
    return decoded;
  }

  // Locks the counter row: every writer serializes here (see the file comment).
  struct Meta {
    uint64_t seq = 0;
    uint64_t bytes = 0;
  };
  Result<Meta> LockMeta(Transaction& tx) {
    Meta m;
    Result<int64_t> r = tx.Query("SELECT seq, bytes FROM " + T("meta") + " WHERE id = 1 FOR UPDATE",
                                 {}, [&](const Row& row) -> Status {
                                   CONVERGE_ASSIGN_OR_RETURN(int64_t s, row.Int(0));
                                   CONVERGE_ASSIGN_OR_RETURN(int64_t b, row.Int(1));
                                   m.seq = static_cast<uint64_t>(s);
                                   m.bytes = static_cast<uint64_t>(b);
                                   return Status::Ok();
                                 });
    if (!r.ok()) return r.status();
    if (*r != 1) return DataLossError("store: the counter row of " + T("meta") + " is missing");
    return m;
  }

  // Writes the new counter value and totals, then runs the test hook: the last statements
  // before COMMIT.
  Status BumpMeta(Transaction& tx, uint64_t seq, int64_t docs_delta, int64_t bytes_delta) {
    const Value p[] = {Value::Int(static_cast<int64_t>(seq)), Value::Int(docs_delta),
                       Value::Int(bytes_delta)};
    CONVERGE_RETURN_IF_ERROR(tx.Execute("UPDATE " + T("meta") +
                                            " SET seq = $1, documents = documents + $2, bytes = "
                                            "bytes + $3 WHERE id = 1",
                                        p)
                                 .status());
    if (pg_.before_commit_for_testing) pg_.before_commit_for_testing(seq);
    return Status::Ok();
  }

  Status CreateTables();
  Status CollectionChange(const Caller& caller, const std::string& name,
                          const CollectionConfig* config, bool create);
  Result<CommitResult> CommitOps(const Caller& caller, std::span<const WriteOp> ops, bool indexed);
  Status ApplyTxn(Transaction& tx, const Caller& caller, std::span<const WriteOp> ops,
                  const std::vector<CheckedOp>& checked, bool indexed, CommitResult* result,
                  std::vector<std::pair<std::string, StatusCode>>* refused, uint64_t* new_seq);
  // Publishes every committed change after feed_cursor_ (one caller at a time).
  Status TailFeed();
  // Runs `task` on StoreOptions::background (or here without one), counted so that the
  // destructor can wait for it.
  void RunTask(std::function<void()> task) {
    if (!opt_.background) return task();
    {
      std::lock_guard<std::mutex> g(mu_);
      ++tasks_running_;
    }
    opt_.background([this, task = std::move(task)]() {
      task();
      std::lock_guard<std::mutex> g(mu_);
      --tasks_running_;
      cv_.notify_all();
    });
  }
  // Asks for a feed tail soon (coalesced: at most one queued or running, plus one more pass).
  // After a commit the tail runs on StoreOptions::background; the timer runs it on its own
  // thread (`here`), because background work may no longer run once its executor is being
  // shut down, while the timer is cancelled by the destructor. Returns the status of the pass
  // run here (OK when the pass is left to another thread).
  Status KickFeed(bool here = false) {
    if (opt_.feed_log == nullptr) return Status::Ok();
    {
      std::lock_guard<std::mutex> g(mu_);
      if (feed_task_) {
        feed_again_ = true;
        return Status::Ok();
      }
      feed_task_ = true;
    }
    auto pass = [this]() {
      while (true) {
        Status s = TailFeed();  // a failure is retried by the next kick or tick
        std::lock_guard<std::mutex> g(mu_);
        if (!feed_again_) {
          feed_task_ = false;
          return s;
        }
        feed_again_ = false;
      }
    };
    if (here) return pass();
    RunTask([pass]() { pass().IgnoreError(); });
    return Status::Ok();
  }

  // The periodic timer: feed tail and TTL sweep. Requires timer_->mu.
  void ScheduleTimerLocked() {
    int64_t period_ms = opt_.feed_log != nullptr ? pg_.feed_poll_interval_ms : 0;
    if (opt_.ttl_sweep_interval_ms > 0) {
      period_ms = period_ms > 0 ? std::min(period_ms, opt_.ttl_sweep_interval_ms)
                                : opt_.ttl_sweep_interval_ms;
    }
    if (period_ms <= 0) return;
    std::shared_ptr<TimerState> t = timer_;
    t->id = env_.executor().Schedule(period_ms * 1'000'000, [t]() {
      std::lock_guard<std::mutex> g(t->mu);
      if (t->store == nullptr) return;
      t->store->OnTimer();
      t->store->ScheduleTimerLocked();
    });
  }
  // Runs on the Env's executor thread: while PostgreSQL does not answer, ticks are skipped
  // for a second after each failure, so that connect attempts do not hold that thread at
  // every tick.
  void OnTimer() {
    const int64_t now = env_.clock().NowMonotonicNanos() / 1'000'000;
    if (now < timer_backoff_until_ms_) return;
    Status s = KickFeed(/*here=*/true);
    if (s.ok() && opt_.ttl_sweep_interval_ms > 0 &&
        now - last_sweep_ms_ >= opt_.ttl_sweep_interval_ms) {
      last_sweep_ms_ = now;
      s = ExpireDue().status();  // the next sweep tries again
    }
    if (s.code() == StatusCode::kUnavailable || s.code() == StatusCode::kDeadlineExceeded) {
      timer_backoff_until_ms_ = now + 1000;
    }
  }

  Env& env_;
  const StoreOptions opt_;
  const PostgresStoreOptions pg_;

  std::mutex pool_mu_;
  std::condition_variable pool_cv_;
  std::vector<std::unique_ptr<sql::Database>> idle_;
  size_t open_ = 0;

  std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::string, WriteCounts, std::less<>> counts_;
  int tasks_running_ = 0;
  bool feed_task_ = false;
  bool feed_again_ = false;
  uint64_t commits_ = 0;
  uint64_t last_seq_seen_ = 0;
  StoreStats last_stats_;
  // Health, cached.
  int64_t health_checked_ms_ = -1;
  Status health_;

  // The change feed: one tail at a time.
  std::mutex feed_mu_;
  uint64_t feed_cursor_ = 0;  // every change <= this is in the feed topic (guarded by feed_mu_)
  std::atomic<uint64_t> feed_published_{0};

  struct TimerState {
    std::mutex mu;
    PostgresStore* store = nullptr;
    TimerId id = 0;
  };
  std::shared_ptr<TimerState> timer_;
  int64_t last_sweep_ms_ = 0;           // guarded by timer_->mu
  int64_t timer_backoff_until_ms_ = 0;  // guarded by timer_->mu
};

// ---------------------------------------------------------------------------------------
// Schema

Status PostgresStore::CreateTables() {
  CONVERGE_ASSIGN_OR_RETURN(Conn c, Acquire());
  const std::string p = pg_.table_prefix;
  const std::vector<std::string> ddl = {
      // One row: the commit counter (locked by every writer) and the store's totals.
      "CREATE TABLE IF NOT EXISTS " + p +
          "_meta (id integer PRIMARY KEY CHECK (id = 1), seq bigint NOT NULL, documents bigint "
          "NOT NULL, bytes bigint NOT NULL, format integer NOT NULL)",
      "INSERT INTO " + p + "_meta VALUES (1, 0, 0, 0, " + std::to_string(kFormatVersion) +
          ") ON CONFLICT (id) DO NOTHING",
      "CREATE TABLE IF NOT EXISTS " + p +
          "_collections (name text COLLATE \"C\" PRIMARY KEY, config bytea NOT NULL, "
          "created_seq bigint NOT NULL, documents bigint NOT NULL, bytes bigint NOT NULL)",
      "CREATE TABLE IF NOT EXISTS " + p +
          "_documents (collection text COLLATE \"C\" NOT NULL, key text COLLATE \"C\" NOT NULL, "
          "value bytea NOT NULL, version bigint NOT NULL, expires_at_ms bigint NOT NULL, "
          "PRIMARY KEY (collection, key))",
      "CREATE INDEX IF NOT EXISTS " + p + "_documents_expiry ON " + p +
          "_documents (expires_at_ms) WHERE expires_at_ms <> 0",
      "CREATE TABLE IF NOT EXISTS " + p +
          "_changes (seq bigint NOT NULL, idx integer NOT NULL, wall_ms bigint NOT NULL, kind "
          "smallint NOT NULL, collection text NOT NULL, key text NOT NULL, value bytea, PRIMARY "
          "KEY (seq, idx))",
  };
  Status s = c->Transact([&](Transaction& tx) -> Status {
    // Several processes may start at once: CREATE ... IF NOT EXISTS is not safe concurrently.
    const std::string lock_name = "converge-store:" + p;
    const Value key[] = {Value::Text(lock_name)};
    CONVERGE_RETURN_IF_ERROR(
        tx.Query("SELECT pg_advisory_xact_lock(hashtext($1))", key, [](const Row&) {
            return Status::Ok();
          }).status());
    for (const std::string& stmt : ddl) CONVERGE_RETURN_IF_ERROR(tx.Execute(stmt).status());
    int64_t format = 0;
    CONVERGE_RETURN_IF_ERROR(tx.Query("SELECT format FROM " + p + "_meta WHERE id = 1", {},
                                      [&](const Row& row) -> Status {
                                        CONVERGE_ASSIGN_OR_RETURN(format, row.Int(0));
                                        return Status::Ok();
                                      })
                                 .status());
    if (format != kFormatVersion) {
      return FailedPreconditionError("store tables " + p + "_* have format " +
                                     std::to_string(format) + ", this build reads " +
                                     std::to_string(kFormatVersion));
    }
    return Status::Ok();
  });
  return s.WithContext("store: creating the PostgreSQL tables");
}

// ---------------------------------------------------------------------------------------
// Collections

Status PostgresStore::CollectionChange(const Caller& caller, const std::string& name,
                                       const CollectionConfig* config, bool create) {
  CONVERGE_RETURN_IF_ERROR(ValidateCollectionName(name));
  if (config != nullptr) CONVERGE_RETURN_IF_ERROR(ValidateCollectionConfig(opt_, *config));
  CONVERGE_ASSIGN_OR_RETURN(Conn c, Acquire());
  std::string encoded;
  if (config != nullptr) EncodeConfig(*config, &encoded);
  return c->Transact([&](Transaction& tx) -> Status {
    CONVERGE_ASSIGN_OR_RETURN(Meta meta, LockMeta(tx));
    std::optional<CollectionConfig> existing;
    CONVERGE_RETURN_IF_ERROR(ReadConfig(tx, name, &existing));
    const uint64_t seq = meta.seq + 1;
    const Value pname[] = {Value::Text(name)};
    if (create) {
      if (existing) return AlreadyExistsError("collection '" + name + "' exists");
      int64_t n = 0;
      CONVERGE_RETURN_IF_ERROR(
          tx.Query("SELECT count(*) FROM " + T("collections"), {}, [&](const Row& row) -> Status {
              CONVERGE_ASSIGN_OR_RETURN(n, row.Int(0));
              return Status::Ok();
            }).status());
      CONVERGE_RETURN_IF_ERROR(
          CheckNewCollection(caller, *config, static_cast<uint64_t>(n), opt_.max_collections));
      const Value p[] = {Value::Text(name), Value::Blob(encoded),
                         Value::Int(static_cast<int64_t>(seq))};
      CONVERGE_RETURN_IF_ERROR(tx.Execute("INSERT INTO " + T("collections") +
                                              " (name, config, created_seq, documents, bytes) "
                                              "VALUES ($1, $2, $3, 0, 0)",
                                          p)
                                   .status());
      return BumpMeta(tx, seq, 0, 0);
    }
    if (!existing) return NotFoundError("collection '" + name + "' does not exist");
    if (!CanAdminister(caller, *existing)) {
      return PermissionDeniedError("only the owner '" + existing->owner +
                                   "' may change or delete collection '" + name + "'");
    }
    if (config != nullptr) {
      const Value p[] = {Value::Text(name), Value::Blob(encoded),
                         Value::Int(static_cast<int64_t>(seq))};
      CONVERGE_RETURN_IF_ERROR(tx.Execute("UPDATE " + T("collections") +
                                              " SET config = $2, created_seq = $3 WHERE name = $1",
                                          p)
                                   .status());
      return BumpMeta(tx, seq, 0, 0);
    }
    int64_t docs = 0;
    int64_t bytes = 0;
    CONVERGE_RETURN_IF_ERROR(
        tx.Query("DELETE FROM " + T("collections") + " WHERE name = $1 RETURNING documents, bytes",
                 pname,
                 [&](const Row& row) -> Status {
                   CONVERGE_ASSIGN_OR_RETURN(docs, row.Int(0));
                   CONVERGE_ASSIGN_OR_RETURN(bytes, row.Int(1));
                   return Status::Ok();
                 })
            .status());
    CONVERGE_RETURN_IF_ERROR(
        tx.Execute("DELETE FROM " + T("documents") + " WHERE collection = $1", pname).status());
    return BumpMeta(tx, seq, -docs, -bytes);
  });
}

// ---------------------------------------------------------------------------------------
// Writes

Result<CommitResult> PostgresStore::CommitOps(const Caller& caller, std::span<const WriteOp> ops,
                                              bool indexed) {
  CONVERGE_ASSIGN_OR_RETURN(std::vector<CheckedOp> checked, ValidateWriteOps(opt_, ops, indexed));
  CONVERGE_ASSIGN_OR_RETURN(Conn c, Acquire());
  CommitResult result;
  std::vector<std::pair<std::string, StatusCode>> refused;
  uint64_t seq = 0;
  Status s = c->Transact([&](Transaction& tx) -> Status {
    refused.clear();
    seq = 0;
    result = CommitResult{};
    return ApplyTxn(tx, caller, ops, checked, indexed, &result, &refused, &seq);
  });
  {
    std::lock_guard<std::mutex> g(mu_);
    for (const auto& [coll, code] : refused) CountRefusal(code, &counts_[coll]);
    if (s.ok() && seq != 0) {
      ++commits_;
      last_seq_seen_ = std::max(last_seq_seen_, seq);
      for (size_t i = 0; i < ops.size(); ++i) {
        if (checked[i].kind != WriteOp::Kind::kCheck) ++counts_[ops[i].collection].ok;
      }
    }
  }
  if (!s.ok()) return s;
  if (seq != 0) KickFeed().IgnoreError();
  return result;
}

Status PostgresStore::ApplyTxn(Transaction& tx, const Caller& caller, std::span<const WriteOp> ops,
                               const std::vector<CheckedOp>& checked, bool indexed,
                               CommitResult* out,
                               std::vector<std::pair<std::string, StatusCode>>* refused,
                               uint64_t* new_seq) {
  const int64_t now = NowMs();
  CONVERGE_ASSIGN_OR_RETURN(Meta meta, LockMeta(tx));
  out->results.resize(ops.size());
  std::map<std::string, TxnCollection, std::less<>> colls;
  std::vector<Planned> planned;
  planned.reserve(ops.size());
  int64_t bytes_delta = 0;
  int64_t docs_delta = 0;
  for (size_t i = 0; i < ops.size(); ++i) {
    const WriteOp& op = ops[i];
    const CheckedOp& p = checked[i];
    auto fail = [&](Status s) { return Indexed(s, indexed, i); };
    // The collection's config and the document, in one round trip.
    bool coll_found = false;
    bool present = false;
    std::string stored;
    uint64_t version = 0;
    int64_t expires = 0;
    std::optional<CollectionConfig> cfg_read;
    Status decoded = Status::Ok();
    const Value params[] = {Value::Text(op.collection), Value::Text(op.key)};
    Result<int64_t> q = tx.Query("SELECT c.config, d.value, d.version, d.expires_at_ms FROM " +
                                     T("collections") + " c LEFT JOIN " + T("documents") +
                                     " d ON d.collection = c.name AND d.key = $2 WHERE c.name = $1",
                                 params, [&](const Row& row) -> Status {
                                   coll_found = true;
                                   cfg_read.emplace();
                                   decoded = DecodeConfigColumn(row.Bytes(0), &*cfg_read);
                                   if (row.IsNull(2)) return Status::Ok();
                                   present = true;
                                   stored.assign(row.Bytes(1));
                                   CONVERGE_ASSIGN_OR_RETURN(int64_t v, row.Int(2));
                                   CONVERGE_ASSIGN_OR_RETURN(expires, row.Int(3));
                                   version = static_cast<uint64_t>(v);
                                   return Status::Ok();
                                 });
    if (!q.ok()) return q.status();
    CONVERGE_RETURN_IF_ERROR(decoded);
    if (!coll_found) {
      return fail(NotFoundError("collection '" + op.collection + "' does not exist"));
    }
    auto cit = colls.find(op.collection);
    if (cit == colls.end()) {
      cit = colls.emplace(op.collection, TxnCollection{std::move(*cfg_read), 0, 0}).first;
    }
    TxnCollection& coll = cit->second;
    const CollectionConfig& cfg = coll.config;
    auto refuse = [&](Status s) {
      refused->emplace_back(op.collection, s.code());
      return fail(std::move(s));
    };
    if (p.kind != WriteOp::Kind::kCheck && !CanWrite(caller, cfg)) {
      return refuse(WriteDenied(caller, op.collection, cfg));
    }
    const bool exists = present && !(expires != 0 && expires <= now);
    const uint64_t current = exists ? version : 0;
    bool stale = false;
    if (Status pre =
            CheckPreconditions(op, p.if_match_any, p.if_match_version, exists, current, &stale);
        !pre.ok()) {
      return refuse(std::move(pre));
    }
    auto stale_error = [&]() { return refuse(StaleError(op, current, *p.if_match_version)); };
    WriteResult& r = out->results[i];
    const int64_t old_bytes = present ? static_cast<int64_t>(op.key.size() + stored.size()) : 0;
    if (p.kind == WriteOp::Kind::kCheck) {
      if (stale) return stale_error();
      r.version = current;
      r.etag = exists ? ETagForVersion(current) : std::string();
      continue;
    }
    if (p.kind == WriteOp::Kind::kDelete) {
      if (stale) return stale_error();
      if (!exists) {
        return refuse(NotFoundError("document '" + op.key + "' does not exist in collection '" +
                                    op.collection + "'"));
      }
      planned.push_back(Planned{OpKind::kDelete, &op, {}, 0});
      coll.docs_delta -= 1;
      coll.bytes_delta -= old_bytes;
      continue;
    }
    // kPut
    std::string value = op.value;
    if (!cfg.merge_fields.empty()) {
      Result<FieldMergers> mergers = MergersFor(opt_, cfg);
      if (!mergers.ok()) return refuse(mergers.status());
      Result<std::string> merged = ResolveMergeFields(exists ? stored : std::string(), value,
                                                      *mergers, stale, opt_.max_json_depth);
      if (!merged.ok()) return refuse(merged.status());
      value = std::move(*merged);
      r.merged = stale;
    } else if (stale) {
      return stale_error();
    }
    const uint32_t limit =
        cfg.max_document_bytes != 0 ? cfg.max_document_bytes : opt_.max_document_bytes;
    if (value.size() > limit) {
      return refuse(ResourceExhaustedError("document of " + std::to_string(value.size()) +
                                           " bytes exceeds the limit of " + std::to_string(limit) +
                                           " of collection '" + op.collection + "'"));
    }
    const int64_t ttl = op.ttl_ms == kCollectionDefaultTtl ? cfg.default_ttl_ms : op.ttl_ms;
    coll.bytes_delta += static_cast<int64_t>(op.key.size() + value.size()) - old_bytes;
    if (!present) coll.docs_delta += 1;
    r.created = !exists;
    planned.push_back(Planned{OpKind::kPut, &op, std::move(value), ttl > 0 ? now + ttl : 0});
  }
  for (const auto& [name, coll] : colls) {
    bytes_delta += coll.bytes_delta;
    docs_delta += coll.docs_delta;
  }
  if (bytes_delta > 0 && meta.bytes + static_cast<uint64_t>(bytes_delta) > opt_.max_store_bytes) {
    return ResourceExhaustedError("the store would exceed its limit of " +
                                  std::to_string(opt_.max_store_bytes) + " bytes");
  }
  if (planned.empty()) {
    out->commit_seq = 0;  // checks only: nothing to commit (the lock made them consistent)
    return Status::Ok();
  }
  const uint64_t seq = meta.seq + 1;
  const Value vseq = Value::Int(static_cast<int64_t>(seq));
  const Value vnow = Value::Int(now);
  auto finish = [&]() {
    out->commit_seq = seq;
    for (size_t i = 0; i < ops.size(); ++i) {
      if (checked[i].kind == WriteOp::Kind::kCheck) continue;
      out->results[i].version = seq;
      out->results[i].etag = ETagForVersion(seq);
    }
    *new_seq = seq;
    return Status::Ok();
  };
  if (planned.size() == 1) {
    // One document (the common case): the document, its change row, the collection's and the
    // store's totals and the counter in one statement, so that the counter row is held for
    // as few round trips as possible.
    const Planned& w = planned[0];
    const WriteOp& op = *w.op;
    const std::string totals =
        " c AS (UPDATE " + T("collections") +
        " SET documents = documents + $5, bytes = bytes + $6 WHERE name = $1) UPDATE " + T("meta") +
        " SET seq = $3, documents = documents + $5, bytes = bytes + $6 WHERE id = 1";
    if (w.kind == OpKind::kPut) {
      const Value p[] = {Value::Text(op.collection),
                         Value::Text(op.key),
                         vseq,
                         vnow,
                         Value::Int(docs_delta),
                         Value::Int(bytes_delta),
                         Value::Blob(w.value),
                         Value::Int(w.expires_at_ms)};
      CONVERGE_RETURN_IF_ERROR(
          tx.Execute("WITH w AS (INSERT INTO " + T("documents") +
                         " (collection, key, value, version, expires_at_ms) VALUES ($1, $2, $7, "
                         "$3, $8) ON CONFLICT (collection, key) DO UPDATE SET value = "
                         "EXCLUDED.value, version = EXCLUDED.version, expires_at_ms = "
                         "EXCLUDED.expires_at_ms), ch AS (INSERT INTO " +
                         T("changes") +
                         " (seq, idx, wall_ms, kind, collection, key, value) VALUES ($3, 0, $4, "
                         "1, $1, $2, $7))," +
                         totals,
                     p)
              .status());
    } else {
      const Value p[] = {Value::Text(op.collection), Value::Text(op.key),    vseq, vnow,
                         Value::Int(docs_delta),     Value::Int(bytes_delta)};
      CONVERGE_RETURN_IF_ERROR(
          tx.Execute("WITH w AS (DELETE FROM " + T("documents") +
                         " WHERE collection = $1 AND key = $2), ch AS (INSERT INTO " +
                         T("changes") +
                         " (seq, idx, wall_ms, kind, collection, key) VALUES ($3, 0, $4, 2, $1, "
                         "$2))," +
                         totals,
                     p)
              .status());
    }
    if (pg_.before_commit_for_testing) pg_.before_commit_for_testing(seq);
    return finish();
  }
  int idx = 0;
  for (const Planned& w : planned) {
    const WriteOp& op = *w.op;
    if (w.kind == OpKind::kPut) {
      // The document and its change row in one round trip.
      const Value p[] = {Value::Text(op.collection),
                         Value::Text(op.key),
                         Value::Blob(w.value),
                         vseq,
                         Value::Int(w.expires_at_ms),
                         Value::Int(idx),
                         vnow};
      CONVERGE_RETURN_IF_ERROR(
          tx.Execute("WITH w AS (INSERT INTO " + T("documents") +
                         " (collection, key, value, version, expires_at_ms) VALUES ($1, $2, $3, "
                         "$4, $5) ON CONFLICT (collection, key) DO UPDATE SET value = "
                         "EXCLUDED.value, version = EXCLUDED.version, expires_at_ms = "
                         "EXCLUDED.expires_at_ms) INSERT INTO " +
                         T("changes") +
                         " (seq, idx, wall_ms, kind, collection, key, value) VALUES ($4, $6, $7, "
                         "1, $1, $2, $3)",
                     p)
              .status());
    } else {
      const Value p[] = {Value::Text(op.collection), Value::Text(op.key), vseq, Value::Int(idx),
                         vnow};
      CONVERGE_RETURN_IF_ERROR(
          tx.Execute("WITH w AS (DELETE FROM " + T("documents") +
                         " WHERE collection = $1 AND key = $2) INSERT INTO " + T("changes") +
                         " (seq, idx, wall_ms, kind, collection, key) VALUES ($3, $4, $5, 2, $1, "
                         "$2)",
                     p)
              .status());
    }
    ++idx;
  }
  for (const auto& [name, coll] : colls) {
    if (coll.docs_delta == 0 && coll.bytes_delta == 0) continue;
    const Value p[] = {Value::Text(name), Value::Int(coll.docs_delta),
                       Value::Int(coll.bytes_delta)};
    CONVERGE_RETURN_IF_ERROR(tx.Execute("UPDATE " + T("collections") +
                                            " SET documents = documents + $2, bytes = bytes + $3 "
                                            "WHERE name = $1",
                                        p)
                                 .status());
  }
  CONVERGE_RETURN_IF_ERROR(BumpMeta(tx, seq, docs_delta, bytes_delta));
  return finish();
}

Result<size_t> PostgresStore::ExpireDue() {
  const int64_t now = NowMs();
  CONVERGE_ASSIGN_OR_RETURN(Conn c, Acquire());
  // A cheap look first, so that an idle sweep takes no lock.
  const Value pnow[] = {Value::Int(now)};
  CONVERGE_ASSIGN_OR_RETURN(
      int64_t due, c->Query("SELECT 1 FROM " + T("documents") +
                                " WHERE expires_at_ms <> 0 AND expires_at_ms <= $1 LIMIT 1",
                            pnow, [](const Row&) { return Status::Ok(); }));
  if (due == 0) return size_t{0};
  size_t n = 0;
  uint64_t seq = 0;
  Status s = c->Transact([&](Transaction& tx) -> Status {
    n = 0;
    seq = 0;
    CONVERGE_ASSIGN_OR_RETURN(Meta meta, LockMeta(tx));
    const uint64_t next = meta.seq + 1;
    // SKIP LOCKED: rows a concurrent writer holds are left to a later sweep (writers lock the
    // counter first, so this is belt and braces across processes).
    const Value p[] = {Value::Int(now), Value::Int(static_cast<int64_t>(opt_.ttl_sweep_max_docs)),
                       Value::Int(static_cast<int64_t>(next))};
    int64_t count = 0;
    int64_t bytes = 0;
    CONVERGE_RETURN_IF_ERROR(
        tx.Query("WITH due AS (SELECT collection, key FROM " + T("documents") +
                     " WHERE expires_at_ms <> 0 AND expires_at_ms <= $1 ORDER BY expires_at_ms, "
                     "collection, key LIMIT $2 FOR UPDATE SKIP LOCKED), gone AS (DELETE FROM " +
                     T("documents") +
                     " d USING due WHERE d.collection = due.collection AND d.key = due.key "
                     "RETURNING d.collection, d.key, octet_length(d.key) + octet_length(d.value) "
                     "AS bytes), ins AS (INSERT INTO " +
                     T("changes") +
                     " (seq, idx, wall_ms, kind, collection, key) SELECT $3, (row_number() OVER "
                     "(ORDER BY collection, key) - 1)::integer, $1, 3, collection, key FROM gone), "
                     "upd AS (UPDATE " +
                     T("collections") +
                     " c SET documents = c.documents - g.n, bytes = c.bytes - g.b FROM (SELECT "
                     "collection, count(*) AS n, sum(bytes) AS b FROM gone GROUP BY collection) g "
                     "WHERE c.name = g.collection) SELECT count(*), coalesce(sum(bytes), 0) FROM "
                     "gone",
                 p,
                 [&](const Row& row) -> Status {
                   CONVERGE_ASSIGN_OR_RETURN(count, row.Int(0));
                   CONVERGE_ASSIGN_OR_RETURN(bytes, row.Int(1));
                   return Status::Ok();
                 })
            .status());
    if (count == 0) return Status::Ok();
    n = static_cast<size_t>(count);
    seq = next;
    return BumpMeta(tx, next, -count, -bytes);
  });
  if (!s.ok()) return s;
  if (seq != 0) {
    {
      std::lock_guard<std::mutex> g(mu_);
      ++commits_;
      last_seq_seen_ = std::max(last_seq_seen_, seq);
    }
    KickFeed().IgnoreError();
  }
  return n;
}

// ---------------------------------------------------------------------------------------
// The change feed

Status PostgresStore::TailFeed() {
  std::lock_guard<std::mutex> feed_lock(feed_mu_);
  const size_t limit = std::max<size_t>(opt_.feed_append_max_events, 1);
  while (true) {
    CONVERGE_ASSIGN_OR_RETURN(Conn c, Acquire());
    std::vector<FeedTxn> txns;
    size_t rows = 0;
    auto on_row = [&](const Row& row) -> Status {
      ++rows;
      CONVERGE_ASSIGN_OR_RETURN(int64_t seq, row.Int(0));
      CONVERGE_ASSIGN_OR_RETURN(int64_t wall, row.Int(1));
      CONVERGE_ASSIGN_OR_RETURN(int64_t kind, row.Int(2));
      if (txns.empty() || txns.back().seq != static_cast<uint64_t>(seq)) {
        txns.push_back(FeedTxn{static_cast<uint64_t>(seq), wall, {}});
      }
      WalOp op;
      op.kind = kind == 1 ? OpKind::kPut : kind == 2 ? OpKind::kDelete : OpKind::kExpire;
      op.collection.assign(row.Bytes(3));
      op.key.assign(row.Bytes(4));
      if (op.kind == OpKind::kPut) op.value = std::make_shared<const std::string>(row.Bytes(5));
      txns.back().ops.push_back(std::move(op));
      return Status::Ok();
    };
    const std::string cols =
        "SELECT seq, wall_ms, kind, collection, key, value FROM " + T("changes");
    const Value p[] = {Value::Int(static_cast<int64_t>(feed_cursor_)),
                       Value::Int(static_cast<int64_t>(limit))};
    CONVERGE_RETURN_IF_ERROR(
        c->Query(cols + " WHERE seq > $1 ORDER BY seq, idx LIMIT $2", p, on_row).status());
    if (txns.empty()) return Status::Ok();
    const bool more = rows == limit;
    if (more) {
      // The last transaction may be cut by the limit: publish it whole, on its own if it is
      // the only one (whole transactions per append, as the embedded store).
      const uint64_t last = txns.back().seq;
      txns.pop_back();
      if (txns.empty()) {
        const Value q[] = {Value::Int(static_cast<int64_t>(last))};
        CONVERGE_RETURN_IF_ERROR(
            c->Query(cols + " WHERE seq = $1 ORDER BY idx", q, on_row).status());
      }
    }
    size_t published = 0;
    Status s = PublishFeedTxns(opt_, txns, &published);
    if (published > 0) {
      feed_cursor_ = txns[published - 1].seq;
      feed_published_.store(feed_cursor_);
    }
    CONVERGE_RETURN_IF_ERROR(s);
    if (!more) return Status::Ok();
  }
}

// ---------------------------------------------------------------------------------------
// Stats and health

StoreStats PostgresStore::Stats() {
  StoreStats s;
  Result<Conn> c = Acquire();
  bool ok = false;
  if (c.ok()) {
    ok = (*c)->Query("SELECT seq, documents, bytes FROM " + T("meta") + " WHERE id = 1", {},
                     [&](const Row& row) -> Status {
                       CONVERGE_ASSIGN_OR_RETURN(int64_t q, row.Int(0));
                       CONVERGE_ASSIGN_OR_RETURN(int64_t d, row.Int(1));
                       CONVERGE_ASSIGN_OR_RETURN(int64_t b, row.Int(2));
                       s.last_seq = static_cast<uint64_t>(q);
                       s.documents = static_cast<uint64_t>(d);
                       s.bytes = static_cast<uint64_t>(b);
                       return Status::Ok();
                     })
             .ok();
  }
  const uint64_t published = feed_published_.load();
  if (ok && opt_.feed_log != nullptr && s.last_seq > published) {
    // Committed changes this process has not yet put into its feed topic.
    const Value p[] = {Value::Int(static_cast<int64_t>(published))};
    ok = (*c)->Query("SELECT count(*) FROM " + T("changes") + " WHERE seq > $1", p,
                     [&](const Row& row) -> Status {
                       CONVERGE_ASSIGN_OR_RETURN(int64_t n, row.Int(0));
                       s.feed_backlog_events = static_cast<uint64_t>(n);
                       return Status::Ok();
                     })
             .ok();
  }
  std::lock_guard<std::mutex> g(mu_);
  if (!ok) {
    // PostgreSQL is away: the last figures read (Health says why).
    s = last_stats_;
  }
  s.durable_seq = s.last_seq;
  s.feed_published_seq = feed_published_.load();
  s.commits = commits_;
  last_stats_ = s;
  return s;
}

Status PostgresStore::Health() {
  const int64_t now = env_.clock().NowMonotonicNanos() / 1'000'000;
  {
    std::lock_guard<std::mutex> g(mu_);
    if (health_checked_ms_ >= 0 && now - health_checked_ms_ < pg_.health_check_interval_ms) {
      return health_;
    }
  }
  Status s = Status::Ok();
  Result<Conn> c = Acquire();
  if (!c.ok()) {
    s = c.status();
  } else {
    Result<int64_t> q = (*c)->Query("SELECT 1", {}, [](const Row&) { return Status::Ok(); });
    if (!q.ok()) s = q.status();
  }
  if (!s.ok()) s = UnavailableError("PostgreSQL does not answer: " + std::string(s.message()));
  std::lock_guard<std::mutex> g(mu_);
  health_checked_ms_ = now;
  health_ = s;
  return s;
}

}  // namespace
}  // namespace store_internal

Status ValidatePostgresStoreOptions(const PostgresStoreOptions& o) {
  auto bad = [](std::string_view what) {
    return InvalidArgumentError("postgres store: " + std::string(what));
  };
  if (o.conninfo.empty()) return bad("conninfo is empty");
  if (!store_internal::ValidPrefix(o.table_prefix)) {
    return bad("table_prefix must be 1..40 characters of [a-z0-9_], not starting with a digit");
  }
  if (o.connect_timeout_ms <= 0) return bad("connect_timeout_ms must be > 0");
  if (o.statement_timeout_ms < 0) return bad("statement_timeout_ms must be >= 0");
  if (o.max_connections == 0 || o.max_connections > 1000) {
    return bad("max_connections must be in 1..1000");
  }
  if (o.feed_poll_interval_ms <= 0) return bad("feed_poll_interval_ms must be > 0");
  if (o.health_check_interval_ms < 0) return bad("health_check_interval_ms must be >= 0");
  return Status::Ok();
}

Result<std::unique_ptr<Store>> OpenPostgresStore(Env& env, const StoreOptions& options,
                                                 const PostgresStoreOptions& pg) {
  StoreOptions o = options;
  if (o.dir.empty()) o.dir = "-";  // not used: the data is in PostgreSQL
  CONVERGE_RETURN_IF_ERROR(ValidateStoreOptions(o, o.feed_log != nullptr));
  CONVERGE_RETURN_IF_ERROR(ValidatePostgresStoreOptions(pg));
  auto store = std::make_unique<store_internal::PostgresStore>(env, std::move(o), pg);
  CONVERGE_RETURN_IF_ERROR(store->Init());
  return std::unique_ptr<Store>(std::move(store));
}

}  // namespace converge
