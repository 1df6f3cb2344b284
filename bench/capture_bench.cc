// `converge bench outbox --systems capture-postgres`: PostgreSQL table capture
// (docs/formats/wal-outbox.md, "Table capture"). A service inserts rows into its own table;
// a relay in mode wal with wal_capture_tables turns each row change into a change event in the
// log (fsync topic). e2e: row changes/s from the first insert until the log holds every change
// (the relay confirms the slot only after that). latency: the capture lag at a paced rate,
// from the writer's COMMIT returning to the change event being readable in the log.
#include <pthread.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <thread>

#include "bench/outbox_bench.h"
#include "bench/timing.h"
#include "converge/log.h"
#include "converge/relay.h"
#include "converge/sql.h"
#include "sql/sql_internal.h"
#include "support/postgres_server.h"

namespace converge::bench {
namespace {

constexpr char kCaptureTopic[] = "public.items";
constexpr int64_t kCaptureTimeoutMs = 600'000;
// The lag workload: rows per transaction and the target rate of row changes.
constexpr uint32_t kLagRowsPerTx = 10;
constexpr uint32_t kLagChangesPerS = 5'000;

class CaptureSystem final : public OutboxSystem {
 public:
  ~CaptureSystem() override { Stop().IgnoreError(); }
  std::string name() const override { return "capture-postgres"; }
  std::string durability() const override { return "pg-sync-commit+log-fsync"; }

  Status Start(const OutboxWorkload& w) override {
    testing::PostgresServerOptions po;
    po.base_dir = w.dir;
    po.settings = {"max_connections=200", "shared_buffers=256MB", "wal_level=logical",
                   "max_replication_slots=4", "max_wal_senders=4"};
    CONVERGE_ASSIGN_OR_RETURN(pg_, testing::PostgresServer::Start(po));
    CONVERGE_RETURN_IF_ERROR(pg_->CreateDatabase("service"));
    conninfo_ = pg_->ConnInfo("service");
    CONVERGE_ASSIGN_OR_RETURN(auto db, sql::OpenDatabase({sql::Engine::kPostgres, conninfo_}));
    CONVERGE_RETURN_IF_ERROR(db->ExecuteScript(
        "CREATE TABLE items (id bigint PRIMARY KEY, customer text NOT NULL, amount bigint NOT "
        "NULL); CREATE PUBLICATION bench_capture FOR TABLE items;"));
    LogOptions lo;
    lo.dir = w.dir + "/log";
    CONVERGE_ASSIGN_OR_RETURN(log_, Log::Open(Env::Default(), lo));
    LogSinkOptions so;
    so.topic_options.partitions = 4;
    so.topic_options.durability = Durability::kFsync;
    CONVERGE_ASSIGN_OR_RETURN(sink_, NewLogSink(*log_, so));
    CONVERGE_RETURN_IF_ERROR(log_->CreateTopic(kCaptureTopic, so.topic_options));
    CONVERGE_RETURN_IF_ERROR(
        CreateCaptureSlot(conninfo_, "bench_capture", "bench_capture", "", *sink_));
    RelayOptions ro;
    ro.name = "bench-capture";
    ro.batch_max_events = 2000;
    ro.mode = "wal";
    ro.wal_slot = "bench_capture";
    ro.wal_publication = "bench_capture";
    ro.wal_capture_tables = true;
    CONVERGE_ASSIGN_OR_RETURN(
        relay_, Relay::Create(Env::Default(), {sql::Engine::kPostgres, conninfo_}, *sink_, ro));
    return relay_->Start();
  }

  Status EndToEnd(const OutboxWorkload& w, std::vector<Measurement>& out) override {
    const uint32_t writers = std::max<uint32_t>(1, w.writers);
    CONVERGE_ASSIGN_OR_RETURN(uint64_t before, LogCount());
    const int64_t start = NowNanos();
    const uint64_t base = next_id_;
    next_id_ += w.events;
    std::vector<Status> results(writers);
    std::vector<std::thread> threads;
    for (uint32_t t = 0; t < writers; ++t) {
      threads.emplace_back([&, t] {
        pthread_setname_np(pthread_self(), "bench-writer");
        auto db = sql::OpenDatabase({sql::Engine::kPostgres, conninfo_});
        if (!db.ok()) {
          results[t] = db.status();
          return;
        }
        const uint64_t mine = w.events / writers + (t < w.events % writers ? 1 : 0);
        for (uint64_t done = 0; done < mine && results[t].ok();) {
          const uint64_t n = std::min<uint64_t>(w.tx_events, mine - done);
          // Writer t owns ids base + t, base + t + writers, ...
          std::vector<int64_t> ids;
          for (uint64_t i = 0; i < n; ++i) {
            ids.push_back(static_cast<int64_t>(base + t + (done + i) * writers));
          }
          results[t] = Insert(**db, ids);
          done += n;
        }
      });
    }
    for (auto& th : threads) th.join();
    for (const Status& s : results) CONVERGE_RETURN_IF_ERROR(s);
    const int64_t written = NowNanos();
    CONVERGE_RETURN_IF_ERROR(WaitForLog(before + w.events));
    const int64_t end = NowNanos();
    Measurement m;
    m.workload = "capture";
    m.system = name();
    m.durability = durability();
    m.rate_name = "changes_per_s";
    m.events = w.events;
    m.seconds = static_cast<double>(end - start) / 1e9;
    m.events_per_s = static_cast<double>(w.events) / m.seconds;
    char note[256];
    std::snprintf(note, sizeof(note),
                  "%u writer(s), %u inserted rows/tx; writes done at %.2fs; row changes -> "
                  "change events in the log (fsync), slot confirmed after",
                  writers, w.tx_events, static_cast<double>(written - start) / 1e9);
    m.note = note;
    out.push_back(m);
    return Status::Ok();
  }

  Status Latency(const OutboxWorkload& w, std::vector<Measurement>& out) override {
    const uint64_t txs = static_cast<uint64_t>(kLagChangesPerS / kLagRowsPerTx) *
                         std::max<uint32_t>(1, w.latency_seconds);
    const uint64_t base = next_id_;
    next_id_ += txs * kLagRowsPerTx;
    std::unique_ptr<std::atomic<int64_t>[]> committed(new std::atomic<int64_t>[txs]);
    for (uint64_t i = 0; i < txs; ++i) committed[i].store(0);
    CONVERGE_ASSIGN_OR_RETURN(TopicInfo info, log_->DescribeTopic(kCaptureTopic));
    std::vector<uint64_t> offsets;
    for (const PartitionInfo& p : info.partitions) offsets.push_back(p.end_offset);
    CONVERGE_ASSIGN_OR_RETURN(uint64_t before, LogCount());

    // The watcher: reads new records every millisecond, one lag sample per row.
    std::atomic<bool> stop{false};
    LatencyRecorder lag(txs * kLagRowsPerTx + 16);
    uint64_t seen = 0;
    std::thread watcher([&] {
      while (!stop.load()) {
        const int64_t now = NowNanos();
        for (uint32_t p = 0; p < offsets.size(); ++p) {
          auto batch = log_->Read(kCaptureTopic, p, offsets[p], 10'000, 64u << 20);
          if (!batch.ok()) continue;
          offsets[p] = batch->next_offset;
          for (const StoredRecord& r : batch->records) {
            // The key is the row id.
            const int64_t id = std::strtoll(std::string(r.key).c_str(), nullptr, 10);
            if (id < static_cast<int64_t>(base)) continue;
            const uint64_t tx = (static_cast<uint64_t>(id) - base) / kLagRowsPerTx;
            if (tx >= txs) continue;
            const int64_t c = committed[tx].load();
            if (c > 0) lag.Record(std::max<int64_t>(0, now - c));
            ++seen;
          }
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
    });
    ReduceTimerSlack();
    auto db = sql::OpenDatabase({sql::Engine::kPostgres, conninfo_});
    Status s = db.status();
    const int64_t start = NowNanos();
    Pacer pacer(kLagChangesPerS / kLagRowsPerTx, start);
    for (uint64_t tx = 0; tx < txs && s.ok(); ++tx) {
      SleepUntilNanos(pacer.DueNanos(tx));
      std::vector<int64_t> ids;
      for (uint32_t i = 0; i < kLagRowsPerTx; ++i) {
        ids.push_back(static_cast<int64_t>(base + tx * kLagRowsPerTx + i));
      }
      s = Insert(**db, ids);
      committed[tx].store(NowNanos());
    }
    const double write_seconds = static_cast<double>(NowNanos() - start) / 1e9;
    if (s.ok()) s = WaitForLog(before + txs * kLagRowsPerTx);
    // Let the watcher read the last records.
    const int64_t settle = NowNanos() + 2'000'000'000;
    while (seen < txs * kLagRowsPerTx && NowNanos() < settle) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    stop = true;
    watcher.join();
    CONVERGE_RETURN_IF_ERROR(s);
    LatencyRecorder::Percentiles p = lag.Compute();
    Measurement m;
    m.workload = "capture-lag";
    m.system = name();
    m.durability = durability();
    m.rate_name = "changes_per_s";
    m.events = lag.count();
    m.seconds = write_seconds;
    m.events_per_s = static_cast<double>(txs * kLagRowsPerTx) / write_seconds;
    m.p50_us = p.p50_us;
    m.p99_us = p.p99_us;
    m.p999_us = p.p999_us;
    m.note = "paced at " + std::to_string(kLagChangesPerS) + " changes/s in transactions of " +
             std::to_string(kLagRowsPerTx) +
             " rows (events/s column: the rate reached); writer COMMIT returned -> change "
             "event readable in the log (1 ms polling)";
    out.push_back(m);
    return Status::Ok();
  }

  Status Stop() override {
    if (relay_) relay_->Stop();
    relay_.reset();
    sink_.reset();
    log_.reset();
    Status s;
    if (pg_) s = pg_->Stop();
    pg_.reset();
    return s;
  }

 private:
  static Status Insert(sql::Database& db, const std::vector<int64_t>& ids) {
    const std::string array = sql::internal::PgIntArray(ids);
    sql::Value p[] = {sql::Value::Text(array)};
    return db
        .Execute(
            "INSERT INTO items (id, customer, amount) SELECT i, 'c' || (i % 1000), 4200 FROM "
            "unnest($1::bigint[]) AS i",
            p)
        .status();
  }

  Result<uint64_t> LogCount() {
    Result<TopicInfo> info = log_->DescribeTopic(kCaptureTopic);
    if (!info.ok()) {
      if (info.status().code() == StatusCode::kNotFound) return uint64_t{0};
      return info.status();
    }
    uint64_t n = 0;
    for (const PartitionInfo& p : info->partitions) n += p.end_offset - p.start_offset;
    return n;
  }

  Status WaitForLog(uint64_t want) {
    const int64_t deadline = NowNanos() + kCaptureTimeoutMs * 1'000'000;
    for (;;) {
      CONVERGE_ASSIGN_OR_RETURN(uint64_t n, LogCount());
      if (n >= want) return Status::Ok();
      if (NowNanos() > deadline) {
        return DeadlineExceededError("capture: " + std::to_string(n) + " of " +
                                     std::to_string(want) +
                                     " changes in the log; relay: " + relay_->stats().last_error);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }

  std::unique_ptr<testing::PostgresServer> pg_;
  std::string conninfo_;
  std::unique_ptr<Log> log_;
  std::unique_ptr<RelaySink> sink_;
  std::unique_ptr<Relay> relay_;
  uint64_t next_id_ = 1;
};

}  // namespace

std::unique_ptr<OutboxSystem> MakeCaptureSystem() { return std::make_unique<CaptureSystem>(); }

}  // namespace converge::bench
