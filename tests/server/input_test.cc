// Black-box tests of what `converge serve` accepts as input: JSON request bodies (store and
// API), event attribute limits and repeated attributes, topics that converge writes itself,
// and the identity events are deduplicated by. Each bad request must be a clear 4xx that
// changes nothing.
#include <gtest/gtest.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>
#include <chrono>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

#include "converge/client.h"
#include "converge/env.h"
#include "converge/event.h"
#include "converge/outbox.h"
#include "converge/sql.h"
#include "serve_process.h"
#include "test_util.h"

namespace converge {
namespace {

namespace http = boost::beast::http;
namespace json = boost::json;
using client::Client;
using client::PublishMode;
using testing::ServeProcess;

using Headers = testing::HttpHeaders;

using Reply = testing::HttpResult;

Reply Send(uint16_t port, http::verb method, const std::string& target, const std::string& body,
           const Headers& headers = {}, const std::string& token = "") {
  return testing::HttpCall(port, http::to_string(method), target, body, headers, token);
}

const Headers kJson = {{"Content-Type", "application/json"}};

using testing::Must;

std::string Cat(std::initializer_list<std::string_view> parts) {
  std::string out;
  for (std::string_view p : parts) out.append(p);
  return out;
}

// The error code of a client status ("CODE: message").
std::string Code(const Status& s) {
  std::string_view m = s.message();
  return std::string(m.substr(0, m.find(':')));
}

Event MakeEvent(const std::string& source, const std::string& id) {
  Event e;
  e.set_source(source);
  e.set_id(id);
  e.set_type("com.example.test");
  EXPECT_TRUE(e.SetJsonData("{\"n\":1}").ok());
  return e;
}

class InputTest : public ::testing::Test {
 protected:
  void StartServer(std::string yaml = "") {
    server_ = std::make_unique<ServeProcess>(std::move(yaml));
    Status s = server_->Start();
    ASSERT_TRUE(s.ok()) << s.ToString();
  }
  uint16_t port() const { return server_->port(); }
  Reply Put(const std::string& target, const std::string& body, Headers h = kJson) {
    return Send(port(), http::verb::put, target, body, h);
  }
  Reply Post(const std::string& target, const std::string& body, Headers h = kJson,
             const std::string& token = "") {
    return Send(port(), http::verb::post, target, body, h, token);
  }
  Reply Get(const std::string& target) { return Send(port(), http::verb::get, target, ""); }
  uint64_t StoredEvents(const std::string& topic, const std::string& token = "") {
    Client c(server_->ClientOptions(token));
    Result<client::TopicDescription> t = c.DescribeTopic(topic);
    if (!t.ok()) return 0;
    uint64_t n = 0;
    for (const auto& p : t->offsets) n += p.end_offset;
    return n;
  }
  std::unique_ptr<ServeProcess> server_;
};

// ---------------------------------------------------------------------------------------
// Store bodies

TEST_F(InputTest, StoreTransactionsRefuseUnknownFieldsAndBadValuesAndWriteNothing) {
  StartServer();
  ASSERT_EQ(Put("/v1/collections/carts", "{}").status, 201);
  Reply created = Put("/v1/collections/carts/docs/c1", R"({"n":1})");
  ASSERT_EQ(created.status, 201) << created.body;
  const std::string etag = created.Header("ETag");
  ASSERT_FALSE(etag.empty());

  const std::string put = R"("op":"put","collection":"carts","key":"c1","value":{"n":2})";
  const std::string other = R"({"op":"put","collection":"carts","key":"c2","value":{"n":9}})";
  const std::vector<std::string> bad = {
      // A typo must not turn a conditional write into an unconditional one.
      Cat({R"({"ops":[{)", put, R"(,"if_macth":"\"1\""}]})"}),
      Cat({R"({"ops":[{)", put, R"(,"if_match":"\"7\"","if_match":"*"}]})"}),
      Cat({R"({"ops":[{)", put, R"(,"if_match":""}]})"}),
      Cat({R"({"ops":[{)", put, R"(,"if_match":null}]})"}),
      Cat({R"({"ops":[{)", put, R"(,"if_match":7}]})"}),
      Cat({R"({"ops":[{)", put, R"(,"if_match":"seven"}]})"}),
      Cat({R"({"ops":[{)", put, R"(,"if_none_match":""}]})"}),
      Cat({R"({"ops":[{)", put, R"(,"if_none_match":"\"1\""}]})"}),
      // TTLs: negative (the C++ API's "collection default" marker), wrong types, too large.
      Cat({R"({"ops":[{)", put, R"(,"ttl_ms":-1}]})"}),
      Cat({R"({"ops":[{)", put, R"(,"ttl_ms":-5}]})"}),
      Cat({R"({"ops":[{)", put, R"(,"ttl_ms":"5"}]})"}),
      Cat({R"({"ops":[{)", put, R"(,"ttl_ms":1.5}]})"}),
      Cat({R"({"ops":[{)", put, R"(,"ttl_ms":null}]})"}),
      Cat({R"({"ops":[{)", put, R"(,"ttl_ms":9223372036854775807}]})"}),
      Cat({R"({"ops":[{)", put, R"(,"ttl_ms":18446744073709551615}]})"}),
      // Members another kind of op does not take.
      R"({"ops":[{"op":"delete","collection":"carts","key":"c1","value":{"n":2}}]})",
      R"({"ops":[{"op":"check","collection":"carts","key":"c1","if_match":"*","ttl_ms":5}]})",
      // Repeated members anywhere, the document value included.
      R"({"ops":[{"op":"put","collection":"carts","key":"c1","value":{"n":2,"n":3}}]})",
      R"({"ops":[{"op":"put","collection":"carts","collection":"x","key":"c1","value":1}]})",
      // Unknown members of the transaction itself; an unknown query parameter.
      Cat({R"({"ops":[{)", put, R"(}],"atomic":false})"}),
      // One bad op rejects the good ones before it.
      Cat({R"({"ops":[)", other, R"(,{)", put, R"(,"ttl_ms":-1}]})"}),
  };
  for (const std::string& body : bad) {
    Reply r = Post("/v1/collections/_transaction", body);
    EXPECT_EQ(r.status, 400) << body << "\n" << r.body;
    EXPECT_EQ(r.code(), "INVALID_ARGUMENT") << body << "\n" << r.body;
    // Nothing changed.
    Reply doc = Get("/v1/collections/carts/docs/c1");
    EXPECT_EQ(doc.body, R"({"n":1})") << body;
    EXPECT_EQ(doc.Header("ETag"), etag) << body;
    EXPECT_EQ(Get("/v1/collections/carts/docs/c2").status, 404) << body;
  }
  Reply q = Post("/v1/collections/_transaction?dry_run=1", Cat({R"({"ops":[{)", put, "}]}"}));
  EXPECT_EQ(q.status, 400) << q.body;
  EXPECT_EQ(Get("/v1/collections/carts/docs/c1").Header("ETag"), etag);

  // The well-formed conditional write still goes through.
  Reply ok = Post("/v1/collections/_transaction",
                  Cat({R"({"ops":[{)", put, R"(,"if_match":)", json::serialize(json::value(etag)),
                       R"(,"ttl_ms":0}]})"}));
  EXPECT_EQ(ok.status, 200) << ok.body;
  EXPECT_EQ(Get("/v1/collections/carts/docs/c1").body, R"({"n":2})");
}

TEST_F(InputTest, StoreDocumentAndCollectionRoutesRefuseUnknownParametersAndBadValues) {
  StartServer();
  ASSERT_EQ(Put("/v1/collections/carts", R"({"default_ttl_ms":0})").status, 201);
  for (const std::string& target :
       {std::string("/v1/collections/carts/docs/d?tll_ms=5"),  // typo: would never expire
        std::string("/v1/collections/carts/docs/d?ttl_ms=-1"),
        std::string("/v1/collections/carts/docs/d?ttl_ms=99999999999999999"),
        std::string("/v1/collections/carts/docs/d?ttl_ms=5&ttl_ms=6")}) {
    Reply r = Put(target, R"({"n":1})");
    EXPECT_EQ(r.status, 400) << target << "\n" << r.body;
    EXPECT_EQ(r.code(), "INVALID_ARGUMENT") << target;
  }
  Reply header_and_query = Put("/v1/collections/carts/docs/d?ttl_ms=5", R"({"n":1})",
                               {{"Content-Type", "application/json"}, {"Converge-TTL-Ms", "6"}});
  EXPECT_EQ(header_and_query.status, 400) << header_and_query.body;
  Reply dup = Put("/v1/collections/carts/docs/d", R"({"n":1,"m":{"a":1,"a":2}})");
  EXPECT_EQ(dup.status, 400) << dup.body;
  EXPECT_NE(dup.message().find("'a'"), std::string::npos) << dup.body;
  EXPECT_EQ(Get("/v1/collections/carts/docs/d").status, 404);
  // Same-named members in different objects are fine.
  EXPECT_EQ(Put("/v1/collections/carts/docs/d", R"({"a":{"a":1},"b":[{"a":2},{"a":3}]})").status,
            201);
  EXPECT_EQ(Get("/v1/collections/carts/docs?limt=1").status, 400);
  // A precondition given twice is not read as either one.
  Reply two_preconditions =
      Put("/v1/collections/carts/docs/d", R"({"n":5})",
          {{"Content-Type", "application/json"}, {"If-Match", "\"999\""}, {"If-Match", "*"}});
  EXPECT_EQ(two_preconditions.status, 400) << two_preconditions.body;
  Reply two_ttls = Put(
      "/v1/collections/carts/docs/d", R"({"n":5})",
      {{"Content-Type", "application/json"}, {"Converge-TTL-Ms", "0"}, {"Converge-TTL-Ms", "5"}});
  EXPECT_EQ(two_ttls.status, 400) << two_ttls.body;
  EXPECT_EQ(Send(port(), http::verb::delete_, "/v1/collections/carts/docs/d?if_match=1", "").status,
            400);
  EXPECT_EQ(Get("/v1/collections/carts/docs/d").body, R"({"a":{"a":1},"b":[{"a":2},{"a":3}]})");
  EXPECT_EQ(Send(port(), http::verb::delete_, "/v1/collections/carts?force=true", "").status, 400);
  EXPECT_EQ(Get("/v1/collections/carts").status, 200);

  const std::string config = Get("/v1/collections/carts").body;

  for (const std::string& body :
       {std::string(R"({"default_ttl_ms":9223372036854775807})"),
        std::string(R"({"default_ttl_ms":-1})"), std::string(R"({"writers":["a"],"writers":[]})"),
        std::string(R"({"merge_fields":{"n":"counter","n":"max"}})"),
        std::string(R"({"defualt_ttl_ms":5})")}) {
    Reply r = Put("/v1/collections/carts", body);
    EXPECT_EQ(r.status, 400) << body << "\n" << r.body;
    EXPECT_EQ(Get("/v1/collections/carts").body, config) << body;
  }
}

TEST_F(InputTest, ApiBodiesRefuseRepeatedMembers) {
  StartServer();
  Reply r = Post("/v1/topics", R"({"name":"first","name":"second"})");
  EXPECT_EQ(r.status, 400) << r.body;
  EXPECT_NE(r.message().find("'name'"), std::string::npos) << r.body;
  EXPECT_EQ(Get("/v1/topics/first").status, 404);
  EXPECT_EQ(Get("/v1/topics/second").status, 404);
  EXPECT_EQ(Post("/v1/topics", R"({"name":"first","durability":""})").status, 400);
  EXPECT_EQ(Get("/v1/topics/first").status, 404);
  ASSERT_EQ(Post("/v1/topics", R"({"name":"orders","partitions":1})").status, 201);
  Reply g = Post("/v1/topics/orders/groups", R"({"name":"g","name":"h"})");
  EXPECT_EQ(g.status, 400) << g.body;
  Reply f = Post("/v1/topics/orders/groups/g/fetch", R"({"max_events":1,"max_events":1000})");
  EXPECT_EQ(f.status, 400) << f.body;
  // The schema registry's bodies, also inside the schema itself; nothing is registered.
  Reply s1 = Post("/v1/schemas/t/versions", R"({"schema":{"type":"string"},"schema":{}})");
  EXPECT_EQ(s1.status, 400) << s1.body;
  Reply s2 = Post("/v1/schemas/t/versions", R"({"schema":{"type":"string","type":"integer"}})");
  EXPECT_EQ(s2.status, 400) << s2.body;
  EXPECT_EQ(Get("/v1/schemas/t").status, 404);
}

// ---------------------------------------------------------------------------------------
// Event limits and repeated attributes

TEST_F(InputTest, AttributesOverTheLimitAre400NamingTheAttributeAndTheLimitInEveryMode) {
  StartServer();
  ASSERT_EQ(Post("/v1/topics", R"({"name":"orders"})").status, 201);
  Client c(server_->ClientOptions());
  const std::string limit = std::to_string(Event::kMaxAttributeBytes);
  const std::string big(Event::kMaxAttributeBytes + 1, 'x');
  const std::string huge(70'000, 'x');  // past the log's 64 KiB record id

  struct Case {
    std::string attribute;
    Event event;
  };
  std::vector<Case> cases;
  cases.push_back({"id", MakeEvent("/s", big)});
  cases.push_back({"id", MakeEvent("/s", huge)});
  cases.push_back({"source", MakeEvent("/" + big, "a")});
  cases.push_back({"type", MakeEvent("/s", "a")});
  cases.back().event.set_type(big);
  cases.push_back({"subject", MakeEvent("/s", "a")});
  cases.back().event.set_subject(huge);
  cases.push_back({"partitionkey", MakeEvent("/s", "a")});
  cases.back().event.set_partitionkey(big);
  cases.push_back({"tenant", MakeEvent("/s", "a")});
  cases.back().event.SetExtension("tenant", big);
  for (const Case& k : cases) {
    for (PublishMode mode : {PublishMode::kStructured, PublishMode::kBatch, PublishMode::kNative}) {
      std::vector<Event> events = {MakeEvent("/s", "fine"), k.event};
      const Status st = mode == PublishMode::kStructured
                            ? c.PublishOne("orders", k.event, mode).status()
                            : c.Publish("orders", events, mode).status();
      EXPECT_FALSE(st.ok()) << k.attribute;
      EXPECT_EQ(Code(st), "INVALID_EVENT") << st.ToString();
      const std::string m(st.message());
      EXPECT_NE(m.find("attribute '" + k.attribute + "'"), std::string::npos) << m;
      EXPECT_NE(m.find(limit), std::string::npos) << m;
      if (mode != PublishMode::kStructured) {
        EXPECT_NE(m.find("event[1]"), std::string::npos) << m;
      }
    }
  }
  EXPECT_EQ(StoredEvents("orders"), 0u);
  // At the limit is fine.
  Event at_limit = MakeEvent("/s", std::string(Event::kMaxAttributeBytes, 'i'));
  at_limit.set_subject(std::string(Event::kMaxAttributeBytes, 's'));
  EXPECT_TRUE(c.PublishOne("orders", at_limit).ok());
  EXPECT_EQ(StoredEvents("orders"), 1u);
}

TEST_F(InputTest, RepeatedCeHeadersContentTypesAndMembersAre400) {
  StartServer();
  ASSERT_EQ(Post("/v1/topics", R"({"name":"orders"})").status, 201);
  const Headers base = {{"ce-specversion", "1.0"},
                        {"ce-id", "a"},
                        {"ce-source", "/s"},
                        {"ce-type", "t"},
                        {"Content-Type", "application/json"}};
  for (const auto& [name, value] :
       std::vector<std::pair<std::string, std::string>>{{"ce-id", "b"},
                                                        {"CE-ID", "a"},
                                                        {"ce-source", "/other"},
                                                        {"ce-specversion", "1.0"},
                                                        {"ce-type", "u"},
                                                        {"Content-Type", "text/plain"}}) {
    Headers h = base;
    h.emplace_back(name, value);
    Reply r = Post("/v1/topics/orders/events", R"({"n":1})", h);
    EXPECT_EQ(r.status, 400) << name << "\n" << r.body;
    EXPECT_EQ(r.code(), "INVALID_EVENT") << r.body;
    EXPECT_NE(r.message().find("more than once"), std::string::npos) << r.body;
  }
  Headers ext = base;
  ext.emplace_back("ce-tenant", "acme");
  ext.emplace_back("ce-tenant", "evil");
  Reply r = Post("/v1/topics/orders/events", R"({"n":1})", ext);
  EXPECT_EQ(r.status, 400) << r.body;
  EXPECT_NE(r.message().find("ce-tenant"), std::string::npos) << r.body;

  const Headers structured = {{"Content-Type", "application/cloudevents+json"}};
  for (
      const std::string& body : {
          std::string(R"({"specversion":"1.0","id":"a","id":"b","source":"/s","type":"t"})"),
          std::string(
              R"({"specversion":"1.0","id":"a","source":"/s","type":"t","tenant":"x","tenant":"y"})"),
          std::string(
              R"({"specversion":"1.0","id":"a","source":"/s","type":"t","tenant":null,"tenant":"y"})"),
          std::string(
              R"({"specversion":"1.0","id":"a","source":"/s","type":"t","subject":null,"subject":"y"})"),
      }) {
    Reply s = Post("/v1/topics/orders/events", body, structured);
    EXPECT_EQ(s.status, 400) << body << "\n" << s.body;
  }
  // A ce- header beside a structured or batched body is a second value for an attribute (or
  // an extension the body lacks): refused, whether it agrees with the body or not.
  const std::string event = R"({"specversion":"1.0","id":"a","source":"/s","type":"t"})";
  for (const auto& [content_type, body] : std::vector<std::pair<std::string, std::string>>{
           {"application/cloudevents+json", event},
           {"application/cloudevents-batch+json", "[" + event + "]"}}) {
    for (const auto& [name, value] : std::vector<std::pair<std::string, std::string>>{
             {"ce-id", "b"}, {"ce-id", "a"}, {"CE-Source", "/s"}, {"ce-tenant", "x"}}) {
      Reply s = Post("/v1/topics/orders/events", body,
                     Headers{{"Content-Type", content_type}, {name, value}});
      EXPECT_EQ(s.status, 400) << content_type << " " << name << "\n" << s.body;
      EXPECT_NE(s.message().find("binary mode"), std::string::npos) << s.body;
    }
  }
  EXPECT_EQ(StoredEvents("orders"), 0u);
  // One of each is fine.
  EXPECT_EQ(Post("/v1/topics/orders/events", R"({"n":1})", base).status, 200);
}

// ---------------------------------------------------------------------------------------
// System-owned topics

constexpr const char* kSaga = R"yaml(name: order
version: 1
steps:
  - name: charge
    participant: payments
    action: payments.charge
    pivot: true
    timeout_ms: 60000
)yaml";

TEST_F(InputTest, TopicsConvergeWritesItselfRefuseHttpPublishesInEveryModeEvenToTheAdmin) {
  ServeProcess probe;  // a temp dir for the saga definition and the service database
  const std::string def_path = probe.dir() + "/order.yaml";
  std::ofstream(def_path) << kSaga;
  const std::string admin = "admin-token-0123456789", service = "service-token-0123456789";
  sql::SqliteOptions so;
  so.path = probe.dir() + "/orders.db";
  std::unique_ptr<sql::Database> db = Must(sql::Database::OpenSqlite(so), "open");
  ASSERT_TRUE(Outbox::CreateSchema(*db).ok());
  StartServer(
      Cat({"auth:\n"
           "  tokens:\n"
           "    - service: ops\n"
           "      token: ",
           admin,
           "\n"
           "      admin: true\n"
           "      publish: ['*']\n"
           "      subscribe: ['*']\n"
           "    - service: app\n"
           "      token: ",
           service,
           "\n"
           "      publish: ['*']\n"
           "      subscribe: ['*']\n"
           "auto_create_topics: true\n"
           "sagas:\n"
           "  definitions: [",
           def_path,
           "]\n"
           "relays:\n"
           "  sink: {dead_letter_topic: outbox-dead}\n"
           "  sources:\n"
           "    - name: orders\n"
           "      database: sqlite:",
           probe.dir(),
           "/orders.db\n"
           "      poll_interval_ms: 20\n"}));
  // The store's feed exists once something was written.
  Client ops(server_->ClientOptions(admin));
  ASSERT_EQ(Send(port(), http::verb::put, "/v1/collections/carts", "{}", kJson, admin).status, 201);
  ASSERT_EQ(
      Send(port(), http::verb::put, "/v1/collections/carts/docs/c1", "{}", kJson, admin).status,
      201);

  const std::vector<std::string> system_topics = {
      "store-changes",  // the store's change feed
      "_dlq.orders.g",  // a consumer group's dead letters
      "_groups",        // internal
      "outbox-dead",    // the relays' dead letters
      "payments",       // a saga participant's command topic
  };
  // A forgery of the store's own next change event.
  Event forged = MakeEvent("/converge/store", "carts/c1/2");
  for (const std::string& topic : system_topics) {
    for (const std::string& token : {admin, service}) {
      Client c(server_->ClientOptions(token));
      for (PublishMode mode : {PublishMode::kStructured, PublishMode::kBatch, PublishMode::kBinary,
                               PublishMode::kNative}) {
        Result<client::Published> p = c.PublishOne(topic, forged, mode);
        ASSERT_FALSE(p.ok()) << topic;
        EXPECT_EQ(p.status().code(), StatusCode::kPermissionDenied) << p.status().ToString();
        EXPECT_EQ(Code(p.status()), "SYSTEM_TOPIC") << topic << ": " << p.status().ToString();
      }
    }
  }
  // A saga definition registered later protects its command topics from then on.
  Reply defined = Send(port(), http::verb::post, "/v1/saga-definitions",
                       "name: ship\nversion: 1\nsteps:\n  - name: s\n    participant: shipping\n"
                       "    action: shipping.go\n    pivot: true\n    timeout_ms: 60000\n",
                       kJson, admin);
  ASSERT_EQ(defined.status, 201) << defined.body;
  Result<client::Published> late = ops.PublishOne("shipping", forged);
  ASSERT_FALSE(late.ok());
  EXPECT_EQ(Code(late.status()), "SYSTEM_TOPIC") << late.status().ToString();

  // Nor through an outbox: the relay dead-letters rows addressed to system topics.
  Outbox outbox(Env::Default());
  std::vector<OutboxEntry> rows;
  Event via_outbox = MakeEvent("/converge/store", "carts/c1/2");
  Event command = MakeEvent("/orchestrator", "forged-command");
  rows.push_back(OutboxEntry{"store-changes", &via_outbox});
  rows.push_back(OutboxEntry{"payments", &command});
  rows.push_back(OutboxEntry{"outbox-dead", &command});
  ASSERT_TRUE(db->Transact([&](sql::Transaction& tx) { return outbox.Write(tx, rows); }).ok());
  const auto relayed_by = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (StoredEvents("outbox-dead", admin) < 3 && std::chrono::steady_clock::now() < relayed_by) {
  }
  EXPECT_EQ(StoredEvents("outbox-dead", admin), 3u) << server_->Log();
  EXPECT_EQ(StoredEvents("payments", admin), 0u);
  EXPECT_EQ(StoredEvents("store-changes", admin), 1u);

  // The store's real change event is not taken for a duplicate, and the only one there.
  ASSERT_EQ(
      Send(port(), http::verb::put, "/v1/collections/carts/docs/c1", R"({"n":2})", kJson, admin)
          .status,
      200);
  // (The feed is published after the commit: poll.)
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (StoredEvents("store-changes", admin) < 2 && std::chrono::steady_clock::now() < until) {
  }
  EXPECT_EQ(StoredEvents("store-changes", admin), 2u);
  // The saga reply topic takes participants' replies (its protocol), other topics events.
  EXPECT_TRUE(Must(ops.PublishOne("orders", forged), "orders").id == "carts/c1/2");
  Result<client::Published> reply = ops.PublishOne("saga.replies", MakeEvent("/p", "r1"));
  EXPECT_TRUE(reply.ok()) << reply.status().ToString();
}

// ---------------------------------------------------------------------------------------
// Event identity

TEST_F(InputTest, TheSameEventThroughTheOutboxRelayAndHttpIsStoredOnceOtherSourcesTwice) {
  ServeProcess probe;
  const std::string db_path = probe.dir() + "/orders.db";
  sql::SqliteOptions so;
  so.path = db_path;
  std::unique_ptr<sql::Database> db = Must(sql::Database::OpenSqlite(so), "open");
  ASSERT_TRUE(Outbox::CreateSchema(*db).ok());
  StartServer(
      Cat({"relays:\n"
           "  sources:\n"
           "    - name: orders\n"
           "      database: sqlite:",
           db_path,
           "\n"
           "      poll_interval_ms: 20\n"}));
  Client c(server_->ClientOptions());
  ASSERT_EQ(Post("/v1/topics", R"({"name":"orders"})").status, 201);
  // Over HTTP first: (/orders, e-1) and (/billing, e-1).
  ASSERT_TRUE(c.PublishOne("orders", MakeEvent("/orders", "e-1")).ok());
  ASSERT_TRUE(c.PublishOne("orders", MakeEvent("/billing", "e-1")).ok());
  // Through the outbox: the same (/orders, e-1) again and a third source's e-1.
  Outbox outbox(Env::Default());
  std::vector<Event> events = {MakeEvent("/orders", "e-1"), MakeEvent("/shipping", "e-1")};
  ASSERT_TRUE(db->Transact([&](sql::Transaction& tx) {
                  return outbox.Write(tx, "orders", std::span<Event>(events));
                }).ok());
  // Wait until the relay published and deleted the rows.
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  int64_t rows = -1;
  while (std::chrono::steady_clock::now() < until) {
    ASSERT_TRUE(
        db->Query("SELECT count(*) FROM converge_outbox", {}, [&](const sql::Row& row) -> Status {
            rows = row.Int(0).value();
            return Status::Ok();
          }).ok());
    if (rows == 0) break;
  }
  ASSERT_EQ(rows, 0) << server_->Log();
  EXPECT_EQ(StoredEvents("orders"), 3u) << server_->Log();
  // And the other way round: what the relay stored first, HTTP sees as a duplicate.
  Result<client::Published> again = c.PublishOne("orders", MakeEvent("/shipping", "e-1"));
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_TRUE(again->duplicate);
  EXPECT_EQ(StoredEvents("orders"), 3u);
}

}  // namespace
}  // namespace converge
