// Black-box tests of `converge serve`: each test starts the real binary on a free loopback
// port with a temp data dir and speaks HTTP to it, through the C++ client or a raw socket.
#include <gtest/gtest.h>
#include <signal.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "converge/client.h"
#include "converge/env.h"
#include "converge/event.h"
#include "converge/outbox.h"
#include "converge/sql.h"
#include "serve_process.h"
#include "test_util.h"

namespace converge {
namespace {

using client::Client;
using client::Delivery;
using client::PublishMode;
using testing::RawExchange;
using testing::RawStatus;
using testing::ServeProcess;

using testing::Must;

Event MakeEvent(const std::string& source, const std::string& id, const std::string& json_data,
                const std::string& key = "") {
  Event e;
  e.set_source(source);
  e.set_id(id);
  e.set_type("com.example.test");
  if (!json_data.empty()) {
    Status s = e.SetJsonData(json_data);
    if (!s.ok()) ADD_FAILURE() << s.ToString();
  }
  if (!key.empty()) e.set_partitionkey(key);
  return e;
}

// Concatenation by append: GCC 12 reports a false -Wrestrict on `"literal" + std::string`.
std::string Cat(std::initializer_list<std::string_view> parts) {
  std::string out;
  for (std::string_view p : parts) out.append(p);
  return out;
}

std::string Code(const Status& s) {
  std::string_view m = s.message();
  return std::string(m.substr(0, m.find(':')));
}

// Creates a topic with `partitions` (anonymous admin when auth is off).
void CreateTopic(Client& c, const std::string& name, uint32_t partitions = 1) {
  client::TopicSpec spec;
  spec.name = name;
  spec.partitions = partitions;
  Result<client::TopicDescription> t = c.CreateTopic(spec);
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  EXPECT_EQ(t->partitions, partitions);
}

// Fetches until `want` deliveries arrived or a long poll comes back empty.
std::vector<Delivery> FetchAll(Client& c, const std::string& topic, const std::string& group,
                               size_t want, bool ack) {
  std::vector<Delivery> out;
  while (out.size() < want) {
    client::FetchOptions f;
    f.max_events = 1000;
    f.wait_ms = 2000;
    Result<std::vector<Delivery>> got = c.Fetch(topic, group, f);
    if (!got.ok()) {
      ADD_FAILURE() << got.status().ToString();
      break;
    }
    if (got->empty()) break;
    if (ack) {
      std::vector<client::Lease> leases;
      for (const Delivery& d : *got) leases.push_back(d.lease());
      Result<client::AckResult> acked = c.Ack(topic, group, leases);
      EXPECT_TRUE(acked.ok()) << acked.status().ToString();
    }
    for (Delivery& d : *got) out.push_back(std::move(d));
  }
  return out;
}

class ServeTest : public ::testing::Test {
 protected:
  void StartServer(std::string yaml = "") {
    server_ = std::make_unique<ServeProcess>(std::move(yaml));
    Status s = server_->Start();
    ASSERT_TRUE(s.ok()) << s.ToString();
  }
  Client NewClient(std::string token = "") { return Client(server_->ClientOptions(token)); }
  std::unique_ptr<ServeProcess> server_;
};

// ---------------------------------------------------------------------------------------

TEST_F(ServeTest, DefaultsToLoopbackWithoutAuthAndSaysSo) {
  StartServer();
  Client c = NewClient();
  ASSERT_OK(c.Health());
  ASSERT_OK(c.Ready());
  EXPECT_NE(server_->Log().find("auth disabled: loopback only"), std::string::npos)
      << server_->Log();
}

TEST_F(ServeTest, PublishesInAllThreeModesAndConsumes) {
  StartServer();
  Client c = NewClient();
  CreateTopic(c, "orders", 3);

  Event structured = MakeEvent("/shop", "s-1", R"({"order":1})", "customer-7");
  Result<client::Published> p1 = c.PublishOne("orders", structured, PublishMode::kStructured);
  ASSERT_TRUE(p1.ok()) << p1.status().ToString();
  EXPECT_FALSE(p1->duplicate);
  EXPECT_EQ(p1->id, "s-1");

  std::vector<Event> batch = {MakeEvent("/shop", "b-1", R"({"order":2})", "customer-7"),
                              MakeEvent("/shop", "b-2", R"([1,2,3])", "customer-8"),
                              MakeEvent("/shop", "b-3", "", "customer-7")};
  Result<std::vector<client::Published>> p2 = c.Publish("orders", batch, PublishMode::kBatch);
  ASSERT_TRUE(p2.ok()) << p2.status().ToString();
  ASSERT_EQ(p2->size(), 3u);
  // Same key, same partition, in order after the structured event.
  EXPECT_EQ((*p2)[0].partition, p1->partition);
  EXPECT_EQ((*p2)[0].offset, p1->offset + 1);
  EXPECT_EQ((*p2)[2].partition, p1->partition);
  EXPECT_EQ((*p2)[2].offset, p1->offset + 2);

  Event binary = MakeEvent("/shop", "x-1", "");
  binary.set_subject("orders/42");
  binary.set_datacontenttype("text/plain");
  ASSERT_OK(binary.SetTextData("hello \"world\" 100%"));
  binary.SetExtension("tenant", "acme corp");
  Result<client::Published> p3 = c.PublishOne("orders", binary, PublishMode::kBinary);
  ASSERT_TRUE(p3.ok()) << p3.status().ToString();

  // converge's native batch: same events, binary records.
  std::vector<Event> native = {MakeEvent("/shop", "n-1", R"({"n":1})", "customer-7"),
                               MakeEvent("/shop", "n-2", "", "customer-9")};
  native[1].SetBinaryData(std::string("\0\x01\xff", 3));
  Result<std::vector<client::Published>> p4 = c.Publish("orders", native, PublishMode::kNative);
  ASSERT_TRUE(p4.ok()) << p4.status().ToString();
  ASSERT_EQ(p4->size(), 2u);
  EXPECT_EQ((*p4)[0].partition, p1->partition);
  EXPECT_GT((*p4)[0].offset, (*p2)[2].offset);  // same key: after the batch
  EXPECT_EQ((*p4)[0].id, "n-1");

  // Publishing the same (source, id) again is a duplicate with the original coordinates.
  Result<client::Published> again = c.PublishOne("orders", structured, PublishMode::kBatch);
  ASSERT_TRUE(again.ok());
  EXPECT_TRUE(again->duplicate);
  EXPECT_EQ(again->partition, p1->partition);
  EXPECT_EQ(again->offset, p1->offset);
  // The same id from another source is a different event.
  Result<client::Published> other =
      c.PublishOne("orders", MakeEvent("/billing", "s-1", "{}"), PublishMode::kStructured);
  ASSERT_TRUE(other.ok());
  EXPECT_FALSE(other->duplicate);

  std::vector<Delivery> got = FetchAll(c, "orders", "audit", 8, /*ack=*/true);
  ASSERT_EQ(got.size(), 8u);
  std::map<std::string, Event> by_id;
  for (const Delivery& d : got) {
    ASSERT_TRUE(d.event.has_value()) << d.decode_error;
    EXPECT_EQ(d.attempt, 1u);
    by_id[d.event->source() + " " + d.event->id()] = *d.event;
  }
  EXPECT_EQ(by_id["/shop s-1"], structured);
  EXPECT_EQ(by_id["/shop b-2"], batch[1]);
  EXPECT_EQ(by_id["/shop b-3"], batch[2]);
  EXPECT_EQ(by_id["/shop x-1"], binary);
  EXPECT_EQ(by_id["/shop n-2"], native[1]);
  EXPECT_TRUE(by_id.count("/billing s-1"));

  // The same events over JSON (what non-C++ clients get) as over the binary delivery batch.
  client::Options json_options = server_->ClientOptions();
  json_options.native_fetch = false;
  Client json_client(json_options);
  std::vector<Delivery> again_json = FetchAll(json_client, "orders", "audit-json", 8, true);
  ASSERT_EQ(again_json.size(), 8u);
  for (const Delivery& d : again_json) {
    ASSERT_TRUE(d.event.has_value()) << d.decode_error;
    EXPECT_EQ(*d.event, by_id[d.event->source() + " " + d.event->id()]);
  }

  // Everything acked: nothing more to fetch, lag 0, end offsets add up to 6.
  client::FetchOptions f;
  f.wait_ms = 100;
  EXPECT_TRUE(Must(c.Fetch("orders", "audit", f)).empty());
  client::TopicDescription t = Must(c.DescribeTopic("orders"));
  uint64_t end = 0;
  for (const auto& p : t.offsets) end += p.end_offset;
  EXPECT_EQ(end, 8u);
  ASSERT_EQ(t.groups.size(), 2u);
  EXPECT_EQ(t.groups[0].name, "audit");
  EXPECT_EQ(t.groups[0].lag, 0u);
  // Listed: "orders" and the saga orchestrator's reply topic; internal ('_') topics such as
  // the groups' dead-letter topics are not.
  std::set<std::string> names;
  for (const client::TopicDescription& topic : Must(c.ListTopics())) names.insert(topic.name);
  EXPECT_EQ(names, (std::set<std::string>{"orders", "saga.replies"}));
}

TEST_F(ServeTest, BatchIsAcceptedWholeOrRejectedWhole) {
  StartServer();
  Client c = NewClient();
  CreateTopic(c, "t");
  std::string body = R"([{"specversion":"1.0","id":"1","source":"/s","type":"x"},)"
                     R"({"specversion":"1.0","id":"2","source":"/s","type":"x"},)"
                     R"({"specversion":"1.0","id":"3","source":"/s"}])";
  client::HttpResponse res = Must(c.Send({"POST",
                                          "/v1/topics/t/events",
                                          {{"Content-Type", "application/cloudevents-batch+json"}},
                                          body}));
  EXPECT_EQ(res.status, 400);
  EXPECT_NE(res.body.find("INVALID_EVENT"), std::string::npos) << res.body;
  EXPECT_NE(res.body.find("event[2]"), std::string::npos) << res.body;
  EXPECT_NE(res.body.find("type"), std::string::npos) << res.body;
  client::TopicDescription t = Must(c.DescribeTopic("t"));
  EXPECT_EQ(t.offsets.at(0).end_offset, 0u);
}

TEST_F(ServeTest, RedeliversAfterLeaseExpiry) {
  StartServer();
  Client c = NewClient();
  CreateTopic(c, "jobs");
  client::GroupSpec g;
  g.name = "workers";
  g.lease_ms = 300;
  ASSERT_TRUE(c.CreateGroup("jobs", g).ok());
  ASSERT_TRUE(c.PublishOne("jobs", MakeEvent("/s", "j1", "1")).ok());
  std::vector<Delivery> first = Must(c.Fetch("jobs", "workers", {10, 0, 2000, ""}));
  ASSERT_EQ(first.size(), 1u);
  EXPECT_EQ(first[0].attempt, 1u);
  // Not acked: once the lease expires the same event comes back, attempt 2.
  auto start = std::chrono::steady_clock::now();
  std::vector<Delivery> second = Must(c.Fetch("jobs", "workers", {10, 0, 5000, ""}));
  ASSERT_EQ(second.size(), 1u);
  EXPECT_GE(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(200));
  EXPECT_EQ(second[0].offset, first[0].offset);
  EXPECT_EQ(second[0].attempt, 2u);
  EXPECT_EQ(*second[0].event, *first[0].event);
  // The first lease is stale now: acking it reports it lost; the new one acks.
  std::vector<client::Lease> stale = {first[0].lease()};
  client::AckResult lost = Must(c.Ack("jobs", "workers", stale));
  EXPECT_EQ(lost.lost.size(), 1u);
  std::vector<client::Lease> fresh = {second[0].lease()};
  client::AckResult acked = Must(c.Ack("jobs", "workers", fresh));
  EXPECT_EQ(acked.acked, 1u);
  EXPECT_TRUE(acked.lost.empty());
}

TEST_F(ServeTest, NackWithDelayRedeliversLater) {
  StartServer();
  Client c = NewClient();
  CreateTopic(c, "jobs");
  ASSERT_TRUE(c.PublishOne("jobs", MakeEvent("/s", "j1", "1")).ok());
  std::vector<Delivery> first = Must(c.Fetch("jobs", "g", {10, 0, 2000, ""}));
  ASSERT_EQ(first.size(), 1u);
  client::Nack nack{first[0].lease(), 400, false, "try later"};
  auto start = std::chrono::steady_clock::now();
  ASSERT_OK(c.NackOne("jobs", "g", nack));
  std::vector<Delivery> second = Must(c.Fetch("jobs", "g", {10, 0, 5000, ""}));
  ASSERT_EQ(second.size(), 1u);
  EXPECT_GE(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(350));
  EXPECT_EQ(second[0].attempt, 2u);
}

TEST_F(ServeTest, DeadLettersCanBeListedAndReplayed) {
  StartServer();
  Client c = NewClient();
  CreateTopic(c, "pay");
  client::GroupSpec g;
  g.name = "billing";
  g.max_deliveries = 2;
  ASSERT_TRUE(c.CreateGroup("pay", g).ok());
  Event poison = MakeEvent("/s", "poison", R"({"bad":true})");
  Event rejected = MakeEvent("/s", "rejected", R"({"bad":"very"})");
  ASSERT_TRUE(c.PublishOne("pay", poison).ok());
  ASSERT_TRUE(c.PublishOne("pay", rejected).ok());

  // "rejected" is dead-lettered at once; "poison" after two failed deliveries.
  for (int round = 0; round < 2; ++round) {
    std::vector<Delivery> got = Must(c.Fetch("pay", "billing", {10, 0, 3000, ""}));
    for (const Delivery& d : got) {
      bool permanent = d.event->id() == "rejected";
      ASSERT_OK(c.NackOne("pay", "billing", {d.lease(), 0, permanent, "cannot handle"}));
    }
  }
  client::DeadLetterList dl = Must(c.ListDeadLetters("pay", "billing"));
  ASSERT_EQ(dl.dead_letters.size(), 2u);
  std::set<std::string> ids;
  for (const auto& e : dl.dead_letters) {
    ASSERT_TRUE(e.event.has_value());
    ids.insert(e.event->id());
    EXPECT_FALSE(e.replayed);
    EXPECT_FALSE(e.reason.empty());
    if (e.event->id() == "poison") {
      EXPECT_EQ(e.delivery_count, 2u);
      EXPECT_EQ(*e.event, poison);
    }
  }
  EXPECT_EQ(ids, (std::set<std::string>{"poison", "rejected"}));
  client::TopicDescription t = Must(c.DescribeTopic("pay"));
  ASSERT_EQ(t.groups.size(), 1u);
  EXPECT_EQ(t.groups[0].dead_letters, 2u);
  EXPECT_EQ(t.groups[0].lag, 0u);
  std::string metrics = Must(c.Metrics());
  EXPECT_NE(metrics.find("converge_dead_letters{topic=\"pay\",group=\"billing\"} 2"),
            std::string::npos)
      << metrics;

  client::ReplayReply replay = Must(c.ReplayDeadLetters("pay", "billing"));
  EXPECT_EQ(replay.replayed, 2u);
  std::vector<Delivery> back = FetchAll(c, "pay", "billing", 2, /*ack=*/true);
  ASSERT_EQ(back.size(), 2u);
  std::set<std::string> back_ids;
  for (const Delivery& d : back) back_ids.insert(d.event->id());
  EXPECT_EQ(back_ids, ids);
  dl = Must(c.ListDeadLetters("pay", "billing"));
  for (const auto& e : dl.dead_letters) EXPECT_TRUE(e.replayed);
  // A second replay skips what was replayed.
  EXPECT_EQ(Must(c.ReplayDeadLetters("pay", "billing")).replayed, 0u);
}

TEST_F(ServeTest, StreamsDeliveriesOverServerSentEvents) {
  StartServer();
  Client c = NewClient();
  CreateTopic(c, "feed", 2);
  std::unique_ptr<client::Subscription> sub = Must(c.Subscribe("feed", "ui", {}));
  for (int i = 0; i < 5; ++i) {
    ASSERT_TRUE(c.PublishOne("feed", MakeEvent("/s", Cat({"e", std::to_string(i)}), "1")).ok());
  }
  std::set<std::string> seen;
  std::vector<client::Lease> leases;
  while (seen.size() < 5) {
    Result<std::optional<Delivery>> d = sub->Next(5000);
    ASSERT_TRUE(d.ok()) << d.status().ToString();
    ASSERT_TRUE(d->has_value()) << "no delivery within 5 s";
    seen.insert((*d)->event->id());
    leases.push_back((*d)->lease());
  }
  client::AckResult acked = Must(c.Ack("feed", "ui", leases));
  EXPECT_EQ(acked.acked, 5u);
  // Nothing else is pending: a short wait returns nothing.
  Result<std::optional<Delivery>> none = sub->Next(200);
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->has_value());
}

TEST_F(ServeTest, StreamWithAutoAckLeavesNothingPending) {
  StartServer();
  Client c = NewClient();
  CreateTopic(c, "feed");
  client::SubscribeOptions options;
  options.auto_ack = true;
  std::unique_ptr<client::Subscription> sub = Must(c.Subscribe("feed", "ui", options));
  ASSERT_TRUE(c.PublishOne("feed", MakeEvent("/s", "e", "1")).ok());
  Result<std::optional<Delivery>> d = sub->Next(5000);
  ASSERT_TRUE(d.ok() && d->has_value());
  sub.reset();
  client::FetchOptions f;
  f.wait_ms = 300;
  EXPECT_TRUE(Must(c.Fetch("feed", "ui", f)).empty());
}

// ---------------------------------------------------------------------------------------
// Auth

constexpr char kAuthConfig[] = R"(
auth:
  tokens:
    - service: orders
      token: orders-token-0123456789
      publish: ["orders.*"]
      subscribe: ["payments"]
    - service: payments
      token: payments-token-0123456789
      publish: ["payments"]
      subscribe: ["orders.*"]
    - service: ops
      token: ops-token-0123456789abcd
      admin: true
)";

TEST_F(ServeTest, RejectsMissingAndWrongTokensWith401AndMissingPermissionWith403) {
  StartServer(kAuthConfig);
  Client ops = NewClient("ops-token-0123456789abcd");
  CreateTopic(ops, "orders.created");
  CreateTopic(ops, "payments");

  Client orders = NewClient("orders-token-0123456789");
  Client payments = NewClient("payments-token-0123456789");
  ASSERT_TRUE(orders.PublishOne("orders.created", MakeEvent("/o", "1", "1")).ok());

  for (Client* anon : {new Client(server_->ClientOptions("")),
                       new Client(server_->ClientOptions("not-a-valid-token-at-all"))}) {
    std::unique_ptr<Client> owner(anon);
    Status s = anon->PublishOne("orders.created", MakeEvent("/o", "2", "1")).status();
    EXPECT_EQ(s.code(), StatusCode::kUnauthenticated) << s.ToString();
    EXPECT_EQ(Code(s), "UNAUTHENTICATED");
    EXPECT_EQ(anon->Fetch("orders.created", "g").status().code(), StatusCode::kUnauthenticated);
    EXPECT_EQ(anon->ListTopics().status().code(), StatusCode::kUnauthenticated);
    EXPECT_EQ(anon->DescribeTopic("orders.created").status().code(), StatusCode::kUnauthenticated);
    EXPECT_TRUE(anon->Health().ok());
  }

  // Publish permission only where granted.
  Status s = orders.PublishOne("payments", MakeEvent("/o", "3", "1")).status();
  EXPECT_EQ(s.code(), StatusCode::kPermissionDenied) << s.ToString();
  // Subscribing without permission: 403 and no data.
  Result<std::vector<Delivery>> denied = orders.Fetch("orders.created", "g");
  EXPECT_EQ(denied.status().code(), StatusCode::kPermissionDenied);
  client::HttpResponse raw = Must(orders.Send({"POST",
                                               "/v1/topics/orders.created/groups/g/fetch",
                                               {{"Content-Type", "application/json"}},
                                               "{}"}));
  EXPECT_EQ(raw.status, 403);
  EXPECT_EQ(raw.body.find("\"event\""), std::string::npos) << raw.body;
  EXPECT_EQ(orders.ListDeadLetters("orders.created", "g").status().code(),
            StatusCode::kPermissionDenied);
  // Non-admins cannot create topics.
  client::TopicSpec spec;
  spec.name = "orders.new";
  EXPECT_EQ(orders.CreateTopic(spec).status().code(), StatusCode::kPermissionDenied);
  // A topic the service cannot see: 403 whether or not it exists.
  EXPECT_EQ(orders.DescribeTopic("inventory").status().code(), StatusCode::kPermissionDenied);

  // The subscriber may consume.
  std::vector<Delivery> got = FetchAll(payments, "orders.created", "g", 1, true);
  ASSERT_EQ(got.size(), 1u);
  // ...but not replay its dead letters: a replay appends them to orders.created again, where
  // payments may not publish.
  EXPECT_EQ(payments.ReplayDeadLetters("orders.created", "g").status().code(),
            StatusCode::kPermissionDenied);
  // Listing shows only visible topics.
  std::vector<client::TopicDescription> visible = Must(orders.ListTopics());
  std::set<std::string> names;
  for (const auto& t : visible) names.insert(t.name);
  EXPECT_EQ(names, (std::set<std::string>{"orders.created", "payments"}));
  // The admin token (which has no topic patterns) sees every topic.
  std::set<std::string> all;
  for (const auto& t : Must(ops.ListTopics())) all.insert(t.name);
  for (const char* topic : {"orders.created", "payments"}) {
    EXPECT_TRUE(all.count(topic)) << topic;
  }
}

// ---------------------------------------------------------------------------------------
// Limits and malformed input

TEST_F(ServeTest, EnforcesBodyBatchAndEventLimitsWith413) {
  StartServer(R"(
limits:
  max_body_bytes: 8192
  max_batch_events: 3
  max_event_bytes: 1024
)");
  Client c = NewClient();
  CreateTopic(c, "t");
  std::vector<Event> four;
  for (int i = 0; i < 4; ++i) four.push_back(MakeEvent("/s", std::to_string(i), "1"));
  Status s = c.Publish("t", four).status();
  EXPECT_EQ(s.code(), StatusCode::kResourceExhausted) << s.ToString();
  EXPECT_NE(s.ToString().find("max_batch_events"), std::string::npos) << s.ToString();

  Event big = MakeEvent("/s", "big", "\"" + std::string(2000, 'x') + "\"");
  s = c.PublishOne("t", big, PublishMode::kStructured).status();
  EXPECT_EQ(s.code(), StatusCode::kResourceExhausted) << s.ToString();
  s = c.PublishOne("t", big, PublishMode::kBinary).status();
  EXPECT_EQ(s.code(), StatusCode::kResourceExhausted) << s.ToString();
  EXPECT_NE(s.ToString().find("max_event_bytes"), std::string::npos) << s.ToString();

  // A body over max_body_bytes is refused from its Content-Length, before it is read.
  std::string raw =
      "POST /v1/topics/t/events HTTP/1.1\r\nHost: x\r\n"
      "Content-Type: application/cloudevents+json\r\nContent-Length: 100000\r\n\r\n" +
      std::string(1000, ' ');
  std::string reply = Must(RawExchange(server_->port(), raw));
  EXPECT_EQ(RawStatus(reply), 413) << reply;
  EXPECT_NE(reply.find("PAYLOAD_TOO_LARGE"), std::string::npos) << reply;
  // Chunked bodies are counted as they arrive.
  std::string chunk(4000, 'a');
  std::string chunked =
      "POST /v1/topics/t/events HTTP/1.1\r\nHost: x\r\n"
      "Content-Type: application/cloudevents+json\r\n"
      "Transfer-Encoding: chunked\r\n\r\n";
  for (int i = 0; i < 3; ++i) chunked += "fa0\r\n" + chunk + "\r\n";
  chunked += "0\r\n\r\n";
  reply = Must(RawExchange(server_->port(), chunked));
  EXPECT_EQ(RawStatus(reply), 413) << reply;
  // Nothing was appended by any refused request.
  EXPECT_EQ(Must(c.DescribeTopic("t")).offsets.at(0).end_offset, 0u);
}

TEST_F(ServeTest, EnforcesHeaderLimitWith431) {
  StartServer("limits: {max_header_bytes: 2048}");
  std::string raw =
      "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + std::string(4096, 'h') + "\r\n\r\n";
  std::string reply = Must(RawExchange(server_->port(), raw));
  EXPECT_EQ(RawStatus(reply), 431) << reply;
}

TEST_F(ServeTest, EnforcesInflightAndSubscriberLimitsWith429) {
  StartServer("limits: {max_inflight_requests: 1, max_subscribers: 1}");
  Client c = NewClient();
  CreateTopic(c, "t");
  // A long poll holds the only in-flight slot (it retries while our probes hold it).
  std::thread poller([port = server_->port()] {
    client::Options o;
    o.port = port;
    Client p(o);
    client::FetchOptions f;
    f.wait_ms = 3000;
    for (;;) {
      Result<std::vector<Delivery>> r = p.Fetch("t", "g", f);
      if (r.ok()) break;
      ASSERT_EQ(r.status().code(), StatusCode::kResourceExhausted) << r.status().ToString();
    }
  });
  bool saw_429 = false;
  std::string last;
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(3);
  while (!saw_429 && std::chrono::steady_clock::now() < until) {
    client::HttpResponse res = Must(c.Send({"GET", "/v1/topics", {}, {}}));
    saw_429 = res.status == 429;
    if (saw_429) {
      EXPECT_EQ(res.Header("Retry-After"), "1");
      last = res.body;
    }
  }
  EXPECT_TRUE(saw_429);
  EXPECT_NE(last.find("TOO_MANY_REQUESTS"), std::string::npos) << last;
  poller.join();

  std::unique_ptr<client::Subscription> first = Must(c.Subscribe("t", "g", {}));
  Result<std::unique_ptr<client::Subscription>> second = c.Subscribe("t", "g", {});
  EXPECT_EQ(second.status().code(), StatusCode::kResourceExhausted) << second.status().ToString();
  first.reset();
}

TEST_F(ServeTest, AnswersMalformedInputWith400NamingTheProblem) {
  StartServer();
  Client c = NewClient();
  CreateTopic(c, "t");
  auto post = [&](std::string target, std::vector<std::pair<std::string, std::string>> headers,
                  std::string body) {
    return Must(c.Send({"POST", std::move(target), std::move(headers), std::move(body)}));
  };
  client::HttpResponse r =
      post("/v1/topics/t/events", {{"Content-Type", "application/cloudevents+json"}}, "{\"id\":");
  EXPECT_EQ(r.status, 400);
  EXPECT_NE(r.body.find("\"code\":\"INVALID_EVENT\""), std::string::npos) << r.body;

  r = post("/v1/topics/t/events", {{"Content-Type", "application/cloudevents+json"}},
           R"({"specversion":"1.0","id":"1","type":"x"})");
  EXPECT_EQ(r.status, 400);
  EXPECT_NE(r.body.find("source"), std::string::npos) << r.body;

  r = post("/v1/topics/t/events",
           {{"ce-specversion", "1.0"},
            {"ce-source", "/s"},
            {"ce-type", "x"},
            {"Content-Type", "application/json"}},
           "{}");
  EXPECT_EQ(r.status, 400);
  EXPECT_NE(r.body.find("ce-id"), std::string::npos) << r.body;

  r = post("/v1/topics/t/events",
           {{"ce-specversion", "1.0"},
            {"ce-id", "1"},
            {"ce-source", "/s"},
            {"ce-type", "x"},
            {"Content-Type", "application/json"}},
           "{not json");
  EXPECT_EQ(r.status, 400) << r.body;

  r = post("/v1/topics/t/events", {{"Content-Type", "application/json"}}, "{}");
  EXPECT_EQ(r.status, 400);
  EXPECT_NE(r.body.find("ce-specversion"), std::string::npos) << r.body;

  r = post("/v1/topics/t/events", {{"Content-Type", "application/vnd.converge.event-batch"}},
           std::string("\x05" "abc", 4));
  EXPECT_EQ(r.status, 400);
  EXPECT_NE(r.body.find("record[0]"), std::string::npos) << r.body;
  r = post("/v1/topics/t/events", {{"Content-Type", "application/vnd.converge.event-batch"}},
           std::string("\x03" "abc", 4));
  EXPECT_EQ(r.status, 400);
  EXPECT_NE(r.body.find("event[0]"), std::string::npos) << r.body;

  r = post("/v1/topics/t/events", {{"Content-Type", "application/cloudevents+avro"}}, "x");
  EXPECT_EQ(r.status, 415) << r.body;

  r = post("/v1/topics", {{"Content-Type", "application/json"}}, "{\"name\": ");
  EXPECT_EQ(r.status, 400);
  EXPECT_NE(r.body.find("INVALID_JSON"), std::string::npos) << r.body;

  r = post("/v1/topics", {{"Content-Type", "application/json"}}, R"({"name":"x","partitons":2})");
  EXPECT_EQ(r.status, 400);
  EXPECT_NE(r.body.find("partitons"), std::string::npos) << r.body;

  // Internal names are converge's own (see system_topics.h): refused like a publish to them.
  r = post("/v1/topics", {{"Content-Type", "application/json"}}, R"({"name":"_secret"})");
  EXPECT_EQ(r.status, 403) << r.body;
  EXPECT_NE(r.body.find("SYSTEM_TOPIC"), std::string::npos) << r.body;

  r = post("/v1/topics/t/groups/g/fetch", {{"Content-Type", "application/json"}},
           R"({"max_events":-1})");
  EXPECT_EQ(r.status, 400);
  EXPECT_NE(r.body.find("max_events"), std::string::npos) << r.body;

  r = post("/v1/topics/t/groups/g/ack", {{"Content-Type", "application/json"}},
           R"({"acks":[{"partition":0}]})");
  EXPECT_EQ(r.status, 400);
  EXPECT_NE(r.body.find("offset"), std::string::npos) << r.body;

  // Unknown topic, route and method.
  r = post("/v1/topics/nope/events", {{"Content-Type", "application/cloudevents+json"}},
           R"({"specversion":"1.0","id":"1","source":"/s","type":"x"})");
  EXPECT_EQ(r.status, 404);
  EXPECT_NE(r.body.find("nope"), std::string::npos) << r.body;
  EXPECT_EQ(Must(c.Send({"GET", "/v2/whatever", {}, {}})).status, 404);
  client::HttpResponse m = Must(c.Send({"DELETE", "/v1/topics", {}, {}}));
  EXPECT_EQ(m.status, 405);
  EXPECT_NE(m.Header("Allow").find("POST"), std::string::npos);

  // Not HTTP at all.
  std::string reply = Must(RawExchange(server_->port(), "HELLO THERE\r\n\r\n"));
  EXPECT_EQ(RawStatus(reply), 400) << reply;
  EXPECT_NE(reply.find("MALFORMED_HTTP"), std::string::npos) << reply;

  // None of it changed anything, and the server is still fine.
  EXPECT_EQ(Must(c.DescribeTopic("t")).offsets.at(0).end_offset, 0u);
  ASSERT_OK(c.Health());
}

TEST_F(ServeTest, ClosesIdleAndStalledConnectionsAtTheirTimeouts) {
  StartServer("limits: {idle_timeout_ms: 300, request_timeout_ms: 400}");
  // Idle keep-alive connection: closed after idle_timeout_ms.
  Result<int64_t> idle = testing::RawTimeToClose(server_->port(), "", 10'000);
  ASSERT_TRUE(idle.ok()) << idle.status().ToString();
  EXPECT_GE(*idle, 250);
  EXPECT_LT(*idle, 5000);
  // A request whose body never completes: closed after request_timeout_ms.
  Result<int64_t> stalled = testing::RawTimeToClose(
      server_->port(), "POST /v1/topics HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"na",
      10'000);
  ASSERT_TRUE(stalled.ok()) << stalled.status().ToString();
  EXPECT_GE(*stalled, 350);
  EXPECT_LT(*stalled, 5000);
  // A connection that keeps making requests stays up past the idle timeout.
  Client c = NewClient();
  for (int i = 0; i < 5; ++i) ASSERT_OK(c.Health());
}

TEST_F(ServeTest, AutoCreatesTopicsWhenConfigured) {
  StartServer("auto_create_topics: true\ntopic_defaults: {partitions: 2}");
  Client c = NewClient();
  Result<client::Published> p = c.PublishOne("fresh", MakeEvent("/s", "1", "1"));
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  EXPECT_EQ(Must(c.DescribeTopic("fresh")).partitions, 2u);
}

TEST_F(ServeTest, KeepsConnectionsAlive) {
  StartServer();
  std::string two =
      "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
      "GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
  std::string reply = Must(RawExchange(server_->port(), two));
  size_t first = reply.find("HTTP/1.1 200");
  ASSERT_NE(first, std::string::npos) << reply;
  EXPECT_NE(reply.find("HTTP/1.1 200", first + 1), std::string::npos) << reply;
  EXPECT_NE(reply.find("\"ready\""), std::string::npos) << reply;
}

TEST_F(ServeTest, ExportsPrometheusMetrics) {
  StartServer();
  Client c = NewClient();
  CreateTopic(c, "m");
  ASSERT_TRUE(c.PublishOne("m", MakeEvent("/s", "1", "1")).ok());
  std::vector<Delivery> leased = FetchAll(c, "m", "g", 1, false);
  ASSERT_EQ(leased.size(), 1u);
  std::string text = Must(c.Metrics());
  for (const char* want :
       {"converge_events_published_total{topic=\"m\"} 1", "converge_fsync_duration_seconds_bucket",
        "converge_consumer_lag{topic=\"m\",group=\"g\"} 1",
        "converge_dead_letters{topic=\"m\",group=\"g\"} 0", "converge_http_requests_total",
        "converge_publish_to_deliver_seconds_count 1"}) {
    EXPECT_NE(text.find(want), std::string::npos) << "missing " << want << "\n" << text;
  }
  // The publish was fsynced: the file-sync histogram counted it.
  const std::string count_key = "converge_fsync_duration_seconds_count{kind=\"file\"} ";
  const size_t at = text.find(count_key);
  ASSERT_NE(at, std::string::npos) << text;
  EXPECT_GT(std::stoull(text.substr(at + count_key.size())), 0u) << text;
  // Acked: no lag.
  const std::vector<client::Lease> leases = {leased[0].lease()};
  ASSERT_EQ(Must(c.Ack("m", "g", leases)).acked, 1u);
  text = Must(c.Metrics());
  EXPECT_NE(text.find("converge_consumer_lag{topic=\"m\",group=\"g\"} 0"), std::string::npos)
      << text;
}

TEST_F(ServeTest, ServesTlsWhenConfigured) {
  server_ = nullptr;
  ServeProcess probe;  // only for its temp dir
  const std::string cert = probe.dir() + "/cert.pem", key = probe.dir() + "/key.pem";
  std::string cmd = "openssl req -x509 -newkey rsa:2048 -nodes -keyout " + key + " -out " + cert +
                    " -days 1 -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 "
                    ">/dev/null 2>&1";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << "openssl could not make a test certificate";
  StartServer("tls: {cert_file: " + cert + ", key_file: " + key + "}");
  client::Options o = server_->ClientOptions();
  o.tls = true;
  o.tls_ca_file = cert;
  Client c(o);
  ASSERT_OK(c.Health());
  CreateTopic(c, "secure");
  ASSERT_TRUE(c.PublishOne("secure", MakeEvent("/s", "1", "1")).ok());
  std::unique_ptr<client::Subscription> sub = Must(c.Subscribe("secure", "g", {}));
  Result<std::optional<Delivery>> d = sub->Next(5000);
  ASSERT_TRUE(d.ok() && d->has_value());
  // Plain HTTP on the TLS port gets nothing useful.
  std::string reply = Must(RawExchange(server_->port(), "GET /healthz HTTP/1.1\r\n\r\n", 2000));
  EXPECT_EQ(RawStatus(reply), 0);
}

// ---------------------------------------------------------------------------------------
// Crashes and shutdown

TEST_F(ServeTest, SigkillUnderLoadLosesNoAcknowledgedEvent) {
  StartServer();
  {
    Client c = NewClient();
    CreateTopic(c, "durable", 4);
  }
  std::atomic<bool> stop{false};
  std::atomic<size_t> acked_count{0};
  std::mutex mu;
  std::set<std::string> acked;  // ids whose publish returned 200
  std::vector<std::thread> publishers;
  for (int t = 0; t < 4; ++t) {
    publishers.emplace_back([&, t] {
      Client c(server_->ClientOptions());
      for (int b = 0; !stop.load(); ++b) {
        std::vector<Event> batch;
        for (int i = 0; i < 20; ++i) {
          batch.push_back(MakeEvent(
              "/load", Cat({std::to_string(t), "-", std::to_string(b), "-", std::to_string(i)}),
              R"({"n":1})", Cat({"k", std::to_string(i % 7)})));
        }
        Result<std::vector<client::Published>> r = c.Publish("durable", batch, PublishMode::kBatch);
        if (!r.ok()) return;  // the server died
        std::lock_guard lock(mu);
        for (const Event& e : batch) acked.insert(e.id());
        acked_count += batch.size();
      }
    });
  }
  while (acked_count.load() < 2000) std::this_thread::yield();
  server_->Kill();
  stop = true;
  for (auto& th : publishers) th.join();

  // Restart on the same data and address (as a supervisor restarts a sidecar: with a
  // cluster: section its URL identifies it, so it takes its dead incarnation's leases over at
  // once) and read everything back.
  std::string data = server_->data_dir();
  auto restarted = std::make_unique<ServeProcess>("", data);
  restarted->set_listen("127.0.0.1:" + std::to_string(server_->port()));
  ASSERT_OK(restarted->Start());
  Client c(restarted->ClientOptions());
  std::set<std::string> stored;
  for (const Delivery& d : FetchAll(c, "durable", "check", SIZE_MAX, true)) {
    ASSERT_TRUE(d.event.has_value());
    stored.insert(d.event->id());
  }
  size_t missing = 0;
  for (const std::string& id : acked) missing += stored.count(id) ? 0 : 1;
  EXPECT_EQ(missing, 0u) << "of " << acked.size() << " acknowledged events";
  EXPECT_GE(stored.size(), acked.size());
  restarted.reset();
}

TEST_F(ServeTest, SigtermDrainsInFlightRequestsAndExitsZero) {
  StartServer();
  Client c = NewClient();
  CreateTopic(c, "drain");
  ASSERT_TRUE(c.PublishOne("drain", MakeEvent("/s", "before", "1")).ok());
  FetchAll(c, "drain", "g", 1, true);

  // A long poll is in flight when SIGTERM arrives: it must be answered, not cut off.
  std::atomic<int> poll_status{0};
  std::thread poller([&] {
    Client p(server_->ClientOptions());
    client::FetchOptions f;
    f.wait_ms = 15'000;
    Result<std::vector<Delivery>> r = p.Fetch("drain", "g", f);
    poll_status = r.ok() ? 200 : -1;
  });
  // Wait until the server counts it in flight (the metrics request itself is the other one).
  bool in_flight = false;
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (!in_flight && std::chrono::steady_clock::now() < until) {
    std::string m = Must(c.Metrics());
    in_flight = m.find("converge_http_inflight_requests 2") != std::string::npos;
  }
  ASSERT_TRUE(in_flight) << "the long poll never showed up in flight";
  // Publishers keep publishing (each publish waits for its fsync) through the SIGTERM; every
  // publish answered 200 must be there after the restart.
  std::atomic<bool> stop_publishing{false};
  std::vector<std::vector<std::string>> acked(2);
  std::vector<std::thread> publishers;
  for (int t = 0; t < 2; ++t) {
    publishers.emplace_back([&, t] {
      Client p(server_->ClientOptions());
      for (int i = 0; !stop_publishing.load(); ++i) {
        const std::string id = Cat({"p", std::to_string(t), "-", std::to_string(i)});
        if (!p.PublishOne("drain", MakeEvent("/s", id, "1")).ok()) return;
        acked[t].push_back(id);
      }
    });
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  auto start = std::chrono::steady_clock::now();
  Result<int> code = server_->Signal(SIGTERM);
  stop_publishing = true;
  for (std::thread& t : publishers) t.join();
  poller.join();
  ASSERT_TRUE(code.ok()) << code.status().ToString() << "\n" << server_->Log();
  EXPECT_EQ(*code, 0) << server_->Log();
  EXPECT_EQ(poll_status.load(), 200);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(10));
  EXPECT_NE(server_->Log().find("drained and synced"), std::string::npos) << server_->Log();

  // The data survived, every acknowledged publish included, and the group's ack too: the
  // group gets exactly the published events after "before", which it had acked.
  const size_t published = acked[0].size() + acked[1].size();
  EXPECT_GT(published, 0u);
  ServeProcess again("", server_->data_dir());
  ASSERT_OK(again.Start());
  Client c2(again.ClientOptions());
  const uint64_t end = Must(c2.DescribeTopic("drain")).offsets.at(0).end_offset;
  EXPECT_GE(end, 1u + published);  // a publish cut off by the shutdown may be there unacked
  std::set<std::string> stored;
  for (const Delivery& d : FetchAll(c2, "drain", "g", end - 1, true)) stored.insert(d.event->id());
  EXPECT_EQ(stored.count("before"), 0u);
  for (const auto& ids : acked) {
    for (const std::string& id : ids) EXPECT_EQ(stored.count(id), 1u) << id;
  }
}

// A service's own SQLite database with an outbox, written through the outbox API while the
// server relays it (a separate process: the relay finds the rows by its fallback poll).
class ServiceOutbox {
 public:
  explicit ServiceOutbox(const std::string& path) {
    sql::SqliteOptions o;
    o.path = path;
    db_ = Must(sql::Database::OpenSqlite(o), "open the service database");
    Status s = Outbox::CreateSchema(*db_);
    if (!s.ok()) ADD_FAILURE() << s.ToString();
  }
  // One transaction of `n` events, keys k0..k{keys-1} in turn, ids "<prefix>-<i>".
  void Write(const std::string& prefix, int n, int keys) {
    std::vector<Event> events;
    for (int i = 0; i < n; ++i) {
      events.push_back(MakeEvent("/orders", Cat({prefix, "-", std::to_string(i)}),
                                 Cat({"{\"n\":", std::to_string(i), "}"}),
                                 Cat({"k", std::to_string(i % keys)})));
    }
    Status s = db_->Transact([&](sql::Transaction& tx) {
      return outbox_.Write(tx, "orders", std::span<Event>(events));
    });
    ASSERT_TRUE(s.ok()) << s.ToString();
  }
  int64_t Rows() {
    int64_t n = -1;
    Status s = db_->Query("SELECT count(*) FROM converge_outbox", {},
                          [&](const sql::Row& row) -> Status {
                            n = row.Int(0).value();
                            return Status::Ok();
                          })
                   .status();
    EXPECT_TRUE(s.ok()) << s.ToString();
    return n;
  }

 private:
  std::unique_ptr<sql::Database> db_;
  Outbox outbox_{Env::Default()};
};

// Fetches (and acks) events of `topic` until `want` arrived, tolerating a topic that the relay
// has not created yet; fails after 20 s.
std::vector<Delivery> FetchRelayed(Client& c, const std::string& topic, size_t want) {
  std::vector<Delivery> out;
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (out.size() < want && std::chrono::steady_clock::now() < until) {
    client::FetchOptions f;
    f.max_events = 1000;
    f.wait_ms = 500;
    Result<std::vector<Delivery>> got = c.Fetch(topic, "billing", f);
    if (!got.ok()) {
      if (got.status().code() == StatusCode::kNotFound) continue;  // not created yet
      ADD_FAILURE() << got.status().ToString();
      break;
    }
    std::vector<client::Lease> leases;
    for (const Delivery& d : *got) leases.push_back(d.lease());
    if (!leases.empty()) {
      EXPECT_TRUE(c.Ack(topic, "billing", leases).ok());
    }
    for (Delivery& d : *got) out.push_back(std::move(d));
  }
  return out;
}

TEST_F(ServeTest, RelaysOutboxRowsIntoItsLogAndStopsCleanlyOnSigterm) {
  ServeProcess probe;  // only for a temp dir that outlives both servers
  const std::string db_path = probe.dir() + "/orders.db";
  ServiceOutbox service(db_path);
  service.Write("early", 30, 3);  // committed before the server starts
  const std::string yaml =
      Cat({"relays:\n"
           "  sink: {partitions: 2}\n"
           "  sources:\n"
           "    - name: orders\n"
           "      database: sqlite:",
           db_path,
           "\n"
           "      poll_interval_ms: 20\n"});
  StartServer(yaml);
  EXPECT_NE(server_->Log().find("relaying 1 outbox source"), std::string::npos) << server_->Log();
  service.Write("late", 70, 3);
  Client c = NewClient();
  std::vector<Delivery> got = FetchRelayed(c, "orders", 100);
  ASSERT_EQ(got.size(), 100u) << server_->Log();
  EXPECT_EQ(Must(c.DescribeTopic("orders")).partitions, 2u);

  // Every event once, and per key in the order written (early-* before late-*, by index).
  std::set<std::string> ids;
  std::map<std::string, std::vector<std::string>> per_key;
  for (const Delivery& d : got) {
    ASSERT_TRUE(d.event.has_value()) << d.decode_error;
    EXPECT_TRUE(ids.insert(d.event->id()).second) << "duplicate " << d.event->id();
    EXPECT_EQ(d.event->source(), "/orders");
    per_key[std::string(d.event->partitionkey().value_or(""))].push_back(d.event->id());
  }
  EXPECT_EQ(ids.size(), 100u);
  ASSERT_EQ(per_key.size(), 3u);
  for (int k = 0; k < 3; ++k) {
    std::vector<std::string> want;
    for (int i = k; i < 30; i += 3) want.push_back(Cat({"early-", std::to_string(i)}));
    for (int i = k; i < 70; i += 3) want.push_back(Cat({"late-", std::to_string(i)}));
    EXPECT_EQ(per_key[Cat({"k", std::to_string(k)})], want) << "key k" << k;
  }
  // Published rows are deleted from the service's outbox.
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (service.Rows() != 0 && std::chrono::steady_clock::now() < until) {
  }
  EXPECT_EQ(service.Rows(), 0);
  std::string metrics = Must(c.Metrics());
  EXPECT_NE(metrics.find("converge_relay_published_total{source=\"orders\"} 100"),
            std::string::npos)
      << metrics;
  EXPECT_NE(metrics.find("converge_relay_active{source=\"orders\"} 1"), std::string::npos);

  // SIGTERM stops the relay before the final sync and exits 0; rows written while the server
  // is down are relayed after the restart, and nothing is published twice.
  Result<int> code = server_->Signal(SIGTERM);
  ASSERT_TRUE(code.ok()) << code.status().ToString() << "\n" << server_->Log();
  EXPECT_EQ(*code, 0) << server_->Log();
  EXPECT_NE(server_->Log().find("drained and synced"), std::string::npos) << server_->Log();
  service.Write("after", 10, 3);
  ServeProcess again(yaml, server_->data_dir());
  ASSERT_OK(again.Start());
  Client c2(again.ClientOptions());
  std::vector<Delivery> more = FetchRelayed(c2, "orders", 10);
  ASSERT_EQ(more.size(), 10u) << again.Log();
  for (const Delivery& d : more) {
    ASSERT_TRUE(d.event.has_value());
    EXPECT_EQ(d.event->id().substr(0, 6), "after-");
  }
  client::FetchOptions f;
  f.wait_ms = 300;
  EXPECT_TRUE(Must(c2.Fetch("orders", "billing", f)).empty());
  uint64_t stored = 0;
  for (const auto& p : Must(c2.DescribeTopic("orders")).offsets) stored += p.end_offset;
  EXPECT_EQ(stored, 110u);
}

}  // namespace
}  // namespace converge
