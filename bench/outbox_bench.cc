// `converge bench outbox`: the runner, the options, and the converge systems (SQLite and
// PostgreSQL): Outbox writer -> Relay -> Log -> ConsumerGroups -> InboxConsumer.
#include "bench/outbox_bench.h"

#include <pthread.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <thread>

#include "bench/bench.h"
#include "bench/log_options.h"
#include "bench/timing.h"
#include "converge/consumer_group.h"
#include "converge/inbox.h"
#include "converge/log.h"
#include "converge/outbox.h"
#include "converge/relay.h"
#include "converge/sql.h"
#include "core/command_line.h"
#include "sql/sql_internal.h"
#include "support/postgres_server.h"
#include "support/server_process.h"

namespace converge::bench {

// ---------------------------------------------------------------------------------------
// Shared helpers

Event OrderEvent(uint64_t seq, const std::string& key) {
  Event e;
  e.set_source("/bench/orders");
  e.set_type("order.placed");
  e.set_partitionkey(key);
  std::string data = "{\"order\":";
  data += std::to_string(seq);
  data += ",\"amount\":4200,\"currency\":\"EUR\",\"note\":\"benchmark order\"}";
  Status s = e.SetJsonData(data);
  CONVERGE_CHECK(s.ok());
  return e;
}

int64_t OrderNumber(std::string_view data) {
  constexpr std::string_view kField = "\"order\":";
  size_t p = data.find(kField);
  if (p == std::string_view::npos) return -1;
  int64_t v = 0;
  for (p += kField.size(); p < data.size() && data[p] >= '0' && data[p] <= '9'; ++p) {
    v = v * 10 + (data[p] - '0');
  }
  return v;
}

std::string OrderKey(uint64_t seq, uint32_t writer, uint32_t writers, uint32_t keys) {
  const uint32_t per_writer = std::max<uint32_t>(1, keys / std::max<uint32_t>(1, writers));
  std::string key = "c";
  key += std::to_string(writer);
  key += '-';
  key += std::to_string(seq % per_writer);
  return key;
}

CommitEffectTimes::CommitEffectTimes(size_t n)
    : n_(n), commit_(new std::atomic<int64_t>[n]), effect_(new std::atomic<int64_t>[n]) {
  for (size_t i = 0; i < n; ++i) {
    commit_[i].store(0, std::memory_order_relaxed);
    effect_[i].store(0, std::memory_order_relaxed);
  }
}

void CommitEffectTimes::Committed(uint64_t seq, int64_t ns) {
  if (seq < n_) commit_[seq].store(ns, std::memory_order_relaxed);
}

void CommitEffectTimes::Applied(uint64_t seq, int64_t ns) {
  if (seq < n_) effect_[seq].store(ns, std::memory_order_relaxed);
}

Measurement CommitEffectTimes::Summarize(const std::string& system, const std::string& durability,
                                         size_t skip, double seconds, const std::string& note,
                                         size_t* missing) const {
  LatencyRecorder recorder(n_);
  *missing = 0;
  for (size_t i = skip; i < n_; ++i) {
    int64_t c = commit_[i].load(std::memory_order_relaxed);
    int64_t e = effect_[i].load(std::memory_order_relaxed);
    if (c == 0 || e == 0) {
      ++*missing;
      continue;
    }
    // The effect can commit before the writer's COMMIT returns (the relay is woken at commit):
    // count that as zero latency.
    recorder.Record(std::max<int64_t>(0, e - c));
  }
  LatencyRecorder::Percentiles p = recorder.Compute();
  Measurement m;
  m.workload = "latency";
  m.system = system;
  m.durability = durability;
  m.events = recorder.count();
  m.seconds = seconds;
  m.events_per_s = seconds > 0 ? static_cast<double>(n_) / seconds : 0;
  m.p50_us = p.p50_us;
  m.p99_us = p.p99_us;
  m.p999_us = p.p999_us;
  m.note = note;
  return m;
}

namespace {

// Waits until `done()` or `timeout_ms`; the harness is an edge and may sleep.
template <typename Pred>
bool WaitUntil(Pred done, int64_t timeout_ms) {
  const int64_t deadline = NowNanos() + timeout_ms * 1'000'000;
  while (!done()) {
    if (NowNanos() > deadline) return false;
    ::usleep(500);
  }
  return true;
}

constexpr int64_t kDrainTimeoutMs = 600'000;
constexpr const char* kTopic = "orders";

// Business rows: one order per event, inserted with multi-row statements.
Status InsertOrders(sql::Transaction& tx, const std::vector<Event>& events) {
  static const std::vector<std::string> statements = [] {
    std::vector<std::string> all(65);
    for (size_t n = 1; n <= 64; n *= 2) {
      std::string sql = "INSERT INTO orders (customer, amount) VALUES ";
      for (size_t i = 0; i < n; ++i) {
        if (i > 0) sql += ',';
        sql += "($";
        sql += std::to_string(i + 1);
        sql += ", 4200)";
      }
      all[n] = std::move(sql);
    }
    return all;
  }();
  if (tx.engine() == sql::Engine::kPostgres) {
    std::vector<std::string_view> keys;
    keys.reserve(events.size());
    for (const Event& e : events) keys.push_back(*e.partitionkey());
    std::string array = sql::internal::PgTextArray(keys);
    sql::Value p[] = {sql::Value::Text(array)};
    return tx.Execute("INSERT INTO orders (customer, amount) SELECT unnest($1::text[]), 4200", p)
        .status();
  }
  std::vector<sql::Value> params;
  size_t i = 0;
  while (i < events.size()) {
    size_t chunk = 64;
    while (chunk > events.size() - i) chunk /= 2;
    params.clear();
    for (size_t k = 0; k < chunk; ++k) {
      params.push_back(sql::Value::Text(*events[i + k].partitionkey()));
    }
    CONVERGE_RETURN_IF_ERROR(tx.Execute(statements[chunk], params).status());
    i += chunk;
  }
  return Status::Ok();
}

// The consumer's effect: one counter per key, += 1 per event, in one statement per batch
// (a batch never holds two events of one key).
Status ApplyCounters(sql::Transaction& tx, std::span<const InboxMessage> messages) {
  static const std::vector<std::string> statements = [] {
    std::vector<std::string> all(1025);
    for (size_t n = 1; n <= 1024; n *= 2) {
      std::string sql = "INSERT INTO counters (customer, n) VALUES ";
      for (size_t i = 0; i < n; ++i) {
        if (i > 0) sql += ',';
        sql += "($";
        sql += std::to_string(i + 1);
        sql += ", 1)";
      }
      sql += " ON CONFLICT (customer) DO UPDATE SET n = counters.n + 1";
      all[n] = std::move(sql);
    }
    return all;
  }();
  if (tx.engine() == sql::Engine::kPostgres) {
    std::vector<std::string_view> keys;
    keys.reserve(messages.size());
    for (const InboxMessage& m : messages) keys.push_back(m.event.partitionkey().value_or(""));
    std::string array = sql::internal::PgTextArray(keys);
    sql::Value p[] = {sql::Value::Text(array)};
    return tx
        .Execute(
            "INSERT INTO counters (customer, n) SELECT unnest($1::text[]), 1 "
            "ON CONFLICT (customer) DO UPDATE SET n = counters.n + 1",
            p)
        .status();
  }
  std::vector<sql::Value> params;
  size_t i = 0;
  while (i < messages.size()) {
    size_t chunk = 1024;
    while (chunk > messages.size() - i) chunk /= 2;
    params.clear();
    for (size_t k = 0; k < chunk; ++k) {
      params.push_back(sql::Value::Text(messages[i + k].event.partitionkey().value_or("")));
    }
    CONVERGE_RETURN_IF_ERROR(tx.Execute(statements[chunk], params).status());
    i += chunk;
  }
  return Status::Ok();
}

Result<int64_t> ScalarQuery(sql::Database& db, const std::string& sql) {
  int64_t v = -1;
  CONVERGE_RETURN_IF_ERROR(db.Query(sql, {}, [&](const sql::Row& row) -> Status {
                               CONVERGE_ASSIGN_OR_RETURN(v, row.Int(0));
                               return Status::Ok();
                             }).status());
  return v;
}

// ---------------------------------------------------------------------------------------
// converge: Outbox -> Relay -> Log -> ConsumerGroups -> InboxConsumer

class ConvergeOutboxSystem final : public OutboxSystem {
 public:
  // `wal`: the WAL outbox (PostgreSQL only): Outbox::Emit and a relay in mode "wal".
  ConvergeOutboxSystem(bool postgres, bool wal) : postgres_(postgres || wal), wal_(wal) {}
  ~ConvergeOutboxSystem() override { Stop().IgnoreError(); }

  std::string name() const override {
    if (wal_) return "converge-postgres-wal";
    return postgres_ ? "converge-postgres" : "converge-sqlite";
  }
  std::string durability() const override {
    return postgres_ ? "pg-sync-commit+log-fsync" : "sqlite-full+log-fsync";
  }

  Status Start(const OutboxWorkload& w) override {
    Env& env = Env::Default();
    if (postgres_) {
      testing::PostgresServerOptions po;
      po.base_dir = w.dir;
      po.settings = {"max_connections=200", "shared_buffers=256MB"};
      if (wal_) {
        po.settings.insert(po.settings.end(),
                           {"wal_level=logical", "max_replication_slots=4", "max_wal_senders=4"});
      }
      CONVERGE_ASSIGN_OR_RETURN(pg_, testing::PostgresServer::Start(po));
      CONVERGE_RETURN_IF_ERROR(pg_->CreateDatabase("service"));
      CONVERGE_RETURN_IF_ERROR(pg_->CreateDatabase("consumer"));
      service_ = {sql::Engine::kPostgres, pg_->ConnInfo("service")};
      consumer_target_ = {sql::Engine::kPostgres, pg_->ConnInfo("consumer")};
    } else {
      service_ = {sql::Engine::kSqlite, w.dir + "/service.db"};
      consumer_target_ = {sql::Engine::kSqlite, w.dir + "/consumer.db"};
    }
    CONVERGE_ASSIGN_OR_RETURN(auto service, sql::OpenDatabase(service_));
    CONVERGE_RETURN_IF_ERROR(Outbox::CreateSchema(*service));
    CONVERGE_RETURN_IF_ERROR(service->ExecuteScript(
        postgres_ ? "CREATE TABLE orders (id bigserial PRIMARY KEY, customer text NOT NULL, "
                    "amount bigint NOT NULL)"
                  : "CREATE TABLE orders (id INTEGER PRIMARY KEY, customer TEXT NOT NULL, "
                    "amount INTEGER NOT NULL)"));
    CONVERGE_ASSIGN_OR_RETURN(consumer_db_, sql::OpenDatabase(consumer_target_));
    CONVERGE_RETURN_IF_ERROR(Inbox::CreateSchema(*consumer_db_));
    CONVERGE_RETURN_IF_ERROR(consumer_db_->ExecuteScript(
        "CREATE TABLE counters (customer TEXT PRIMARY KEY, n BIGINT NOT NULL)"));

    converge::LogOptions lo;
    lo.dir = w.dir + "/log";
    CONVERGE_ASSIGN_OR_RETURN(log_, Log::Open(env, lo));
    TopicOptions to;
    to.partitions = 4;
    to.durability = Durability::kFsync;
    CONVERGE_RETURN_IF_ERROR(log_->CreateTopic(kTopic, to));
    ConsumerGroupsOptions go;
    go.dir = w.dir + "/groups";
    go.commit_mode = CommitMode::kPeriodic;
    CONVERGE_ASSIGN_OR_RETURN(groups_, ConsumerGroups::Open(env, *log_, go));
    LogSinkOptions so;
    so.topic_options = to;
    CONVERGE_ASSIGN_OR_RETURN(sink_, NewLogSink(*log_, so));

    RelayOptions ro;
    ro.name = "bench";
    ro.batch_max_events = 2000;
    if (wal_) {
      CONVERGE_RETURN_IF_ERROR(CreateWalSlot(service_.location, "bench", "converge_outbox"));
      ro.mode = "wal";
      ro.wal_slot = "bench";
    }
    CONVERGE_ASSIGN_OR_RETURN(relay_, Relay::Create(env, service_, *sink_, ro));
    CONVERGE_RETURN_IF_ERROR(relay_->Start());

    InboxConsumerOptions co;
    co.topic = kTopic;
    co.group = "billing";
    co.member = "bench";
    co.workers = postgres_ ? w.workers : 1;
    co.fetch_max_events = 2000;
    co.group_options.max_in_flight_per_partition = 5000;
    co.group_options.max_in_flight_per_member = 20'000;
    co.group_options.max_pending_per_partition = 20'000;
    co.inbox.retention_max_ids = 100'000'000;
    CONVERGE_ASSIGN_OR_RETURN(
        consumer_, InboxConsumer::Create(env, *groups_, consumer_target_,
                                         InboxBatchHandler([this](sql::Transaction& tx,
                                                                  std::span<const InboxMessage> m) {
                                           return Handle(tx, m);
                                         }),
                                         co));
    return consumer_->Start();
  }

  Status EndToEnd(const OutboxWorkload& w, std::vector<Measurement>& out) override {
    const uint32_t writers = postgres_ ? std::max<uint32_t>(1, w.writers) : 1;
    const uint64_t handled_before = consumer_->stats().handled;
    const uint64_t relay_batches_before = relay_->stats().batches;
    const uint64_t consumer_batches_before = consumer_->stats().batches;
    const int64_t start = NowNanos();
    CONVERGE_RETURN_IF_ERROR(RunWriters(w, writers, w.events, w.tx_events, 0, nullptr));
    const int64_t written = NowNanos();
    if (!WaitUntil([&] { return consumer_->stats().handled >= handled_before + w.events; },
                   kDrainTimeoutMs)) {
      return DeadlineExceededError(name() + ": effects did not arrive: " + Describe());
    }
    const int64_t end = NowNanos();
    CONVERGE_RETURN_IF_ERROR(Verify(handled_before + w.events));
    Measurement m;
    m.workload = "e2e";
    m.system = name();
    m.durability = durability();
    m.events = w.events;
    m.seconds = static_cast<double>(end - start) / 1e9;
    m.events_per_s = static_cast<double>(w.events) / m.seconds;
    // Average batch sizes: how well the relay and the consumer amortize their syncs.
    const uint64_t relay_batches = relay_->stats().batches - relay_batches_before;
    const uint64_t consumer_batches = consumer_->stats().batches - consumer_batches_before;
    char note[320];
    std::snprintf(
        note, sizeof(note),
        "%u writer(s), %u events/tx, %u keys; writes done at %.2fs; relay batch max "
        "2000, avg %.0f; consumer %u worker(s), batch handler, avg batch %.0f; exactly "
        "once checked",
        writers, w.tx_events, w.keys, static_cast<double>(written - start) / 1e9,
        static_cast<double>(w.events) / static_cast<double>(std::max<uint64_t>(1, relay_batches)),
        postgres_ ? w.workers : 1,
        static_cast<double>(w.events) /
            static_cast<double>(std::max<uint64_t>(1, consumer_batches)));
    m.note = note;
    out.push_back(m);
    return Status::Ok();
  }

  Status Latency(const OutboxWorkload& w, std::vector<Measurement>& out) override {
    const uint64_t total = static_cast<uint64_t>(w.rate_per_s) * w.latency_seconds;
    const uint64_t handled_before = consumer_->stats().handled;
    times_ = std::make_unique<CommitEffectTimes>(total);
    latency_base_.store(next_order_, std::memory_order_relaxed);
    const int64_t start = NowNanos();
    CONVERGE_RETURN_IF_ERROR(RunWriters(w, 1, total, 1, w.rate_per_s, times_.get()));
    if (!WaitUntil([&] { return consumer_->stats().handled >= handled_before + total; },
                   kDrainTimeoutMs)) {
      return DeadlineExceededError(name() + ": latency effects did not arrive: " + Describe());
    }
    const double seconds = static_cast<double>(NowNanos() - start) / 1e9;
    CONVERGE_RETURN_IF_ERROR(Verify(handled_before + total));
    size_t missing = 0;
    Measurement m = times_->Summarize(
        name(), durability(), total / 10, seconds,
        "1 event/tx paced at " + std::to_string(w.rate_per_s) +
            "/s; writer COMMIT returned -> consumer COMMIT returned; first 10% skipped",
        &missing);
    times_.reset();
    if (missing > 0) return InternalError(name() + ": " + std::to_string(missing) + " unmatched");
    out.push_back(m);
    return Status::Ok();
  }

  Status Stop() override {
    if (consumer_) consumer_->Stop();
    if (relay_) relay_->Stop();
    consumer_.reset();
    relay_.reset();
    sink_.reset();
    groups_.reset();
    log_.reset();
    consumer_db_.reset();
    Status s;
    if (pg_) s = pg_->Stop();
    pg_.reset();
    return s;
  }

 private:
  Status Handle(sql::Transaction& tx, std::span<const InboxMessage> messages) {
    CONVERGE_RETURN_IF_ERROR(ApplyCounters(tx, messages));
    if (CommitEffectTimes* times = times_.get()) {
      std::vector<uint64_t> seqs;
      const uint64_t base = latency_base_.load(std::memory_order_relaxed);
      for (const InboxMessage& m : messages) {
        int64_t order = OrderNumber(m.event.data());
        if (order >= static_cast<int64_t>(base))
          seqs.push_back(static_cast<uint64_t>(order) - base);
      }
      tx.OnCommit([times, seqs = std::move(seqs)] {
        const int64_t now = NowNanos();
        for (uint64_t s : seqs) times->Applied(s, now);
      });
    }
    return Status::Ok();
  }

  // `writers` threads write `events` orders in transactions of `per_tx`; paced at `rate`
  // transactions per second in total when rate > 0 (one writer then).
  Status RunWriters(const OutboxWorkload& w, uint32_t writers, uint64_t events, uint32_t per_tx,
                    uint32_t rate, CommitEffectTimes* times) {
    const uint64_t base = next_order_;
    next_order_ += events;
    std::vector<Status> results(writers);
    std::vector<std::thread> threads;
    for (uint32_t t = 0; t < writers; ++t) {
      threads.emplace_back(
          [&, t] { results[t] = WriterThread(w, t, writers, base, events, per_tx, rate, times); });
    }
    for (auto& th : threads) th.join();
    for (const Status& s : results) CONVERGE_RETURN_IF_ERROR(s);
    return Status::Ok();
  }

  Status WriterThread(const OutboxWorkload& w, uint32_t t, uint32_t writers, uint64_t base,
                      uint64_t events, uint32_t per_tx, uint32_t rate, CommitEffectTimes* times) {
    ReduceTimerSlack();
    pthread_setname_np(pthread_self(), "bench-writer");
    CONVERGE_ASSIGN_OR_RETURN(auto db, sql::OpenDatabase(service_));
    Outbox outbox(Env::Default());
    // Writer t writes orders t, t + writers, ... in transactions of per_tx.
    const uint64_t mine = events / writers + (t < events % writers ? 1 : 0);
    Pacer pacer(rate > 0 ? rate : 1, NowNanos());
    std::vector<Event> batch;
    uint64_t done = 0, tx_index = 0;
    while (done < mine) {
      const uint64_t n = std::min<uint64_t>(per_tx, mine - done);
      batch.clear();
      for (uint64_t i = 0; i < n; ++i) {
        const uint64_t local = done + i;
        const uint64_t order = base + t + local * writers;
        batch.push_back(OrderEvent(order, OrderKey(order, t, writers, w.keys)));
      }
      if (rate > 0) SleepUntilNanos(pacer.DueNanos(tx_index));
      Status s = db->Transact([&](sql::Transaction& tx) -> Status {
        if (times != nullptr) {
          // Registered before the outbox's wake-up callback: runs first.
          tx.OnCommit([&, first = base + t + done * writers] {
            const int64_t now = NowNanos();
            for (uint64_t i = 0; i < n; ++i) times->Committed(first + i * writers - base, now);
          });
        }
        CONVERGE_RETURN_IF_ERROR(InsertOrders(tx, batch));
        if (wal_) return outbox.Emit(tx, kTopic, std::span<Event>(batch));
        return outbox.Write(tx, kTopic, std::span<Event>(batch));
      });
      CONVERGE_RETURN_IF_ERROR(s);
      done += n;
      ++tx_index;
    }
    return Status::Ok();
  }

  Status Verify(uint64_t expected) {
    CONVERGE_ASSIGN_OR_RETURN(int64_t sum,
                              ScalarQuery(*consumer_db_, "SELECT sum(n) FROM counters"));
    CONVERGE_ASSIGN_OR_RETURN(int64_t ids,
                              ScalarQuery(*consumer_db_, "SELECT count(*) FROM converge_inbox"));
    if (sum != static_cast<int64_t>(expected) || ids != static_cast<int64_t>(expected)) {
      return InternalError(name() + ": exactly-once check failed: " + std::to_string(sum) +
                           " effects and " + std::to_string(ids) + " inbox ids for " +
                           std::to_string(expected) + " events");
    }
    return Status::Ok();
  }

  std::string Describe() {
    InboxStats c = consumer_->stats();
    RelayStats r = relay_->stats();
    return "relay published " + std::to_string(r.published) + " (" + r.last_error +
           "), consumer handled " + std::to_string(c.handled) + " (" + c.last_error + ")";
  }

  const bool postgres_;
  const bool wal_;
  std::unique_ptr<testing::PostgresServer> pg_;
  sql::DatabaseTarget service_;
  sql::DatabaseTarget consumer_target_;
  std::unique_ptr<sql::Database> consumer_db_;
  std::unique_ptr<Log> log_;
  std::unique_ptr<ConsumerGroups> groups_;
  std::unique_ptr<RelaySink> sink_;
  std::unique_ptr<Relay> relay_;
  std::unique_ptr<InboxConsumer> consumer_;
  uint64_t next_order_ = 0;
  std::atomic<uint64_t> latency_base_{0};
  std::unique_ptr<CommitEffectTimes> times_;
};

// ---------------------------------------------------------------------------------------
// Options and the run

struct OutboxOptions {
  OutboxWorkload workload;
  std::vector<std::string> systems = {"converge-sqlite", "converge-postgres",
                                      "converge-postgres-wal", "polling-postgres",
                                      "capture-postgres"};
  std::vector<std::string> workloads = {"e2e", "latency"};
  bool json = false;
  bool help = false;
  std::string dir;
};

void PrintOutboxHelp(std::FILE* out) {
  std::fputs(
      "Usage: converge bench outbox [options]\n"
      "\n"
      "Transactional messaging end to end: business transaction + outbox rows, relay, log,\n"
      "inbox + effect (exactly once, checked), on converge with SQLite and PostgreSQL, and on a\n"
      "polling outbox over the same PostgreSQL (FOR UPDATE SKIP LOCKED -> JetStream -> DELETE).\n"
      "\n"
      "  --systems LIST       converge-sqlite,converge-postgres,converge-postgres-wal,\n"
      "                       polling-postgres (default all); -wal: the WAL outbox (logical\n"
      "                       messages, relay mode wal, docs/formats/wal-outbox.md);\n"
      "                       capture-postgres: table capture, e2e = row changes/s into the\n"
      "                       log, latency = capture lag at 5,000 changes/s\n"
      "  --workloads LIST     e2e,latency (default both)\n"
      "  --events N           events in e2e (default 200000)\n"
      "  --tx-events N        events (and business rows) per transaction in e2e (default 100)\n"
      "  --keys N             partition keys (default 1000)\n"
      "  --writers N          PostgreSQL writer threads (default 4; SQLite uses 1)\n"
      "  --workers N          PostgreSQL consumer transactions at once (default 4)\n"
      "  --rate N             latency: transactions (1 event each) per second (default 1000)\n"
      "  --latency-seconds N  latency: duration (default 5)\n"
      "  --dir DIR            scratch directory base (default $TMPDIR or /tmp)\n"
      "  --json               one JSON object per line\n",
      out);
}

Result<OutboxOptions> ParseOutboxOptions(int argc, char** argv) {
  OutboxOptions o;
  std::string systems, workloads;
  CLI::App app("The transactional outbox end to end.", "converge bench outbox");
  cli::Configure(app);
  app.add_flag("--json", o.json);
  CLI::Option* systems_option = app.add_option("--systems", systems);
  CLI::Option* workloads_option = app.add_option("--workloads", workloads);
  app.add_option("--dir", o.dir);
  app.add_option("--events", o.workload.events)->check(cli::Integer(1, 100'000'000));
  app.add_option("--tx-events", o.workload.tx_events)->check(cli::Integer(1, 10'000));
  app.add_option("--keys", o.workload.keys)->check(cli::Integer(1, 10'000'000));
  app.add_option("--writers", o.workload.writers)->check(cli::Integer(1, 64));
  app.add_option("--workers", o.workload.workers)->check(cli::Integer(1, 64));
  app.add_option("--rate", o.workload.rate_per_s)->check(cli::Integer(1, 1'000'000));
  app.add_option("--latency-seconds", o.workload.latency_seconds)->check(cli::Integer(1, 3600));
  CONVERGE_RETURN_IF_ERROR(cli::Parse(app, argc, argv, &o.help));
  if (o.help) return o;
  if (systems_option->count() > 0) o.systems = SplitList(systems);
  if (workloads_option->count() > 0) o.workloads = SplitList(workloads);
  for (const std::string& s : o.systems) {
    if (s != "converge-sqlite" && s != "converge-postgres" && s != "converge-postgres-wal" &&
        s != "polling-postgres" && s != "capture-postgres") {
      return InvalidArgumentError("unknown system '" + s + "'");
    }
  }
  for (const std::string& w : o.workloads) {
    if (w != "e2e" && w != "latency") return InvalidArgumentError("unknown workload '" + w + "'");
  }
  return o;
}

std::unique_ptr<OutboxSystem> MakeSystem(const std::string& name) {
  if (name == "converge-sqlite") return MakeConvergeOutboxSystem(false);
  if (name == "converge-postgres") return MakeConvergeOutboxSystem(true);
  if (name == "converge-postgres-wal") return std::make_unique<ConvergeOutboxSystem>(true, true);
  if (name == "capture-postgres") return MakeCaptureSystem();
  return MakePollingOutboxSystem();
}

bool Has(const std::vector<std::string>& list, const char* item) {
  return std::find(list.begin(), list.end(), item) != list.end();
}

const Measurement* Find(const std::vector<Measurement>& rows, const std::string& workload,
                        const std::string& system) {
  for (const Measurement& m : rows) {
    if (m.workload == workload && m.system == system) return &m;
  }
  return nullptr;
}

// Ratios and the targets, after the table.
std::string OutboxComparison(const std::vector<Measurement>& rows) {
  std::string out;
  char line[256];
  const Measurement* sqlite = Find(rows, "e2e", "converge-sqlite");
  const Measurement* pg = Find(rows, "e2e", "converge-postgres");
  const Measurement* polling = Find(rows, "e2e", "polling-postgres");
  const Measurement* wal = Find(rows, "e2e", "converge-postgres-wal");
  auto verdict = [](bool ok) { return ok ? "PASS" : "MISS"; };
  if (sqlite != nullptr) {
    std::snprintf(line, sizeof(line), "target converge-sqlite e2e >= 200,000 events/s: %s (%s)\n",
                  verdict(sqlite->events_per_s >= 200'000),
                  FormatThousands(sqlite->events_per_s).c_str());
    out += line;
  }
  if (pg != nullptr) {
    std::snprintf(line, sizeof(line), "target converge-postgres e2e >= 50,000 events/s: %s (%s)\n",
                  verdict(pg->events_per_s >= 50'000), FormatThousands(pg->events_per_s).c_str());
    out += line;
  }
  if (pg != nullptr && polling != nullptr && polling->events_per_s > 0) {
    const double ratio = pg->events_per_s / polling->events_per_s;
    std::snprintf(line, sizeof(line),
                  "target converge-postgres >= 3x polling-postgres: %s (%.2fx)\n",
                  verdict(ratio >= 3.0), ratio);
    out += line;
  }
  if (wal != nullptr && polling != nullptr && polling->events_per_s > 0) {
    const double ratio = wal->events_per_s / polling->events_per_s;
    std::snprintf(line, sizeof(line),
                  "target converge-postgres-wal >= 3x polling-postgres: %s (%.2fx)\n",
                  verdict(ratio >= 3.0), ratio);
    out += line;
  }
  if (wal != nullptr && pg != nullptr && pg->events_per_s > 0) {
    const double ratio = wal->events_per_s / pg->events_per_s;
    std::snprintf(line, sizeof(line),
                  "target converge-postgres-wal >= 1.5x converge-postgres (table outbox): %s "
                  "(%.2fx)\n",
                  verdict(ratio >= 1.5), ratio);
    out += line;
  }
  if (const Measurement* lag = Find(rows, "capture-lag", "capture-postgres");
      lag != nullptr && lag->p99_us) {
    std::snprintf(line, sizeof(line),
                  "target capture lag p99 <= 50 ms at 5k changes/s: %s (%.1f ms at %s/s)\n",
                  verdict(*lag->p99_us <= 50'000), *lag->p99_us / 1000,
                  FormatThousands(lag->events_per_s).c_str());
    out += line;
  }
  for (const Measurement& m : rows) {
    if (m.workload != "latency" || !m.p50_us) continue;
    if (m.system.rfind("converge", 0) != 0) continue;
    std::snprintf(line, sizeof(line), "target %s commit-to-effect p50 <= 5 ms: %s (%.2f ms)\n",
                  m.system.c_str(), verdict(*m.p50_us <= 5000), *m.p50_us / 1000);
    out += line;
  }
  return out;
}

int RunOutbox(int argc, char** argv) {
  Result<OutboxOptions> parsed = ParseOutboxOptions(argc, argv);
  if (!parsed.ok()) {
    std::fprintf(stderr, "converge bench outbox: %s\n(see converge bench outbox --help)\n",
                 std::string(parsed.status().message()).c_str());
    return 2;
  }
  OutboxOptions o = std::move(parsed).value();
  if (o.help) {
    PrintOutboxHelp(stdout);
    return 0;
  }
  Result<testing::TempDir> run_dir = testing::TempDir::Create("converge-bench-outbox-", o.dir);
  if (!run_dir.ok()) {
    std::fprintf(stderr, "converge bench outbox: %s\n", run_dir.status().ToString().c_str());
    return 1;
  }
  // PostgreSQL runs as the postgres user when we are root: it must reach its directory.
  ::chmod(run_dir->path().c_str(), 0755);
  double load[1] = {0};
  ::getloadavg(load, 1);
  std::fprintf(stderr,
               "converge bench outbox: %" PRIu64
               " events, %u per tx, %u keys; latency %u/s for "
               "%u s; scratch %s; load average %.2f\n",
               o.workload.events, o.workload.tx_events, o.workload.keys, o.workload.rate_per_s,
               o.workload.latency_seconds, run_dir->path().c_str(), load[0]);
  std::vector<Measurement> rows;
  int failures = 0;
  for (const std::string& name : o.systems) {
    Result<testing::TempDir> dir = testing::TempDir::Create(name + "-", run_dir->path());
    if (!dir.ok()) {
      ++failures;
      continue;
    }
    ::chmod(dir->path().c_str(), 0755);
    OutboxWorkload w = o.workload;
    w.dir = dir->path();
    std::unique_ptr<OutboxSystem> system = MakeSystem(name);
    std::vector<Measurement> fresh;
    std::fprintf(stderr, "  %-18s start...\n", name.c_str());
    Status status = system->Start(w);
    if (status.ok() && Has(o.workloads, "e2e")) {
      std::fprintf(stderr, "  %-18s e2e...\n", name.c_str());
      status = system->EndToEnd(w, fresh);
    }
    if (status.ok() && Has(o.workloads, "latency")) {
      std::fprintf(stderr, "  %-18s latency...\n", name.c_str());
      status = system->Latency(w, fresh);
    }
    Status stopped = system->Stop();
    if (status.ok()) status = stopped;
    system.reset();
    if (!status.ok()) {
      ++failures;
      std::fprintf(stderr, "converge bench outbox: %s failed: %s\n", name.c_str(),
                   status.ToString().c_str());
    }
    for (Measurement& m : fresh) {
      if (o.json) {
        std::printf("%s\n", ToJsonLine(m).c_str());
        std::fflush(stdout);
      }
      rows.push_back(std::move(m));
    }
  }
  const std::string comparison = OutboxComparison(rows);
  if (o.json) {
    std::fputs(comparison.c_str(), stderr);
  } else {
    std::printf("\n%s%s", FormatTable(rows).c_str(), comparison.c_str());
  }
  return failures == 0 ? 0 : 1;
}

BenchmarkRegistration registration(
    {"outbox",
     "transactional outbox end to end: converge on SQLite and PostgreSQL vs a polling outbox "
     "(SKIP LOCKED + JetStream)",
     RunOutbox});

}  // namespace

std::unique_ptr<OutboxSystem> MakeConvergeOutboxSystem(bool postgres) {
  return std::make_unique<ConvergeOutboxSystem>(postgres, false);
}

}  // namespace converge::bench
