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
#include "support/run_command.h"
#include "test_util.h"

namespace converge {
namespace {

namespace json = boost::json;
namespace http = boost::beast::http;
using testing::ServeProcess;

using HttpReply = testing::HttpResult;

// One request on a new connection (what a service without a converge library does); a body
// goes with its media type.
HttpReply Request(uint16_t port, http::verb method, const std::string& target,
                  const std::string& body = "", const std::string& token = "",
                  const std::string& content_type = "application/json") {
  testing::HttpHeaders headers;
  if (!body.empty()) headers.emplace_back("Content-Type", content_type);
  return testing::HttpCall(port, http::to_string(method), target, body, headers, token);
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
  Participants(uint16_t port, std::set<std::string> fail_types = {}, std::string token = "")
      : client_(Options(port, std::move(token))), fail_types_(std::move(fail_types)) {}

  static client::Options Options(uint16_t port, std::string token = "") {
    client::Options o;
    o.host = "127.0.0.1";
    o.port = port;
    o.timeout_ms = 30'000;
    o.token = std::move(token);
    return o;
  }

  // Replies in CloudEvents binary mode (every attribute a ce-* header, so every extension a
  // string) instead of structured mode.
  void set_binary_mode(bool binary) { binary_ = binary; }
  void set_topics(std::vector<std::string> topics) { topics_ = std::move(topics); }

  // One round over the three topics: fetch what is there, reply, ack. Returns the commands
  // handled in this round.
  size_t Round(bool reply = true) {
    size_t handled = 0;
    for (const std::string& topic : topics_) {
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
        commands_.push_back(cmd);
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
  const std::vector<Event>& commands() const { return commands_; }

  // Publishes the reply to `cmd` (ok, or failed for the fail types).
  Status Reply(const Event& cmd) {
    const bool fail = fail_types_.count(cmd.type()) > 0;
    if (binary_) return ReplyInBinaryMode(cmd, fail);
    Event r;
    r.set_id(cmd.id() + "/reply");
    r.set_source("/test/participant");
    r.set_type("converge.saga.reply");
    if (const Extension* token = cmd.FindExtension("sagatoken")) {
      r.SetExtension("sagatoken", token->value);  // proves the reply comes from a reader
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
    r.SetExtension("sagaoutcome", fail ? "failed" : "ok");
    const Extension* kind = cmd.FindExtension("sagakind");
    if (kind->value != "action") r.SetExtensionBoolean("sagaapplied", true);
    if (fail) r.SetExtension("sagacode", "FAILED_PRECONDITION");
    r.set_partitionkey(cmd.FindExtension("sagaid")->value);
    const Extension* reply_to = cmd.FindExtension("sagareplyto");
    if (reply_to == nullptr) return InvalidArgumentError("command without sagareplyto");
    return client_.PublishOne(reply_to->value, r).status();
  }

  Status ReplyInBinaryMode(const Event& cmd, bool fail) {
    client::HttpRequest req;
    req.method = "POST";
    const Extension* reply_to = cmd.FindExtension("sagareplyto");
    if (reply_to == nullptr) return InvalidArgumentError("command without sagareplyto");
    req.target = "/v1/topics/" + reply_to->value + "/events";
    req.headers = {{"ce-specversion", "1.0"},
                   {"ce-id", cmd.id() + "/reply"},
                   {"ce-source", "/test/participant"},
                   {"ce-type", "converge.saga.reply"},
                   {"ce-sagaoutcome", fail ? "failed" : "ok"},
                   {"Content-Type", "text/plain"}};
    for (const char* name : {"sagaid", "sagastep", "sagakind", "sagaattempt", "sagatoken"}) {
      const Extension* e = cmd.FindExtension(name);
      if (e == nullptr && std::string_view(name) == "sagatoken") continue;
      if (e == nullptr) return InvalidArgumentError(std::string("command without ") + name);
      req.headers.emplace_back(std::string("ce-") + name, e->value);
    }
    req.headers.emplace_back("ce-partitionkey", cmd.FindExtension("sagaid")->value);
    if (cmd.FindExtension("sagakind")->value != "action") {
      req.headers.emplace_back("ce-sagaapplied", "true");
    }
    if (fail) req.headers.emplace_back("ce-sagacode", "FAILED_PRECONDITION");
    req.body = "done";
    Result<client::HttpResponse> res = client_.Send(req);
    if (!res.ok()) return res.status();
    if (res->status != 200)
      return InternalError("publish: HTTP " + std::to_string(res->status) + " " + res->body);
    return Status::Ok();
  }

 private:
  client::Client client_;
  std::set<std::string> fail_types_;
  std::vector<std::string> seen_;
  std::vector<Event> commands_;
  std::vector<std::string> topics_ = {"inventory", "payments", "shipping"};
  bool binary_ = false;
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
  json::object Describe(const std::string& id, const std::string& token = "") {
    HttpReply r = Request(port(), http::verb::get, "/v1/sagas/" + id, "", token);
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
  // stock may publish to inventory only: neither start nor read (the saga is not found for
  // it), and no data in the reply.
  HttpReply start = Request(port(), http::verb::post, "/v1/sagas", R"({"definition":"order"})",
                            "stock-secret-token-001");
  EXPECT_EQ(start.status, 403) << start.body;
  EXPECT_NE(start.body.find("PERMISSION_DENIED"), std::string::npos) << start.body;
  HttpReply read =
      Request(port(), http::verb::get, "/v1/sagas/" + id, "", "stock-secret-token-001");
  EXPECT_EQ(read.status, 404) << read.body;
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

// Services for the tests of issue #12: each participant reads only its own command topic and
// may publish to the reply topic (what every participant needs).
constexpr const char* kParticipantServices =
    "auth:\n"
    "  tokens:\n"
    "    - {service: ops, token: ops-secret-token-0001, admin: true}\n"
    "    - {service: orders, token: orders-secret-token-01, publish: [inventory, payments, "
    "shipping]}\n"
    "    - {service: stock, token: stock-secret-token-001, subscribe: [inventory], "
    "publish: [saga.replies]}\n"
    "    - {service: pay, token: pay-secret-token-00001, subscribe: [payments], "
    "publish: [saga.replies]}\n";
constexpr const char* kOps = "ops-secret-token-0001";

size_t CountHistory(const json::object& info, const std::string& event, const std::string& text) {
  size_t n = 0;
  auto it = info.find("history");
  if (it == info.end() || !it->value().is_array()) return 0;
  for (const json::value& h : it->value().as_array()) {
    const json::object& o = h.as_object();
    if (Str(o, "event") == event && Str(o, "detail").find(text) != std::string::npos) ++n;
  }
  return n;
}

std::string StepState(const json::object& info, size_t step) {
  auto it = info.find("steps");
  if (it == info.end() || !it->value().is_array() || it->value().as_array().size() <= step) {
    return "";
  }
  return Str(it->value().as_array()[step].as_object(), "state");
}

// The value of one sample in the /metrics text, or -1.
double MetricValue(uint16_t port, const std::string& sample) {
  HttpReply m = Request(port, http::verb::get, "/metrics");
  const size_t at = m.body.find("\n" + sample + " ");
  if (at == std::string::npos) return -1;
  return std::strtod(m.body.c_str() + at + sample.size() + 2, nullptr);
}

// Issue #12: any service may publish to the reply topic, so a reply must prove it comes from
// the participant the command went to (the command's sagatoken, which only readers of that
// participant's topic see). A forged reply changes nothing and is visible.
TEST_F(SagaServeTest, AReplyForgedByAnotherServiceIsRejectedAndRecorded) {
  StartServer(kParticipantServices);
  ASSERT_EQ(Request(port(), http::verb::post, "/v1/saga-definitions", kOrderSaga, kOps,
                    "application/yaml")
                .status,
            201);
  const std::string id = StartSaga(R"({"definition":"order","id":"order-1"})", kOps);
  ASSERT_EQ(id, "order-1");
  // stock received the reserve command and is working on it.
  Participants stock(port(), {}, "stock-secret-token-001");
  stock.set_topics({"inventory"});
  for (int i = 0; i < 200 && stock.seen().empty(); ++i) {
    if (stock.Round(/*reply=*/false) == 0) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }
  ASSERT_EQ(stock.seen().size(), 1u);

  // pay fails stock's step (a guessed token) and then completes it (no token).
  client::Client pay(Participants::Options(port(), "pay-secret-token-00001"));
  for (const char* outcome : {"failed", "ok"}) {
    Event forged;
    forged.set_id(std::string("order-1/0/action/1/reply-") + outcome);
    forged.set_source("/pay");
    forged.set_type("converge.saga.reply");
    forged.SetExtension("sagaid", "order-1");
    forged.SetExtensionInteger("sagastep", 0);
    forged.SetExtension("sagakind", "action");
    forged.SetExtensionInteger("sagaattempt", 1);
    forged.SetExtension("sagaoutcome", outcome);
    if (std::string(outcome) == "failed") {
      forged.SetExtension("sagacode", "FAILED_PRECONDITION");
      forged.SetExtension("sagatoken", "0123456789abcdef0123456789abcdef");
    }
    forged.set_partitionkey("order-1");
    Result<client::Published> sent = pay.PublishOne("saga.replies", forged);
    ASSERT_TRUE(sent.ok()) << sent.status().ToString();
  }
  json::object info;
  for (int i = 0; i < 200; ++i) {
    info = Describe(id, kOps);
    if (CountHistory(info, "reply-rejected", "bad_token") >= 2) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_EQ(CountHistory(info, "reply-rejected", "bad_token"), 2u) << json::serialize(info);
  EXPECT_EQ(Str(info, "state"), "running") << json::serialize(info);
  EXPECT_EQ(StepState(info, 0), "active") << json::serialize(info);
  EXPECT_EQ(MetricValue(port(), "converge_saga_replies_rejected_total{reason=\"bad_token\"}"), 2);

  // stock's own answer (which carries the command's token) is used.
  ASSERT_TRUE(stock.Reply(stock.commands()[0]).ok());
  for (int i = 0; i < 200 && StepState(Describe(id, kOps), 0) != "done"; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_EQ(StepState(Describe(id, kOps), 0), "done") << json::serialize(Describe(id, kOps));
}

// Issue #12: a service that may not read a saga cannot tell an existing id from a missing one,
// on any saga route.
TEST_F(SagaServeTest, ServicesCannotProbeSagaIds) {
  StartServer(kParticipantServices);
  ASSERT_EQ(Request(port(), http::verb::post, "/v1/saga-definitions", kOrderSaga, kOps,
                    "application/yaml")
                .status,
            201);
  ASSERT_EQ(StartSaga(R"({"definition":"order","id":"secret-order"})", kOps), "secret-order");
  // stock (publish to inventory and the reply topic only) may not read order sagas.
  const std::string stock = "stock-secret-token-001";
  struct Probe {
    http::verb verb;
    std::string prefix, suffix, body;
  };
  const std::vector<Probe> probes = {
      {http::verb::get, "/v1/sagas/", "", ""},
      {http::verb::post, "/v1/sagas/", "/cancel", "{}"},
      {http::verb::post, "/v1/sagas/", "/cancel", "not json"},
      {http::verb::put, "/v1/sagas/", "/timers/step-timeout", R"({"due_micros":1})"},
      {http::verb::delete_, "/v1/sagas/", "/timers/step-timeout", ""},
      {http::verb::put, "/v1/sagas/", "/timers/bogus", "{"},
      {http::verb::get, "/v1/sagas/", "/cancel", ""},
  };
  for (const Probe& p : probes) {
    HttpReply existing =
        Request(port(), p.verb, p.prefix + "secret-order" + p.suffix, p.body, stock);
    HttpReply missing = Request(port(), p.verb, p.prefix + "no-such-ord" + p.suffix, p.body, stock);
    EXPECT_EQ(existing.status, missing.status) << p.prefix << p.suffix << " " << existing.body;
    std::string normalized = missing.body;
    if (size_t at = normalized.find("no-such-ord"); at != std::string::npos) {
      normalized.replace(at, 11, "secret-order");
    }
    EXPECT_EQ(existing.body, normalized) << p.prefix << p.suffix;
    // 405: a method the path does not take, decided by the router from the path's shape
    // alone (the same for every id, as on every route of the server).
    EXPECT_TRUE(existing.status == 403 || existing.status == 404 || existing.status == 405)
        << existing.status;
  }
  // Starting with a taken id tells nothing about the saga holding it; a definition the service
  // may not start looks like a missing one.
  HttpReply taken = Request(port(), http::verb::post, "/v1/sagas",
                            R"({"definition":"order","id":"secret-order"})", stock);
  HttpReply unknown = Request(port(), http::verb::post, "/v1/sagas",
                              R"({"definition":"no-such-def","id":"secret-order"})", stock);
  EXPECT_EQ(taken.status, 403) << taken.body;
  EXPECT_EQ(unknown.status, 403) << unknown.body;
  // stock may start no saga at all: refused before its body is read, whatever the body.
  for (const char* body : {"not json", "{", R"({"definition":7})", R"({"id":"x"})",
                           R"({"definition":"order","bogus":1})"}) {
    HttpReply r = Request(port(), http::verb::post, "/v1/sagas", body, stock);
    EXPECT_EQ(r.status, 403) << body << ": " << r.body;
  }
  EXPECT_EQ(taken.body.find("payments"), std::string::npos) << taken.body;
  // orders may start order sagas, but the id is held by a saga of another definition: 409
  // without naming it.
  const char* other =
      "name: restock\nversion: 1\nsteps:\n"
      "  - {name: a, participant: warehouse, action: warehouse.fill, pivot: true}\n";
  ASSERT_EQ(
      Request(port(), http::verb::post, "/v1/saga-definitions", other, kOps, "application/yaml")
          .status,
      201);
  ASSERT_EQ(StartSaga(R"({"definition":"restock","id":"restock-7"})", kOps), "restock-7");
  HttpReply clash = Request(port(), http::verb::post, "/v1/sagas",
                            R"({"definition":"order","id":"restock-7"})", "orders-secret-token-01");
  EXPECT_EQ(clash.status, 409) << clash.body;
  EXPECT_EQ(clash.body.find("restock v"), std::string::npos) << clash.body;
  HttpReply read_other =
      Request(port(), http::verb::get, "/v1/sagas/restock-7", "", "orders-secret-token-01");
  HttpReply read_missing =
      Request(port(), http::verb::get, "/v1/sagas/restock-8", "", "orders-secret-token-01");
  EXPECT_EQ(read_other.status, 404) << read_other.body;
  EXPECT_EQ(read_missing.status, 404) << read_missing.body;
}

// Issue #12: in CloudEvents binary mode every extension arrives as a string; replies sent that
// way are used, and a reply the orchestrator cannot use is counted and recorded, not dropped.
TEST_F(SagaServeTest, RepliesInBinaryModeAreUsedAndBadOnesAreRecorded) {
  StartServer();
  ASSERT_EQ(Request(port(), http::verb::post, "/v1/saga-definitions", kOrderSaga).status, 201);
  const std::string id = StartSaga(R"({"definition":"order","id":"bin-1"})");
  Participants p(port());
  p.set_binary_mode(true);
  // The step timeouts are 60 s: completing within the 20 s of RunUntil means no reply was lost.
  ASSERT_TRUE(RunUntil(p, id, "completed")) << json::serialize(Describe(id));

  // A reply whose sagastep is not an integer.
  client::Client c(Participants::Options(port()));
  client::HttpRequest req;
  req.method = "POST";
  req.target = "/v1/topics/saga.replies/events";
  req.headers = {
      {"ce-specversion", "1.0"},          {"ce-id", "x-1"},        {"ce-source", "/t"},
      {"ce-type", "converge.saga.reply"}, {"ce-sagaid", id},       {"ce-sagastep", "01"},
      {"ce-sagakind", "action"},          {"ce-sagaattempt", "1"}, {"ce-sagaoutcome", "ok"}};
  Result<client::HttpResponse> sent = c.Send(req);
  ASSERT_TRUE(sent.ok()) << sent.status().ToString();
  ASSERT_EQ(sent->status, 200) << sent->body;
  json::object info;
  for (int i = 0; i < 200; ++i) {
    info = Describe(id);
    if (CountHistory(info, "reply-rejected", "sagastep") > 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_EQ(CountHistory(info, "reply-rejected", "malformed"), 1u) << json::serialize(info);
  EXPECT_EQ(MetricValue(port(), "converge_saga_replies_rejected_total{reason=\"malformed\"}"), 1);
  EXPECT_EQ(Str(info, "state"), "completed");
}

// Issue #12: a participant may subscribe before the first command is sent.
TEST_F(SagaServeTest, ParticipantTopicsExistOnceTheDefinitionIsRegistered) {
  StartServer();
  ASSERT_EQ(Request(port(), http::verb::post, "/v1/saga-definitions", kOrderSaga).status, 201);
  client::Client c(Participants::Options(port()));
  for (const char* topic : {"inventory", "payments", "shipping"}) {
    EXPECT_EQ(Request(port(), http::verb::get, std::string("/v1/topics/") + topic).status, 200)
        << topic;
    client::FetchOptions f;
    f.wait_ms = 0;
    Result<std::vector<client::Delivery>> got = c.Fetch(topic, "svc", f);
    EXPECT_TRUE(got.ok()) << topic << ": " << got.status().ToString();
  }
}

// Every saga route with a JSON body rejects members it does not know (like the other routes).
TEST_F(SagaServeTest, UnknownBodyMembersAreRejected) {
  StartServer();
  ASSERT_EQ(Request(port(), http::verb::post, "/v1/saga-definitions", kOrderSaga).status, 201);
  const std::string id = StartSaga(R"({"definition":"order"})");
  HttpReply r =
      Request(port(), http::verb::post, "/v1/sagas", R"({"definition":"order","colour":"red"})");
  EXPECT_EQ(r.status, 400) << r.body;
  r = Request(port(), http::verb::put, "/v1/sagas/" + id + "/timers/step-timeout",
              R"({"due_micros":1,"colour":"red"})");
  EXPECT_EQ(r.status, 400) << r.body;
  r = Request(port(), http::verb::post, "/v1/sagas/" + id + "/cancel",
              R"({"reason":"x","force":true})");
  EXPECT_EQ(r.status, 400) << r.body;
  EXPECT_NE(r.body.find("force"), std::string::npos) << r.body;
  EXPECT_EQ(Str(Describe(id), "state"), "running");  // nothing changed
  r = Request(port(), http::verb::post, "/v1/saga-definitions",
              std::string(kOrderSaga) + "colour: red\n", "", "application/yaml");
  EXPECT_EQ(r.status, 400) << r.body;
}

// A member (or YAML key) given twice is not read as either one, on every saga route, the
// definition included at any depth: they used to be accepted with one of the values winning
// (a definition {"name":"a","name":"b"} registered "b"; "pivot: true" then "pivot: false"
// registered one of them). Nothing changes.
TEST_F(SagaServeTest, RepeatedBodyMembersAreRejected) {
  StartServer();
  ASSERT_EQ(
      Request(port(), http::verb::post, "/v1/saga-definitions", kOrderSaga, "", "application/yaml")
          .status,
      201);
  const std::string id = StartSaga(R"({"definition":"order","id":"dup-1"})");
  ASSERT_EQ(id, "dup-1");
  const std::string definitions = Request(port(), http::verb::get, "/v1/saga-definitions").body;
  const std::string sagas = Request(port(), http::verb::get, "/v1/sagas").body;
  struct Probe {
    http::verb verb;
    std::string target, body, content_type;
  };
  const std::string step = R"("name":"a","participant":"p","action":"p.go","pivot":true)";
  const std::vector<Probe> probes = {
      {http::verb::post, "/v1/saga-definitions",
       R"({"name":"x","name":"y","version":1,"steps":[{)" + step + "}]}", "application/json"},
      {http::verb::post, "/v1/saga-definitions",
       R"({"name":"x","version":1,"steps":[{)" + step + R"(,"pivot":false}]})", "application/json"},
      {http::verb::post, "/v1/saga-definitions",
       R"({"name":"x","version":1,"steps":[{)" + step +
           R"(,"retry":{"max_attempts":1,"max_attempts":9}}]})",
       "application/json"},
      {http::verb::post, "/v1/saga-definitions",
       "name: x\nversion: 1\nsteps:\n  - name: a\n    participant: p\n    action: p.go\n"
       "    pivot: true\n    pivot: false\n",
       "application/yaml"},
      {http::verb::post, "/v1/saga-definitions",
       "name: x\nname: y\nversion: 1\nsteps:\n  - {name: a, participant: p, action: p.go, "
       "pivot: true}\n",
       "application/yaml"},
      {http::verb::post, "/v1/sagas", R"({"definition":"order","definition":"other"})",
       "application/json"},
      {http::verb::post, "/v1/sagas", R"({"definition":"order","id":"dup-2","id":"dup-3"})",
       "application/json"},
      {http::verb::post, "/v1/sagas",
       R"({"definition":"order","id":"dup-4","data":{"amount":1,"amount":1000}})",
       "application/json"},
      {http::verb::post, "/v1/sagas/dup-1/cancel", R"({"reason":"a","reason":"b"})",
       "application/json"},
      {http::verb::put, "/v1/sagas/dup-1/timers/step-timeout", R"({"due_micros":1,"due_micros":2})",
       "application/json"},
  };
  for (const Probe& p : probes) {
    HttpReply r = Request(port(), p.verb, p.target, p.body, "", p.content_type);
    EXPECT_EQ(r.status, 400) << p.target << " " << p.body << ": " << r.body;
    EXPECT_TRUE(r.body.find("more than once") != std::string::npos ||
                r.body.find("duplicate key") != std::string::npos)
        << p.body << ": " << r.body;
  }
  EXPECT_EQ(Request(port(), http::verb::get, "/v1/saga-definitions").body, definitions);
  EXPECT_EQ(Request(port(), http::verb::get, "/v1/sagas").body, sagas);
  EXPECT_EQ(Str(Describe(id), "state"), "running");
}

// A definition of about 700 bytes whose anchors refer to anchors expands to 10^10 nodes: it is
// refused at once (400), not walked, and the server keeps answering.
TEST_F(SagaServeTest, AnAliasBombDefinitionIsRefusedAtOnce) {
  StartServer();
  const std::string before = Request(port(), http::verb::get, "/v1/saga-definitions").body;
  std::string bomb = "name: bomb\nversion: 1\nx0: &x0 [a, a, a, a, a, a, a, a, a, a]\n";
  for (int i = 1; i <= 10; ++i) {
    const std::string n = std::to_string(i);
    const std::string prev = std::to_string(i - 1);
    bomb.append("x").append(n).append(": &x").append(n).append(" [");
    for (int j = 0; j < 10; ++j) bomb.append(j ? ", *x" : "*x").append(prev);
    bomb.append("]\n");
  }
  bomb += "steps:\n  - {name: a, participant: p, action: p.go, pivot: true, input: *x10}\n";
  const auto start = std::chrono::steady_clock::now();
  HttpReply r =
      Request(port(), http::verb::post, "/v1/saga-definitions", bomb, "", "application/yaml");
  EXPECT_EQ(r.status, 400) << r.body;
  EXPECT_NE(r.body.find("expands to more than"), std::string::npos) << r.body;
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(10));
  EXPECT_EQ(Request(port(), http::verb::get, "/v1/saga-definitions").body, before);
}

// Issue #12: a participant that is down. Its compensation is retried without a bound, and
// each attempt used to wait only timeout_ms: with a 100 ms timeout and no backoff between
// attempts, about 60 commands in 6 s. The wait now doubles per attempt (100, 200, 400, ...
// ms, docs/formats/saga.md "When a participant does not answer"): about 7 in 6 s.
TEST_F(SagaServeTest, AParticipantThatIsDownGetsCommandsAtAFallingRate) {
  StartServer();
  const std::string definition =
      "name: down\nversion: 1\nsteps:\n"
      "  - name: a\n    participant: xdown\n    action: xdown.do\n    compensation: xdown.undo\n"
      "    timeout_ms: 100\n"
      "    retry: {max_attempts: 1, base_delay_ms: 1, multiplier: 1, max_delay_ms: 1}\n"
      "  - name: b\n    participant: ydown\n    action: ydown.do\n    pivot: true\n"
      "    timeout_ms: 60000\n";
  ASSERT_EQ(
      Request(port(), http::verb::post, "/v1/saga-definitions", definition, "", "application/yaml")
          .status,
      201);
  const auto start = std::chrono::steady_clock::now();
  ASSERT_EQ(StartSaga(R"({"definition":"down","id":"down-1"})"), "down-1");
  // Nobody reads xdown. Count its commands after 6 s (a slow machine only sends fewer).
  std::this_thread::sleep_until(start + std::chrono::seconds(6));
  HttpReply topic = Request(port(), http::verb::get, "/v1/topics/xdown");
  ASSERT_EQ(topic.status, 200) << topic.body;
  const json::object t = ParseObject(topic.body);
  const uint64_t commands =
      t.at("partition_offsets").as_array()[0].as_object().at("end_offset").to_number<uint64_t>();
  EXPECT_LE(commands, 12u) << topic.body;  // 1 action + attempts at 0.1, 0.3, 0.7, 1.5, 3.1 s...
  EXPECT_GE(commands, 3u) << topic.body;   // but it is resent
  const json::object info = Describe("down-1");
  EXPECT_EQ(Str(info, "state"), "compensating") << json::serialize(info);
  // The history tells the wait each attempt had (it said "within 100 ms" for every one).
  EXPECT_GE(CountHistory(info, "retry", "within 100 ms"), 1u) << json::serialize(info);
  EXPECT_GE(CountHistory(info, "retry", "within 800 ms"), 1u) << json::serialize(info);
}

TEST_F(SagaServeTest, AWrongMethodGets405WithAllow) {
  StartServer();
  HttpReply r = Request(port(), http::verb::put, "/v1/sagas", "{}");
  EXPECT_EQ(r.status, 405);
  EXPECT_EQ(r.Header("Allow"), "GET, POST, HEAD");  // HEAD wherever GET is served
  EXPECT_NE(r.body.find("METHOD_NOT_ALLOWED"), std::string::npos) << r.body;
  r = Request(port(), http::verb::get, "/v1/sagas/x/cancel");
  EXPECT_EQ(r.status, 405);
  EXPECT_EQ(r.Header("Allow"), "POST");
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
    // (One topic at a time: the participant topics exist from the start, so one round over all
    // of them could answer the charge too.)
    p.set_topics({"inventory"});
    for (int i = 0; i < 200 && p.seen().empty(); ++i) {
      if (p.Round() == 0) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    p.set_topics({"payments"});
    for (int i = 0; i < 200 && p.seen().size() < 2; ++i) {
      if (p.Round(/*reply=*/false) == 0) {
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
  // Integration suites fail, never skip, when their server is missing (postgres_server.h).
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
  const testing::CommandOutput ran = testing::RunCommand(cmd);
  const std::string& out = ran.out;
  EXPECT_EQ(ran.exit_code, 0) << out;
  EXPECT_NE(out.find(id), std::string::npos) << out;
  EXPECT_NE(out.find("running"), std::string::npos) << out;
}

// ---- saga observability (issue 21): metrics and W3C trace context ----

// Starts a saga with extra request headers (a traceparent); returns its id.
std::string StartSagaWithHeaders(uint16_t port, const std::string& body,
                                 const testing::HttpHeaders& extra) {
  testing::HttpHeaders headers = {{"Content-Type", "application/json"}};
  headers.insert(headers.end(), extra.begin(), extra.end());
  HttpReply r = testing::HttpCall(port, "POST", "/v1/sagas", body, headers);
  EXPECT_EQ(r.status, 201) << r.body;
  return Str(ParseObject(r.body), "id");
}

constexpr const char* kStartTrace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

TEST_F(SagaServeTest, SagaMetricsCountOutcomesStepLatenciesAndRejectedReplies) {
  StartServer();
  ASSERT_EQ(
      Request(port(), http::verb::post, "/v1/saga-definitions", kOrderSaga, "", "application/yaml")
          .status,
      201);
  EXPECT_EQ(MetricValue(port(), "converge_sagas_started_total"), 0);
  const std::string done = StartSaga(R"({"definition":"order","id":"m-done"})");
  Participants p(port());
  ASSERT_TRUE(RunUntil(p, done, "completed")) << json::serialize(Describe(done));
  Participants refusing(port(), {"payments.charge"});
  const std::string undone = StartSaga(R"({"definition":"order","id":"m-undone"})");
  ASSERT_TRUE(RunUntil(refusing, undone, "compensated")) << json::serialize(Describe(undone));

  EXPECT_EQ(MetricValue(port(), "converge_sagas_started_total"), 2);
  EXPECT_EQ(MetricValue(port(), "converge_sagas_completed_total"), 1);
  EXPECT_EQ(MetricValue(port(), "converge_sagas_compensated_total"), 1);
  EXPECT_EQ(MetricValue(port(), "converge_sagas_failed_total"), 1);
  EXPECT_EQ(MetricValue(port(), "converge_sagas_in_flight"), 0);
  const std::string h = "converge_saga_step_duration_seconds_count";
  auto step = [&](const char* name, const char* kind, const char* outcome) {
    return MetricValue(port(), h + "{definition=\"order\",step=\"" + name + "\",kind=\"" + kind +
                                   "\",outcome=\"" + outcome + "\"}");
  };
  EXPECT_EQ(step("reserve", "action", "ok"), 2);
  EXPECT_EQ(step("charge", "action", "ok"), 1);
  EXPECT_EQ(step("charge", "action", "failed"), 1);
  EXPECT_EQ(step("ship", "action", "ok"), 1);
  EXPECT_EQ(step("reserve", "compensate", "ok"), 1);
  EXPECT_GE(MetricValue(port(),
                        "converge_saga_step_duration_seconds_sum{definition=\"order\","
                        "step=\"reserve\",kind=\"action\",outcome=\"ok\"}"),
            0);

  // The reserve reply of the completed saga once more (a new event id, the right token): late,
  // so rejected as stale and counted with that reason.
  const Event& reserve = p.commands()[0];
  ASSERT_EQ(reserve.type(), "inventory.reserve");
  Event again;
  again.set_id(reserve.id() + "/reply-again");
  again.set_source("/test/participant");
  again.set_type("converge.saga.reply");
  for (const char* name : {"sagaid", "sagakind", "sagatoken"}) {
    again.SetExtension(name, reserve.FindExtension(name)->value);
  }
  again.SetExtensionInteger("sagastep", 0);
  again.SetExtensionInteger("sagaattempt", 1);
  again.SetExtension("sagaoutcome", "ok");
  again.set_partitionkey(done);
  client::Client c(Participants::Options(port()));
  ASSERT_TRUE(c.PublishOne("saga.replies", again).ok());
  const std::string stale = "converge_saga_replies_rejected_total{reason=\"stale\"}";
  for (int i = 0; i < 200 && MetricValue(port(), stale) < 1; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_EQ(MetricValue(port(), stale), 1);
  EXPECT_EQ(MetricValue(port(), "converge_sagas_completed_total"), 1);
}

// Every command of a saga carries the start request's trace id (W3C traceparent, version 00,
// the start's flags) with a span id of its own; the saga shows the start's context.
TEST_F(SagaServeTest, CommandsCarryTheTraceparentOfTheStartRequest) {
  StartServer();
  ASSERT_EQ(
      Request(port(), http::verb::post, "/v1/saga-definitions", kOrderSaga, "", "application/yaml")
          .status,
      201);
  Participants p(port(), {"payments.charge"});  // reserve, charge (refused), release
  const std::string id =
      StartSagaWithHeaders(port(), R"({"definition":"order"})", {{"traceparent", kStartTrace}});
  ASSERT_TRUE(RunUntil(p, id, "compensated")) << json::serialize(Describe(id));
  EXPECT_EQ(Str(Describe(id), "traceparent"), kStartTrace);
  ASSERT_EQ(p.commands().size(), 3u);
  std::set<std::string> spans;
  for (const Event& cmd : p.commands()) {
    ASSERT_TRUE(cmd.traceparent().has_value()) << cmd.type();
    const std::string tp(*cmd.traceparent());
    Result<TraceParent> parsed = TraceParent::Parse(tp);
    ASSERT_TRUE(parsed.ok()) << tp;
    EXPECT_EQ(tp.substr(0, 36), std::string(kStartTrace).substr(0, 36)) << tp;  // 00-<trace id>-
    EXPECT_EQ(tp.substr(52), "-01") << tp;
    EXPECT_NE(tp.substr(36, 16), std::string(kStartTrace).substr(36, 16)) << tp;
    spans.insert(tp.substr(36, 16));
  }
  EXPECT_EQ(spans.size(), 3u);  // a span per command
}

// W3C Trace Context: a traceparent that does not parse is ignored and the saga starts a new
// trace (never an error); a higher version's extra fields are ignored, its ids kept.
TEST_F(SagaServeTest, AMalformedTraceparentStartsANewTrace) {
  StartServer();
  ASSERT_EQ(
      Request(port(), http::verb::post, "/v1/saga-definitions", kOrderSaga, "", "application/yaml")
          .status,
      201);
  const std::string kTraceId = "4bf92f3577b34da6a3ce929d0e0e4736";
  const std::vector<testing::HttpHeaders> malformed = {
      {{"traceparent", "garbage"}},
      {{"traceparent", ""}},
      {{"traceparent", "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01"}},  // uppercase
      {{"traceparent", "00-00000000000000000000000000000000-00f067aa0ba902b7-01"}},  // zero trace
      {{"traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01"}},  // zero span
      {{"traceparent", "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}},  // version ff
      {{"traceparent", std::string(kStartTrace) + "-extra"}},     // version 00 with a 5th field
      {{"traceparent", std::string(kStartTrace).substr(0, 54)}},  // short
      {{"traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736x00f067aa0ba902b7-01"}},  // separator
      {{"traceparent", std::string(6000, 'a')}},
      {{"traceparent", kStartTrace}, {"traceparent", kStartTrace}},  // sent twice
  };
  Participants p(port());
  p.set_topics({"inventory"});
  std::set<std::string> trace_ids;
  for (size_t i = 0; i < malformed.size(); ++i) {
    const std::string id = "bad-trace-" + std::to_string(i);
    ASSERT_EQ(
        StartSagaWithHeaders(port(), R"({"definition":"order","id":")" + id + "\"}", malformed[i]),
        id);
    const std::string tp = Str(Describe(id), "traceparent");
    ASSERT_TRUE(TraceParent::Parse(tp).ok()) << i << ": " << tp;
    EXPECT_NE(tp.substr(3, 32), kTraceId) << i << ": a new trace, not the malformed one's";
    EXPECT_EQ(tp.substr(0, 3), "00-") << tp;
    trace_ids.insert(tp.substr(3, 32));
  }
  EXPECT_EQ(trace_ids.size(), malformed.size()) << "each saga starts a trace of its own";
  // Its first command carries the new trace (it is a valid one).
  for (int i = 0; i < 200 && p.commands().size() < malformed.size(); ++i) {
    if (p.Round(/*reply=*/false) == 0) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_EQ(p.commands().size(), malformed.size());
  for (const Event& cmd : p.commands()) {
    ASSERT_TRUE(cmd.traceparent().has_value());
    const std::string tp(*cmd.traceparent());
    EXPECT_TRUE(TraceParent::Parse(tp).ok()) << tp;
    EXPECT_EQ(trace_ids.count(tp.substr(3, 32)), 1u) << tp;
  }

  // A higher version: parsed by its first four fields, which are kept (sent on as version 00).
  const std::string future = "01-" + kTraceId + "-00f067aa0ba902b7-01-what-ever";
  const std::string id =
      StartSagaWithHeaders(port(), R"({"definition":"order"})", {{"traceparent", future}});
  EXPECT_EQ(Str(Describe(id), "traceparent"), kStartTrace);
  EXPECT_EQ(Request(port(), http::verb::get, "/healthz").status, 200);
}

}  // namespace
}  // namespace converge
