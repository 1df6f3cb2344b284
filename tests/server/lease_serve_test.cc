// Two `converge serve` processes configured with the same outbox relay source, a shared
// PostgreSQL lease table (cluster:) and a shared log (JetStream, one nats-server): singleton
// work under leases, driven and observed from outside as an operator would.
//   - Only the lease holder relays; SIGKILL of the holder under outbox load: the other takes the
//     relay over; every committed outbox row reaches the log exactly once (the overlap's
//     duplicates dropped by the log's idempotent publish), none lost; the takeover time (kill ->
//     first event relayed by the other sidecar) is printed.
//   - PostgreSQL stopped for longer than the lease ttl and started again: the holder stops
//     relaying by its own deadline, never do both sidecars hold the lease, one takes it again,
//     and every row still arrives once.
//   - The saga orchestrator (saga log in PostgreSQL) under the lease "sagas": the standby
//     forwards saga routes to the holder; SIGKILL of the holder with sagas in flight: the other recovers the saga log
//     and every saga completes.
//   - A replica into a shared PostgreSQL table under "replica:<name>": only the holder applies,
//     the standby forwards what needs the applier; after SIGKILL the other applies every change.
#include <gtest/gtest.h>
#include <signal.h>

#include <atomic>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "converge/client.h"
#include "converge/env.h"
#include "converge/event.h"
#include "converge/outbox.h"
#include "converge/sql.h"
#include "serve_process.h"
#include "support/nats_server.h"
#include "support/postgres_server.h"
#include "test_util.h"

namespace converge {
namespace {

namespace json = boost::json;
using Clock = std::chrono::steady_clock;

constexpr int64_t kTtlMs = 2000;  // renew every ttl/3, margin ttl/5

template <typename Fn>
bool Eventually(Fn fn, int64_t ms) {
  const auto deadline = Clock::now() + std::chrono::milliseconds(ms);
  while (Clock::now() < deadline) {
    if (fn()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return fn();
}

std::string Numbered(std::string prefix, long n) {
  prefix += std::to_string(n);
  return prefix;
}

class LeaseServeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto pg = testing::PostgresServer::Start();
    ASSERT_TRUE(pg.ok()) << pg.status().ToString();
    pg_ = std::move(pg).value();
    auto nats = testing::NatsCluster::Start(testing::NatsClusterOptions{});
    ASSERT_TRUE(nats.ok()) << nats.status().ToString();
    nats_ = std::move(nats).value();
    auto db = Connect();
    ASSERT_NE(db, nullptr);
    ASSERT_TRUE(Outbox::CreateSchema(*db).ok());
  }

  std::unique_ptr<sql::Database> Connect() {
    sql::PostgresOptions o;
    o.conninfo = pg_->ConnInfo();
    o.connect_timeout_ms = 2000;
    auto db = sql::Database::ConnectPostgres(o);
    EXPECT_TRUE(db.ok()) << db.status().ToString();
    return db.ok() ? std::move(db).value() : nullptr;
  }

  // Both sidecars: the same relay source, log (stream prefix) and lease table.
  std::string Config(const std::string& instance, bool leased = true,
                     int64_t ttl_ms = kTtlMs) const {
    std::string yaml =
        "log:\n  backend: jetstream\n  jetstream:\n    servers: [" + nats_->Url(0) +
        "]\n    stream_prefix: leasetest\n"
        "store:\n  enabled: false\nsagas:\n  enabled: false\n"
        "relays:\n  sink: {partitions: 1}\n  sources:\n    - name: orders\n      database: \"" +
        pg_->ConnInfo() +
        "\"\n      poll_interval_ms: 50\n      postgres_buckets: 8\n"
        "      rebalance_interval_ms: 200\n      postgres_connect_timeout_ms: 2000\n";
    if (leased) {
      yaml += "cluster:\n  instance_id: " + instance + "\n  postgres_conninfo: \"" +
              pg_->ConnInfo() + "\"\n  lease_ttl_ms: " + std::to_string(ttl_ms) + "\n";
    }
    return yaml;
  }

  // Sagas only (no relays): the saga log in the shared PostgreSQL.
  std::string SagaConfig(const std::string& instance) const {
    return "log:\n  backend: jetstream\n  jetstream:\n    servers: [" + nats_->Url(0) +
           "]\n    stream_prefix: leasesagas\n"
           "store:\n  enabled: false\n"
           "sagas:\n  postgres_conninfo: \"" +
           pg_->ConnInfo() +
           "\"\n  postgres_table: lease_sagas\n"
           "cluster:\n  instance_id: " +
           instance + "\n  postgres_conninfo: \"" + pg_->ConnInfo() +
           "\"\n  lease_ttl_ms: " + std::to_string(kTtlMs) + "\n";
  }

  // GET /v1/leases: whether `server` holds lease `name` (nullopt: no answer).
  static std::optional<bool> Holds(const testing::ServeProcess& server,
                                   const std::string& name = "relay:orders") {
    testing::HttpResult r = testing::HttpCall(server.port(), "GET", "/v1/leases");
    if (r.status != 200) return std::nullopt;
    json::value v = json::parse(r.body);
    for (const json::value& l : v.at("leases").as_array()) {
      if (l.at("name").as_string() == name) return l.at("held").as_bool();
    }
    return std::nullopt;
  }

  // Whether the work of lease `name` runs in `server` (GET /v1/leases; nullopt: no answer).
  static std::optional<bool> Runs(const testing::ServeProcess& server, const std::string& name) {
    testing::HttpResult r = testing::HttpCall(server.port(), "GET", "/v1/leases");
    if (r.status != 200) return std::nullopt;
    json::value v = json::parse(r.body);
    for (const json::value& l : v.at("leases").as_array()) {
      if (l.at("name").as_string() == name) return l.at("running").as_bool();
    }
    return std::nullopt;
  }

  // The token of lease `name` as `server` holds it (GET /v1/leases; -1: no answer).
  static int64_t Token(const testing::ServeProcess& server, const std::string& name) {
    testing::HttpResult r = testing::HttpCall(server.port(), "GET", "/v1/leases");
    if (r.status != 200) return -1;
    json::value v = json::parse(r.body);
    for (const json::value& l : v.at("leases").as_array()) {
      if (l.at("name").as_string() == name) return l.at("token").as_int64();
    }
    return -1;
  }

  // The value of one sample of /metrics (-1: not found).
  static double Metric(const testing::ServeProcess& server, const std::string& sample) {
    testing::HttpResult r = testing::HttpCall(server.port(), "GET", "/metrics");
    const size_t at = r.body.find("\n" + sample + " ");
    if (at == std::string::npos) return -1;
    return std::strtod(r.body.c_str() + at + sample.size() + 2, nullptr);
  }

  // Events relay "orders" published according to GET /v1/relays (-1: no answer).
  static int64_t Published(const testing::ServeProcess& server) {
    testing::HttpResult r = testing::HttpCall(server.port(), "GET", "/v1/relays");
    if (r.status != 200) return -1;
    json::value v = json::parse(r.body);
    for (const json::value& rel : v.at("relays").as_array()) {
      if (rel.at("name").as_string() == "orders") return rel.at("published").as_int64();
    }
    return -1;
  }

  // Every event id of topic "orders" in the shared log, read through `server`, with counts.
  static std::map<std::string, int> LogIds(const testing::ServeProcess& server) {
    std::map<std::string, int> ids;
    uint64_t from = 0;
    for (;;) {
      testing::HttpResult r = testing::HttpCall(
          server.port(), "GET",
          "/v1/topics/orders/events?from_offset=" + std::to_string(from) + "&limit=1000");
      if (r.status != 200) break;
      json::value v = json::parse(r.body);
      const json::array& events = v.at("events").as_array();
      for (const json::value& e : events) ids[std::string(e.at("event").at("id").as_string())]++;
      const uint64_t next = static_cast<uint64_t>(v.at("next_offset").as_int64());
      if (events.empty() || next <= from) break;
      from = next;
    }
    return ids;
  }

  // Writes outbox rows (one event per transaction) until stopped; ids of committed rows.
  class Producer {
   public:
    explicit Producer(std::unique_ptr<sql::Database> db) : db_(std::move(db)) {
      thread_ = std::thread([this] { Run(); });
    }
    ~Producer() { Stop(); }
    void Stop() {
      stop_ = true;
      if (thread_.joinable()) thread_.join();
    }
    std::vector<std::string> committed() {
      std::lock_guard<std::mutex> lock(mu_);
      return committed_;
    }

   private:
    void Run() {
      Outbox outbox(Env::Default());
      for (long n = 0; !stop_; ++n) {
        Event e;
        e.set_id(Numbered("ev-", n));
        e.set_source("/shop");
        e.set_type("order.placed");
        e.set_subject(Numbered("order-", n % 16));
        std::vector<OutboxEntry> rows = {{"orders", &e}};
        Status s = db_->Transact([&](sql::Transaction& tx) { return outbox.Write(tx, rows); });
        if (s.ok()) {
          std::lock_guard<std::mutex> lock(mu_);
          committed_.push_back(std::string(e.id()));
        } else {
          // PostgreSQL restarting: the row did not commit (or its outcome is unknown: then it
          // is not counted, and if it committed it is simply an extra event).
          std::this_thread::sleep_for(std::chrono::milliseconds(50));
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
      }
    }

    std::unique_ptr<sql::Database> db_;
    std::atomic<bool> stop_{false};
    std::mutex mu_;
    std::vector<std::string> committed_;
    std::thread thread_;
  };

  // Waits until the outbox is empty and every committed id is in the log once.
  void ExpectEveryRowOnce(const testing::ServeProcess& reader,
                          const std::vector<std::string>& committed) {
    auto db = Connect();
    ASSERT_NE(db, nullptr);
    ASSERT_TRUE(Eventually(
        [&] {
          std::string n =
              pg_->Query("postgres", "SELECT count(*) FROM converge_outbox").value_or("?");
          return n == "0";
        },
        30'000))
        << "the outbox was not drained";
    std::map<std::string, int> ids;
    ASSERT_TRUE(Eventually(
        [&] {
          ids = LogIds(reader);
          for (const std::string& id : committed) {
            if (ids.count(id) == 0) return false;
          }
          return true;
        },
        30'000));
    size_t missing = 0, duplicated = 0;
    for (const std::string& id : committed) {
      auto it = ids.find(id);
      if (it == ids.end()) {
        ++missing;
      } else if (it->second > 1) {
        ++duplicated;
      }
    }
    std::printf("committed %zu rows: %zu in the log, %zu missing, %zu duplicated\n",
                committed.size(), ids.size(), missing, duplicated);
    EXPECT_EQ(missing, 0u);
    EXPECT_EQ(duplicated, 0u);
  }

  std::unique_ptr<testing::PostgresServer> pg_;
  std::unique_ptr<testing::NatsCluster> nats_;
};

TEST_F(LeaseServeTest, RelayTakeoverAfterSigkillLosesNothingAndPublishesOnce) {
  testing::ServeProcess a(Config("a"));
  ASSERT_TRUE(a.Start().ok()) << a.Log();
  ASSERT_TRUE(Eventually([&] { return Holds(a) == true; }, 15'000)) << a.Log();
  testing::ServeProcess b(Config("b"));
  ASSERT_TRUE(b.Start().ok()) << b.Log();
  ASSERT_TRUE(Eventually([&] { return Holds(b).has_value(); }, 15'000)) << b.Log();

  Producer producer(Connect());
  ASSERT_TRUE(Eventually([&] { return Published(a) >= 200; }, 30'000)) << a.Log();
  // Only the holder relays: without the lease both relays share the outbox's buckets.
  EXPECT_EQ(Holds(b), false);
  EXPECT_EQ(Published(b), 0) << "the standby relayed while the other held the lease";
  EXPECT_EQ(Metric(a, "converge_lease_held{name=\"relay:orders\"}"), 1);
  EXPECT_EQ(Metric(b, "converge_lease_held{name=\"relay:orders\"}"), 0);

  a.Kill();
  const auto killed = Clock::now();
  ASSERT_TRUE(Eventually([&] { return Published(b) > 0; }, 30'000)) << b.Log();
  const double takeover_s = std::chrono::duration<double>(Clock::now() - killed).count();
  const double bound_s = (kTtlMs + kTtlMs / 3) / 1000.0;
  std::printf(
      "relay takeover: %.3f s from SIGKILL to the first event relayed by the other "
      "sidecar (ttl %.1f s, renew interval %.3f s: bound %.3f s + a round trip and "
      "the relay's start)\n",
      takeover_s, kTtlMs / 1000.0, kTtlMs / 3000.0, bound_s);
  EXPECT_LT(takeover_s, bound_s + 2.0);
  EXPECT_EQ(Holds(b), true);
  // Taken over from a holder that never released it.
  EXPECT_EQ(Metric(b, "converge_lease_takeovers_total{name=\"relay:orders\"}"), 1);

  std::this_thread::sleep_for(std::chrono::milliseconds(1000));
  producer.Stop();
  ExpectEveryRowOnce(b, producer.committed());
}

// A sidecar SIGKILLed and started again with the same instance_id and URL takes its previous
// incarnation's leases over at once (new tokens) instead of waiting for them to expire: its
// relay runs again, and the group it ran answers the first fetch, with the acked events not
// delivered again. The lease ttl (20 s) is far longer than what the test allows.
TEST_F(LeaseServeTest, ARestartedSidecarTakesOverItsOwnLeasesAtOnce) {
  constexpr int64_t kLongTtlMs = 20'000;
  const std::string config = Config("a", true, kLongTtlMs);
  testing::ServeProcess a(config);
  ASSERT_TRUE(a.Start().ok()) << a.Log();
  ASSERT_TRUE(Eventually([&] { return Holds(a) == true; }, 15'000)) << a.Log();
  const int64_t old_token = Token(a, "relay:orders");
  ASSERT_GT(old_token, 0);

  auto post = [](uint16_t port, const std::string& target, const std::string& body) {
    return testing::HttpCall(port, "POST", target, body, {{"Content-Type", "application/json"}});
  };
  ASSERT_EQ(post(a.port(), "/v1/topics", R"({"name":"jobs","partitions":2})").status, 201);
  {
    client::Options o;
    o.port = a.port();
    client::Client c(o);
    for (int n = 0; n < 10; ++n) {
      Event e;
      e.set_id(Numbered("job-", n));
      e.set_source("/test");
      e.set_type("t");
      e.set_subject(Numbered("k", n % 4));
      ASSERT_TRUE(c.PublishOne("jobs", e).ok());
    }
  }
  ASSERT_EQ(post(a.port(), "/v1/topics/jobs/groups", R"({"name":"g","lease_ms":60000})").status,
            201);
  // One fetch of up to `max` events, each acked; the ids, or the failed answer.
  auto fetch_and_ack = [&](uint16_t port, int max, std::set<std::string>* ids) {
    testing::HttpResult r = post(port, "/v1/topics/jobs/groups/g/fetch",
                                 R"({"consumer":"c","max_events":)" + std::to_string(max) + "}");
    if (r.status != 200) return r;
    const json::value v = json::parse(r.body);
    std::string acks = R"({"consumer":"c","acks":[)";
    bool any = false;
    for (const json::value& d : v.at("deliveries").as_array()) {
      if (any) acks += ',';
      any = true;
      ids->insert(std::string(d.at("event").at("id").as_string()));
      acks += "{\"partition\":" + json::serialize(d.at("partition")) +
              ",\"offset\":" + json::serialize(d.at("offset")) +
              ",\"lease_id\":" + json::serialize(d.at("lease_id")) + "}";
    }
    if (any) {
      testing::HttpResult a = post(port, "/v1/topics/jobs/groups/g/ack", acks + "]}");
      if (a.status != 200) return a;
    }
    return r;
  };
  std::set<std::string> acked;
  ASSERT_EQ(fetch_and_ack(a.port(), 5, &acked).status, 200);
  ASSERT_FALSE(acked.empty());

  a.Kill();
  testing::ServeProcess restarted(config, a.data_dir());
  restarted.set_listen("127.0.0.1:" + std::to_string(a.port()));
  ASSERT_TRUE(restarted.Start().ok()) << restarted.Log();
  const auto started = Clock::now();
  // No retry: the group runs here again at once, from the first fetch on.
  std::set<std::string> after;
  testing::HttpResult first = fetch_and_ack(restarted.port(), 100, &after);
  const double first_fetch_s = std::chrono::duration<double>(Clock::now() - started).count();
  std::printf("restart -> first fetch answered %d after %.3f s (lease ttl %.1f s)\n", first.status,
              first_fetch_s, kLongTtlMs / 1000.0);
  ASSERT_EQ(first.status, 200) << first.body << restarted.Log();
  for (int i = 0; i < 50 && after.size() + acked.size() < 10; ++i) {
    testing::HttpResult r = fetch_and_ack(restarted.port(), 100, &after);
    ASSERT_EQ(r.status, 200) << r.body;
  }
  size_t again = 0;
  for (const std::string& id : after) again += acked.count(id);
  EXPECT_EQ(again, 0u) << "acked events delivered again";
  EXPECT_EQ(after.size() + acked.size(), 10u);
  // The relay runs again well before the old lease would have expired, with a newer token
  // (the dead incarnation's writes are fenced).
  ASSERT_TRUE(Eventually([&] { return Holds(restarted) == true; }, 5'000)) << restarted.Log();
  const double relay_s = std::chrono::duration<double>(Clock::now() - started).count();
  std::printf("restart -> relay lease held after %.3f s\n", relay_s);
  EXPECT_GT(Token(restarted, "relay:orders"), old_token);
  EXPECT_LT(relay_s, kLongTtlMs / 2000.0);
  EXPECT_EQ(Metric(restarted, "converge_lease_takeovers_total{name=\"relay:orders\"}"), 1);
}

TEST_F(LeaseServeTest, PostgresRestartNeverLeavesTwoHolders) {
  testing::ServeProcess a(Config("a"));
  ASSERT_TRUE(a.Start().ok()) << a.Log();
  ASSERT_TRUE(Eventually([&] { return Holds(a) == true; }, 15'000)) << a.Log();
  testing::ServeProcess b(Config("b"));
  ASSERT_TRUE(b.Start().ok()) << b.Log();
  ASSERT_TRUE(Eventually([&] { return Holds(b).has_value(); }, 15'000)) << b.Log();

  auto producer = std::make_unique<Producer>(Connect());
  ASSERT_TRUE(Eventually([&] { return Published(a) >= 100; }, 30'000)) << a.Log();

  // Samples a, b, a: both held only if a held before and after b's answer (a lease is never
  // lost and taken again within one such sample).
  std::atomic<bool> sampling{true};
  std::atomic<int> both{0};
  std::atomic<int> samples{0};
  std::thread sampler([&] {
    while (sampling) {
      std::optional<bool> a1 = Holds(a);
      std::optional<bool> b1 = Holds(b);
      std::optional<bool> a2 = Holds(a);
      if (a1 == true && b1 == true && a2 == true) both++;
      samples++;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  });

  ASSERT_TRUE(pg_->Stop().ok());
  const auto stopped = Clock::now();
  // By its own deadline the holder stops: within ttl after its last renewal.
  EXPECT_TRUE(Eventually([&] { return Holds(a) == false && Holds(b) == false; }, kTtlMs + 1000))
      << "a lease is still held " << kTtlMs + 1000 << " ms after PostgreSQL stopped";
  std::printf("leases dropped %.3f s after PostgreSQL stopped\n",
              std::chrono::duration<double>(Clock::now() - stopped).count());
  std::this_thread::sleep_for(std::chrono::milliseconds(kTtlMs));
  ASSERT_TRUE(pg_->Restart().ok()) << pg_->LogTail();
  const auto restarted = Clock::now();
  ASSERT_TRUE(Eventually([&] { return Holds(a) == true || Holds(b) == true; }, 30'000))
      << a.Log() << b.Log();
  std::printf("lease held again %.3f s after PostgreSQL restarted\n",
              std::chrono::duration<double>(Clock::now() - restarted).count());
  std::this_thread::sleep_for(std::chrono::milliseconds(2 * kTtlMs));
  sampling = false;
  sampler.join();
  EXPECT_EQ(both.load(), 0) << "both sidecars held the lease (" << samples.load() << " samples)";
  EXPECT_GT(samples.load(), 10);

  producer->Stop();
  const std::vector<std::string> committed = producer->committed();
  producer.reset();
  ExpectEveryRowOnce(Holds(a) == true ? a : b, committed);
}

// ---------------------------------------------------------------------------------------
// Sagas: the orchestrator under the lease "sagas", its saga log in the shared PostgreSQL.

constexpr const char* kOrderSaga = R"yaml(name: order
version: 1
steps:
  - name: reserve
    participant: inventory
    action: inventory.reserve
    compensation: inventory.release
    timeout_ms: 2000
  - name: charge
    participant: payments
    action: payments.charge
    pivot: true
    timeout_ms: 2000
  - name: ship
    participant: shipping
    action: shipping.schedule
    timeout_ms: 2000
)yaml";

// The participant services, through one sidecar: fetch commands, reply ok, ack.
class Participants {
 public:
  explicit Participants(uint16_t port) : client_(Options(port)) {}

  static client::Options Options(uint16_t port) {
    client::Options o;
    o.host = "127.0.0.1";
    o.port = port;
    o.timeout_ms = 30'000;
    return o;
  }

  size_t Round() {
    size_t handled = 0;
    for (const char* topic : {"inventory", "payments", "shipping"}) {
      client::FetchOptions f;
      f.max_events = 100;
      f.wait_ms = 0;
      Result<std::vector<client::Delivery>> got = client_.Fetch(topic, "svc", f);
      if (!got.ok()) continue;
      std::vector<client::Lease> leases;
      for (const client::Delivery& d : *got) {
        if (d.event && Reply(*d.event).ok()) ++handled;
        leases.push_back(d.lease());
      }
      if (!leases.empty()) client_.Ack(topic, "svc", leases).status().IgnoreError();
    }
    return handled;
  }

 private:
  Status Reply(const Event& cmd) {
    Event r;
    r.set_id(cmd.id() + "/reply");
    r.set_source("/test/participant");
    r.set_type("converge.saga.reply");
    if (const Extension* token = cmd.FindExtension("sagatoken")) {
      r.SetExtension("sagatoken", token->value);
    }
    for (const char* name : {"sagaid", "sagastep", "sagakind", "sagaattempt"}) {
      const Extension* e = cmd.FindExtension(name);
      if (e == nullptr) return InvalidArgumentError(std::string("command without ") + name);
      if (e->kind == ExtensionKind::kInteger) {
        r.SetExtensionInteger(e->name, std::stoi(e->value));
      } else {
        r.SetExtension(e->name, e->value);
      }
    }
    r.SetExtension("sagaoutcome", "ok");
    if (cmd.FindExtension("sagakind")->value != "action")
      r.SetExtensionBoolean("sagaapplied", true);
    r.set_partitionkey(cmd.FindExtension("sagaid")->value);
    const Extension* reply_to = cmd.FindExtension("sagareplyto");
    if (reply_to == nullptr) return InvalidArgumentError("command without sagareplyto");
    return client_.PublishOne(reply_to->value, r).status();
  }

  client::Client client_;
};

std::string SagaState(const testing::ServeProcess& server, const std::string& id) {
  testing::HttpResult r = testing::HttpCall(server.port(), "GET", "/v1/sagas/" + id);
  if (r.status != 200) return "http " + std::to_string(r.status);
  return std::string(json::parse(r.body).at("state").as_string());
}

std::string StartSaga(const testing::ServeProcess& server, int n, int* status) {
  testing::HttpResult r =
      testing::HttpCall(server.port(), "POST", "/v1/sagas",
                        "{\"definition\":\"order\",\"data\":{\"n\":" + std::to_string(n) + "}}",
                        {{"Content-Type", "application/json"}});
  *status = r.status;
  if (r.status != 201) return "";
  return std::string(json::parse(r.body).at("id").as_string());
}

TEST_F(LeaseServeTest, SagaOrchestratorTakeoverAfterSigkillFinishesEverySaga) {
  testing::ServeProcess a(SagaConfig("a"));
  ASSERT_TRUE(a.Start().ok()) << a.Log();
  // Held, and the orchestrator started under it (the lease is held a moment before).
  ASSERT_TRUE(Eventually([&] { return Runs(a, "sagas") == true; }, 15'000)) << a.Log();
  // Without the lease, this second sidecar would not start: the saga log's table is taken.
  testing::ServeProcess b(SagaConfig("b"));
  ASSERT_TRUE(b.Start().ok()) << b.Log();
  ASSERT_TRUE(Eventually([&] { return Holds(b, "sagas").has_value(); }, 15'000)) << b.Log();
  EXPECT_EQ(Holds(b, "sagas"), false);

  ASSERT_EQ(testing::HttpCall(a.port(), "POST", "/v1/saga-definitions", kOrderSaga,
                              {{"Content-Type", "application/json"}})
                .status,
            201);
  int status = 0;
  std::vector<std::string> ids;
  // The standby forwards saga routes to the holder: the saga runs there, and reads through
  // either sidecar see it. The node registry of the shared groups gives the holder's address.
  ASSERT_TRUE(Eventually(
      [&] {
        std::string id = StartSaga(b, 0, &status);
        if (status == 201) ids.push_back(id);
        return status == 201;
      },
      15'000))
      << "status " << status << "\n" << b.Log();
  EXPECT_NE(SagaState(a, ids[0]).rfind("http", 0), 0u) << SagaState(a, ids[0]);
  EXPECT_EQ(SagaState(b, ids[0]), SagaState(a, ids[0]));
  // A request that says it was forwarded already is answered here, not forwarded again: the
  // standby runs no saga, so 503.
  EXPECT_EQ(testing::HttpCall(b.port(), "GET", "/v1/sagas/" + ids[0], "",
                              {{"X-Converge-Forwarded", "a"}})
                .status,
            503);

  for (int n = 1; n <= 20; ++n) {
    std::string id = StartSaga(a, n, &status);
    ASSERT_EQ(status, 201);
    ids.push_back(id);
  }
  // The participants answer through b; some sagas move on before a dies.
  Participants participants(b.port());
  for (int i = 0; i < 3; ++i) participants.Round();

  a.Kill();
  const auto killed = Clock::now();
  ASSERT_TRUE(Eventually([&] { return Holds(b, "sagas") == true; }, 30'000)) << b.Log();
  const double takeover_s = std::chrono::duration<double>(Clock::now() - killed).count();
  std::printf(
      "saga orchestrator takeover: %.3f s from SIGKILL to the lease held by the other "
      "sidecar (ttl %.1f s)\n",
      takeover_s, kTtlMs / 1000.0);
  // Sagas start through the new holder once its orchestrator recovered the saga log.
  ASSERT_TRUE(Eventually(
      [&] {
        std::string id = StartSaga(b, 100, &status);
        if (status == 201) ids.push_back(id);
        return status == 201;
      },
      30'000))
      << b.Log();
  std::printf("saga starts accepted again %.3f s after SIGKILL\n",
              std::chrono::duration<double>(Clock::now() - killed).count());

  size_t completed = 0;
  const auto deadline = Clock::now() + std::chrono::seconds(60);
  while (Clock::now() < deadline) {
    participants.Round();
    completed = 0;
    for (const std::string& id : ids) completed += SagaState(b, id) == "completed";
    if (completed == ids.size()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  std::printf("sagas completed after the takeover: %zu of %zu\n", completed, ids.size());
  EXPECT_EQ(completed, ids.size()) << b.Log();
}

// ---------------------------------------------------------------------------------------
// Replicas: a topic of change events (in the shared log) copied into a PostgreSQL table
// shared by both sidecars, under the lease "replica:orders".

TEST_F(LeaseServeTest, ReplicaIntoASharedTableRunsInTheHolderOnlyAndIsTakenOver) {
  auto config = [&](const std::string& instance) {
    return "log:\n  backend: jetstream\n  jetstream:\n    servers: [" + nats_->Url(0) +
           "]\n    stream_prefix: leasereplicas\n"
           "store:\n  enabled: false\nsagas:\n  enabled: false\n"
           "replicas:\n  - name: orders\n    source: {topic: order-changes}\n"
           "    target: {postgres: '" +
           pg_->ConnInfo() +
           "', table: orders_copy}\n    poll_interval_ms: 100\n"
           "cluster:\n  instance_id: " +
           instance + "\n  postgres_conninfo: \"" + pg_->ConnInfo() +
           "\"\n  lease_ttl_ms: " + std::to_string(kTtlMs) + "\n";
  };
  auto running = [](const testing::ServeProcess& server) -> std::optional<bool> {
    testing::HttpResult r = testing::HttpCall(server.port(), "GET", "/v1/replicas/orders");
    if (r.status != 200) return std::nullopt;
    return json::parse(r.body).at("running").as_bool();
  };
  auto publish = [](const testing::ServeProcess& server, int n) {
    const std::string key = Numbered("o", n);
    return testing::HttpCall(
               server.port(), "POST", "/v1/topics/order-changes/events",
               R"({"specversion":"1.0","id":")" + key +
                   R"(/1","source":"/orders","type":"converge.change.upsert","subject":")" + key +
                   R"(","version":"1","datacontenttype":"application/json","data":{"n":1}})",
               {{"Content-Type", "application/cloudevents+json"}})
        .status;
  };
  auto rows = [&] {
    return pg_->Query("postgres", "SELECT count(*) FROM orders_copy").value_or("?");
  };

  testing::ServeProcess a(config("a"));
  ASSERT_TRUE(a.Start().ok()) << a.Log();
  testing::HttpResult created = testing::HttpCall(a.port(), "POST", "/v1/topics",
                                                  R"({"name":"order-changes","partitions":1})",
                                                  {{"Content-Type", "application/json"}});
  ASSERT_TRUE(created.status == 200 || created.status == 201) << created.body;
  ASSERT_TRUE(Eventually([&] { return Holds(a, "replica:orders") == true; }, 15'000)) << a.Log();
  ASSERT_TRUE(Eventually([&] { return running(a) == true; }, 15'000)) << a.Log();
  testing::ServeProcess b(config("b"));
  ASSERT_TRUE(b.Start().ok()) << b.Log();
  ASSERT_TRUE(Eventually([&] { return running(b).has_value(); }, 15'000)) << b.Log();

  for (int n = 0; n < 50; ++n) ASSERT_EQ(publish(n % 2 ? a : b, n), 200);
  ASSERT_TRUE(Eventually([&] { return rows() == "50"; }, 30'000)) << rows();
  // Only the holder applies: without the lease both appliers would write the shared table.
  EXPECT_EQ(running(b), false);
  EXPECT_EQ(Holds(b, "replica:orders"), false);
  // A read that checks staleness needs the applier: the standby forwards it to the holder
  // (parked, it would answer 503); marked as forwarded already, the standby answers it itself.
  const std::string row = "/v1/replicas/orders/rows/" + Numbered("o", 0) + "?max_staleness_ms=600000";
  testing::HttpResult fresh = testing::HttpCall(b.port(), "GET", row);
  EXPECT_EQ(fresh.status, 200) << fresh.body;
  EXPECT_EQ(testing::HttpCall(b.port(), "GET", row, "", {{"X-Converge-Forwarded", "a"}}).status,
            503);

  a.Kill();
  const auto killed = Clock::now();
  for (int n = 50; n < 100; ++n) ASSERT_EQ(publish(b, n), 200);
  ASSERT_TRUE(Eventually([&] { return running(b) == true; }, 30'000)) << b.Log();
  std::printf(
      "replica takeover: %.3f s from SIGKILL to the applier running in the other "
      "sidecar (ttl %.1f s)\n",
      std::chrono::duration<double>(Clock::now() - killed).count(), kTtlMs / 1000.0);
  ASSERT_TRUE(Eventually([&] { return rows() == "100"; }, 30'000)) << rows();
}

}  // namespace
}  // namespace converge
