// The baseline of `converge bench outbox`: the polling outbox most services write by hand, on
// the same PostgreSQL, with the same business transactions and the same consumer effect.
//   writer    business rows + INSERT INTO polling_outbox (id, customer, payload), where payload
//             is the same binary CloudEvent converge stores.
//   relay     one thread: BEGIN; SELECT ... ORDER BY seq LIMIT 1000 FOR UPDATE SKIP LOCKED;
//             js_PublishAsync each row with Nats-Msg-Id = event id (JetStream's dedup window);
//             wait for the acks; DELETE the rows; COMMIT. When empty it sleeps 10 ms.
//   consumer  `workers` threads on one durable pull consumer: Fetch up to 1000, then one
//             PostgreSQL transaction per fetch: INSERT the ids into processed (ON CONFLICT DO
//             NOTHING RETURNING id), add the new events to the per-customer counters (one
//             multi-row upsert), COMMIT, then ack each message.
#include <nats/nats.h>
#include <unistd.h>

#include <atomic>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "bench/nats_util.h"
#include "bench/outbox_bench.h"
#include "bench/timing.h"
#include "converge/ids.h"
#include "converge/sql.h"
#include "support/postgres_server.h"
#include "support/server_process.h"

namespace converge::bench {
namespace {

constexpr const char* kStream = "OUTBOX";
constexpr const char* kSubject = "outbox.orders";
constexpr int kBatch = 1000;
constexpr int64_t kIdleSleepUs = 10'000;
constexpr int64_t kTimeoutMs = 10'000;
constexpr int64_t kDrainTimeoutMs = 600'000;

Status NatsError(const std::string& what, natsStatus s) {
  return bench::NatsError("polling", what, s);
}

std::string IntArray(const std::vector<int64_t>& v) {
  std::string out = "{";
  for (size_t i = 0; i < v.size(); ++i) {
    if (i > 0) out += ',';
    out += std::to_string(v[i]);
  }
  return out + "}";
}

std::string TextArray(const std::vector<std::string>& v) {
  std::string out = "{";
  for (size_t i = 0; i < v.size(); ++i) {
    if (i > 0) out += ',';
    out += '"';
    for (char c : v[i]) {
      if (c == '"' || c == '\\') out += '\\';
      out += c;
    }
    out += '"';
  }
  return out + "}";
}

// A bytea[] literal: {"\\x0a0b",...}.
std::string ByteaArray(const std::vector<std::string>& v) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out = "{";
  for (size_t i = 0; i < v.size(); ++i) {
    if (i > 0) out += ',';
    out += "\"\\\\x";
    for (unsigned char c : v[i]) {
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
    out += '"';
  }
  return out + "}";
}

class PollingOutboxSystem final : public OutboxSystem {
 public:
  ~PollingOutboxSystem() override { Stop().IgnoreError(); }

  std::string name() const override { return "polling-postgres"; }
  std::string durability() const override { return "pg-sync-commit+jetstream-interval-2m"; }

  Status Start(const OutboxWorkload& w) override {
    testing::PostgresServerOptions po;
    po.base_dir = w.dir;
    po.settings = {"max_connections=200", "shared_buffers=256MB"};
    CONVERGE_ASSIGN_OR_RETURN(pg_, testing::PostgresServer::Start(po));
    CONVERGE_RETURN_IF_ERROR(pg_->CreateDatabase("service"));
    CONVERGE_RETURN_IF_ERROR(pg_->CreateDatabase("consumer"));
    testing::NatsServerOptions no;
    no.base_dir = w.dir;
    CONVERGE_ASSIGN_OR_RETURN(nats_, testing::StartNatsServer(no));
    CONVERGE_ASSIGN_OR_RETURN(auto service, Connect("service"));
    CONVERGE_RETURN_IF_ERROR(service->ExecuteScript(
        "CREATE TABLE orders (id bigserial PRIMARY KEY, customer text NOT NULL, "
        "amount bigint NOT NULL);"
        "CREATE TABLE polling_outbox (seq bigserial PRIMARY KEY, id text NOT NULL, "
        "customer text NOT NULL, payload bytea NOT NULL);"));
    CONVERGE_ASSIGN_OR_RETURN(consumer_db_, Connect("consumer"));
    CONVERGE_RETURN_IF_ERROR(consumer_db_->ExecuteScript(
        "CREATE TABLE processed (id text PRIMARY KEY);"
        "CREATE TABLE counters (customer text PRIMARY KEY, n bigint NOT NULL);"));
    CONVERGE_RETURN_IF_ERROR(ConnectNats(&nc_, &js_));
    CONVERGE_RETURN_IF_ERROR(AddFileStream("polling", js_, kStream, kSubject));
    stop_ = false;
    relay_ = std::thread([this] { relay_status_ = RelayLoop(); });
    for (uint32_t i = 0; i < std::max<uint32_t>(1, w.workers); ++i) {
      consumers_.emplace_back([this] {
        Status st = ConsumerLoop();
        if (!st.ok()) {
          std::lock_guard<std::mutex> lock(mu_);
          if (consumer_status_.ok()) consumer_status_ = st;
        }
      });
    }
    return Status::Ok();
  }

  Status EndToEnd(const OutboxWorkload& w, std::vector<Measurement>& out) override {
    const uint32_t writers = std::max<uint32_t>(1, w.writers);
    const uint64_t before = applied_.load();
    const int64_t start = NowNanos();
    CONVERGE_RETURN_IF_ERROR(RunWriters(w, writers, w.events, w.tx_events, 0, nullptr));
    const int64_t written = NowNanos();
    CONVERGE_RETURN_IF_ERROR(WaitApplied(before + w.events));
    const int64_t end = NowNanos();
    CONVERGE_RETURN_IF_ERROR(Verify(before + w.events));
    Measurement m;
    m.workload = "e2e";
    m.system = name();
    m.durability = durability();
    m.events = w.events;
    m.seconds = static_cast<double>(end - start) / 1e9;
    m.events_per_s = static_cast<double>(w.events) / m.seconds;
    char note[256];
    std::snprintf(note, sizeof(note),
                  "%u writer(s), %u events/tx; writes done at %.2fs; SKIP LOCKED batch %d -> "
                  "JetStream async + msg id -> DELETE; %u pull consumer(s); exactly once checked",
                  writers, w.tx_events, static_cast<double>(written - start) / 1e9, kBatch,
                  std::max<uint32_t>(1, w.workers));
    m.note = note;
    out.push_back(m);
    return Status::Ok();
  }

  Status Latency(const OutboxWorkload& w, std::vector<Measurement>& out) override {
    const uint64_t total = static_cast<uint64_t>(w.rate_per_s) * w.latency_seconds;
    const uint64_t before = applied_.load();
    times_ = std::make_unique<CommitEffectTimes>(total);
    latency_base_.store(next_order_);
    const int64_t start = NowNanos();
    CONVERGE_RETURN_IF_ERROR(RunWriters(w, 1, total, 1, w.rate_per_s, times_.get()));
    CONVERGE_RETURN_IF_ERROR(WaitApplied(before + total));
    const double seconds = static_cast<double>(NowNanos() - start) / 1e9;
    CONVERGE_RETURN_IF_ERROR(Verify(before + total));
    size_t missing = 0;
    Measurement m =
        times_->Summarize(name(), durability(), total / 10, seconds,
                          "1 event/tx paced at " + std::to_string(w.rate_per_s) +
                              "/s; relay polls every 10 ms when idle; first 10% skipped",
                          &missing);
    times_.reset();
    if (missing > 0) return InternalError("polling: " + std::to_string(missing) + " unmatched");
    out.push_back(m);
    return Status::Ok();
  }

  Status Stop() override {
    stop_ = true;
    if (relay_.joinable()) relay_.join();
    for (auto& t : consumers_) t.join();
    consumers_.clear();
    if (js_ != nullptr) jsCtx_Destroy(js_);
    if (nc_ != nullptr) natsConnection_Destroy(nc_);
    js_ = nullptr;
    nc_ = nullptr;
    consumer_db_.reset();
    Status s;
    if (nats_ != nullptr) s = nats_->Shutdown();
    nats_.reset();
    if (pg_ != nullptr) {
      Status p = pg_->Stop();
      if (s.ok()) s = p;
    }
    pg_.reset();
    return s;
  }

 private:
  Result<std::unique_ptr<sql::Database>> Connect(const std::string& db) {
    sql::PostgresOptions o;
    o.conninfo = pg_->ConnInfo(db);
    return sql::Database::ConnectPostgres(o);
  }

  Status ConnectNats(natsConnection** nc, jsCtx** js) {
    CONVERGE_RETURN_IF_ERROR(NatsConnect("polling", {nats_->Url("nats"), kTimeoutMs, false}, nc));
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.Wait = kTimeoutMs;
    jo.PublishAsync.MaxPending = 4096;
    const natsStatus s = natsConnection_JetStream(js, *nc, &jo);
    if (s != NATS_OK) return NatsError("JetStream context", s);
    return Status::Ok();
  }

  // ---- relay: poll, publish, delete ----
  Status RelayLoop() {
    CONVERGE_ASSIGN_OR_RETURN(auto db, Connect("service"));
    natsConnection* nc = nullptr;
    jsCtx* js = nullptr;
    CONVERGE_RETURN_IF_ERROR(ConnectNats(&nc, &js));
    Status status;
    std::vector<int64_t> seqs;
    while (!stop_ && status.ok()) {
      seqs.clear();
      status = db->Transact([&](sql::Transaction& tx) -> Status {
        sql::Value limit[] = {sql::Value::Int(kBatch)};
        CONVERGE_RETURN_IF_ERROR(
            tx.Query("SELECT seq, id, payload FROM polling_outbox ORDER BY seq LIMIT $1 "
                     "FOR UPDATE SKIP LOCKED",
                     limit,
                     [&](const sql::Row& row) -> Status {
                       CONVERGE_ASSIGN_OR_RETURN(int64_t seq, row.Int(0));
                       seqs.push_back(seq);
                       std::string id(row.Bytes(1));
                       std::string_view payload = row.Bytes(2);
                       jsPubOptions po;
                       jsPubOptions_Init(&po);
                       po.MsgId = id.c_str();
                       natsStatus s = js_PublishAsync(js, kSubject, payload.data(),
                                                      static_cast<int>(payload.size()), &po);
                       if (s != NATS_OK) return NatsError("js_PublishAsync", s);
                       return Status::Ok();
                     })
                .status());
        if (seqs.empty()) return Status::Ok();
        jsPubOptions wait;
        jsPubOptions_Init(&wait);
        wait.MaxWait = kTimeoutMs;
        natsStatus s = js_PublishAsyncComplete(js, &wait);
        if (s != NATS_OK) return NatsError("js_PublishAsyncComplete", s);
        std::string literal = IntArray(seqs);
        sql::Value p[] = {sql::Value::Text(literal)};
        return tx.Execute("DELETE FROM polling_outbox WHERE seq = ANY($1::bigint[])", p).status();
      });
      if (status.ok() && seqs.empty()) ::usleep(kIdleSleepUs);
    }
    jsCtx_Destroy(js);
    natsConnection_Destroy(nc);
    return status;
  }

  // ---- consumer: pull, dedup + effect in one transaction, ack ----
  Status ConsumerLoop() {
    CONVERGE_ASSIGN_OR_RETURN(auto db, Connect("consumer"));
    natsConnection* nc = nullptr;
    jsCtx* js = nullptr;
    CONVERGE_RETURN_IF_ERROR(ConnectNats(&nc, &js));
    jsSubOptions so;
    jsSubOptions_Init(&so);
    so.Stream = kStream;
    so.Config.AckPolicy = js_AckExplicit;
    so.Config.DeliverPolicy = js_DeliverAll;
    so.Config.MaxAckPending = 100'000;
    natsSubscription* sub = nullptr;
    jsErrCode jerr = static_cast<jsErrCode>(0);
    natsStatus ns = js_PullSubscribe(&sub, js, kSubject, "billing", nullptr, &so, &jerr);
    if (ns != NATS_OK) return NatsError("js_PullSubscribe", ns);
    Status status;
    while (!stop_ && status.ok()) {
      natsMsgList list{nullptr, 0};
      ns = natsSubscription_Fetch(&list, sub, kBatch, 100, &jerr);
      if (ns == NATS_TIMEOUT) continue;
      if (ns != NATS_OK) {
        status = NatsError("Fetch", ns);
        break;
      }
      // Consumers share counter rows: a deadlock or serialization failure is retried.
      for (int attempt = 0; attempt < 20; ++attempt) {
        status = ApplyBatch(*db, list);
        if (status.code() != StatusCode::kAborted) break;
      }
      if (status.ok()) {
        for (int i = 0; i < list.Count; ++i) natsMsg_Ack(list.Msgs[i], nullptr);
      }
      natsMsgList_Destroy(&list);
    }
    natsSubscription_Destroy(sub);
    jsCtx_Destroy(js);
    natsConnection_Destroy(nc);
    return status;
  }

  Status ApplyBatch(sql::Database& db, const natsMsgList& list) {
    std::vector<Event> events;
    std::vector<std::string> ids;
    events.reserve(static_cast<size_t>(list.Count));
    for (int i = 0; i < list.Count; ++i) {
      std::string_view payload(natsMsg_GetData(list.Msgs[i]),
                               static_cast<size_t>(natsMsg_GetDataLength(list.Msgs[i])));
      CONVERGE_ASSIGN_OR_RETURN(Event e, DecodeBinary(payload));
      ids.push_back(e.id());
      events.push_back(std::move(e));
    }
    std::vector<uint64_t> latency_seqs;
    uint64_t fresh_count = 0;
    Status s = db.Transact([&](sql::Transaction& tx) -> Status {
      std::set<std::string> fresh;
      std::string literal = TextArray(ids);
      sql::Value p[] = {sql::Value::Text(literal)};
      CONVERGE_RETURN_IF_ERROR(tx.Query("INSERT INTO processed (id) SELECT unnest($1::text[]) "
                                        "ON CONFLICT DO NOTHING RETURNING id",
                                        p,
                                        [&](const sql::Row& row) {
                                          fresh.emplace(row.Bytes(0));
                                          return Status::Ok();
                                        })
                                   .status());
      // A fetch may hold several events of one customer: add them up first.
      std::map<std::string, int64_t> per_customer;
      for (const Event& e : events) {
        if (!fresh.count(e.id())) continue;
        ++per_customer[std::string(e.partitionkey().value_or(""))];
        ++fresh_count;
        if (times_ != nullptr) {
          int64_t order = OrderNumber(e.data());
          uint64_t base = latency_base_.load();
          if (order >= static_cast<int64_t>(base)) latency_seqs.push_back(order - base);
        }
      }
      if (per_customer.empty()) return Status::Ok();
      std::vector<std::string> customers;
      std::vector<int64_t> counts;
      for (auto& [c, n] : per_customer) {
        customers.push_back(c);
        counts.push_back(n);
      }
      std::string cl = TextArray(customers), nl = IntArray(counts);
      sql::Value q[] = {sql::Value::Text(cl), sql::Value::Text(nl)};
      return tx
          .Execute(
              "INSERT INTO counters (customer, n) SELECT * FROM "
              "unnest($1::text[], $2::bigint[]) "
              "ON CONFLICT (customer) DO UPDATE SET n = counters.n + excluded.n",
              q)
          .status();
    });
    CONVERGE_RETURN_IF_ERROR(s);
    if (CommitEffectTimes* times = times_.get()) {
      const int64_t now = NowNanos();
      for (uint64_t seq : latency_seqs) times->Applied(seq, now);
    }
    applied_.fetch_add(fresh_count);
    return Status::Ok();
  }

  // ---- writers ----
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
    CONVERGE_ASSIGN_OR_RETURN(auto db, Connect("service"));
    UuidV7Generator ids(Env::Default().clock(), Env::Default().random());
    const uint64_t mine = events / writers + (t < events % writers ? 1 : 0);
    Pacer pacer(rate > 0 ? rate : 1, NowNanos());
    std::vector<std::string> payloads, keys, event_ids;
    uint64_t done = 0, tx_index = 0;
    while (done < mine) {
      const uint64_t n = std::min<uint64_t>(per_tx, mine - done);
      payloads.clear();
      keys.clear();
      event_ids.clear();
      for (uint64_t i = 0; i < n; ++i) {
        const uint64_t order = base + t + (done + i) * writers;
        keys.push_back(OrderKey(order, t, writers, w.keys));
        Event e = OrderEvent(order, keys.back());
        e.set_id(ids.NextString());
        e.set_time(FormatRfc3339(Env::Default().clock().NowWallNanos()));
        std::string payload;
        CONVERGE_RETURN_IF_ERROR(EncodeBinary(e, &payload));
        payloads.push_back(std::move(payload));
        event_ids.push_back(e.id());
      }
      if (rate > 0) SleepUntilNanos(pacer.DueNanos(tx_index));
      Status s = db->Transact([&](sql::Transaction& tx) -> Status {
        // One statement per table, as a careful hand-written service would do.
        std::string kl = TextArray(keys);
        sql::Value bp[] = {sql::Value::Text(kl)};
        CONVERGE_RETURN_IF_ERROR(
            tx.Execute("INSERT INTO orders (customer, amount) SELECT unnest($1::text[]), 4200", bp)
                .status());
        std::string il = TextArray(event_ids), pl = ByteaArray(payloads);
        sql::Value op[] = {sql::Value::Text(il), sql::Value::Text(kl), sql::Value::Text(pl)};
        CONVERGE_RETURN_IF_ERROR(
            tx.Execute("INSERT INTO polling_outbox (id, customer, payload) SELECT * FROM "
                       "unnest($1::text[], $2::text[], $3::bytea[])",
                       op)
                .status());
        return Status::Ok();
      });
      CONVERGE_RETURN_IF_ERROR(s);
      if (times != nullptr) {
        const int64_t now = NowNanos();
        for (uint64_t i = 0; i < n; ++i) times->Committed(t + (done + i) * writers, now);
      }
      done += n;
      ++tx_index;
    }
    return Status::Ok();
  }

  Status WaitApplied(uint64_t target) {
    const int64_t deadline = NowNanos() + kDrainTimeoutMs * 1'000'000;
    while (applied_.load() < target) {
      {
        std::lock_guard<std::mutex> lock(mu_);
        CONVERGE_RETURN_IF_ERROR(consumer_status_);
      }
      if (NowNanos() > deadline) {
        return DeadlineExceededError("polling: " + std::to_string(applied_.load()) + " of " +
                                     std::to_string(target) + " applied");
      }
      ::usleep(500);
    }
    return Status::Ok();
  }

  Status Verify(uint64_t expected) {
    int64_t sum = -1, ids = -1;
    CONVERGE_RETURN_IF_ERROR(
        consumer_db_
            ->Query("SELECT coalesce(sum(n), 0), (SELECT count(*) FROM processed) "
                    "FROM counters",
                    {},
                    [&](const sql::Row& row) -> Status {
                      CONVERGE_ASSIGN_OR_RETURN(sum, row.Int(0));
                      CONVERGE_ASSIGN_OR_RETURN(ids, row.Int(1));
                      return Status::Ok();
                    })
            .status());
    if (sum != static_cast<int64_t>(expected) || ids != static_cast<int64_t>(expected)) {
      return InternalError("polling: exactly-once check failed: " + std::to_string(sum) +
                           " effects, " + std::to_string(ids) + " ids, expected " +
                           std::to_string(expected));
    }
    return Status::Ok();
  }

  std::unique_ptr<testing::PostgresServer> pg_;
  std::unique_ptr<testing::ManagedServer> nats_;
  natsConnection* nc_ = nullptr;
  jsCtx* js_ = nullptr;
  std::unique_ptr<sql::Database> consumer_db_;
  std::atomic<bool> stop_{false};
  std::thread relay_;
  Status relay_status_;
  std::vector<std::thread> consumers_;
  std::mutex mu_;
  Status consumer_status_;
  std::atomic<uint64_t> applied_{0};
  uint64_t next_order_ = 0;
  std::atomic<uint64_t> latency_base_{0};
  std::unique_ptr<CommitEffectTimes> times_;
};

}  // namespace

std::unique_ptr<OutboxSystem> MakePollingOutboxSystem() {
  return std::make_unique<PollingOutboxSystem>();
}

}  // namespace converge::bench
