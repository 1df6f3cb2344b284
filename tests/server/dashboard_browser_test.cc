// The dashboard (GET /ui) in a real headless Chromium, driven over the DevTools protocol (a
// small client on a Boost.Beast WebSocket): against the real `converge serve` with a token,
// the pages load without a console error, what they show matches the API (a topic's event
// count, a group's lag), a dead letter replayed and a saga cancelled by clicking the
// dashboard's buttons are replayed and cancelled as the API then reports, and screenshots at
// laptop and phone width are written to the build folder (dashboard-screenshots/).
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/websocket.hpp>
#include <boost/json.hpp>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "converge/env.h"
#include "converge/event.h"
#include "converge/outbox.h"
#include "converge/sql.h"
#include "serve_process.h"
#include "support/server_process.h"
#include "support/temp_dir.h"
#include "test_util.h"

namespace converge::testing {
namespace {

namespace json = boost::json;
namespace beast = boost::beast;
namespace websocket = beast::websocket;
using tcp = boost::asio::ip::tcp;
using Clock = std::chrono::steady_clock;

constexpr const char* kToken = "dashboard-admin-token";
constexpr const char* kChromium = "/usr/bin/chromium";

std::string ScreenshotDir() { return CONVERGE_DASHBOARD_SCREENSHOT_DIR; }

std::string Base64Decode(std::string_view in) {
  auto value = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
  };
  std::string out;
  uint32_t acc = 0;
  int bits = 0;
  for (char c : in) {
    const int v = value(c);
    if (v < 0) continue;  // '=' padding, whitespace
    acc = (acc << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>((acc >> bits) & 0xff));
    }
  }
  return out;
}

// One DevTools page session: commands with ids, replies matched by id; events seen while
// waiting are kept (console errors) or answered (a confirm() dialog is accepted).
class DevTools {
 public:
  DevTools(uint16_t port, const std::string& ws_path) : ws_(ioc_) {
    tcp::resolver resolver(ioc_);
    boost::asio::connect(ws_.next_layer(), resolver.resolve("127.0.0.1", std::to_string(port)));
    // A reply or event that does not come within 30 s fails the read instead of hanging.
    timeval tv{30, 0};
    ::setsockopt(ws_.next_layer().native_handle(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    ws_.read_message_max(64 << 20);
    ws_.handshake("127.0.0.1:" + std::to_string(port), ws_path);
  }

  json::value Call(const std::string& method, json::object params = {}) {
    const int64_t id = ++next_id_;
    json::object msg{{"id", id}, {"method", method}, {"params", std::move(params)}};
    ws_.write(boost::asio::buffer(json::serialize(msg)));
    for (;;) {
      beast::flat_buffer buf;
      ws_.read(buf);
      json::value v = json::parse(beast::buffers_to_string(buf.data()));
      const json::object& o = v.as_object();
      if (const json::value* got = o.if_contains("id"); got && got->to_number<int64_t>() == id) {
        if (const json::value* err = o.if_contains("error")) {
          throw std::runtime_error(method + ": " + json::serialize(*err));
        }
        return o.at("result");
      }
      if (const json::value* m = o.if_contains("method")) OnEvent(m->as_string(), o);
    }
  }

  // Evaluates `expression` in the page (promises awaited); its value as JSON.
  json::value Eval(const std::string& expression) {
    json::value r =
        Call("Runtime.evaluate",
             {{"expression", expression}, {"awaitPromise", true}, {"returnByValue", true}});
    if (const json::value* ex = r.as_object().if_contains("exceptionDetails")) {
      throw std::runtime_error("evaluate " + expression + ": " + json::serialize(*ex));
    }
    const json::object& result = r.at("result").as_object();
    return result.contains("value") ? result.at("value") : json::value(nullptr);
  }

  std::string EvalString(const std::string& expression) {
    json::value v = Eval(expression);
    return v.is_string() ? std::string(v.as_string()) : json::serialize(v);
  }

  // Polls `expression` until it is true (as JS truthiness of a boolean result).
  bool WaitFor(const std::string& expression, int timeout_ms = 20'000) {
    const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
    while (Clock::now() < deadline) {
      // A page still loading (the one before a navigation, or no dashboard yet) is "not yet".
      // So is a context that went away under the call (a navigation): the protocol error.
      json::value v;
      try {
        v = Eval("(() => { try { return !!(" + expression +
                 "); } catch (e) { return false; } })()");
      } catch (const std::runtime_error&) {
        v = false;
      }
      if (v.is_bool() && v.as_bool()) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return false;
  }

  void Screenshot(const std::string& name, int width, int height, bool mobile) {
    Call("Emulation.setDeviceMetricsOverride",
         {{"width", width}, {"height", height}, {"deviceScaleFactor", 1}, {"mobile", mobile}});
    json::value shot = Call("Page.captureScreenshot", {{"format", "png"}});
    std::filesystem::create_directories(ScreenshotDir());
    std::ofstream(ScreenshotDir() + "/" + name + ".png", std::ios::binary)
        << Base64Decode(shot.at("data").as_string());
  }

  std::vector<std::string>& errors() { return errors_; }

 private:
  void OnEvent(std::string_view method, const json::object& o) {
    const json::object& p = o.at("params").as_object();
    if (method == "Runtime.exceptionThrown") {
      errors_.push_back("exception: " + json::serialize(p.at("exceptionDetails")));
    } else if (method == "Runtime.consoleAPICalled") {
      const std::string_view type = p.at("type").as_string();
      if (type == "error" || type == "assert") {
        errors_.push_back("console." + std::string(type) + ": " + json::serialize(p.at("args")));
      }
    } else if (method == "Log.entryAdded") {
      const json::object& e = p.at("entry").as_object();
      if (e.at("level").as_string() == "error") {
        errors_.push_back("log: " + std::string(e.at("text").as_string()) + " " +
                          (e.contains("url") ? std::string(e.at("url").as_string()) : ""));
      }
    } else if (method == "Page.javascriptDialogOpening") {
      // The dashboard confirms destructive actions; the test says yes. Sent without waiting
      // for its reply (it comes back as an unmatched id and is skipped).
      json::object msg{{"id", ++next_id_},
                       {"method", "Page.handleJavaScriptDialog"},
                       {"params", json::object{{"accept", true}}}};
      ws_.write(boost::asio::buffer(json::serialize(msg)));
    }
  }

  boost::asio::io_context ioc_;
  websocket::stream<tcp::socket> ws_;
  int64_t next_id_ = 0;
  std::vector<std::string> errors_;
};

class DashboardBrowserTest : public ::testing::Test {
 protected:
  // The server with an admin token and one outbox relay (a SQLite outbox in the test's
  // temp dir) whose sink does not create topics: a row to a missing topic is dead-lettered.
  void StartServe(bool with_auth) {
    outbox_path_ = profile_.path() + "/svc.db";
    std::string config =
        "relays:\n  sink: {create_topics: false}\n  sources:\n"
        "    - {name: svc, database: 'sqlite:" +
        outbox_path_ + "', poll_interval_ms: 20}\n";
    if (with_auth) {
      config += std::string("auth:\n  tokens:\n    - {service: ops, token: ") + kToken +
                ", admin: true, publish: ['*'], subscribe: ['*']}\n";
    }
    sql::SqliteOptions so;
    so.path = outbox_path_;
    db_ = Must(sql::Database::OpenSqlite(so), "open the outbox");
    ASSERT_OK(Outbox::CreateSchema(*db_));
    serve_ = std::make_unique<ServeProcess>(config);
    ASSERT_TRUE(serve_->Start().ok()) << serve_->Log();
  }

  void TearDown() override {
    devtools_.reset();
    if (chromium_) {
      EXPECT_TRUE(chromium_->Stop().ok());
    }
    if (serve_) serve_->Kill();
  }

  void StartChromium() {
    ASSERT_TRUE(std::filesystem::exists(kChromium))
        << kChromium << " is missing: scripts/install-deps installs Debian's chromium";
    // The DevTools port is chosen here; another process may take it first, so retry.
    for (int attempt = 0; attempt < 5 && !chromium_; ++attempt) {
      Result<uint16_t> port = FreeLoopbackPort();
      ASSERT_TRUE(port.ok());
      ServerSpec spec;
      spec.name = "chromium";
      spec.argv = {kChromium,
                   "--headless",
                   "--disable-gpu",
                   "--no-first-run",
                   "--no-default-browser-check",
                   "--disable-extensions",
                   "--disable-background-networking",
                   "--disable-sync",
                   "--disable-dev-shm-usage",
                   "--hide-scrollbars",
                   "--mute-audio",
                   "--remote-debugging-address=127.0.0.1",
                   "--remote-debugging-port=" + std::to_string(*port),
                   "--user-data-dir=" + profile_.path() + "/profile",
                   "--window-size=1280,800"};
      // Root (a container, CI) cannot use Chromium's sandbox.
      if (::geteuid() == 0) spec.argv.push_back("--no-sandbox");
      spec.argv.push_back("about:blank");
      spec.port = *port;
      spec.log_path = profile_.path() + "/chromium.log";
      spec.ready_timeout_ms = 30'000;
      Result<std::unique_ptr<ServerProcess>> started = ServerProcess::Start(spec);
      if (started.ok()) chromium_ = std::move(*started);
    }
    ASSERT_TRUE(chromium_) << "chromium did not start";
    // The page target's WebSocket (the browser opened about:blank).
    std::string ws_url;
    const auto deadline = Clock::now() + std::chrono::seconds(20);
    while (ws_url.empty() && Clock::now() < deadline) {
      HttpResult list = HttpCall(chromium_->port(), "GET", "/json/list");
      if (list.status == 200) {
        const json::value targets = json::parse(list.body);
        for (const json::value& t : targets.as_array()) {
          if (t.at("type").as_string() == "page" &&
              t.as_object().contains("webSocketDebuggerUrl")) {
            ws_url = std::string(t.at("webSocketDebuggerUrl").as_string());
            break;
          }
        }
      }
      if (ws_url.empty()) std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    ASSERT_FALSE(ws_url.empty()) << chromium_->LogTail();
    const size_t path = ws_url.find("/devtools/");
    ASSERT_NE(path, std::string::npos) << ws_url;
    devtools_ = std::make_unique<DevTools>(chromium_->port(), ws_url.substr(path));
    devtools_->Call("Page.enable");
    devtools_->Call("Runtime.enable");
    devtools_->Call("Log.enable");
  }

  HttpResult Api(std::string_view method, const std::string& target, const std::string& body = "",
                 const HttpHeaders& headers = {}) {
    return HttpCall(serve_->port(), method, target, body, headers, token_);
  }

  json::value ApiJson(const std::string& target) {
    HttpResult r = Api("GET", target);
    EXPECT_EQ(r.status, 200) << target << ": " << r.body;
    return json::parse(r.body);
  }

  // Goes to a dashboard page and waits for it to render.
  void Show(const std::string& hash, const std::string& page) {
    devtools_->Eval("location.hash = '" + hash + "'; true");
    ASSERT_TRUE(devtools_->WaitFor("document.getElementById('main').dataset.page === '" + page +
                                   "' && document.querySelector('h1') && "
                                   "document.getElementById('status').textContent.startsWith("
                                   "'updated')"))
        << hash << ": " << devtools_->EvalString("document.body.innerText");
  }

  void Screenshots(const std::string& name) {
    devtools_->Screenshot(name + "-laptop", 1280, 800, false);
    devtools_->Screenshot(name + "-phone", 390, 844, true);
    devtools_->Call("Emulation.clearDeviceMetricsOverride");
  }

  void Seed() {
    const HttpHeaders ce{{"Content-Type", "application/cloudevents-batch+json"}};
    ASSERT_EQ(Api("POST", "/v1/topics", R"({"name":"orders","partitions":2})").status, 201);
    std::string batch = "[";
    for (int i = 0; i < 7; ++i) {
      if (i) batch += ',';
      batch += R"({"specversion":"1.0","source":"shop","type":"order.created","id":"o)" +
               std::to_string(i) + R"(","partitionkey":"k)" + std::to_string(i) +
               R"(","data":{"n":)" + std::to_string(i) + "}}";
    }
    batch += ']';
    HttpResult pub = Api("POST", "/v1/topics/orders/events", batch, ce);
    ASSERT_EQ(pub.status, 200) << pub.body;
    ASSERT_EQ(Api("POST", "/v1/topics/orders/groups",
                  R"({"name":"billing","max_deliveries":1,"session_timeout_ms":600000})")
                  .status,
              201);
    // One delivery rejected for good: a dead letter to replay.
    HttpResult fetched = Api("POST", "/v1/topics/orders/groups/billing/fetch",
                             R"({"consumer":"c1","max_events":1})");
    ASSERT_EQ(fetched.status, 200) << fetched.body;
    const json::value d = json::parse(fetched.body).at("deliveries").at(0);
    json::object nack{{"partition", d.at("partition")},
                      {"offset", d.at("offset")},
                      {"lease_id", d.at("lease_id")},
                      {"permanent", true},
                      {"reason", "bad order"}};
    HttpResult nacked =
        Api("POST", "/v1/topics/orders/groups/billing/nack",
            json::serialize(json::object{{"consumer", "c1"}, {"nacks", json::array{nack}}}));
    ASSERT_EQ(nacked.status, 200) << nacked.body;
    // A saga waiting on its first participant (no one replies): running until cancelled.
    HttpResult def = Api("POST", "/v1/saga-definitions",
                         "name: order\nversion: 1\nsteps:\n"
                         "  - {name: reserve, participant: inventory, action: inventory.reserve,"
                         " compensation: inventory.release, timeout_ms: 600000}\n"
                         "  - {name: charge, participant: payments, action: payments.charge,"
                         " pivot: true, timeout_ms: 600000}\n",
                         {{"Content-Type", "application/yaml"}});
    ASSERT_EQ(def.status, 201) << def.body;
    HttpResult saga = Api("POST", "/v1/sagas", R"({"definition":"order","id":"order-ui-1"})");
    ASSERT_EQ(saga.status / 100, 2) << saga.body;
    // A relay dead letter: an outbox row to a topic that does not exist yet.
    Event late;
    late.set_source("/svc");
    late.set_id("late-1");
    late.set_type("t.late");
    Outbox outbox(Env::Default());
    std::vector<OutboxEntry> rows = {{"late", &late}};
    ASSERT_OK(db_->Transact([&](sql::Transaction& tx) { return outbox.Write(tx, rows); }));
    bool dead = false;
    for (auto deadline = Clock::now() + std::chrono::seconds(30);
         !dead && Clock::now() < deadline;) {
      dead = ApiJson("/v1/relays").at("dead_letters").at("pending").to_number<int64_t>() == 1;
      if (!dead) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    ASSERT_TRUE(dead) << Api("GET", "/v1/relays").body;
    ASSERT_EQ(Api("POST", "/v1/topics", R"({"name":"late"})").status, 201);
    // A store document.
    ASSERT_EQ(Api("PUT", "/v1/collections/carts", "{}").status, 201);
    HttpResult put = Api("PUT", "/v1/collections/carts/docs/cart-1", R"({"items":["book"]})");
    ASSERT_EQ(put.status, 201) << put.body;
  }

  TempDir profile_{"converge-chromium-"};
  std::string token_ = kToken;
  std::string outbox_path_;
  std::unique_ptr<sql::Database> db_;
  std::unique_ptr<ServeProcess> serve_;
  std::unique_ptr<ServerProcess> chromium_;
  std::unique_ptr<DevTools> devtools_;
};

TEST_F(DashboardBrowserTest, PagesShowTheApiAndTheButtonsWork) {
  ASSERT_NO_FATAL_FAILURE(StartServe(/*with_auth=*/true));
  ASSERT_NO_FATAL_FAILURE(Seed());
  ASSERT_NO_FATAL_FAILURE(StartChromium());
  DevTools& dt = *devtools_;
  const std::string base = "http://127.0.0.1:" + std::to_string(serve_->port());

  // Without a token the page asks for one (its only API call so far was refused: 401).
  dt.Call("Page.navigate", {{"url", base + "/ui"}});
  ASSERT_TRUE(
      dt.WaitFor("document.getElementById('token-form') && "
                 "!document.getElementById('token-form').hidden"))
      << dt.EvalString("document.body.innerText");
  for (const std::string& e : dt.errors()) {
    EXPECT_NE(e.find("401"), std::string::npos) << "unexpected error before the token: " << e;
  }
  dt.errors().clear();
  Screenshots("login");
  dt.Eval(std::string("document.getElementById('token').value = '") + kToken +
          "'; document.getElementById('token-save').click(); true");

  // Overview: a group's lag as the API reports it.
  ASSERT_NO_FATAL_FAILURE(Show("#/overview", "overview"));
  const json::value group = ApiJson("/v1/topics/orders/groups/billing");
  const std::string lag = std::to_string(group.at("lag").to_number<int64_t>());
  const std::string lag_cell =
      "document.querySelector('[data-test=group-lag][data-topic=orders][data-group=billing]')";
  EXPECT_TRUE(dt.WaitFor(lag_cell + " && " + lag_cell + ".textContent === '" + lag + "'"))
      << "API lag " << lag << ", page: " << dt.EvalString("document.body.innerText");
  // Two samples of /metrics give the rates.
  EXPECT_TRUE(dt.WaitFor(
      "document.querySelector('[data-test=publish-rate]').textContent.endsWith('/s')", 15'000));
  // Live: the overview's counters follow the overview stream, without a reload. A publish
  // shows in "Events retained" as the stream (not a re-render) writes it.
  ASSERT_TRUE(dt.WaitFor("document.getElementById('main').dataset.live === 'stream'"))
      << dt.EvalString("document.getElementById('status').textContent");
  dt.Eval("window.__notReloaded = true; true");
  ASSERT_EQ(Api("POST", "/v1/topics", R"({"name":"pulse"})").status, 201);
  HttpResult pulse = Api("POST", "/v1/topics/pulse/events",
                         R"({"specversion":"1.0","source":"t","type":"t.pulse","id":"p1"})",
                         {{"Content-Type", "application/cloudevents+json"}});
  ASSERT_EQ(pulse.status, 200) << pulse.body;
  int64_t retained = 0;
  const json::value listed = ApiJson("/v1/topics");
  for (const json::value& t : listed.at("topics").as_array()) {
    for (const json::value& p : t.at("partition_offsets").as_array()) {
      retained +=
          p.at("end_offset").to_number<int64_t>() - p.at("start_offset").to_number<int64_t>();
    }
  }
  const std::string events_card = "document.querySelector('[data-test=events-total]')";
  EXPECT_TRUE(dt.WaitFor(events_card + ".textContent === '" + std::to_string(retained) + "' && " +
                         events_card + ".dataset.source === 'stream' && window.__notReloaded"))
      << "API " << retained << ", card "
      << dt.EvalString(events_card + ".textContent + ' ' + " + events_card + ".dataset.source");
  Screenshots("overview");

  // Topics: the event count of each partition summed, as the API reports it.
  ASSERT_NO_FATAL_FAILURE(Show("#/topics", "topics"));
  const json::value topic = ApiJson("/v1/topics/orders");
  int64_t events = 0;
  for (const json::value& p : topic.at("partition_offsets").as_array()) {
    events += p.at("end_offset").to_number<int64_t>() - p.at("start_offset").to_number<int64_t>();
  }
  EXPECT_EQ(events, 7);
  EXPECT_EQ(
      dt.EvalString(
          "document.querySelector('[data-test=topic-events][data-topic=orders]').textContent"),
      std::to_string(events));
  Screenshots("topics");
  ASSERT_NO_FATAL_FAILURE(Show("#/topics/orders", "topics"));
  Screenshots("topic");

  ASSERT_NO_FATAL_FAILURE(Show("#/groups", "groups"));
  EXPECT_EQ(dt.EvalString(lag_cell + ".textContent"), lag);
  // The member the API lists (c1, which fetched) is shown with the partitions it owns.
  const json::value member = group.at("consumers").at(0);
  EXPECT_EQ(member.at("consumer").as_string(), "c1");
  EXPECT_EQ(dt.EvalString("document.querySelector('section[data-group=\"orders/billing\"] "
                          "tr[data-member=c1] td:nth-child(2)').textContent"),
            "0, 1");
  Screenshots("groups");

  // Dead letters: the replay button replays it (the API then lists it replayed).
  ASSERT_NO_FATAL_FAILURE(Show("#/dead-letters", "dead-letters"));
  const std::string replay =
      "document.querySelector('tr[data-dead-letter=\"orders/billing/0\"] "
      "button[data-test=replay]')";
  ASSERT_TRUE(dt.WaitFor(replay)) << dt.EvalString("document.body.innerText");
  Screenshots("dead-letters");
  dt.Eval(replay + ".click(); true");
  bool replayed = false;
  for (auto deadline = Clock::now() + std::chrono::seconds(15);
       !replayed && Clock::now() < deadline;) {
    json::value dl = ApiJson("/v1/topics/orders/groups/billing/dead-letters");
    replayed = dl.at("dead_letters").at(0).at("replayed").as_bool();
    if (!replayed) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_TRUE(replayed);
  EXPECT_TRUE(
      dt.WaitFor("document.querySelector('[data-test=notice]') && "
                 "document.querySelector('[data-test=notice]').textContent.includes("
                 "'Replayed 1')"))
      << dt.EvalString("document.body.innerText");
  // The relay's dead letter (its topic exists now): replayed by its button.
  const std::string relay_replay =
      "document.querySelector('tr[data-relay-dead-letter=\"0\"] button[data-test=relay-replay]')";
  ASSERT_TRUE(dt.WaitFor(relay_replay)) << dt.EvalString("document.body.innerText");
  dt.Eval(relay_replay + ".click(); true");
  std::string relay_state;
  for (auto deadline = Clock::now() + std::chrono::seconds(15); Clock::now() < deadline;) {
    relay_state = std::string(
        ApiJson("/v1/relays/dead-letters").at("dead_letters").at(0).at("state").as_string());
    if (relay_state != "pending") break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_EQ(relay_state, "replayed");
  EXPECT_TRUE(dt.WaitFor("document.body.innerText.includes('Replayed 1 relay dead letter')"))
      << dt.EvalString("document.body.innerText");
  const json::value late = ApiJson("/v1/topics/late/events");
  ASSERT_EQ(late.at("events").as_array().size(), 1u);
  EXPECT_EQ(late.at("events").at(0).at("event").at("id").as_string(), "late-1");
  Screenshots("dead-letters-after");

  // Sagas: the list, then the saga's page and its cancel button (confirm() accepted).
  ASSERT_NO_FATAL_FAILURE(Show("#/sagas", "sagas"));
  EXPECT_EQ(
      dt.EvalString("document.querySelector('[data-test=saga-state][data-saga=\"order-ui-1\"]')"
                    ".textContent"),
      "running");
  Screenshots("sagas");
  ASSERT_NO_FATAL_FAILURE(Show("#/sagas/order-ui-1", "sagas"));
  ASSERT_TRUE(dt.WaitFor("document.querySelector('button[data-test=cancel-saga]')"));
  Screenshots("saga");
  // Its step timeout cancelled by the timer's button: the API lists no timer for it then.
  const std::string cancel_timer =
      "document.querySelector('tr[data-timer=\"step-timeout\"] button[data-test=cancel-timer]')";
  ASSERT_TRUE(dt.WaitFor(cancel_timer)) << dt.EvalString("document.body.innerText");
  dt.Eval(cancel_timer + ".click(); true");
  size_t timers = 1;
  for (auto deadline = Clock::now() + std::chrono::seconds(15); Clock::now() < deadline;) {
    timers = ApiJson("/v1/sagas/order-ui-1").at("timers").as_array().size();
    if (timers == 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_EQ(timers, 0u);
  ASSERT_TRUE(
      dt.WaitFor("!document.querySelector('tr[data-timer]') && "
                 "document.querySelector('button[data-test=cancel-saga]')"));
  dt.Eval("document.querySelector('button[data-test=cancel-saga]').click(); true");
  std::string saga_state;
  for (auto deadline = Clock::now() + std::chrono::seconds(15); Clock::now() < deadline;) {
    saga_state = std::string(ApiJson("/v1/sagas/order-ui-1").at("state").as_string());
    if (saga_state != "running") break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_TRUE(saga_state == "compensating" || saga_state == "compensated") << saga_state;
  EXPECT_TRUE(
      dt.WaitFor("document.querySelector('[data-test=saga-state]').textContent !== "
                 "'running'"));

  // The store and the relays.
  ASSERT_NO_FATAL_FAILURE(Show("#/store", "store"));
  EXPECT_TRUE(dt.WaitFor("document.body.innerText.includes('carts')"));
  Screenshots("store");
  ASSERT_NO_FATAL_FAILURE(Show("#/store/carts", "store"));
  EXPECT_TRUE(dt.WaitFor("document.body.innerText.includes('cart-1')"));
  ASSERT_NO_FATAL_FAILURE(Show("#/relays", "relays"));
  Screenshots("relays");

  EXPECT_TRUE(dt.errors().empty()) << ::testing::PrintToString(dt.errors());
}

// Without auth.tokens the page asks for no token and shows the data at once.
TEST_F(DashboardBrowserTest, WorksWithoutAuth) {
  ASSERT_NO_FATAL_FAILURE(StartServe(/*with_auth=*/false));
  token_.clear();
  ASSERT_EQ(Api("POST", "/v1/topics", R"({"name":"open","partitions":3})").status, 201);
  ASSERT_NO_FATAL_FAILURE(StartChromium());
  DevTools& dt = *devtools_;
  dt.Call("Page.navigate",
          {{"url", "http://127.0.0.1:" + std::to_string(serve_->port()) + "/ui#/topics"}});
  ASSERT_TRUE(dt.WaitFor("location.pathname === '/ui' && document.readyState === 'complete'"));
  ASSERT_NO_FATAL_FAILURE(Show("#/topics", "topics"));
  EXPECT_TRUE(dt.Eval("document.getElementById('token-form').hidden").as_bool());
  EXPECT_EQ(dt.EvalString(
                "document.querySelector('[data-test=topic-events][data-topic=open]').textContent"),
            "0");
  EXPECT_TRUE(dt.errors().empty()) << ::testing::PrintToString(dt.errors());
}

// The page and its files need no token (they hold no data); the API calls it makes do.
TEST_F(DashboardBrowserTest, FilesAreServedWithoutAToken) {
  ASSERT_NO_FATAL_FAILURE(StartServe(/*with_auth=*/true));
  for (const char* target :
       {"/ui", "/ui/", "/ui/index.html", "/ui/dashboard.js", "/ui/dashboard.css"}) {
    HttpResult r = HttpCall(serve_->port(), "GET", target);
    EXPECT_EQ(r.status, 200) << target;
    EXPECT_FALSE(r.Header("Content-Security-Policy").empty()) << target;
  }
  EXPECT_NE(
      HttpCall(serve_->port(), "GET", "/ui/dashboard.js").Header("Content-Type").find("javascript"),
      std::string::npos);
  HttpResult missing = HttpCall(serve_->port(), "GET", "/ui/nope.js");
  EXPECT_EQ(missing.status, 404);
  EXPECT_NE(missing.body.find("\"NOT_FOUND\""), std::string::npos);
  EXPECT_EQ(HttpCall(serve_->port(), "GET", "/ui?x=1").status, 400);
  EXPECT_EQ(HttpCall(serve_->port(), "POST", "/ui").status, 405);
  EXPECT_EQ(HttpCall(serve_->port(), "GET", "/v1/topics").status, 401);
}

}  // namespace
}  // namespace converge::testing
