// The admin routes of `converge serve` through the real binary: deleting topics and groups
// (also across SIGKILL), seeking groups, reading a topic by offset, describing groups, the
// outbox relays and their dead letters, the OpenAPI document; who may call each.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>
#include <chrono>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "converge/env.h"
#include "converge/event.h"
#include "converge/outbox.h"
#include "converge/sql.h"
#include "serve_process.h"
#include "test_util.h"

namespace converge {
namespace {

namespace json = boost::json;
using testing::HttpCall;
using testing::HttpResult;
using testing::Must;
using testing::ServeProcess;

const std::string kAdmin = "admin-token-0123456789";    // admin, no topic patterns at all
const std::string kApp = "app-token-0123456789abc";     // publish/subscribe orders*
const std::string kOther = "other-token-0123456789ab";  // publish/subscribe billing
const std::string kWrong = "wrong-token-0123456789ab";  // configured nowhere

std::string Tokens() {
  return "auth:\n"
         "  tokens:\n"
         "    - {service: ops, token: " +
         kAdmin +
         ", admin: true}\n"
         "    - {service: app, token: " +
         kApp +
         ", publish: ['orders*'], subscribe: ['orders*']}\n"
         "    - {service: other, token: " +
         kOther + ", publish: [billing], subscribe: [billing]}\n";
}

// "e<i>" (appended rather than "e" + ..., which GCC 12 misreads as an overlapping copy).
std::string Id(int i) {
  std::string id = "e";
  id += std::to_string(i);
  return id;
}

json::value Json(const HttpResult& r) {
  boost::system::error_code ec;
  json::value v = json::parse(r.body, ec);
  EXPECT_FALSE(ec) << r.body;
  return v;
}

class AdminTest : public ::testing::Test {
 protected:
  void Start(const std::string& extra = "", std::string data_dir = "") {
    server_ = std::make_unique<ServeProcess>(Tokens() + extra, std::move(data_dir));
    ASSERT_OK(server_->Start());
  }
  HttpResult Call(std::string_view method, const std::string& target, const std::string& token,
                  const std::string& body = "") {
    testing::HttpHeaders headers;
    if (!body.empty()) headers.push_back({"Content-Type", "application/json"});
    return HttpCall(server_->port(), method, target, body, headers, token);
  }
  void CreateTopic(const std::string& name, int partitions = 1) {
    HttpResult r =
        Call("POST", "/v1/topics", kAdmin,
             R"({"name":")" + name + R"(","partitions":)" + std::to_string(partitions) + "}");
    ASSERT_EQ(r.status, 201) << r.body;
  }
  void Publish(const std::string& topic, const std::string& id, const std::string& key = "") {
    std::string ev =
        R"({"specversion":"1.0","id":")" + id + R"(","source":"/t","type":"t.x","data":{"n":1})";
    if (!key.empty()) ev += R"(,"partitionkey":")" + key + "\"";
    ev += "}";
    HttpResult r = HttpCall(server_->port(), "POST", "/v1/topics/" + topic + "/events", ev,
                            {{"Content-Type", "application/cloudevents+json"}}, kApp);
    ASSERT_EQ(r.status, 200) << r.body;
  }
  // The group route as the app (its topics are orders*).
  void CreateGroup(const std::string& topic, const std::string& group,
                   const std::string& extra = "") {
    HttpResult r = Call("POST", "/v1/topics/" + topic + "/groups", kApp,
                        R"({"name":")" + group + "\"" + extra + "}");
    ASSERT_EQ(r.status, 201) << r.body;
  }
  json::array Fetch(const std::string& topic, const std::string& group, int max = 100) {
    HttpResult r = Call("POST", "/v1/topics/" + topic + "/groups/" + group + "/fetch", kApp,
                        R"({"max_events":)" + std::to_string(max) + "}");
    EXPECT_EQ(r.status, 200) << r.body;
    return Json(r).at("deliveries").as_array();
  }
  // 401 without a token and with an unknown one; 403 for `denied` (if any).
  void ExpectGuarded(std::string_view method, const std::string& target, const std::string& denied,
                     const std::string& body = "") {
    EXPECT_EQ(Call(method, target, "", body).status, 401) << method << " " << target;
    EXPECT_EQ(Call(method, target, kWrong, body).status, 401) << method << " " << target;
    if (!denied.empty()) {
      HttpResult r = Call(method, target, denied, body);
      EXPECT_EQ(r.status, 403) << method << " " << target << ": " << r.body;
      EXPECT_EQ(r.code(), "PERMISSION_DENIED") << r.body;
    }
  }
  uint64_t EndOffset(const std::string& topic) {
    HttpResult r = Call("GET", "/v1/topics/" + topic, kAdmin);
    if (r.status != 200) return UINT64_MAX;
    uint64_t n = 0;
    const json::value r_json = Json(r);
    for (const json::value& p : r_json.at("partition_offsets").as_array()) {
      n += p.at("end_offset").to_number<uint64_t>();
    }
    return n;
  }

  std::unique_ptr<ServeProcess> server_;
};

// ---------------------------------------------------------------------------------------
// Topics

TEST_F(AdminTest, TheAdminTokenListsAndDescribesEveryTopicWithOffsetsAndRetention) {
  Start();
  CreateTopic("orders", 2);
  CreateTopic("billing");
  Publish("orders", "e1");
  // The admin token has no topic patterns: it used to see nothing.
  HttpResult list = Call("GET", "/v1/topics", kAdmin);
  ASSERT_EQ(list.status, 200) << list.body;
  json::array topics = Json(list).at("topics").as_array();
  std::vector<std::string> names;
  for (const json::value& t : topics) names.push_back(std::string(t.at("name").as_string()));
  EXPECT_NE(std::find(names.begin(), names.end(), "orders"), names.end()) << list.body;
  EXPECT_NE(std::find(names.begin(), names.end(), "billing"), names.end()) << list.body;
  for (const json::value& t : topics) {
    EXPECT_TRUE(t.as_object().contains("retention_max_bytes")) << list.body;
    EXPECT_TRUE(t.as_object().contains("partition_offsets")) << list.body;
  }
  HttpResult described = Call("GET", "/v1/topics/billing", kAdmin);
  EXPECT_EQ(described.status, 200) << described.body;
  EXPECT_EQ(EndOffset("orders"), 1u);
  // The app sees only its own.
  HttpResult app = Call("GET", "/v1/topics", kApp);
  EXPECT_EQ(app.body.find("billing"), std::string::npos) << app.body;
  EXPECT_EQ(Call("GET", "/v1/topics/billing", kApp).status, 403);
  // Internal topics, for admins on ask.
  CreateGroup("orders", "g");
  HttpResult internal = Call("GET", "/v1/topics?internal=true", kAdmin);
  EXPECT_NE(internal.body.find("_dlq.orders.g"), std::string::npos) << internal.body;
  EXPECT_EQ(Call("GET", "/v1/topics", kAdmin).body.find("_dlq."), std::string::npos);
  EXPECT_EQ(Call("GET", "/v1/topics/_dlq.orders.g", kAdmin).status, 200);
  EXPECT_EQ(Call("GET", "/v1/topics?internal=true", kApp).status, 403);
  EXPECT_EQ(Call("GET", "/v1/topics/_dlq.orders.g", kApp).status, 403);
  EXPECT_EQ(Call("GET", "/v1/topics?internal=yes", kAdmin).status, 400);
  EXPECT_EQ(Call("GET", "/v1/topics?bogus=1", kAdmin).status, 400);
}

TEST_F(AdminTest, DeleteTopicRemovesItsEventsAndGroupsAndARecreatedTopicStartsClean) {
  Start();
  CreateTopic("orders");
  for (int i = 0; i < 5; ++i) Publish("orders", Id(i));
  CreateGroup("orders", "g");
  EXPECT_EQ(Fetch("orders", "g").size(), 5u);
  ExpectGuarded("DELETE", "/v1/topics/orders", kApp);  // subscribers may not delete topics
  EXPECT_EQ(Call("DELETE", "/v1/topics/orders?x=1", kAdmin).status, 400);
  EXPECT_EQ(Call("DELETE", "/v1/topics/bad%20name", kAdmin).status, 400);
  EXPECT_EQ(Call("DELETE", "/v1/topics/nope", kAdmin).status, 404);
  EXPECT_EQ(EndOffset("orders"), 5u);  // the refused calls changed nothing

  HttpResult deleted = Call("DELETE", "/v1/topics/orders", kAdmin);
  ASSERT_EQ(deleted.status, 200) << deleted.body;
  EXPECT_EQ(json::serialize(Json(deleted).at("groups_deleted")), R"(["g"])");
  EXPECT_EQ(Call("GET", "/v1/topics/orders", kAdmin).status, 404);
  EXPECT_EQ(Call("GET", "/v1/topics/orders/groups/g", kAdmin).status, 404);
  EXPECT_EQ(Call("DELETE", "/v1/topics/orders", kAdmin).status, 404);

  // The same name again: no events, no groups, no memory of the old ids.
  CreateTopic("orders");
  EXPECT_EQ(EndOffset("orders"), 0u);
  EXPECT_EQ(Json(Call("GET", "/v1/topics/orders/groups", kAdmin)).at("groups").as_array().size(),
            0u);
  Publish("orders", "e0");  // deduplicated before: the old topic's id window is gone
  EXPECT_EQ(EndOffset("orders"), 1u);
  CreateGroup("orders", "g");
  EXPECT_EQ(Fetch("orders", "g").size(), 1u);  // from 0, not from the old group's offset 5
}

TEST_F(AdminTest, SystemTopicsAreNotDeletedOverHttp) {
  Start();
  HttpResult doc = Call("PUT", "/v1/collections/carts", kAdmin, "{}");
  ASSERT_EQ(doc.status, 201) << doc.body;
  for (const char* topic : {"store-changes"}) {
    HttpResult r = Call("DELETE", std::string("/v1/topics/") + topic, kAdmin);
    EXPECT_EQ(r.status, 403) << topic << ": " << r.body;
    EXPECT_EQ(r.code(), "SYSTEM_TOPIC") << r.body;
  }
  EXPECT_EQ(Call("DELETE", "/v1/topics/_dlq.orders.g", kAdmin).status, 403);
}

// SIGKILL while topics are being deleted: at the restart each topic is whole (every event, its
// group) or gone (with its group); a topic created again under a deleted name starts empty.
TEST_F(AdminTest, TopicsDeletedAroundASigkillAreWholeOrGoneAfterTheRestart) {
  Start();
  const std::string data_dir = server_->data_dir();
  constexpr int kTopics = 12, kEvents = 20;
  for (int t = 0; t < kTopics; ++t) {
    const std::string topic = "orders" + std::to_string(t);
    CreateTopic(topic, 2);
    for (int i = 0; i < kEvents; ++i) Publish(topic, Id(i), std::to_string(i));
    CreateGroup(topic, "g");
  }
  std::atomic<int> acknowledged{0};
  const uint16_t port = server_->port();
  std::thread deleter([&] {
    for (int t = 0; t < kTopics; ++t) {
      // Raw: the exchange the kill cuts off is expected, not a failure.
      Result<std::string> raw =
          testing::RawExchange(port,
                               "DELETE /v1/topics/orders" + std::to_string(t) +
                                   " HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + kAdmin +
                                   "\r\nConnection: close\r\n\r\n",
                               30'000);
      if (!raw.ok() || testing::RawStatus(*raw) != 200) return;  // killed
      acknowledged.fetch_add(1);
    }
  });
  // Let a few deletions finish, then kill in the middle of the rest.
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (acknowledged.load() < 3 && std::chrono::steady_clock::now() < until) {
    std::this_thread::yield();
  }
  server_->Kill();
  deleter.join();
  const int acked = acknowledged.load();
  ASSERT_GE(acked, 3);
  // (server_ keeps owning the data dir.)
  // The restart on the same data.
  ServeProcess again(Tokens(), data_dir);
  ASSERT_OK(again.Start());
  int gone = 0;
  for (int t = 0; t < kTopics; ++t) {
    const std::string topic = "orders" + std::to_string(t);
    HttpResult d = HttpCall(again.port(), "GET", "/v1/topics/" + topic, "", {}, kAdmin);
    HttpResult g = HttpCall(again.port(), "GET", "/v1/topics/" + topic + "/groups", "", {}, kAdmin);
    if (t < acked) {
      EXPECT_EQ(d.status, 404) << topic << " was deleted (acknowledged)";
    }
    if (d.status == 404) {
      ++gone;
      EXPECT_EQ(g.status, 404) << topic;
      // Created again: clean.
      HttpResult c = HttpCall(again.port(), "POST", "/v1/topics",
                              R"({"name":")" + topic + R"(","partitions":2})",
                              {{"Content-Type", "application/json"}}, kAdmin);
      ASSERT_EQ(c.status, 201) << c.body;
      HttpResult after = HttpCall(again.port(), "GET", "/v1/topics/" + topic, "", {}, kAdmin);
      EXPECT_NE(after.body.find(R"("end_offset":0)"), std::string::npos) << after.body;
      EXPECT_EQ(after.body.find(R"("end_offset":1)"), std::string::npos) << after.body;
      EXPECT_NE(after.body.find(R"("groups":[])"), std::string::npos) << after.body;
      continue;
    }
    ASSERT_EQ(d.status, 200) << d.body;
    // Whole: every event readable in its partition, the group still there. (The group may be
    // gone already: deleting a topic deletes its groups first, durably.)
    uint64_t events = 0;
    for (int p = 0; p < 2; ++p) {
      HttpResult read =
          HttpCall(again.port(), "GET",
                   "/v1/topics/" + topic + "/events?partition=" + std::to_string(p) + "&limit=1000",
                   "", {}, kAdmin);
      ASSERT_EQ(read.status, 200) << read.body;
      json::value v = Json(read);
      EXPECT_EQ(v.at("start_offset").to_number<uint64_t>(), 0u) << read.body;
      events += v.at("events").as_array().size();
      for (const json::value& e : v.at("events").as_array()) {
        EXPECT_TRUE(e.at("event").is_object()) << read.body;
      }
    }
    EXPECT_EQ(events, static_cast<uint64_t>(kEvents)) << topic;
  }
  EXPECT_GE(gone, acked);
  EXPECT_LT(gone, kTopics) << "the kill came after every deletion: nothing was checked whole";
}

TEST_F(AdminTest, ReadEventsByOffsetWithoutAGroup) {
  Start();
  CreateTopic("orders", 2);
  for (int i = 0; i < 5; ++i) Publish("orders", Id(i), "same-key");
  const uint32_t partition = [&] {
    HttpResult d = Call("GET", "/v1/topics/orders", kAdmin);
    const json::value d_json = Json(d);
    for (const json::value& p : d_json.at("partition_offsets").as_array()) {
      if (p.at("end_offset").to_number<uint64_t>() == 5) {
        return p.at("partition").to_number<uint32_t>();
      }
    }
    return 99u;
  }();
  ASSERT_LT(partition, 2u);
  const std::string base = "/v1/topics/orders/events?partition=" + std::to_string(partition);
  HttpResult r = Call("GET", base + "&from_offset=1&limit=2", kApp);
  ASSERT_EQ(r.status, 200) << r.body;
  json::value v = Json(r);
  ASSERT_EQ(v.at("events").as_array().size(), 2u) << r.body;
  EXPECT_EQ(v.at("events").as_array()[0].at("offset").to_number<int>(), 1);
  EXPECT_EQ(v.at("events").as_array()[1].at("event").at("id").as_string(), "e2");
  EXPECT_EQ(v.at("next_offset").to_number<int>(), 3);
  EXPECT_EQ(v.at("end_offset").to_number<int>(), 5);
  HttpResult bounded = Call("GET", base + "&from_offset=1&to_offset=2", kAdmin);
  ASSERT_EQ(bounded.status, 200) << bounded.body;
  EXPECT_EQ(Json(bounded).at("events").as_array().size(), 1u) << bounded.body;
  EXPECT_EQ(Json(bounded).at("next_offset").to_number<int>(), 2);
  HttpResult past = Call("GET", base + "&from_offset=9", kAdmin);
  EXPECT_EQ(Json(past).at("events").as_array().size(), 0u);
  // Nothing of a group was made or moved.
  EXPECT_EQ(Json(Call("GET", "/v1/topics/orders/groups", kAdmin)).at("groups").as_array().size(),
            0u);
  // Bad input.
  EXPECT_EQ(Call("GET", "/v1/topics/orders/events?partition=2", kAdmin).status, 400);
  EXPECT_EQ(Call("GET", "/v1/topics/orders/events?limit=0", kAdmin).status, 400);
  EXPECT_EQ(Call("GET", "/v1/topics/orders/events?from_offset=-1", kAdmin).status, 400);
  EXPECT_EQ(Call("GET", "/v1/topics/orders/events?offset=1", kAdmin).status, 400);
  EXPECT_EQ(Call("GET", "/v1/topics/orders/events?limit=1&limit=2", kAdmin).status, 400);
  EXPECT_EQ(Call("GET", "/v1/topics/ordersX/events", kApp).status, 404);
  ExpectGuarded("GET", "/v1/topics/orders/events", kOther);
  // An admin reads internal topics; nobody else may name them.
  EXPECT_EQ(Call("GET", "/v1/topics/_nope/events", kAdmin).status, 404);
}

// ---------------------------------------------------------------------------------------
// Groups

TEST_F(AdminTest, DescribeListSeekAndDeleteGroups) {
  Start();
  CreateTopic("orders", 2);
  for (int i = 0; i < 6; ++i) Publish("orders", Id(i), std::to_string(i));
  CreateGroup("orders", "g", R"(,"lease_ms":600000)");
  ASSERT_EQ(Fetch("orders", "g", 2).size(), 2u);  // two leased, not acked

  HttpResult d = Call("GET", "/v1/topics/orders/groups/g", kAdmin);
  ASSERT_EQ(d.status, 200) << d.body;
  json::value g = Json(d);
  EXPECT_EQ(g.at("lag").to_number<int>(), 6) << d.body;
  ASSERT_EQ(g.at("consumers").as_array().size(), 1u) << d.body;
  EXPECT_EQ(g.at("consumers").as_array()[0].at("consumer").as_string(), "default");
  EXPECT_EQ(g.at("consumers").as_array()[0].at("in_flight").to_number<int>(), 2);
  uint64_t leased = 0;
  for (const json::value& a : g.at("assignments").as_array()) {
    EXPECT_EQ(a.at("consumer").as_string(), "default") << d.body;
    leased += a.at("leased").to_number<uint64_t>();
  }
  EXPECT_EQ(leased, 2u) << d.body;
  HttpResult list = Call("GET", "/v1/topics/orders/groups", kApp);
  ASSERT_EQ(list.status, 200) << list.body;
  EXPECT_EQ(Json(list).at("groups").as_array().size(), 1u);
  ExpectGuarded("GET", "/v1/topics/orders/groups/g", kOther);
  ExpectGuarded("GET", "/v1/topics/orders/groups", kOther);
  EXPECT_EQ(Call("GET", "/v1/topics/orders/groups/nope", kAdmin).status, 404);
  EXPECT_EQ(Call("GET", "/v1/topics/orders/groups/g?x=1", kAdmin).status, 400);
  EXPECT_EQ(Call("GET", "/v1/topics/orders/groups/bad.name", kAdmin).status, 400);

  // Seek: latest, then earliest, one partition to an offset, by time.
  const std::string seek = "/v1/topics/orders/groups/g/seek";
  ExpectGuarded("POST", seek, kOther, R"({"to":"latest"})");
  for (const char* bad : {R"({})", R"({"to":"sideways"})", R"({"to":"offset"})", R"({"to":"time"})",
                          R"({"to":"latest","offset":1})", R"({"to":"latest","bogus":1})",
                          R"({"to":"latest","to":"latest"})", R"({"to":"offset","offset":-1})",
                          R"([1])", R"({"to":"latest")", R"({"to":"latest","partition":7})"}) {
    HttpResult r = Call("POST", seek, kApp, bad);
    EXPECT_EQ(r.status, 400) << bad << ": " << r.body;
  }
  EXPECT_EQ(Json(Call("GET", "/v1/topics/orders/groups/g", kAdmin)).at("lag").to_number<int>(), 6);
  HttpResult latest = Call("POST", seek, kApp, R"({"to":"latest"})");
  ASSERT_EQ(latest.status, 200) << latest.body;
  EXPECT_EQ(Json(latest).at("lag").to_number<int>(), 0) << latest.body;
  EXPECT_EQ(Fetch("orders", "g").size(), 0u);
  HttpResult earliest = Call("POST", seek, kAdmin, R"({"to":"earliest"})");
  ASSERT_EQ(earliest.status, 200) << earliest.body;
  EXPECT_EQ(Json(earliest).at("lag").to_number<int>(), 6);
  EXPECT_EQ(Fetch("orders", "g").size(), 6u);
  HttpResult one = Call("POST", seek, kApp, R"({"to":"offset","offset":1,"partition":0})");
  ASSERT_EQ(one.status, 200) << one.body;
  const json::value one_json = Json(one);
  for (const json::value& p : one_json.at("partitions").as_array()) {
    if (p.at("partition").to_number<int>() == 0) {
      EXPECT_EQ(p.at("committed_offset").to_number<int>(), 1) << one.body;
    }
  }
  HttpResult by_time = Call("POST", seek, kApp, R"({"to":"time","time_ms":0})");
  ASSERT_EQ(by_time.status, 200) << by_time.body;
  EXPECT_EQ(Json(by_time).at("lag").to_number<int>(), 6);
  EXPECT_EQ(Call("POST", "/v1/topics/orders/groups/nope/seek", kApp, R"({"to":"latest"})").status,
            404);

  // Delete: refused while it holds dead letters not replayed, unless forced.
  const std::vector<json::value> leases = [&] {
    std::vector<json::value> out;
    for (const json::value& d : Fetch("orders", "g", 1)) out.push_back(d);
    return out;
  }();
  ASSERT_EQ(leases.size(), 1u);
  HttpResult nack =
      Call("POST", "/v1/topics/orders/groups/g/nack", kApp,
           R"({"nacks":[{"partition":)" + json::serialize(leases[0].at("partition")) +
               R"(,"offset":)" + json::serialize(leases[0].at("offset")) + R"(,"lease_id":)" +
               json::serialize(leases[0].at("lease_id")) + R"(,"permanent":true}]})");
  ASSERT_EQ(nack.status, 200) << nack.body;
  ExpectGuarded("DELETE", "/v1/topics/orders/groups/g", kOther);
  EXPECT_EQ(Call("DELETE", "/v1/topics/orders/groups/g?force=maybe", kApp).status, 400);
  HttpResult refused = Call("DELETE", "/v1/topics/orders/groups/g", kApp);
  EXPECT_EQ(refused.status, 409) << refused.body;
  // An admin sees (and could replay) any group's dead letters.
  HttpResult dead = Call("GET", "/v1/topics/orders/groups/g/dead-letters", kAdmin);
  ASSERT_EQ(dead.status, 200) << dead.body;
  EXPECT_EQ(Json(dead).at("dead_letters").as_array().size(), 1u);
  // Discard it: kept aside, marked replayed, never in the group's topic.
  const std::string discard = "/v1/topics/orders/groups/g/dead-letters/discard";
  ExpectGuarded("POST", discard, kOther, R"({"from_offset":0,"to_offset":1})");
  for (const char* bad : {R"({})", R"({"from_offset":0})", R"({"to_offset":1})",
                          R"({"from_offset":0,"to_offset":1,"target_topic":"x"})",
                          R"({"from_offset":0,"to_offset":1,"max_events":0})", "[]"}) {
    HttpResult r = Call("POST", discard, kApp, bad);
    EXPECT_EQ(r.status, 400) << bad << ": " << r.body;
  }
  EXPECT_EQ(Call("POST", "/v1/topics/orders/groups/nope/dead-letters/discard", kApp,
                 R"({"from_offset":0,"to_offset":1})")
                .status,
            404);
  HttpResult discarded = Call("POST", discard, kApp, R"({"from_offset":0,"to_offset":1})");
  ASSERT_EQ(discarded.status, 200) << discarded.body;
  json::value dv = Json(discarded);
  EXPECT_EQ(dv.at("discarded").to_number<int>(), 1) << discarded.body;
  const std::string kept = std::string(dv.at("kept_in").as_string());
  EXPECT_EQ(kept, "_discarded_dlq.orders.g");
  EXPECT_EQ(EndOffset("orders"), 6u);  // nothing went back to the group's topic
  HttpResult archive = Call("GET", "/v1/topics/" + kept + "/events", kAdmin);
  ASSERT_EQ(archive.status, 200) << archive.body;
  EXPECT_EQ(Json(archive).at("events").as_array().size(), 1u) << archive.body;
  HttpResult again = Call("POST", discard, kApp, R"({"from_offset":0,"to_offset":1})");
  EXPECT_EQ(Json(again).at("discarded").to_number<int>(), 0) << again.body;
  EXPECT_EQ(Json(again).at("skipped_already_replayed").to_number<int>(), 1) << again.body;
  HttpResult listed = Call("GET", "/v1/topics/orders/groups/g/dead-letters", kApp);
  EXPECT_NE(listed.body.find(R"("replayed":true)"), std::string::npos) << listed.body;
  // Now nothing is left to replay: the group goes without force, and the archive with it.
  HttpResult plain = Call("DELETE", "/v1/topics/orders/groups/g", kApp);
  ASSERT_EQ(plain.status, 200) << plain.body;
  EXPECT_EQ(Call("GET", "/v1/topics/orders/groups/g", kAdmin).status, 404);
  EXPECT_EQ(Call("GET", "/v1/topics/" + kept, kAdmin).status, 404);
  // Force: a group with a dead letter never replayed.
  CreateGroup("orders", "h");
  {
    json::array got = Fetch("orders", "h", 1);
    ASSERT_EQ(got.size(), 1u);
    HttpResult n = Call("POST", "/v1/topics/orders/groups/h/nack", kApp,
                        R"({"nacks":[{"partition":)" + json::serialize(got[0].at("partition")) +
                            R"(,"offset":)" + json::serialize(got[0].at("offset")) +
                            R"(,"lease_id":)" + json::serialize(got[0].at("lease_id")) +
                            R"(,"permanent":true}]})");
    ASSERT_EQ(n.status, 200) << n.body;
  }
  EXPECT_EQ(Call("DELETE", "/v1/topics/orders/groups/h", kApp).status, 409);
  HttpResult forced = Call("DELETE", "/v1/topics/orders/groups/h?force=true", kApp);
  ASSERT_EQ(forced.status, 200) << forced.body;
  EXPECT_EQ(Call("GET", "/v1/topics/orders/groups/h", kAdmin).status, 404);
  EXPECT_EQ(Call("DELETE", "/v1/topics/orders/groups/g", kAdmin).status, 404);
  // Created again: from the start, with nothing of the old one.
  CreateGroup("orders", "g");
  EXPECT_EQ(Fetch("orders", "g").size(), 6u);
}

// ---------------------------------------------------------------------------------------
// Relays

TEST_F(AdminTest, RelayDeadLettersAreListedReplayedAndDiscardedOverHttp) {
  ServeProcess probe;  // a temp dir for the service database
  sql::SqliteOptions so;
  so.path = probe.dir() + "/svc.db";
  std::unique_ptr<sql::Database> db = Must(sql::Database::OpenSqlite(so), "open");
  ASSERT_OK(Outbox::CreateSchema(*db));
  Start(
      "relays:\n"
      "  sink: {create_topics: false}\n"
      "  sources:\n"
      "    - name: svc\n"
      "      database: sqlite:" +
      so.path + "\n      poll_interval_ms: 20\n");
  // Two rows that cannot be published: one to a topic that does not exist yet (create_topics
  // is off), one to the store's change feed (never: converge writes it itself).
  Outbox outbox(Env::Default());
  Event late;
  late.set_source("/svc");
  late.set_id("late-1");
  late.set_type("t.x");
  Event forged = late;
  forged.set_id("forged-1");
  std::vector<OutboxEntry> rows = {{"late", &late}, {"store-changes", &forged}};
  ASSERT_OK(db->Transact([&](sql::Transaction& tx) { return outbox.Write(tx, rows); }));
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  json::value status;
  while (std::chrono::steady_clock::now() < until) {
    HttpResult r = Call("GET", "/v1/relays", kAdmin);
    ASSERT_EQ(r.status, 200) << r.body;
    status = Json(r);
    if (status.at("dead_letters").at("total").to_number<int>() == 2) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ASSERT_EQ(status.at("dead_letters").at("pending").to_number<int>(), 2) << json::serialize(status);
  ASSERT_EQ(status.at("relays").as_array().size(), 1u);
  EXPECT_EQ(status.at("relays").as_array()[0].at("dead_lettered").to_number<int>(), 2);
  EXPECT_EQ(status.at("relays").as_array()[0].at("published").to_number<int>(), 0);
  ExpectGuarded("GET", "/v1/relays", kApp);
  ExpectGuarded("GET", "/v1/relays/dead-letters", kApp);
  ExpectGuarded("POST", "/v1/relays/dead-letters/replay", kApp, "{}");
  ExpectGuarded("POST", "/v1/relays/dead-letters/discard", kApp,
                R"({"from_offset":0,"to_offset":2})");
  // The dead-letter topic's own name is reachable too, for an admin.
  EXPECT_EQ(Call("GET", "/v1/topics/_dlq.outbox", kAdmin).status, 200);
  EXPECT_EQ(Call("GET", "/v1/topics/_dlq.outbox/events", kAdmin).status, 200);

  HttpResult list = Call("GET", "/v1/relays/dead-letters", kAdmin);
  ASSERT_EQ(list.status, 200) << list.body;
  json::array dls = Json(list).at("dead_letters").as_array();
  ASSERT_EQ(dls.size(), 2u) << list.body;
  for (const json::value& d : dls) {
    EXPECT_EQ(d.at("state").as_string(), "pending");
    EXPECT_EQ(d.at("relay").as_string(), "svc");
  }
  for (const char* bad : {"/v1/relays/dead-letters?state=gone", "/v1/relays/dead-letters?limit=0",
                          "/v1/relays/dead-letters?x=1", "/v1/relays?x=1"}) {
    EXPECT_EQ(Call("GET", bad, kAdmin).status, 400) << bad;
  }
  for (const char* bad : {R"({"from":0})", R"({"max_events":0})", R"([])", "{"}) {
    EXPECT_EQ(Call("POST", "/v1/relays/dead-letters/replay", kAdmin, bad).status, 400) << bad;
  }
  for (const char* bad : {R"({})", R"({"from_offset":0})", R"({"from_offset":0,"to":1})"}) {
    EXPECT_EQ(Call("POST", "/v1/relays/dead-letters/discard", kAdmin, bad).status, 400) << bad;
  }

  // The topic exists now: the replay publishes that row; the other stays refused.
  CreateTopic("late");
  HttpResult replay = Call("POST", "/v1/relays/dead-letters/replay", kAdmin, "{}");
  ASSERT_EQ(replay.status, 200) << replay.body;
  json::value rv = Json(replay);
  EXPECT_EQ(rv.at("replayed").to_number<int>(), 1) << replay.body;
  ASSERT_EQ(rv.at("failed").as_array().size(), 1u) << replay.body;
  EXPECT_NE(replay.body.find("written only by"), std::string::npos) << replay.body;
  HttpResult read = Call("GET", "/v1/topics/late/events", kAdmin);
  ASSERT_EQ(Json(read).at("events").as_array().size(), 1u) << read.body;
  EXPECT_EQ(Json(read).at("events").as_array()[0].at("event").at("id").as_string(), "late-1");
  // Again: the replayed one is skipped (not published twice).
  HttpResult again = Call("POST", "/v1/relays/dead-letters/replay", kAdmin, "{}");
  EXPECT_EQ(Json(again).at("replayed").to_number<int>(), 0) << again.body;
  EXPECT_EQ(Json(again).at("skipped").to_number<int>(), 1) << again.body;
  EXPECT_EQ(EndOffset("late"), 1u);

  HttpResult discard =
      Call("POST", "/v1/relays/dead-letters/discard", kAdmin, R"({"from_offset":0,"to_offset":2})");
  ASSERT_EQ(discard.status, 200) << discard.body;
  EXPECT_EQ(Json(discard).at("discarded").to_number<int>(), 1) << discard.body;
  EXPECT_EQ(Json(discard).at("skipped").to_number<int>(), 1) << discard.body;

  // The marks are durable: after a restart, nothing is pending.
  const std::string data_dir = server_->data_dir();
  ASSERT_TRUE(server_->Signal(SIGTERM).ok());
  std::unique_ptr<ServeProcess> first = std::move(server_);  // owns the data dir
  server_ = std::make_unique<ServeProcess>(Tokens(), data_dir);
  ASSERT_OK(server_->Start());
  HttpResult pending = Call("GET", "/v1/relays/dead-letters?state=pending", kAdmin);
  EXPECT_EQ(Json(pending).at("dead_letters").as_array().size(), 0u) << pending.body;
  HttpResult all = Call("GET", "/v1/relays/dead-letters", kAdmin);
  std::vector<std::string> states;
  const json::value all_json = Json(all);
  for (const json::value& d : all_json.at("dead_letters").as_array()) {
    states.push_back(std::string(d.at("state").as_string()));
  }
  EXPECT_EQ(states, (std::vector<std::string>{"replayed", "discarded"})) << all.body;
  HttpResult off = Call("GET", "/v1/relays", kAdmin);
  EXPECT_NE(off.body.find(R"("enabled":false)"), std::string::npos) << off.body;
}

// ---------------------------------------------------------------------------------------
// The API document

// A raw connection reading a text/event-stream (the client library has no reader for this
// route). Reads with a short socket timeout so a test waits against its own deadline.
class SseReader {
 public:
  SseReader(uint16_t port, const std::string& target, const std::string& token) {
    fd_ = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) return;
    timeval tv{0, 200'000};
    setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    std::string req = "GET " + target + " HTTP/1.1\r\nHost: localhost\r\n";
    if (!token.empty()) req += "Authorization: Bearer " + token + "\r\n";
    req += "\r\n";
    connected_ = send(fd_, req.data(), req.size(), MSG_NOSIGNAL) == ssize_t(req.size());
  }
  ~SseReader() {
    if (fd_ >= 0) close(fd_);
  }
  bool connected() const { return connected_; }
  const std::string& raw() const { return buf_; }
  // The data of the next `event: overview`, "" if none came within `ms`.
  std::string NextOverview(int ms) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
    static const std::string kMark = "event: overview\ndata: ";
    while (true) {
      size_t at = buf_.find(kMark, pos_);
      if (at != std::string::npos) {
        size_t end = buf_.find('\n', at + kMark.size());
        if (end != std::string::npos) {
          pos_ = end;
          return buf_.substr(at + kMark.size(), end - at - kMark.size());
        }
      }
      if (std::chrono::steady_clock::now() >= deadline) return "";
      char chunk[4096];
      ssize_t n = recv(fd_, chunk, sizeof(chunk), 0);
      if (n == 0) return "";
      if (n > 0) buf_.append(chunk, size_t(n));
    }
  }

 private:
  int fd_ = -1;
  bool connected_ = false;
  std::string buf_;
  size_t pos_ = 0;
};

uint64_t TopicEvents(const json::value& overview, const std::string& topic) {
  for (const json::value& t : overview.at("topics").as_array()) {
    if (t.at("name").as_string() == topic) return t.at("events").to_number<uint64_t>();
  }
  ADD_FAILURE() << "topic " << topic << " not in " << json::serialize(overview);
  return 0;
}

// GET /v1/overview/stream: the dashboard's live numbers, read-only, only what the token sees.
TEST_F(AdminTest, OverviewStreamSendsLiveNumbersOfVisibleTopics) {
  Start();
  CreateTopic("orders-live");
  CreateTopic("billing");
  Publish("orders-live", "o1");
  // Authorization first, then the query; nothing is streamed to a refused caller.
  EXPECT_EQ(Call("GET", "/v1/overview/stream", "").status, 401);
  EXPECT_EQ(Call("GET", "/v1/overview/stream", kWrong).status, 401);
  EXPECT_EQ(Call("GET", "/v1/overview/stream?interval_ms=5", "").status, 401);
  for (const char* q :
       {"interval_ms=5", "interval_ms=600001", "interval_ms=abc", "interval_ms=", "x=1"}) {
    HttpResult r = Call("GET", std::string("/v1/overview/stream?") + q, kApp);
    EXPECT_EQ(r.status, 400) << q << ": " << r.body;
    EXPECT_EQ(r.code(), "INVALID_ARGUMENT") << q;
  }

  SseReader app(server_->port(), "/v1/overview/stream?interval_ms=200", kApp);
  ASSERT_TRUE(app.connected());
  std::string first = app.NextOverview(10'000);
  ASSERT_FALSE(first.empty()) << app.raw();
  EXPECT_NE(app.raw().find("Content-Type: text/event-stream"), std::string::npos) << app.raw();
  json::value v = json::parse(first);
  // The app's token sees orders*, not billing.
  ASSERT_EQ(v.at("topics").as_array().size(), 1u) << first;
  EXPECT_EQ(TopicEvents(v, "orders-live"), 1u);
  EXPECT_EQ(v.at("events").to_number<uint64_t>(), 1u);
  const uint64_t published = v.at("published").to_number<uint64_t>();
  EXPECT_EQ(published, 1u);

  Publish("orders-live", "o2");
  Publish("orders-live", "o3");
  // A later event on the same stream shows the new events (no new request).
  const auto start = std::chrono::steady_clock::now();
  uint64_t seen = 1;
  while (seen < 3 && std::chrono::steady_clock::now() - start < std::chrono::seconds(15)) {
    std::string next = app.NextOverview(1'000);
    if (next.empty()) continue;
    json::value n = json::parse(next);
    seen = TopicEvents(n, "orders-live");
    EXPECT_EQ(n.at("topics").as_array().size(), 1u) << next;
    if (seen == 3) {
      EXPECT_EQ(n.at("published").to_number<uint64_t>(), 3u);
      EXPECT_EQ(n.at("topics").as_array()[0].at("end_offsets").as_array().at(0), 3);
    }
  }
  EXPECT_EQ(seen, 3u) << app.raw();

  // The admin sees both; the open streams count as subscribers.
  SseReader admin(server_->port(), "/v1/overview/stream", kAdmin);
  std::string all = admin.NextOverview(10'000);
  ASSERT_FALSE(all.empty()) << admin.raw();
  EXPECT_NE(all.find(R"("name":"billing")"), std::string::npos) << all;
  EXPECT_NE(all.find(R"("name":"orders-live")"), std::string::npos) << all;
  HttpResult m = Call("GET", "/metrics", kAdmin);
  EXPECT_NE(m.body.find("converge_stream_subscribers 2"), std::string::npos) << m.body;
}

TEST_F(AdminTest, TheOpenApiDocumentIsServedWithoutAToken) {
  Start();
  const char* src = std::getenv("CONVERGE_SOURCE_DIR");
  std::ifstream in(std::string(src != nullptr ? src : CONVERGE_SOURCE_DIR_FALLBACK) +
                   "/docs/api/openapi.yaml");
  std::stringstream file;
  file << in.rdbuf();
  ASSERT_FALSE(file.str().empty());
  HttpResult r = Call("GET", "/v1/openapi.yaml", "");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.Header("Content-Type"), "application/yaml");
  EXPECT_TRUE(r.body == file.str()) << "the served document is not docs/api/openapi.yaml ("
                                    << r.body.size() << " vs " << file.str().size() << " bytes)";
  EXPECT_EQ(Call("GET", "/v1/openapi.yaml", kApp).status, 200);
  EXPECT_EQ(Call("GET", "/v1/openapi.yaml?x=1", "").status, 400);
  EXPECT_EQ(Call("POST", "/v1/openapi.yaml", "").status, 405);
}

}  // namespace
}  // namespace converge
