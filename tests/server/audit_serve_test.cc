// Black-box tests of the end-to-end audit (docs/formats/audit.md) with the real `converge serve`.
// On the embedded log: a clean log audits clean; acknowledged events lost by hand (the last
// segment cut short while the server is stopped) are reported exactly, through GET /v1/audit,
// the metrics and `converge audit`, also after the lost offsets are reused by new events.
// On JetStream (a nats-server started by the test): a message deleted from a partition's
// stream behind converge's back, the way an engine loses an acknowledged write, is reported.
// What converge appends itself (the store's change feed, a dead-letter replay, saga commands,
// an outbox relay's publishes) is audited like HTTP publishes.
#include <gtest/gtest.h>
#include <nats/nats.h>
#include <signal.h>

#include <algorithm>
#include <boost/json.hpp>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "converge/client.h"
#include "converge/event.h"
#include "converge/outbox.h"
#include "converge/sql.h"
#include "serve_process.h"
#include "support/nats_server.h"
#include "support/run_command.h"
#include "test_util.h"

namespace converge {
namespace {

namespace fs = std::filesystem;
namespace json = boost::json;
using testing::ServeProcess;

const std::string kAdmin = "admin-token-0123456789";
const std::string kApp = "app-token-0123456789abc";

std::string Converge() {
  const char* b = std::getenv("CONVERGE_BINARY");
  return b != nullptr ? b : "converge";
}

std::string Config() {
  return "auth:\n  tokens:\n    - {service: ops, token: " + kAdmin +
         ", admin: true}\n    - {service: app, token: " + kApp +
         ", publish: ['orders*'], subscribe: ['orders*']}\n"
         "topic_defaults:\n  segment_max_bytes: 4096\n"
         "audit:\n  enabled: true\n  interval_ms: 50\n";
}

// Sequence numbers of the n-th start of a data directory (docs/formats/audit.md).
uint64_t Seq(uint64_t epoch, uint64_t i) { return (epoch << 40) + 1 + i; }

class AuditServeTest : public ::testing::Test {
 protected:
  AuditServeTest() {
    std::string tmpl = (fs::temp_directory_path() / "converge-audit-XXXXXX").string();
    if (::mkdtemp(tmpl.data()) != nullptr) dir_ = tmpl;
  }
  ~AuditServeTest() override {
    server_.reset();
    std::error_code ec;
    if (!dir_.empty()) fs::remove_all(dir_, ec);
  }
  void Start(const std::string& extra_yaml = "") {
    server_ = std::make_unique<ServeProcess>(Config() + extra_yaml, dir_);
    Status s = server_->Start();
    ASSERT_TRUE(s.ok()) << s.ToString();
  }
  void Stop() {
    Result<int> code = server_->Signal(SIGTERM);
    ASSERT_TRUE(code.ok()) << code.status().ToString();
    EXPECT_EQ(*code, 0) << server_->Log();
    server_.reset();
  }
  void Publish(int from, int to) {
    client::Client c(server_->ClientOptions(kApp));
    std::vector<Event> events;
    for (int i = from; i < to; ++i) {
      Event e;
      e.set_source("/audit");
      e.set_id("e-" + std::to_string(i));
      e.set_type("com.example.audit");
      ASSERT_TRUE(e.SetJsonData("{\"pad\":\"" + std::string(80, 'p') + "\"}").ok());
      events.push_back(std::move(e));
    }
    auto published = c.Publish("orders", events);
    ASSERT_TRUE(published.ok()) << published.status().ToString();
  }
  // GET /v1/audit after a run that started once `checked` events were tracked.
  json::object AuditAfterRun(uint64_t checked) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    json::object last;
    while (std::chrono::steady_clock::now() < deadline) {
      testing::HttpResult r =
          testing::HttpCall(server_->port(), "GET", "/v1/audit", "", {}, kAdmin);
      EXPECT_EQ(r.status, 200) << r.body;
      last = json::parse(r.body).as_object();
      if (static_cast<uint64_t>(last.at("checked").to_number<int64_t>()) == checked) return last;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));  // polling, not correctness
    }
    ADD_FAILURE() << "no audit run checked " << checked << " events: " << json::serialize(last);
    return last;
  }
  // GET /v1/audit once `done` holds for it (a failure after 30 s).
  json::object AuditUntil(const std::function<bool(const json::object&)>& done) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    json::object last;
    while (std::chrono::steady_clock::now() < deadline) {
      testing::HttpResult r =
          testing::HttpCall(server_->port(), "GET", "/v1/audit", "", {}, kAdmin);
      EXPECT_EQ(r.status, 200) << r.body;
      last = json::parse(r.body).as_object();
      if (done(last)) return last;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));  // polling, not correctness
    }
    ADD_FAILURE() << "the audit never got there: " << json::serialize(last);
    return last;
  }
  std::vector<std::string> Segments(const std::string& topic = "orders") {
    std::vector<std::string> out;
    for (const auto& e : fs::directory_iterator(dir_ + "/log/topics/" + topic + "/0000")) {
      const std::string name = e.path().filename().string();
      if (name.size() == 24 && name.ends_with(".log")) out.push_back(e.path().string());
    }
    std::sort(out.begin(), out.end());
    return out;
  }
  uint64_t EndOffset() {
    testing::HttpResult r =
        testing::HttpCall(server_->port(), "GET", "/v1/topics/orders", "", {}, kAdmin);
    json::object o = json::parse(r.body).as_object();
    return o.at("partition_offsets").as_array()[0].at("end_offset").to_number<uint64_t>();
  }

  std::string dir_;
  std::unique_ptr<ServeProcess> server_;
};

TEST_F(AuditServeTest, AdminOnlyAndCheckedBeforeTheQuery) {
  Start();
  testing::HttpResult r =
      testing::HttpCall(server_->port(), "GET", "/v1/audit?bogus=1", "", {}, kApp);
  EXPECT_EQ(r.status, 403) << r.body;
  EXPECT_NE(r.body.find("\"code\""), std::string::npos) << r.body;
  r = testing::HttpCall(server_->port(), "GET", "/v1/audit", "", {}, "");
  EXPECT_EQ(r.status, 401) << r.body;
  r = testing::HttpCall(server_->port(), "GET", "/v1/audit?bogus=1", "", {}, kAdmin);
  EXPECT_EQ(r.status, 400) << r.body;
}

TEST_F(AuditServeTest, CleanThenTruncatedSegmentReportsExactlyTheLostEvents) {
  Start();
  {
    client::Client c(server_->ClientOptions(kAdmin));
    client::TopicSpec spec;
    spec.name = "orders";
    spec.partitions = 1;
    ASSERT_TRUE(c.CreateTopic(spec).ok());
  }
  constexpr int kEvents = 60;
  Publish(0, kEvents);
  json::object clean = AuditAfterRun(kEvents);
  EXPECT_EQ(clean.at("findings_total").to_number<int64_t>(), 0) << json::serialize(clean);
  EXPECT_EQ(clean.at("missing").to_number<int64_t>(), 0);
  EXPECT_TRUE(clean.at("errors").as_array().empty()) << json::serialize(clean);
  testing::CommandOutput cli = testing::RunCommand(
      Converge() + " audit --server http://127.0.0.1:" + std::to_string(server_->port()) +
      " --token " + kAdmin + " 2>&1 </dev/null");
  EXPECT_EQ(cli.exit_code, 0) << cli.out;
  EXPECT_NE(cli.out.find("missing 0, duplicates 0"), std::string::npos) << cli.out;
  Stop();

  // Loss by hand: the last segment cut to half its size (recovery drops the torn tail).
  std::vector<std::string> segments = Segments();
  ASSERT_GE(segments.size(), 2u);
  fs::resize_file(segments.back(), fs::file_size(segments.back()) / 2);

  Start();
  const uint64_t end = EndOffset();
  ASSERT_LT(end, static_cast<uint64_t>(kEvents));
  std::set<std::pair<uint64_t, uint64_t>> lost;  // (acked offset, seq)
  for (uint64_t o = end; o < kEvents; ++o) lost.insert({o, Seq(1, o)});
  // New events reuse the lost offsets: the old acks stay missing, the new ones check clean.
  Publish(kEvents, kEvents + 5);
  json::object after = AuditAfterRun(kEvents + 5);
  std::set<std::pair<uint64_t, uint64_t>> reported;
  for (const json::value& v : after.at("findings").as_array()) {
    const json::object& f = v.as_object();
    EXPECT_EQ(f.at("kind").as_string(), "missing") << json::serialize(f);
    EXPECT_EQ(f.at("topic").as_string(), "orders");
    reported.insert(
        {f.at("acked_offset").to_number<uint64_t>(), f.at("seq").to_number<uint64_t>()});
  }
  EXPECT_EQ(reported, lost) << json::serialize(after);
  EXPECT_EQ(after.at("missing").to_number<uint64_t>(), lost.size());
  EXPECT_EQ(after.at("duplicates").to_number<int64_t>(), 0);
  EXPECT_EQ(after.at("out_of_order").to_number<int64_t>(), 0);

  testing::HttpResult metrics =
      testing::HttpCall(server_->port(), "GET", "/metrics", "", {}, kAdmin);
  const std::string line = "converge_audit_missing_total{topic=\"orders\",partition=\"0\"} " +
                           std::to_string(lost.size()) + "\n";
  EXPECT_NE(metrics.body.find(line), std::string::npos) << metrics.body;
  cli = testing::RunCommand(Converge() +
                            " audit --server http://127.0.0.1:" + std::to_string(server_->port()) +
                            " --token " + kAdmin + " 2>&1 </dev/null");
  EXPECT_EQ(cli.exit_code, 3) << cli.out;
  EXPECT_NE(cli.out.find("missing " + std::to_string(lost.size())), std::string::npos) << cli.out;
  Stop();
}

// Events converge appends itself go through the same audited log as HTTP publishes: the
// store's change feed is stamped and journaled, and feed events lost by hand (the feed
// topic's last segment cut short while the server is stopped) are reported missing.
TEST_F(AuditServeTest, StoreChangeFeedIsAudited) {
  Start();
  const std::string pad(100, 'p');
  ASSERT_EQ(testing::HttpCall(server_->port(), "PUT", "/v1/collections/docs", "{}",
                              {{"Content-Type", "application/json"}}, kAdmin)
                .status,
            201);
  constexpr int kDocs = 60;
  for (int i = 0; i < kDocs; ++i) {
    testing::HttpResult put = testing::HttpCall(
        server_->port(), "PUT", "/v1/collections/docs/docs/d" + std::to_string(i),
        "{\"pad\":\"" + pad + "\"}", {{"Content-Type", "application/json"}}, kAdmin);
    ASSERT_EQ(put.status, 201) << put.body;
  }
  // Every change is in the feed (one event each, at least), each checked clean.
  json::object clean = AuditUntil([&](const json::object& o) {
    return o.at("checked").to_number<int64_t>() >= kDocs &&
           o.at("checked").to_number<int64_t>() == o.at("tracked").to_number<int64_t>();
  });
  EXPECT_EQ(clean.at("findings_total").to_number<int64_t>(), 0) << json::serialize(clean);
  EXPECT_TRUE(clean.at("errors").as_array().empty()) << json::serialize(clean);
  const int64_t tracked = clean.at("tracked").to_number<int64_t>();
  Stop();

  std::vector<std::string> segments = Segments("store-changes");
  ASSERT_GE(segments.size(), 2u);
  fs::resize_file(segments.back(), fs::file_size(segments.back()) / 2);

  Start();
  json::object after =
      AuditUntil([](const json::object& o) { return o.at("missing").to_number<int64_t>() > 0; });
  EXPECT_LT(after.at("missing").to_number<int64_t>(), tracked);
  for (const json::value& v : after.at("findings").as_array()) {
    const json::object& f = v.as_object();
    EXPECT_EQ(f.at("kind").as_string(), "missing") << json::serialize(f);
    EXPECT_EQ(f.at("topic").as_string(), "store-changes") << json::serialize(f);
  }
  Stop();
}

// A dead-letter replay appends the event again: a new append of this producer, stamped and
// checked like a publish (before, only the published copy was checked).
TEST_F(AuditServeTest, DeadLetterReplayIsAudited) {
  Start();
  const uint16_t port = server_->port();
  const testing::HttpHeaders json_type = {{"Content-Type", "application/json"}};
  ASSERT_EQ(testing::HttpCall(port, "POST", "/v1/topics", R"({"name":"orders","partitions":1})",
                              json_type, kAdmin)
                .status,
            201);
  ASSERT_EQ(testing::HttpCall(port, "POST", "/v1/topics/orders/groups",
                              R"({"name":"g","max_deliveries":1})", json_type, kApp)
                .status,
            201);
  Publish(0, 1);
  testing::HttpResult fetched = testing::HttpCall(port, "POST", "/v1/topics/orders/groups/g/fetch",
                                                  R"({"max_events":1})", json_type, kApp);
  ASSERT_EQ(fetched.status, 200) << fetched.body;
  json::array got = json::parse(fetched.body).as_object().at("deliveries").as_array();
  ASSERT_EQ(got.size(), 1u);
  const json::object& d = got[0].as_object();
  testing::HttpResult nack =
      testing::HttpCall(port, "POST", "/v1/topics/orders/groups/g/nack",
                        R"({"nacks":[{"partition":)" + json::serialize(d.at("partition")) +
                            R"(,"offset":)" + json::serialize(d.at("offset")) + R"(,"lease_id":)" +
                            json::serialize(d.at("lease_id")) + R"(,"permanent":true}]})",
                        json_type, kApp);
  ASSERT_EQ(nack.status, 200) << nack.body;
  testing::HttpResult replayed = testing::HttpCall(
      port, "POST", "/v1/topics/orders/groups/g/dead-letters/replay", "{}", json_type, kAdmin);
  ASSERT_EQ(replayed.status, 200) << replayed.body;
  ASSERT_EQ(EndOffset(), 2u);
  // Both copies checked (the replay under a new number), and the dead letter itself (by its
  // record id), all found where acknowledged.
  json::object report = AuditAfterRun(3);
  EXPECT_EQ(report.at("findings_total").to_number<int64_t>(), 0) << json::serialize(report);
  EXPECT_EQ(report.at("tracked").to_number<int64_t>(), 3);
  Stop();
}

// Saga commands the orchestrator sends are appended through the audited log too: with no
// HTTP publish at all, the audit checks the first step's command.
TEST_F(AuditServeTest, SagaCommandsAreAudited) {
  Start();
  const uint16_t port = server_->port();
  const std::string definition =
      "name: order\nversion: 1\nsteps:\n  - name: reserve\n    participant: inventory\n"
      "    action: inventory.reserve\n    compensation: inventory.release\n"
      "    timeout_ms: 60000\n";
  testing::HttpResult reg = testing::HttpCall(port, "POST", "/v1/saga-definitions", definition,
                                              {{"Content-Type", "application/yaml"}}, kAdmin);
  ASSERT_EQ(reg.status, 201) << reg.body;
  testing::HttpResult started =
      testing::HttpCall(port, "POST", "/v1/sagas", R"({"definition":"order","data":{"n":1}})",
                        {{"Content-Type", "application/json"}}, kAdmin);
  ASSERT_EQ(started.status, 201) << started.body;
  json::object report = AuditUntil([](const json::object& o) {
    return o.at("checked").to_number<int64_t>() >= 1 &&
           o.at("checked").to_number<int64_t>() == o.at("tracked").to_number<int64_t>();
  });
  EXPECT_EQ(report.at("findings_total").to_number<int64_t>(), 0) << json::serialize(report);
  Stop();
}

// An outbox relay publishes through the audited log: rows written to a service's outbox are
// checked once relayed, with no HTTP publish at all.
TEST_F(AuditServeTest, RelayedEventsAreAudited) {
  sql::SqliteOptions so;
  so.path = dir_ + "/svc.db";
  Result<std::unique_ptr<sql::Database>> db = sql::Database::OpenSqlite(so);
  ASSERT_TRUE(db.ok()) << db.status().ToString();
  ASSERT_TRUE(Outbox::CreateSchema(**db).ok());
  Start(
      "relays:\n  sink: {create_topics: true}\n  sources:\n    - name: svc\n"
      "      database: sqlite:" +
      so.path + "\n      poll_interval_ms: 20\n");
  constexpr int kRows = 5;
  std::vector<Event> events(kRows);
  for (int i = 0; i < kRows; ++i) {
    events[i].set_source("/svc");
    events[i].set_id("r-" + std::to_string(i));
    events[i].set_type("t.x");
  }
  Outbox outbox(Env::Default());
  ASSERT_TRUE((*db)
                  ->Transact([&](sql::Transaction& tx) {
                    return outbox.Write(tx, "orders", std::span<Event>(events));
                  })
                  .ok());
  json::object report = AuditUntil([](const json::object& o) {
    return o.at("checked").to_number<int64_t>() == kRows &&
           o.at("tracked").to_number<int64_t>() == kRows;
  });
  EXPECT_EQ(report.at("findings_total").to_number<int64_t>(), 0) << json::serialize(report);
  Stop();
}

// The JetStream tests: a sidecar on `nats` with the audit on.
std::string JetStreamAuditConfig(testing::NatsCluster& nats) {
  return "log:\n  backend: jetstream\n  jetstream:\n    servers: [" + nats.Url(0) +
         "]\n    stream_prefix: aud\naudit:\n  enabled: true\n  interval_ms: 50\n";
}

// `n` structured events e0, e1, ... published in one batch.
std::string EventBatch(int n) {
  std::string batch = "[";
  for (int i = 0; i < n; ++i) {
    if (i > 0) batch += ',';
    batch += R"({"specversion":"1.0","source":"/t","type":"t.e","id":"e)" + std::to_string(i) +
             R"(","data":1})";
  }
  return batch + "]";
}

// GET /v1/audit (no auth configured) once `done` holds for it (a failure after 30 s).
json::object AuditOnceDone(uint16_t port, const std::function<bool(const json::object&)>& done) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  json::object last;
  while (std::chrono::steady_clock::now() < deadline) {
    testing::HttpResult r = testing::HttpCall(port, "GET", "/v1/audit");
    last = json::parse(r.body).as_object();
    if (done(last)) return last;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));  // polling, not correctness
  }
  ADD_FAILURE() << json::serialize(last);
  return last;
}

// Deletes message `seq` of `stream` behind converge's back, as an engine that loses it.
void DeleteStreamMessage(testing::NatsCluster& nats, const char* stream, uint64_t seq) {
  natsConnection* nc = nullptr;
  ASSERT_EQ(natsConnection_ConnectTo(&nc, nats.Url(0).c_str()), NATS_OK);
  jsCtx* js = nullptr;
  ASSERT_EQ(natsConnection_JetStream(&js, nc, nullptr), NATS_OK);
  jsErrCode jerr = static_cast<jsErrCode>(0);
  EXPECT_EQ(js_DeleteMsg(js, stream, seq, nullptr, &jerr), NATS_OK) << jerr;
  jsCtx_Destroy(js);
  natsConnection_Destroy(nc);
}

TEST(AuditJetStreamTest, MessageDeletedFromTheStreamIsMissing) {
  auto started = testing::NatsCluster::Start(testing::NatsClusterOptions{});
  ASSERT_TRUE(started.ok()) << started.status().ToString();
  testing::NatsCluster& nats = **started;
  ServeProcess server(JetStreamAuditConfig(nats));
  ASSERT_TRUE(server.Start().ok()) << server.Log();
  const uint16_t port = server.port();
  ASSERT_EQ(testing::HttpCall(port, "POST", "/v1/topics", R"({"name":"orders","partitions":1})",
                              {{"Content-Type", "application/json"}})
                .status,
            201);
  constexpr int kEvents = 20;
  testing::HttpResult published =
      testing::HttpCall(port, "POST", "/v1/topics/orders/events", EventBatch(kEvents),
                        {{"Content-Type", "application/cloudevents-batch+json"}});
  ASSERT_EQ(published.status, 200) << published.body;

  json::object clean = AuditOnceDone(
      port, [](const json::object& o) { return o.at("checked").to_number<int64_t>() == kEvents; });
  EXPECT_EQ(clean.at("findings_total").to_number<int64_t>(), 0) << json::serialize(clean);

  // The engine loses offset 7 (stream sequence 8): deleted behind converge's back.
  constexpr uint64_t kLost = 7;
  DeleteStreamMessage(nats, "aud_orders_0", kLost + 1);

  json::object after = AuditOnceDone(port, [](const json::object& o) {
    return o.at("findings_total").to_number<int64_t>() > 0 || !o.at("errors").as_array().empty();
  });
  ASSERT_EQ(after.at("findings").as_array().size(), 1u) << json::serialize(after);
  const json::object& f = after.at("findings").as_array()[0].as_object();
  EXPECT_EQ(f.at("kind").as_string(), "missing");
  EXPECT_EQ(f.at("acked_offset").to_number<uint64_t>(), kLost);
  EXPECT_EQ(f.at("seq").to_number<uint64_t>(), Seq(1, kLost));
  EXPECT_EQ(after.at("checked").to_number<int64_t>(), kEvents);
  // The JetStream backend reports the hole as a damaged range with the offset to resume at
  // (docs/formats/jetstream.md), so the audit steps over it like any damage: no read error.
  EXPECT_TRUE(after.at("errors").as_array().empty()) << json::serialize(after);
}

// A dead letter is not a CloudEvent and carries no stamp; the audit checks it by its record
// id. Deleted from its dead-letter stream behind converge's back, it is reported missing.
TEST(AuditJetStreamTest, DeadLetterDeletedFromItsStreamIsMissing) {
  auto started = testing::NatsCluster::Start(testing::NatsClusterOptions{});
  ASSERT_TRUE(started.ok()) << started.status().ToString();
  testing::NatsCluster& nats = **started;
  ServeProcess server(JetStreamAuditConfig(nats));
  ASSERT_TRUE(server.Start().ok()) << server.Log();
  const uint16_t port = server.port();
  const testing::HttpHeaders json_type = {{"Content-Type", "application/json"}};
  ASSERT_EQ(testing::HttpCall(port, "POST", "/v1/topics", R"({"name":"orders","partitions":1})",
                              json_type)
                .status,
            201);
  ASSERT_EQ(testing::HttpCall(port, "POST", "/v1/topics/orders/groups",
                              R"({"name":"g","max_deliveries":1})", json_type)
                .status,
            201);
  constexpr int kEvents = 3;
  ASSERT_EQ(testing::HttpCall(port, "POST", "/v1/topics/orders/events", EventBatch(kEvents),
                              {{"Content-Type", "application/cloudevents-batch+json"}})
                .status,
            200);
  // Every event dead-lettered: three dead letters at offsets 0, 1 and 2 of _dlq.orders.g.
  testing::HttpResult fetched = testing::HttpCall(port, "POST", "/v1/topics/orders/groups/g/fetch",
                                                  R"({"max_events":10})", json_type);
  ASSERT_EQ(fetched.status, 200) << fetched.body;
  json::array got = json::parse(fetched.body).as_object().at("deliveries").as_array();
  ASSERT_EQ(got.size(), static_cast<size_t>(kEvents));
  std::string nacks = R"({"nacks":[)";
  for (size_t i = 0; i < got.size(); ++i) {
    const json::object& d = got[i].as_object();
    if (i > 0) nacks += ',';
    nacks += R"({"partition":)" + json::serialize(d.at("partition")) + R"(,"offset":)" +
             json::serialize(d.at("offset")) + R"(,"lease_id":)" +
             json::serialize(d.at("lease_id")) + R"(,"permanent":true})";
  }
  nacks += "]}";
  testing::HttpResult nacked =
      testing::HttpCall(port, "POST", "/v1/topics/orders/groups/g/nack", nacks, json_type);
  ASSERT_EQ(nacked.status, 200) << nacked.body;

  // The events and their dead letters, all where acknowledged.
  json::object clean = AuditOnceDone(port, [](const json::object& o) {
    return o.at("checked").to_number<int64_t>() == 2 * kEvents;
  });
  EXPECT_EQ(clean.at("findings_total").to_number<int64_t>(), 0) << json::serialize(clean);

  // The engine loses the middle dead letter (offset 1, stream sequence 2; losing the first
  // would look like retention).
  DeleteStreamMessage(nats, "aud__5Fdlq_2Eorders_2Eg_0", 2);

  json::object after = AuditOnceDone(port, [](const json::object& o) {
    return o.at("findings_total").to_number<int64_t>() > 0 || !o.at("errors").as_array().empty();
  });
  ASSERT_EQ(after.at("findings").as_array().size(), 1u) << json::serialize(after);
  const json::object& f = after.at("findings").as_array()[0].as_object();
  EXPECT_EQ(f.at("kind").as_string(), "missing");
  EXPECT_EQ(f.at("topic").as_string(), "_dlq.orders.g");
  EXPECT_EQ(f.at("acked_offset").to_number<uint64_t>(), 1u);
  EXPECT_GE(f.at("seq").to_number<uint64_t>(), uint64_t{1} << 63) << "keyed by the record id";
  EXPECT_TRUE(after.at("errors").as_array().empty()) << json::serialize(after);
}

}  // namespace
}  // namespace converge
