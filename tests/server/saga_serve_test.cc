// Sagas through `converge serve`, black-box: the real binary on a free loopback port hosts the
// orchestrator; the test plays the participant services the way a service in any language
// would — it fetches commands from their topics over HTTP and publishes the replies to the
// reply topic (docs/formats/saga.md) — and drives the saga routes and `converge saga`.
#include <gtest/gtest.h>
#include <signal.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/json.hpp>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "converge/client.h"
#include "converge/event.h"
#include "serve_process.h"
#include "support/postgres_server.h"

namespace converge {
namespace {

namespace json = boost::json;
namespace http = boost::beast::http;
using testing::ServeProcess;

struct HttpReply {
  int status = 0;
  std::string body;
  std::string allow;  // the Allow header
};

// One request on a new connection (what a service without a converge library does).
HttpReply Request(uint16_t port, http::verb method, const std::string& target,
                  const std::string& body = "", const std::string& token = "",
                  const std::string& content_type = "application/json") {
  HttpReply out;
  try {
    boost::asio::io_context io;
    boost::beast::tcp_stream stream(io);
    stream.expires_after(std::chrono::seconds(30));
    stream.connect(boost::asio::ip::tcp::endpoint(boost::asio::ip::make_address("127.0.0.1"),
                                                  port));
    http::request<http::string_body> req(method, target, 11);
    req.set(http::field::host, "127.0.0.1");
    if (!token.empty()) req.set(http::field::authorization, "Bearer " + token);
    if (!body.empty()) {
      req.set(http::field::content_type, content_type);
      req.body() = body;
    }
    req.prepare_payload();
    http::write(stream, req);
    boost::beast::flat_buffer buffer;
    http::response<http::string_body> res;
    http::read(stream, buffer, res);
    out.status = static_cast<int>(res.result_int());
    out.body = res.body();
    out.allow = std::string(res[http::field::allow]);
  } catch (const std::exception& e) {
    ADD_FAILURE() << "HTTP " << target << ": " << e.what();
  }
  return out;
}

template <typename T>
T Must(Result<T> r) {
  EXPECT_TRUE(r.ok()) << r.status().ToString();
  return r.ok() ? std::move(r).value() : T{};
}

json::object ParseObject(const std::string& text) {
  boost::system::error_code ec;
  json::value v = json::parse(text, ec);
  if (ec || !v.is_object()) {
    ADD_FAILURE() << "not a JSON object: " << text;
    return {};
  }
  return v.as_object();
}

std::string Str(const json::object& o, const char* key) {
  auto it = o.find(key);
  return it != o.end() && it->value().is_string() ? std::string(it->value().as_string()) : "";
}

constexpr const char* kOrderSaga = R"yaml(name: order
version: 1
steps:
  - name: reserve
    participant: inventory
    action: inventory.reserve
    compensation: inventory.release
    timeout_ms: 60000
  - name: charge
    participant: payments
    action: payments.charge
    pivot: true
    timeout_ms: 60000
  - name: ship
    participant: shipping
    action: shipping.schedule
    timeout_ms: 60000
)yaml";

// The participant services: fetch commands from their topics and reply. `fail_types` are the
// command types refused for good (outcome "failed"); every command seen is recorded.
class Participants {
 public:
  Participants(uint16_t port, std::set<std::string> fail_types = {})
      : client_(Options(port)), fail_types_(std::move(fail_types)) {}

  static client::Options Options(uint16_t port) {
    client::Options o;
    o.host = "127.0.0.1";
    o.port = port;
    o.timeout_ms = 30'000;
    return o;
  }

  // One round over the three topics: fetch what is there, reply, ack. Returns the commands
  // handled in this round.
  size_t Round(bool reply = true) {
    size_t handled = 0;
    for (const char* topic : {"inventory", "payments", "shipping"}) {
      client::FetchOptions f;
      f.max_events = 100;
      f.wait_ms = 0;
      Result<std::vector<client::Delivery>> got = client_.Fetch(topic, "svc", f);
      if (!got.ok()) continue;  // the topic exists once the first command was sent to it
      std::vector<client::Lease> leases;
      for (const client::Delivery& d : *got) {
        if (!d.event) continue;
        const Event& cmd = *d.event;
        seen_.push_back(cmd.type());
        if (reply) {
          Status s = Reply(cmd);
          EXPECT_TRUE(s.ok()) << s.ToString();
        }
        leases.push_back(d.lease());
        ++handled;
      }
      if (!leases.empty()) {
        EXPECT_TRUE(client_.Ack(topic, "svc", leases).ok());
      }
    }
    return handled;
  }

  const std::vector<std::string>& seen() const { return seen_; }

 private:
  Status Reply(const Event& cmd) {
    const bool fail = fail_types_.count(cmd.type()) > 0;
    Event r;
    r.set_id(cmd.id() + "/reply");
    r.set_source("/test/participant");
    r.set_type("converge.saga.reply");
    for (const char* name : {"sagaid", "sagastep", "sagakind", "sagaattempt"}) {
      const Extension* e = cmd.FindExtension(name);
      if (e == nullptr) return InvalidArgumentError(std::string("command without ") + name);
      if (e->kind == ExtensionKind::kInteger) {
        r.SetExtensionInteger(e->name, std::stoi(e->value));
      } else {
        r.SetExtension(e->name, e->value);
      }
    }
    r.SetExtension("sagaoutcome", fail ? "failed" : "ok");
    const Extension* kind = cmd.FindExtension("sagakind");
    if (kind->value != "action") r.SetExtensionBoolean("sagaapplied", true);
    if (fail) r.SetExtension("sagacode", "FAILED_PRECONDITION");
    r.set_partitionkey(cmd.FindExtension("sagaid")->value);
    const Extension* reply_to = cmd.FindExtension("sagareplyto");
    if (reply_to == nullptr) return InvalidArgumentError("command without sagareplyto");
    return client_.PublishOne(reply_to->value, r).status();
  }

  client::Client client_;
  std::set<std::string> fail_types_;
  std::vector<std::string> seen_;
};

class SagaServeTest : public ::testing::Test {
 protected:
  void StartServer(const std::string& yaml = "", const std::string& data_dir = "") {
    server_ = std::make_unique<ServeProcess>(yaml, data_dir);
    Status s = server_->Start();
    ASSERT_TRUE(s.ok()) << s.ToString();
  }
  uint16_t port() const { return server_->port(); }

  std::string StartSaga(const std::string& body, const std::string& token = "") {
    HttpReply r = Request(port(), http::verb::post, "/v1/sagas", body, token);
    EXPECT_EQ(r.status, 201) << r.body;
    return Str(ParseObject(r.body), "id");
  }
  json::object Describe(const std::string& id) {
    HttpReply r = Request(port(), http::verb::get, "/v1/sagas/" + id);
    EXPECT_EQ(r.status, 200) << r.body;
    return ParseObject(r.body);
  }
  // Runs participant rounds until the saga reaches `state` (or 20 s pass).
  bool RunUntil(Participants& p, const std::string& id, const std::string& state) {
    for (int i = 0; i < 400; ++i) {
      if (Str(Describe(id), "state") == state) return true;
      if (p.Round() == 0) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return Str(Describe(id), "state") == state;
  }

  std::unique_ptr<ServeProcess> server_;
};

TEST_F(SagaServeTest, RunsASagaToCompletionWithParticipantsOverHttp) {
  StartServer();
  HttpReply reg = Request(port(), http::verb::post, "/v1/saga-definitions", kOrderSaga, "",
                          "application/yaml");
  ASSERT_EQ(reg.status, 201) << reg.body;
  HttpReply defs = Request(port(), http::verb::get, "/v1/saga-definitions");
  ASSERT_EQ(defs.status, 200);
  EXPECT_NE(defs.body.find("\"payments.charge\""), std::string::npos) << defs.body;

  const std::string id = StartSaga(R"({"definition":"order","data":{"order":42}})");
  ASSERT_FALSE(id.empty());
  Participants p(port());
  ASSERT_TRUE(RunUntil(p, id, "completed")) << json::serialize(Describe(id));
  EXPECT_EQ(p.seen(), (std::vector<std::string>{"inventory.reserve", "payments.charge",
                                                "shipping.schedule"}));
  json::object info = Describe(id);
  EXPECT_EQ(info["data"], json::parse(R"({"order":42})"));
  const json::array& steps = info["steps"].as_array();
  ASSERT_EQ(steps.size(), 3u);
  for (const json::value& s : steps) EXPECT_EQ(Str(s.as_object(), "state"), "done");

  // Starting the same id again is idempotent: the same saga, not a second one.
  EXPECT_EQ(StartSaga(R"({"definition":"order","id":")" + id + "\"}"), id);
  HttpReply list = Request(port(), http::verb::get, "/v1/sagas?state=completed");
  ASSERT_EQ(list.status, 200);
  EXPECT_EQ(ParseObject(list.body)["sagas"].as_array().size(), 1u) << list.body;
}

TEST_F(SagaServeTest, AFailedStepBeforeThePivotIsCompensated) {
  // The definition comes from the config file this time.
  const std::string def_path =
      std::filesystem::temp_directory_path() / ("converge-saga-def-" + std::to_string(::getpid()));
  std::ofstream(def_path) << kOrderSaga;
  StartServer("sagas:\n  definitions: [" + def_path + "]\n");
  std::filesystem::remove(def_path);

  const std::string id = StartSaga(R"({"definition":"order","data":{"order":7}})");
  Participants p(port(), {"payments.charge"});
  ASSERT_TRUE(RunUntil(p, id, "compensated")) << json::serialize(Describe(id));
  EXPECT_EQ(p.seen(), (std::vector<std::string>{"inventory.reserve", "payments.charge",
                                                "inventory.release"}));
  json::object info = Describe(id);
  EXPECT_EQ(Str(info["steps"].as_array()[0].as_object(), "state"), "compensated");
  EXPECT_EQ(Str(info["steps"].as_array()[1].as_object(), "state"), "failed");
  EXPECT_EQ(Str(info["steps"].as_array()[2].as_object(), "state"), "pending");
}

TEST_F(SagaServeTest, CancelsBeforeThePivotAndRefusesAfterIt) {
  StartServer();
  ASSERT_EQ(Request(port(), http::verb::post, "/v1/saga-definitions", kOrderSaga).status, 201);
  const std::string id = StartSaga(R"({"definition":"order"})");
  Participants p(port());
  // Let the first command arrive, but do not reply: the saga waits at "reserve".
  for (int i = 0; i < 100 && p.Round(/*reply=*/false) == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_EQ(p.seen().size(), 1u);
  HttpReply timers = Request(port(), http::verb::get, "/v1/saga-timers");
  ASSERT_EQ(timers.status, 200);
  EXPECT_NE(timers.body.find("\"step-timeout\""), std::string::npos) << timers.body;

  HttpReply cancel =
      Request(port(), http::verb::post, "/v1/sagas/" + id + "/cancel", R"({"reason":"test"})");
  ASSERT_EQ(cancel.status, 200) << cancel.body;
  // The reserve's compensation is sent; answer everything from here on.
  ASSERT_TRUE(RunUntil(p, id, "compensated")) << json::serialize(Describe(id));
  EXPECT_EQ(p.seen().back(), "inventory.release");

  const std::string done = StartSaga(R"({"definition":"order"})");
  ASSERT_TRUE(RunUntil(p, done, "completed"));
  HttpReply refused = Request(port(), http::verb::post, "/v1/sagas/" + done + "/cancel", "{}");
  EXPECT_EQ(refused.status, 409) << refused.body;
  EXPECT_EQ(Request(port(), http::verb::get, "/v1/sagas/no-such-saga").status, 404);
  EXPECT_EQ(Request(port(), http::verb::post, "/v1/sagas", R"({"definition":"nope"})").status,
            404);
  EXPECT_EQ(Request(port(), http::verb::post, "/v1/sagas", "not json").status, 400);
}

TEST_F(SagaServeTest, ServicesMayStartAndReadOnlySagasWhoseParticipantsTheyMayPublishTo) {
  StartServer(
      "auth:\n"
      "  tokens:\n"
      "    - {service: ops, token: ops-secret-token-0001, admin: true}\n"
      "    - {service: orders, token: orders-secret-token-01, publish: ['*'], subscribe: ['*']}\n"
      "    - {service: stock, token: stock-secret-token-001, publish: [inventory]}\n");
  EXPECT_EQ(Request(port(), http::verb::get, "/v1/sagas").status, 401);
  EXPECT_EQ(Request(port(), http::verb::get, "/v1/sagas", "", "wrong").status, 401);
  HttpReply denied = Request(port(), http::verb::post, "/v1/saga-definitions", kOrderSaga,
                             "orders-secret-token-01");
  EXPECT_EQ(denied.status, 403) << denied.body;
  EXPECT_NE(denied.body.find("PERMISSION_DENIED"), std::string::npos) << denied.body;
  ASSERT_EQ(Request(port(), http::verb::post, "/v1/saga-definitions", kOrderSaga,
                    "ops-secret-token-0001")
                .status,
            201);
  // orders may publish to every participant topic: it may start the saga and read it.
  const std::string id = StartSaga(R"({"definition":"order","data":{"secret":1}})",
                                   "orders-secret-token-01");
  ASSERT_FALSE(id.empty());
  EXPECT_EQ(Request(port(), http::verb::get, "/v1/sagas/" + id, "", "orders-secret-token-01")
                .status,
            200);
  // stock may publish to inventory only: neither start nor read, and no data in the reply.
  HttpReply start = Request(port(), http::verb::post, "/v1/sagas", R"({"definition":"order"})",
                            "stock-secret-token-001");
  EXPECT_EQ(start.status, 403) << start.body;
  EXPECT_NE(start.body.find("payments"), std::string::npos) << start.body;
  HttpReply read =
      Request(port(), http::verb::get, "/v1/sagas/" + id, "", "stock-secret-token-001");
  EXPECT_EQ(read.status, 403) << read.body;
  EXPECT_EQ(read.body.find("secret"), std::string::npos) << read.body;
  // Listing, timers and cancelling are for admins.
  for (const char* target : {"/v1/sagas", "/v1/saga-timers", "/v1/saga-definitions"}) {
    EXPECT_EQ(Request(port(), http::verb::get, target, "", "orders-secret-token-01").status, 403)
        << target;
    EXPECT_EQ(Request(port(), http::verb::get, target, "", "ops-secret-token-0001").status, 200)
        << target;
  }
  EXPECT_EQ(Request(port(), http::verb::post, "/v1/sagas/" + id + "/cancel", "{}",
                    "orders-secret-token-01")
                .status,
            403);
  EXPECT_EQ(Request(port(), http::verb::post, "/v1/sagas/" + id + "/cancel", "{}",
                    "ops-secret-token-0001")
                .status,
            200);
}

TEST_F(SagaServeTest, AWrongMethodGets405WithAllow) {
  StartServer();
  HttpReply r = Request(port(), http::verb::put, "/v1/sagas", "{}");
  EXPECT_EQ(r.status, 405);
  EXPECT_EQ(r.allow, "GET, POST, HEAD");  // HEAD wherever GET is served
  EXPECT_NE(r.body.find("METHOD_NOT_ALLOWED"), std::string::npos) << r.body;
  r = Request(port(), http::verb::get, "/v1/sagas/x/cancel");
  EXPECT_EQ(r.status, 405);
  EXPECT_EQ(r.allow, "POST");
}

TEST_F(SagaServeTest, ASagaInFlightResumesAfterTheServerIsKilled) {
  const std::string data_dir =
      std::filesystem::temp_directory_path() / ("converge-saga-kill-" + std::to_string(::getpid()));
  std::filesystem::remove_all(data_dir);
  StartServer("", data_dir);
  ASSERT_EQ(Request(port(), http::verb::post, "/v1/saga-definitions", kOrderSaga).status, 201);
  const std::string id = StartSaga(R"({"definition":"order","data":{"n":1}})");
  {
    Participants p(port());
    // Reserve is answered; then the server dies while the charge command is outstanding.
    for (int i = 0; i < 200 && p.seen().size() < 2; ++i) {
      if (p.Round(/*reply=*/p.seen().empty()) == 0) {
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
      }
    }
    ASSERT_EQ(p.seen().size(), 2u);
  }
  server_->Kill();
  server_.reset();
  StartServer("", data_dir);
  Participants p(port());
  ASSERT_TRUE(RunUntil(p, id, "completed")) << json::serialize(Describe(id));
  // The charge command is delivered again (same command id) after the restart; the reserve
  // is not repeated.
  for (const std::string& type : p.seen()) EXPECT_NE(type, "inventory.reserve");
  server_.reset();
  std::filesystem::remove_all(data_dir);
}

TEST_F(SagaServeTest, KeepsTheSagaLogInPostgresWhenConfigured) {
  Result<std::unique_ptr<testing::PostgresServer>> pg = testing::PostgresServer::Start();
  if (pg.status().code() == StatusCode::kNotFound) GTEST_SKIP() << pg.status().ToString();
  ASSERT_TRUE(pg.ok()) << pg.status().ToString();
  const std::string config = "sagas:\n  postgres_conninfo: \"" + (*pg)->ConnInfo() +
                             "\"\n  postgres_table: sidecar_sagas\n";
  const std::string data_dir =
      std::filesystem::temp_directory_path() / ("converge-saga-pg-" + std::to_string(::getpid()));
  std::filesystem::remove_all(data_dir);
  StartServer(config, data_dir);
  ASSERT_EQ(Request(port(), http::verb::post, "/v1/saga-definitions", kOrderSaga).status, 201);
  const std::string id = StartSaga(R"({"definition":"order"})");
  {
    Participants p(port());
    for (int i = 0; i < 200 && p.seen().empty(); ++i) {
      if (p.Round(/*reply=*/false) == 0) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    ASSERT_EQ(p.seen().size(), 1u);
  }
  EXPECT_NE(Must((*pg)->Query("postgres", "SELECT count(*) FROM sidecar_sagas")), "0");
  // The saga log is in PostgreSQL, not in the data directory.
  EXPECT_FALSE(std::filesystem::exists(data_dir + "/sagas"));
  server_->Kill();
  server_.reset();
  StartServer(config, data_dir);
  Participants p(port());
  ASSERT_TRUE(RunUntil(p, id, "completed")) << json::serialize(Describe(id));
  server_.reset();
  std::filesystem::remove_all(data_dir);
}

TEST_F(SagaServeTest, TheSagaCliTalksToTheServer) {
  StartServer();
  ASSERT_EQ(Request(port(), http::verb::post, "/v1/saga-definitions", kOrderSaga).status, 201);
  const std::string id = StartSaga(R"({"definition":"order"})");
  const char* binary = std::getenv("CONVERGE_BINARY");
  ASSERT_NE(binary, nullptr);
  const std::string cmd = std::string(binary) + " saga ls --server http://127.0.0.1:" +
                          std::to_string(port()) + " 2>&1";
  std::FILE* f = ::popen(cmd.c_str(), "r");
  ASSERT_NE(f, nullptr);
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), f)) > 0) out.append(buf, n);
  EXPECT_EQ(::pclose(f), 0) << out;
  EXPECT_NE(out.find(id), std::string::npos) << out;
  EXPECT_NE(out.find("running"), std::string::npos) << out;
}

}  // namespace
}  // namespace converge
