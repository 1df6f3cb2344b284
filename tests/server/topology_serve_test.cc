// `converge serve` with a topology (config key `topology`, flag --topology): each service's
// token gets its permissions from its manifest. A token used outside its manifest gets 403 and
// nothing is written: publishing to a topic it does not send on, consuming a topic it does
// not receive, writing a collection it does not own (document, collection or transaction),
// reading a collection it neither owns nor replicates.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <boost/json.hpp>
#include <filesystem>
#include <fstream>
#include <string>

#include "serve_process.h"
#include "support/run_command.h"
#include "test_util.h"

namespace converge {
namespace {

namespace json = boost::json;
using testing::HttpCall;
using testing::HttpHeaders;
using testing::HttpResult;
using testing::ServeProcess;

constexpr char kOrders[] = "orders-token-0123456789";
constexpr char kPayments[] = "payments-token-0123456789";
constexpr char kOps[] = "ops-token-0123456789abcd";

constexpr char kOrdersManifest[] = R"(asyncapi: 3.0.0
info: {title: orders, version: 1.0.0}
channels:
  placed: {address: orders.placed}
  paid: {address: payments.done}
operations:
  place: {action: send, channel: {$ref: '#/channels/placed'}}
  onPaid: {action: receive, channel: {$ref: '#/channels/paid'}}
x-converge-owns: {topics: [orders.placed], collections: [orders]}
)";

constexpr char kPaymentsManifest[] = R"(asyncapi: 3.0.0
info: {title: payments, version: 1.0.0}
channels:
  placed: {address: orders.placed}
  paid: {address: payments.done}
operations:
  onPlaced: {action: receive, channel: {$ref: '#/channels/placed'}}
  pay: {action: send, channel: {$ref: '#/channels/paid'}}
x-converge-owns: {topics: [payments.done], collections: [payments]}
x-converge-replicas: [{collection: orders, source: orders}]
)";

class TopologyServeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (std::filesystem::temp_directory_path() / "converge-topo-XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    manifests_ = tmpl;
    std::ofstream(manifests_ + "/orders.yaml") << kOrdersManifest;
    std::ofstream(manifests_ + "/payments.yaml") << kPaymentsManifest;
  }
  void TearDown() override {
    server_.reset();
    std::error_code ec;
    std::filesystem::remove_all(manifests_, ec);
  }
  std::string Config(const std::string& extra_orders = "") const {
    return "topology: " + manifests_ + R"(
auth:
  tokens:
    - service: orders
      token: )" +
           kOrders + extra_orders + R"(
    - service: payments
      token: )" +
           kPayments + R"(
    - service: ops
      token: )" +
           kOps + R"(
      admin: true
      publish: ["*"]
      subscribe: ["*"]
)";
  }
  void Start() {
    server_ = std::make_unique<ServeProcess>(Config());
    Status s = server_->Start();
    ASSERT_TRUE(s.ok()) << s.ToString() << "\n" << server_->Log();
  }
  HttpResult Call(const std::string& method, const std::string& target, const std::string& token,
                  const std::string& body = "", const std::string& type = "application/json") {
    HttpHeaders headers;
    if (!body.empty()) headers.emplace_back("Content-Type", type);
    return HttpCall(server_->port(), method, target, body, headers, token);
  }
  HttpResult Publish(const std::string& topic, const std::string& token, const std::string& id) {
    return Call(
        "POST", "/v1/topics/" + topic + "/events", token,
        R"({"specversion":"1.0","id":")" + id + R"(","source":"/test","type":"t","data":{}})",
        "application/cloudevents+json");
  }
  uint64_t TopicEnd(const std::string& topic) {
    HttpResult r = Call("GET", "/v1/topics/" + topic, kOps);
    EXPECT_EQ(r.status, 200) << r.body;
    uint64_t n = 0;
    const json::value doc = json::parse(r.body);
    for (const json::value& p : doc.at("partition_offsets").as_array()) {
      n += p.at("end_offset").to_number<uint64_t>();
    }
    return n;
  }

  std::string manifests_;
  std::unique_ptr<ServeProcess> server_;
};

TEST_F(TopologyServeTest, PublishAndSubscribeOnlyAsDeclared) {
  Start();
  for (const char* t : {"orders.placed", "payments.done", "audit"}) {
    ASSERT_EQ(Call("POST", "/v1/topics", kOps, std::string(R"({"name":")") + t + R"("})").status,
              201);
  }
  // Declared sends.
  EXPECT_EQ(Publish("orders.placed", kOrders, "o1").status, 200);
  EXPECT_EQ(Publish("payments.done", kPayments, "p1").status, 200);
  // Outside the manifest: 403 and nothing appended.
  for (const auto& [topic, token] :
       {std::pair{"payments.done", kOrders}, std::pair{"audit", kOrders},
        std::pair{"orders.placed", kPayments}}) {
    const uint64_t before = TopicEnd(topic);
    HttpResult r = Publish(topic, token, "forged");
    EXPECT_EQ(r.status, 403) << topic << ": " << r.body;
    EXPECT_EQ(r.code(), "PERMISSION_DENIED");
    EXPECT_EQ(TopicEnd(topic), before) << topic;
  }
  // Declared receives: a group and a fetch.
  EXPECT_EQ(Call("POST", "/v1/topics/orders.placed/groups", kPayments, R"({"name":"pay"})").status,
            201);
  HttpResult f = Call("POST", "/v1/topics/orders.placed/groups/pay/fetch", kPayments,
                      R"({"consumer":"c1","max_events":10,"wait_ms":0})");
  EXPECT_EQ(f.status, 200) << f.body;
  // Receiving what it does not declare: orders does not receive orders.placed.
  HttpResult r = Call("POST", "/v1/topics/orders.placed/groups", kOrders, R"({"name":"spy"})");
  EXPECT_EQ(r.status, 403) << r.body;
  r = Call("POST", "/v1/topics/orders.placed/groups/pay/fetch", kOrders,
           R"({"consumer":"spy","max_events":10,"wait_ms":0})");
  EXPECT_EQ(r.status, 403) << r.body;
  // Its topics list shows only what it may see.
  r = Call("GET", "/v1/topics", kOrders);
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body.find("\"audit\""), std::string::npos) << r.body;
}

TEST_F(TopologyServeTest, CollectionsOnlyAsDeclared) {
  Start();
  // The owners create their collections.
  ASSERT_EQ(Call("PUT", "/v1/collections/orders", kOrders, R"({"writers":["*"]})").status, 201);
  ASSERT_EQ(Call("PUT", "/v1/collections/payments", kPayments, "{}").status, 201);
  ASSERT_EQ(Call("PUT", "/v1/collections/orders/docs/o1", kOrders, R"({"n":1})").status, 201);
  // payments is an allowed writer by the store's own rules ("*"), but its manifest does not own
  // 'orders': 403 and nothing written.
  HttpResult r = Call("PUT", "/v1/collections/orders/docs/o2", kPayments, R"({"n":2})");
  EXPECT_EQ(r.status, 403) << r.body;
  EXPECT_EQ(r.code(), "PERMISSION_DENIED");
  EXPECT_NE(r.message().find("may not write collection 'orders'"), std::string::npos) << r.body;
  EXPECT_EQ(Call("DELETE", "/v1/collections/orders/docs/o1", kPayments).status, 403);
  EXPECT_EQ(Call("PUT", "/v1/collections/orders", kPayments, "{}").status, 403);
  EXPECT_EQ(Call("DELETE", "/v1/collections/orders", kPayments).status, 403);
  // A collection no manifest declares cannot be created by a manifest's service.
  EXPECT_EQ(Call("PUT", "/v1/collections/scratch", kOrders, "{}").status, 403);
  // A transaction touching a collection it does not own is refused whole.
  r = Call("POST", "/v1/collections/_transaction", kPayments,
           R"({"ops":[{"op":"put","collection":"payments","key":"p1","value":{}},)"
           R"({"op":"put","collection":"orders","key":"o3","value":{}}]})");
  EXPECT_EQ(r.status, 403) << r.body;
  EXPECT_EQ(Call("GET", "/v1/collections/payments/docs/p1", kOps).status, 404);
  EXPECT_EQ(Call("GET", "/v1/collections/orders/docs/o2", kOps).status, 404);
  EXPECT_EQ(Call("GET", "/v1/collections/orders/docs/o3", kOps).status, 404);
  EXPECT_EQ(Call("GET", "/v1/collections/orders/docs/o1", kOps).status, 200);
  // Its own transaction goes through.
  r = Call("POST", "/v1/collections/_transaction", kPayments,
           R"({"ops":[{"op":"put","collection":"payments","key":"p1","value":{}}]})");
  EXPECT_EQ(r.status, 200) << r.body;
  // Reads: payments keeps a replica of orders (reads its source); orders reads only its own.
  EXPECT_EQ(Call("GET", "/v1/collections/orders/docs/o1", kPayments).status, 200);
  EXPECT_EQ(Call("GET", "/v1/collections/orders/docs", kPayments).status, 200);
  EXPECT_EQ(Call("GET", "/v1/collections/payments/docs/p1", kOrders).status, 403);
  EXPECT_EQ(Call("GET", "/v1/collections/payments", kOrders).status, 403);
  r = Call("GET", "/v1/collections", kOrders);
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(json::parse(r.body).at("collections"), json::parse(R"(["orders"])")) << r.body;
}

TEST_F(TopologyServeTest, StartIsRefusedOnConflictOrBadTopology) {
  // A token with its own publish list beside a manifest: one source of truth.
  {
    ServeProcess p(Config("\n      publish: [\"*\"]"));
    EXPECT_FALSE(p.Start().ok());
    EXPECT_NE(p.Log().find("has a manifest (orders.yaml)"), std::string::npos) << p.Log();
  }
  // A topology with a check error (a receive nobody publishes).
  std::ofstream(manifests_ + "/audit.yaml")
      << "asyncapi: 3.0.0\ninfo: {title: audit, version: 1.0.0}\n"
         "channels:\n  r: {address: refunds}\noperations:\n  on: {action: receive, channel: {$ref: "
         "'#/channels/r'}}\n";
  {
    ServeProcess p(Config());
    EXPECT_FALSE(p.Start().ok());
    EXPECT_NE(p.Log().find("[no-publisher]"), std::string::npos) << p.Log();
  }
  // --topology with a directory that does not exist: exit code 2.
  const char* bin = std::getenv("CONVERGE_BINARY");
  testing::CommandOutput out =
      testing::RunCommand(std::string(bin ? bin : "converge") +
                          " serve --listen 127.0.0.1:0 --topology /nonexistent-topology 2>&1");
  EXPECT_EQ(out.exit_code, 2) << out.out;
  EXPECT_NE(out.out.find("topology: /nonexistent-topology: not a readable directory"), std::string::npos)
      << out.out;
}

// GET /v1/topology: the declared graph, the publishers and consumers seen, and the difference
// by value: the admin publishing to orders.placed and consuming payments.done is undeclared
// (it has no manifest); orders and payments doing what they declare are not. The same pairs
// are counted in converge_topology_undeclared_total. Refused publishes are not observed.
TEST_F(TopologyServeTest, DeclaredObservedAndDrift) {
  Start();
  for (const char* t : {"orders.placed", "payments.done"}) {
    ASSERT_EQ(Call("POST", "/v1/topics", kOps, std::string(R"({"name":")") + t + R"("})").status,
              201);
  }
  ASSERT_EQ(Publish("orders.placed", kOrders, "o1").status, 200);
  ASSERT_EQ(Publish("orders.placed", kOrders, "o2").status, 200);
  ASSERT_EQ(Publish("orders.placed", kOps, "x1").status, 200);     // undeclared
  ASSERT_EQ(Publish("payments.done", kOrders, "x2").status, 403);  // refused: not seen
  ASSERT_EQ(Call("POST", "/v1/topics/orders.placed/groups", kPayments, R"({"name":"pay"})").status,
            201);
  ASSERT_EQ(Call("POST", "/v1/topics/orders.placed/groups/pay/fetch", kPayments,
                 R"({"consumer":"c","max_events":10,"wait_ms":0})")
                .status,
            200);
  ASSERT_EQ(Call("POST", "/v1/topics/payments.done/groups", kOps, R"({"name":"spy"})").status, 201);
  ASSERT_EQ(Call("POST", "/v1/topics/payments.done/groups/spy/fetch", kOps,
                 R"({"consumer":"c","max_events":10,"wait_ms":0})")
                .status,
            200);  // undeclared

  // Admins only.
  EXPECT_EQ(Call("GET", "/v1/topology", kOrders).status, 403);
  EXPECT_EQ(Call("GET", "/v1/topology?window_ms=0", kOps).status, 400);
  EXPECT_EQ(Call("GET", "/v1/topology?windw_ms=5", kOps).status, 400);
  HttpResult r = Call("GET", "/v1/topology", kOps);
  ASSERT_EQ(r.status, 200) << r.body;
  json::value doc = json::parse(r.body);
  EXPECT_EQ(doc.at("declared").at("services").as_array().size(), 2u);
  EXPECT_EQ(doc.at("drift"), json::parse(R"({
      "undeclared_publishers": [{"topic": "orders.placed", "service": "ops"}],
      "undeclared_consumers": [{"topic": "payments.done", "service": "ops"}]})"))
      << r.body;
  // The observed graph by value (counts; the times vary).
  json::object observed;
  for (const json::value& t : doc.at("observed").at("topics").as_array()) {
    json::object side;
    for (const char* kind : {"publishers", "consumers"}) {
      json::array rows;
      for (const json::value& row : t.at(kind).as_array()) {
        EXPECT_GE(row.at("last_seen_ms_ago").to_number<int64_t>(), 0);
        rows.push_back(json::object{{"service", row.at("service")},
                                    {"count", row.at("count")},
                                    {"declared", row.at("declared")}});
      }
      side[kind] = std::move(rows);
    }
    observed[t.at("topic").as_string()] = std::move(side);
  }
  EXPECT_EQ(json::value(observed), json::parse(R"({
      "orders.placed": {
        "publishers": [{"service": "ops", "count": 1, "declared": false},
                       {"service": "orders", "count": 2, "declared": true}],
        "consumers": [{"service": "payments", "count": 1, "declared": true}]},
      "payments.done": {
        "publishers": [],
        "consumers": [{"service": "ops", "count": 1, "declared": false}]}})"))
      << r.body;
  // The metric: one series per undeclared pair.
  r = Call("GET", "/metrics", kOps);
  ASSERT_EQ(r.status, 200);
  EXPECT_NE(r.body.find("converge_topology_undeclared_total{kind=\"publish\",topic=\"orders."
                        "placed\",service=\"ops\"} 1"),
            std::string::npos)
      << r.body.substr(0, 2000);
  EXPECT_NE(r.body.find("converge_topology_undeclared_total{kind=\"consume\",topic=\"payments."
                        "done\",service=\"ops\"} 1"),
            std::string::npos);
  EXPECT_EQ(r.body.find("converge_topology_undeclared_total{kind=\"publish\",topic=\"orders."
                        "placed\",service=\"orders\"}"),
            std::string::npos);
}

}  // namespace
}  // namespace converge
